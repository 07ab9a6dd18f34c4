"""Argument types and selectors of Tetragon's examples, with the real BPF objects.

Everywhere (raw tracepoints and syscall tracepoints): ``linux_binprm`` on a raw
tracepoint, ``matchCapabilities`` ``isNamespaceCapability``, ``matchCapabilityChanges``
and ``maxData`` on a ``char_buf``. On kernel functions, which need kprobes or BPF
trampolines (on the hardened host these skip with the probe's reason, inside the kernel
lane they must run): ``nop``, ``net_device``, ``user_namespace``, ``perf_event``,
``kiocb`` and ``iov_iter`` with ``maxData``."""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.test_policies import Env, _body

PY = sys.executable


def _policy(name: str, spec: str) -> str:
    return ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
            f"metadata:\n  name: {name}\nspec:\n{spec}")


@pytest.fixture
def marker() -> Iterator[Path]:
    exe = Path("/tmp") / f"vnt-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", exe)
    try:
        yield exe
    finally:
        exe.unlink()


def test_raw_tracepoint_linux_binprm_is_the_executed_file(env: Env, marker: Path) -> None:
    """rawtp.yaml: raw sched_process_exec, argument 2 (struct linux_binprm *) -> the
    executed file's path, as a kprobe's linux_binprm argument."""
    pol = _policy("vnt-rawtp-binprm", f"""  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args:
    - index: 2
      type: linux_binprm
    selectors:
    - matchArgs:
      - index: 2
        operator: Postfix
        values: ["/{marker.name}"]
""")
    procs: list[subprocess.Popen[bytes]] = []
    with env.policy(pol) as info:
        assert "raw_tracepoint sched_process_exec" in info.info
        evs = env.run(lambda: (procs.append(subprocess.Popen([str(marker)])), procs[0].wait(),
                               subprocess.run(["/bin/true"])))
    assert len(evs) == 1
    body = _body(evs[0])
    assert (body["subsys"], body["event"]) == ("sched", "sched_process_exec")
    assert body["process"]["pid"] == procs[0].pid
    assert body["args"] == [{"linux_binprm_arg": {"path": str(marker)}}]


# ---- capability selectors (any hook kind: here syscall hooks on tracepoints) ----------

def _openat(name: str, target: Path, caps: str) -> str:
    return _policy(name, f"""  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
{caps}
""")


@pytest.fixture
def target() -> Iterator[Path]:
    d = Path("/tmp") / f"vnt-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    f = d / "t"
    f.write_text("x")
    f.chmod(0o644)
    try:
        yield f
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_match_capability_changes_against_the_caps_at_exec(env: Env, target: Path) -> None:
    """fd_install_cap_changes.yaml's selector: a process that started as root opens the
    file (no change: no event), drops CAP_SYS_ADMIN with setuid (a change of a listed
    capability: one event), opens it again (the change was reported: the current
    capabilities are the reference now, no event)."""
    pol = _openat("vnt-capchanges", target, """      matchCapabilityChanges:
      - type: Effective
        operator: In
        values: ["CAP_SYS_ADMIN", "CAP_NET_RAW"]""")
    code = (f"import os\nopen({str(target)!r}).close()\nos.setresuid(65534, 65534, 65534)\n"
            f"open({str(target)!r}).close()\nopen({str(target)!r}).close()\n")
    notin = _openat("vnt-capchanges-notin", target, """      matchCapabilityChanges:
      - type: Effective
        operator: NotIn
        values: ["CAP_SYS_ADMIN"]""")
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        procs.append(subprocess.Popen([PY, "-c", code]))
        procs[-1].wait()
        assert procs[-1].returncode == 0
    with env.policy(pol):
        evs = env.run(trigger)
    assert [(_body(e)["process"]["pid"], _body(e)["args"]) for e in evs] == [
        (procs[0].pid, [{"string_arg": str(target)}])]
    # NotIn: a change only of other capabilities; losing CAP_SYS_ADMIN is not one
    with env.policy(notin):
        evs = env.run(trigger)
    assert evs == []


