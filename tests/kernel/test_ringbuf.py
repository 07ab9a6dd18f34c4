"""The ring-buffer reader maps the data area once, so records that wrap around its end are
joined from two pieces. A 64 KiB ring and execs with argv of many sizes make the ring wrap
many times; every record must come out whole and in order."""

from __future__ import annotations

import subprocess

from vigil.abi._generated import MsgOp
from vigil.events import decode
from vigil.sensors.base import BaseSensor, BaseSensorConfig

RING = 64 << 10


def test_records_that_wrap_come_out_whole() -> None:
    base = BaseSensor(BaseSensorConfig(ring_bytes=RING))
    base.load()
    try:
        ring = base.ring
        ring.drain()
        sent: list[tuple[str, ...]] = []
        got: list[tuple[str, ...]] = []
        for i in range(200):
            # sizes walk through every 8-byte phase so records end at every alignment
            arg = f"vigil-wrap-{i:04d}-" + "x" * (37 * i % 2900 + i % 8)
            subprocess.run(["/bin/true", arg], check=True)
            sent.append((arg,))
            for rec in ring.drain():
                if decode.op_of(rec) != MsgOp.EXEC:
                    continue
                p = decode.decode_exec(rec, "t", 0).process
                if p.args and p.args[0].startswith("vigil-wrap-"):
                    got.append(tuple(p.args))
        for rec in ring.drain():
            if decode.op_of(rec) == MsgOp.EXEC:
                p = decode.decode_exec(rec, "t", 0).process
                if p.args and p.args[0].startswith("vigil-wrap-"):
                    got.append(tuple(p.args))
        consumed = ring.consumer_pos()
    finally:
        base.close()
    assert consumed > 3 * RING, f"the ring wrapped only {consumed / RING:.1f} times"
    assert got == sent
