"""Bad policies cost the running agent nothing: a YAML alias bomb and a deeply nested
document sent with AddTracingPolicy are refused with their located error, the agent's
resident memory (VmRSS) stays where it was, and it goes on serving; an oversized one is
refused too, costing no more than the transport's copies of the request. The same bomb
given with ``--tracing-policy`` stops start-up with the located error.

The RSS figures are printed (``-s`` shows them); the test asserts only a memory bound.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.e2e.agentproc import AgentProcess, links_of, live_links
from tests.unit.test_policy_bounds import billion_laughs
from vigil.api.tetragon import sensors_pb2, sensors_pb2_grpc
from vigil.policy.loader import MAX_POLICY_BYTES

pytestmark = pytest.mark.e2e

BOMB_ERROR = ("grpc:11:8: error: excessive YAML aliasing: aliases expand this value to "
              "66430 nodes; a policy written in 40 nodes may expand to at most 10000")
RSS_SLACK = 8 << 20  # bytes: allocator noise of a few requests, not a policy's data
WAIT = 60.0          # generous: only bounds a hang, never asserts speed


def vm_rss(pid: int) -> int:
    """The resident set size of process ``pid``, in bytes (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture()
def short_tmp() -> Iterator[Path]:
    """A directory with a short path (a unix socket path has at most 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="vigil-bounds-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def add_policy(st: sensors_pb2_grpc.FineGuidanceSensorsStub, text: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        st.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=text), timeout=WAIT)
    return info.value


def test_alias_bomb_over_grpc_costs_nothing(short_tmp: Path) -> None:
    with AgentProcess(short_tmp) as ag:
        links = links_of(ag.proc.pid)
        ch = grpc.insecure_channel(f"unix://{ag.socket}",
                                   options=[("grpc.max_send_message_length", 16 << 20)])
        st = sensors_pb2_grpc.FineGuidanceSensorsStub(ch)
        try:
            # warm up: the first AddTracingPolicy imports the policy engine
            err = add_policy(st, "kind: TracingPolicy\nspec: [\n")
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()

            before = vm_rss(ag.proc.pid)
            err = add_policy(st, billion_laughs())
            after_bomb = vm_rss(ag.proc.pid)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
            assert BOMB_ERROR in err.details(), err.details()

            err = add_policy(st, "[" * 10_000 + "]" * 10_000)
            after_deep = vm_rss(ag.proc.pid)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
            assert "grpc:1:65: error: too deeply nested: more than 64 levels" in \
                err.details(), err.details()

            # the transport holds a request several times over while it reads it (a
            # bounded cost of any large request); the loader adds nothing to that
            err = add_policy(st, "#" * (MAX_POLICY_BYTES + 1))
            after_big = vm_rss(ag.proc.pid)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
            assert f"grpc:1:1: error: policy too large: {MAX_POLICY_BYTES + 1} bytes" in \
                err.details(), err.details()

            print(f"\nagent VmRSS: {before >> 10} kB before the alias bomb, "
                  f"{after_bomb >> 10} kB after it ({(after_bomb - before) >> 10:+} kB), "
                  f"{after_deep >> 10} kB after 10,000-deep nesting "
                  f"({(after_deep - after_bomb) >> 10:+} kB), {after_big >> 10} kB after "
                  f"{MAX_POLICY_BYTES + 1} bytes ({(after_big - after_deep) >> 10:+} kB)")
            assert after_bomb - before < RSS_SLACK
            assert after_deep - before < RSS_SLACK
            assert after_big - after_deep < 8 * MAX_POLICY_BYTES

            # the command line shows the located error (and reads a huge file no further
            # than the limit, refusing it without sending it)
            bomb, huge = short_tmp / "bomb.yaml", short_tmp / "huge.yaml"
            bomb.write_text(billion_laughs())
            with open(huge, "wb") as f:
                f.truncate(10 << 30)
            for path, error in ((bomb, BOMB_ERROR), (huge, f"{huge}:1:1: error: policy too "
                                                      "large: over the limit")):
                r = subprocess.run([sys.executable, "-m", "vigil", "tracingpolicy", "add",
                                    str(path), "--server-address", f"unix://{ag.socket}"],
                                   capture_output=True, text=True, timeout=WAIT)
                assert r.returncode == 3 and error in r.stderr, r.stderr
                assert "Traceback" not in r.stderr, r.stderr

            # still serving, and nothing was added
            listed = st.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest(),
                                            timeout=WAIT)
            assert [p.name for p in listed.policies] == ["vigil-self-protection"]
        finally:
            ch.close()
        assert ag.stop() == 0
    assert not live_links(links), "BPF links left behind"


def test_alias_bomb_as_startup_policy_stops_the_agent(short_tmp: Path) -> None:
    bomb = short_tmp / "bomb.yaml"
    bomb.write_text(billion_laughs())
    r = subprocess.run(
        [sys.executable, "-m", "vigil", "agent", "--export-filename",
         str(short_tmp / "events.log"), "--no-export-stdout", "--server-address",
         f"unix://{short_tmp}/vigil.sock", "--server-info-file", str(short_tmp / "info.json"),
         "--tracing-policy", str(bomb)],
        capture_output=True, text=True, timeout=WAIT, env=dict(os.environ))
    assert r.returncode == 3, r.stderr
    assert f"{bomb}:11:8: error: excessive YAML aliasing" in r.stderr, r.stderr
    assert not (short_tmp / "vigil.sock").exists()