def test_is_namespace_capability_only_outside_the_host_user_namespace(
        env: Env, target: Path) -> None:
    """fd_install_caps.yaml's selector: root of the host (in the host's user namespace)
    does not match; root of a new user namespace (its capabilities are namespace ones)
    does."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    pol = _openat("vnt-nscaps", target, """      matchCapabilities:
      - type: Effective
        operator: In
        isNamespaceCapability: true
        values: ["CAP_CHOWN", "CAP_NET_RAW"]""")
    runs: list[subprocess.CompletedProcess[bytes]] = []

    def trigger() -> None:
        runs.append(subprocess.run(["cat", str(target)], capture_output=True))
        runs.append(subprocess.run(["unshare", "-Ur", "cat", str(target)],
                                   capture_output=True))
    with env.policy(pol):
        evs = env.run(trigger)
    if runs[1].returncode != 0:
        pytest.skip(f"unshare -Ur failed: {runs[1].stderr.decode().strip()}")
    assert len(evs) == 1
    assert _body(evs[0])["process"]["binary"].endswith("/cat")
    assert _body(evs[0])["process"]["arguments"] == str(target)


# ---- kernel functions (kprobes or trampolines: the kernel lane) ------------------------

def test_nop_argument_is_left_out(env: Env, kfuncs: None, marker: Path) -> None:
    """process-exec-elf-begin.yaml: security_bprm_creds_from_file(nop, file): the nop
    argument is not read and not in the event; the file is the executed one."""
    pol = _policy("vnt-nop", f"""  kprobes:
  - call: security_bprm_creds_from_file
    syscall: false
    args:
    - index: 0
      type: nop
    - index: 1
      type: file
    selectors:
    - matchArgs:
      - index: 1
        operator: Postfix
        values: ["/{marker.name}"]
