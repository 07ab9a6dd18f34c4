"""Pure parts of USDT hooks, uprobe extras and loader events: compiled plans, the ELF
build-id reader and the loader record decoder (no root, no kernel)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from vigil.abi import _generated as abi
from vigil.elfnote import build_id
from vigil.errors import PolicyError
from vigil.loader_events import BuildIds, body, kernel_dev, parse, same_file
from vigil.policy.compiler import CompileError, KernelView, compile_policy
from vigil.policy.loader import load_policy


def plan(text: str, **view: object):
    return compile_policy(load_policy(text, "p.yaml"), KernelView(**view))  # type: ignore[arg-type]


USDT = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: u
spec:
  usdts:
  - path: /opt/app
    provider: prov
    name: hit
    args:
    - index: 3
      type: int32
    - index: 0
      type: string
"""


def test_usdt_plan() -> None:
    [hook] = plan(USDT).hooks
    assert hook.event == "process_usdt" and hook.opcode == int(abi.MsgOp.GENERIC_USDT)
    [a] = hook.attach
    assert (a.program, a.kind, a.target) == ("vg_gen_usdt", "usdt", ("/opt/app", "prov", "hit"))
    assert hook.hook_label == "usdt:prov/hit"
    assert [s.out for s in hook.args] == ["int", "string"]


def test_usdt_set_needs_write_user() -> None:
    text = USDT + """    selectors:
    - matchActions:
      - action: Set
        argIndex: 1
        argValue: 5
"""
    with pytest.raises(CompileError, match="bpf_probe_write_user: not allowed here"):
        plan(text, probe_write_user_refused="not allowed here")
    [hook] = plan(text, probe_write_user=True).hooks
    assert "Set: the argument's memory is written" in hook.enforcement


def test_usdt_substring_loads_the_usdt_kfunc_variant() -> None:
    from vigil.sensors.generic import USDT_KFUNC_OBJECTS
    text = USDT + """    selectors:
    - matchArgs:
      - index: 0
        operator: {op}
        values: ["needle"]
"""
    [hook] = plan(text.format(op="SubString"), kfunc_strnstr=True).hooks
    assert hook.kfuncs == ("bpf_strnstr",) and len(hook.map_keys["vg_str_sub"]) == 1
    assert USDT_KFUNC_OBJECTS[hook.kfuncs].name == "generic_usdt_substr.bpf.o"
    [hook] = plan(text.format(op="SubStringIgnCase"), kfunc_strnstr=True,
                  kfunc_strncasestr=True).hooks
    assert USDT_KFUNC_OBJECTS[hook.kfuncs].name == "generic_usdt_substr_icase.bpf.o"
    with pytest.raises(CompileError, match=r"spec.usdts\[0\].selectors"
                       r"\[0\].matchArgs\[0\].operator: SubStringIgnCase needs the kernel "
                       r"function bpf_strncasestr \(Linux 6.19"):
        plan(text.format(op="SubStringIgnCase"), kfunc_strnstr=True)


def test_usdt_resolve_through_btf_path() -> None:
    """btfPath on usdts: btfType names the struct the argument points to (any raw BTF
    file; the kernel's serves here); pointers are followed in user memory."""
    vmlinux = "/sys/kernel/btf/vmlinux"
    if not os.access(vmlinux, os.R_OK):
        pytest.skip("no readable kernel BTF")
    text = USDT.replace("    args:", f"    btfPath: {vmlinux}\n    args:").replace(
        "    - index: 3\n      type: int32",
        "    - index: 3\n      type: int32\n      btfType: task_struct\n      resolve: pid")
    [hook] = plan(text).hooks
    from vigil.abi.pack import unpack_field

    def f(name: str) -> int:
        return int(unpack_field("vg_hook_cfg", name, hook.config))
    assert f("args[0].nres") == 1 and f("args[0].flags") & int(abi.ArgFlag.RES_USER)
    assert f("args[1].nres") == 0
    with pytest.raises(PolicyError) as err:  # the checker's, located
        plan(text.replace(f"    btfPath: {vmlinux}\n", ""))
    assert [(d.path, d.message) for d in err.value.diagnostics] == [
        ("spec.usdts[0].args[0].resolve",
         "resolve on a usdt needs btfPath (the BTF of the probed binary)")]
    with pytest.raises(CompileError, match=r"spec.usdts\[0\].args\[0\].resolve: struct "
                       r"task_struct has no member nope"):
        plan(text.replace("resolve: pid", "resolve: nope"))


def test_uprobe_addrs_ref_ctr_and_digests_in_the_plan() -> None:
    text = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: u
spec:
  uprobes:
  - path: /opt/app
    addrs: [4096, 8192]
    refCtrOffsets: [16, 24]
    binaryDigests: ["sha256:%s"]
""" % ("ab" * 32)
    hooks = plan(text).hooks
    assert [(h.attach[0].offset, h.attach[0].ref_ctr_offset) for h in hooks] == [
        (4096, 16), (8192, 24)]
    assert all(h.attach[0].digests == ("sha256:" + "ab" * 32,) for h in hooks)
    assert "semaphore at file offset 0x10" in hooks[0].mechanism


def test_loader_plan() -> None:
    [hook] = plan("""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: l
spec:
  loader: true
""").hooks
    assert hook.event == "process_loader" and hook.opcode == int(abi.MsgOp.LOADER)
    assert [a.target for a in hook.attach] == [("syscalls", "sys_enter_mmap"),
                                              ("syscalls", "sys_exit_mmap")]


def _elf_with_note(desc: bytes) -> bytes:
    """A minimal ELF64 little-endian file: header, one PT_NOTE with a GNU build-id note."""
    note = struct.pack("<III", 4, len(desc), 3) + b"GNU\0" + desc
    phoff, ph_size = 64, 56
    note_off = phoff + ph_size
    hdr = bytearray(64)
    hdr[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHIQQQIHHHHHH", hdr, 16, 3, 62, 1, 0, phoff, 0, 0, 64, ph_size, 1,
                     64, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    return bytes(hdr) + ph + note


def test_build_id_of_an_elf_note() -> None:
    data = _elf_with_note(bytes(range(20)))
    assert build_id(lambda off, size: data[off:off + size]) == bytes(range(20))
    assert build_id(lambda off, size: b"#!/bin/sh\n"[off:off + size]) is None
    truncated = data[:100]
    assert build_id(lambda off, size: truncated[off:off + size]) is None


def test_build_id_of_a_real_library() -> None:
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if not libc.exists():
        pytest.skip("no x86_64 glibc here")
    fd = os.open(libc, os.O_RDONLY)
    try:
        bid = build_id(lambda off, size: os.pread(fd, size, off))
    finally:
        os.close(fd)
    assert bid is not None and len(bid) == 20


def test_loader_record_and_body(tmp_path: Path) -> None:
    lib = tmp_path / "lib.so"
    lib.write_bytes(_elf_with_note(b"\x01\x02\x03\x04"))
    st = os.stat(lib)
    dev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
    assert kernel_dev(dev) == st.st_dev
    path = str(lib).encode()
    head = abi.VG_LOADER_MSG.size - int(abi.Limits.PATH_MAX)
    rec = bytearray(head + len(path))
    ix = abi.VG_LOADER_MSG_INDEX
    vals = [0] * len(abi.VG_LOADER_MSG_FIELDS)
    vals[ix["hdr.op"]], vals[ix["pid"]], vals[ix["tid"]] = int(abi.MsgOp.LOADER), 999999, 7
    vals[ix["hook_id"]], vals[ix["path_len"]], vals[ix["ino"]] = 3, len(path), st.st_ino
    vals[ix["size"]], vals[ix["dev"]], vals[ix["path"]] = st.st_size, dev, path
    rec[:] = abi.VG_LOADER_MSG.pack(*vals)[:head + len(path)]
    r = parse(bytes(rec))
    assert (r["pid"], r["hook_id"], r["path"], r["ino"]) == (999999, 3, str(lib), st.st_ino)
    ids = BuildIds(size=1)
    assert ids.get(r["pid"], r["path"], dev, st.st_ino, st.st_size) == b"\x01\x02\x03\x04"
    assert ids.get(r["pid"], r["path"], dev, st.st_ino, st.st_size) == b"\x01\x02\x03\x04"
    assert ids.reads == 1  # cached
    assert ids.get(r["pid"], r["path"], dev, st.st_ino + 1, st.st_size) == b""  # another inode
    assert ids.unreadable == 1
    assert same_file(st, dev + 1, st.st_ino, st.st_size)  # stacked fs: inode and size
    assert not same_file(st, dev + 1, st.st_ino, st.st_size + 1)
    assert list(body({"pid": 1}, None, r["path"], b"\x01")) == ["process", "path", "buildid"]