""")
    procs: list[subprocess.Popen[bytes]] = []
    with env.policy(pol):
        evs = env.run(lambda: (procs.append(subprocess.Popen([str(marker)])), procs[0].wait(),
                               subprocess.run(["/bin/true"])))
    assert len(evs) == 1, evs
    body = _body(evs[0])
    assert body["function_name"] == "security_bprm_creds_from_file"
    assert body["args"] == [{"file_arg": {"path": str(marker)}}]


def test_net_device_is_its_name(env: Env, kfuncs: None) -> None:
    """dev_hard_start_xmit.yaml: argument 1 (struct net_device *) is rendered as its name,
    a string_arg, and filtered as a string (Equal "lo")."""
    pol = _policy("vnt-netdev", """  kprobes:
  - call: dev_hard_start_xmit
    syscall: false
    args:
    - index: 1
      type: net_device
      label: dev
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["lo"]
""")

    def trigger() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(b"x", ("127.0.0.1", 9))
    with env.policy(pol):
        evs = env.run(trigger, {os.getpid()})
    assert evs, "no transmission on lo seen"
    assert {str(_body(e)["args"]) for e in evs} == {str([{"string_arg": "lo", "label": "dev"}])}


def test_user_namespace_and_capability(env: Env, kfuncs: None, target: Path) -> None:
    """creds-capability-usage.yaml: cap_capable(cred, user_namespace, capability): the
    host's user namespace (level 0, its inum, is_host) and CAP_CHOWN for a chown."""
    pol = _policy("vnt-userns", f"""  kprobes:
  - call: cap_capable
    syscall: false
    args:
    - index: 1
      type: user_namespace
    - index: 2
      type: capability
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 2
        operator: Equal
        values: ["CAP_CHOWN"]
""")
    with env.policy(pol):
        evs = env.run(lambda: os.chown(target, 65534, 65534), {os.getpid()})
    assert evs
    inum = os.stat("/proc/self/ns/user").st_ino
    assert _body(evs[0])["args"] == [
        {"user_ns_arg": {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": inum, "is_host": True}}},
        {"capability_arg": {"value": 0, "name": "CAP_CHOWN"}}]


def _perf_event_open(ptype: int, config: int) -> int:
    attr = bytearray(128)  # struct perf_event_attr (PERF_ATTR_SIZE_VER7)
    attr[0:4] = ptype.to_bytes(4, "little")
    attr[4:8] = len(attr).to_bytes(4, "little")
    attr[8:16] = config.to_bytes(8, "little")
    attr[40:48] = (1 << 0).to_bytes(8, "little")  # disabled
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    fd = libc.syscall(298, buf, 0, -1, -1, 0)  # perf_event_open(attr, self, any cpu)
    if fd < 0:
        pytest.fail(f"perf_event_open: {os.strerror(ctypes.get_errno())}")
    return int(fd)


def test_perf_event(env: Env, kfuncs: None) -> None:
    """bpf.yaml's security_perf_event_alloc: the event's type and config."""
    pol = _policy("vnt-perf", f"""  kprobes:
  - call: security_perf_event_alloc
    syscall: false
    args:
    - index: 0
      type: perf_event
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
""")
    fds: list[int] = []
    with env.policy(pol):
        evs = env.run(lambda: fds.append(_perf_event_open(1, 3)), {os.getpid()})
    for fd in fds:
        os.close(fd)
    assert [_body(e)["args"] for e in evs] == [
        [{"perf_event_arg": {"Type": "PERF_TYPE_SOFTWARE", "Config": "3"}}]]


# ---- maxData ------------------------------------------------------------------------------

def test_max_data_buffer_beyond_4096_bytes(env: Env) -> None:
    """char_buf with maxData on write(2): the whole buffer up to 327360 bytes (the record's
    first 4096, the rest in VG_MSG_DATA records put back in order); longer ones truncated
    with their size, as Tetragon."""
    pol = _policy("vnt-maxdata", f"""  kprobes:
  - call: sys_write
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: char_buf
      sizeArgIndex: 3
      maxData: true
    - index: 2
      type: size_t
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["{{fd}}"]
""")
    import base64
    small = bytes(range(256)) * 40 + b"tail"            # 10244 bytes: 3 records
    big = (bytes(range(251)) * 2000)[:400000]           # beyond 327360
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        with env.policy(pol.replace("{fd}", str(fd))):
            evs = env.run(lambda: (os.write(fd, small), os.write(fd, big)), {os.getpid()})
    finally:
        os.close(fd)
    assert len(evs) == 2
    first, second = (_body(e)["args"] for e in evs)
    assert base64.b64decode(first[1]["bytes_arg"]) == small
    assert first[2] == {"size_arg": str(len(small))}
    trunc = second[1]["truncated_bytes_arg"]
    assert trunc["orig_size"] == str(len(big))
    assert base64.b64decode(trunc["bytes_arg"]) == big[:327360]


def test_tty_write_kiocb_and_iov_iter_max_data(env: Env, kfuncs: None) -> None:
    """tty.yaml: tty_write(kiocb, iov_iter with maxData): the tty's file and the whole
    buffer written, beyond 4096 bytes."""
    import base64
    import fcntl
    pol = _policy("vnt-tty", """  kprobes:
  - call: tty_write
    syscall: false
    args:
    - index: 0
      type: kiocb
    - index: 1
      type: iov_iter
      maxData: true
""")
    try:
        master, slave = os.openpty()
    except OSError as err:
        pytest.skip(f"no pty: {err}")
    data = bytes(b"abcdefghij"[i % 10] for i in range(10000))
    fcntl.fcntl(slave, fcntl.F_SETFL, fcntl.fcntl(slave, fcntl.F_GETFL) | os.O_NONBLOCK)
    name = os.ttyname(slave)

    def trigger() -> None:
        try:
            os.write(slave, data)
        except BlockingIOError:
            pass
    try:
        with env.policy(pol):
            evs = env.run(trigger, {os.getpid()})
    finally:
        os.close(slave)
        os.close(master)
    mine = [_body(e)["args"] for e in evs if _body(e)["args"][0].get("file_arg", {}).get("path")
            == name]
    assert mine, [_body(e)["args"][0] for e in evs]
    assert base64.b64decode(mine[0][1]["bytes_arg"]) == data
