"""Kernel-function hooks in the real kernel: kprobe / kretprobe, kprobe.multi, fentry /
fexit, fmod_ret Override and BPF LSM, with arguments of kernel types and real triggers.

They need kprobes or BPF trampolines, which the hardened host refuses: there every test
skips with the probe's reason; inside the kernel lane (stock 6.1 and 6.12 kernels under
qemu) they must run (see tests/kernel/lane.py).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lane import need
from tests.kernel.test_policies import CAT, Env, _body

ME = {os.getpid()}
MODES = {"kprobe": ("kprobe", "kretprobe"), "kprobe_multi": ("kprobe_multi",),
         "fentry": ("fentry", "fexit")}


class ModeEnv(Env):
    """Env whose policy manager compiles kernel-function hooks in a forced kprobe mode."""

    def use(self, mode: str) -> None:
        from vigil.daemon.policies import PolicyManager, kernel_view
        old = self.manager
        old.close()
        self.manager = PolicyManager(self.base, old.registry,
                                     view=functools.partial(kernel_view, mode),
                                     enforcement=old.enforcement)

    def run_all(self, trigger: Any, pids: set[int] | None = None) -> list[dict[str, Any]]:
        self.pipe.handle(self.base.ring.drain())
        trigger()
        import time
        time.sleep(0.3)
        events = self.pipe.handle(self.base.ring.drain())
        out = [e for e in events if next(iter(e)) in ("process_kprobe", "process_lsm")]
        if pids:
            out = [e for e in out if _body(e)["process"]["pid"] in pids]
        return out


@pytest.fixture(scope="module")
def env() -> Iterator[ModeEnv]:
    from vigil.bpf import features as F
    if not (F.probe("kprobe").ok or F.probe("fentry").ok):
        need("kprobe")  # skips with the reason (or fails in the lane)
    e = ModeEnv()
    yield e
    e.close()


@pytest.fixture
def tdir() -> Iterator[Path]:
    """A fresh tmpfs: in the lane the guest's /tmp is an overlay, where one open() reaches
    security_file_open twice (the overlay file and the real one); a dentry's path is then
    also known exactly ("/name", inside this filesystem)."""
    d = Path("/tmp") / f"vkp-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "vkp", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def mode(env: ModeEnv, name: str) -> Iterator[None]:
    need(*MODES[name])
    env.use(name)
    try:
        yield
    finally:
        env.use("auto")


def policy(name: str, body: str) -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
{body}"""


# ---- mechanisms: the same hook on kprobe, kprobe.multi and fentry -------------------------

FILE_OPEN = """
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{d}/in"]
"""


@pytest.mark.parametrize("mech", list(MODES))
def test_entry_file_arg(env: ModeEnv, tdir: Path, mech: str) -> None:
    for n in ("in-a", "out-b", "in-c"):
        (tdir / n).write_text("x")
    with mode(env, mech), env.policy(policy("vkp-open", FILE_OPEN.format(d=tdir))) as info:
        assert info.info.startswith({"kprobe": "kprobe security_file_open",
                                     "kprobe_multi": "kprobe.multi security_file_open",
                                     "fentry": "fentry security_file_open"}[mech]), info.info
        evs = env.run_all(lambda: [(tdir / n).read_text() for n in ("in-a", "out-b", "in-c")],
                          ME)
    assert [_body(e)["args"] for e in evs] == [
        [{"file_arg": {"path": f"{tdir}/in-a"}}], [{"file_arg": {"path": f"{tdir}/in-c"}}]]
    body = _body(evs[0])
    assert next(iter(evs[0])) == "process_kprobe"
    assert body["function_name"] == "security_file_open"
    assert body["action"] == "KPROBE_ACTION_POST" and body["policy_name"] == "vkp-open"


@pytest.mark.parametrize("mech", list(MODES))
def test_match_parent_binaries(env: ModeEnv, tdir: Path, mech: str) -> None:
    """matchParentBinaries on a kernel-function hook: the same cat opens a file as a
    child of a shell (matching) and as a child of python (not)."""
    sh = tdir / "vk-sh"
    shutil.copy(os.path.realpath("/bin/sh"), sh)
    for n in ("in-sh", "in-py"):
        (tdir / n).write_text("x")
    body = FILE_OPEN.format(d=tdir) + f"""      matchParentBinaries:
      - operator: In
        values: ["{sh}"]
"""
    spawn = f"import subprocess; subprocess.run([{CAT!r}, {str(tdir / 'in-py')!r}])"

    def trigger() -> None:
        subprocess.run([str(sh), "-c", f"{CAT} {tdir}/in-sh; true"], capture_output=True,
                       check=True)
        subprocess.run([sys.executable, "-c", spawn], capture_output=True, check=True)
    with mode(env, mech), env.policy(policy("vkp-parent", body)):
        evs = env.run_all(trigger)
    assert [_body(e)["args"][0]["file_arg"]["path"] for e in evs] == [f"{tdir}/in-sh"]
    assert _body(evs[0])["parent"]["binary"] == str(sh)


SOCK_CREATE = """
  kprobes:
  - call: __sock_create
    syscall: false
    return: true
    returnArg:
      index: 0
      type: int
    args:
    - index: 1
      type: int
      label: family
    - index: 2
      type: int
    - index: 3
      type: int
    selectors:
    - matchArgs:
      - index: 3
        operator: Equal
        values: ["6"]
      matchPIDs:
      - operator: In
        values: [{pid}]
"""


def _sockets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP):
        pass
    with contextlib.suppress(OSError):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_TCP).close()


@pytest.mark.parametrize("mech", list(MODES))
def test_return_merged_with_entry(env: ModeEnv, mech: str) -> None:
    """Arguments and the (sign-extended int) return value in one process_kprobe."""
    with mode(env, mech), env.policy(policy("vkp-ret", SOCK_CREATE.format(pid=os.getpid()))) as info:
        assert {"kprobe": "kretprobe", "kprobe_multi": "kretprobe.multi",
                "fentry": "fexit"}[mech] in info.info
        evs = env.run_all(_sockets, ME)
    got = [(_body(e)["args"], _body(e)["return"]) for e in evs]
    assert got == [
        ([{"int_arg": 2, "label": "family"}, {"int_arg": 1}, {"int_arg": 6}], {"int_arg": 0}),
        ([{"int_arg": 2, "label": "family"}, {"int_arg": 2}, {"int_arg": 6}],
         {"int_arg": -errno.EPROTONOSUPPORT}),
    ]


def test_match_return_args(env: ModeEnv) -> None:
    body = SOCK_CREATE.format(pid=os.getpid()) + """      matchReturnArgs:
      - index: 0
        operator: LT
        values: ["0"]
"""
    with env.policy(policy("vkp-matchret", body)):
        evs = env.run_all(_sockets, ME)
    assert [_body(e)["return"] for e in evs] == [{"int_arg": -errno.EPROTONOSUPPORT}]


# ---- argument types ------------------------------------------------------------------------

def test_sock_arg_and_network_selectors(env: ModeEnv) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    body = f"""
  kprobes:
  - call: tcp_connect
    syscall: false
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: DAddr
        values: ["127.0.0.0/8"]
      - index: 0
        operator: DPort
        values: ["{port}"]
      - index: 0
        operator: Protocol
        values: ["IPPROTO_TCP"]
"""

    def trigger() -> None:
        with socket.create_connection(("127.0.0.1", port)):
            pass
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 1), 0.2):
            pass  # another port: no event
    try:
        with env.policy(policy("vkp-sock", body)):
            evs = env.run_all(trigger, ME)
    finally:
        srv.close()
    assert len(evs) == 1
    sock = _body(evs[0])["args"][0]["sock_arg"]
    assert sock["family"] == "AF_INET" and sock["type"] == "SOCK_STREAM"
    assert sock["protocol"] == "IPPROTO_TCP"
    assert (sock["daddr"], sock["dport"], sock["saddr"]) == ("127.0.0.1", port, "127.0.0.1")
    assert sock["sport"] > 0 and sock["state"] == "TCP_SYN_SENT"


def test_skb_arg(env: ModeEnv) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    body = f"""
  kprobes:
  - call: ip_output
    syscall: false
    args:
    - index: 2
      type: skb
    selectors:
    - matchArgs:
      - index: 2
        operator: DPort
        values: ["{port}"]
      - index: 2
        operator: Protocol
        values: ["IPPROTO_UDP"]
"""
    try:
        with env.policy(policy("vkp-skb", body)):
            evs = env.run_all(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
                b"12345", ("127.0.0.1", port)), ME)
    finally:
        rx.close()
    assert len(evs) == 1
    skb = _body(evs[0])["args"][0]["skb_arg"]
    assert (skb["daddr"], skb["dport"], skb["protocol"], skb["family"]) == (
        "127.0.0.1", port, "IPPROTO_UDP", "AF_INET")
    assert skb["len"] == 20 + 8 + 5 and skb["proto"] == 17


def _cap_eff() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def test_cred_resolve_capability_kernel_cap_t(env: ModeEnv) -> None:
    body = f"""
  kprobes:
  - call: cap_capable
    syscall: false
    args:
    - index: 0
      type: cred
    - index: 0
      type: kernel_cap_t
      resolve: "cap_effective"
    - index: 0
      type: uint32
      resolve: "euid.val"
    - index: 2
      type: capability
    selectors:
    - matchArgs:
      - index: 2
        operator: Equal
        values: ["10"]
      matchPIDs:
      - operator: In
        values: [{os.getpid()}]
"""

    def trigger() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 1023))  # privileged port: CAP_NET_BIND_SERVICE
    with env.policy(policy("vkp-caps", body)):
        evs = env.run_all(trigger, ME)
    assert evs, "no event for CAP_NET_BIND_SERVICE"
    args = _body(evs[0])["args"]
    cred = args[0]["process_credentials_arg"]
    assert cred["uid"] == os.getuid() and cred["euid"] == os.geteuid()
    assert "CAP_NET_BIND_SERVICE" in cred["caps"]["effective"]
    assert cred["user_ns"]["level"] == 0 and cred["user_ns"]["ns"]["is_host"]
    assert args[1] == {"kernel_cap_t_arg": f"{_cap_eff():016x}"}
    assert args[2] == {"uint_arg": os.geteuid()}
    assert args[3] == {"capability_arg": {"value": 10, "name": "CAP_NET_BIND_SERVICE"}}


def test_bpf_attr_prog_map_args(env: ModeEnv) -> None:
    body = """
  kprobes:
  - call: bpf_check
    syscall: false
    args:
    - index: 1
      type: bpf_attr
  - call: security_bpf_map
    syscall: false
    args:
    - index: 0
      type: bpf_map
  - call: security_bpf_prog
    syscall: false
    args:
    - index: 0
      type: bpf_prog
"""

    def trigger() -> None:
        from vigil.bpf import features as F
        F.clear_cache()
        F.probe("ringbuf")  # loads vg_p_ringbuf, creates map vg_probe_rb
    with env.policy(policy("vkp-bpf", body)):
        evs = env.run_all(trigger, ME)
    args = [_body(e)["args"][0] for e in evs]
    attrs = [a["bpf_attr_arg"] for a in args if "bpf_attr_arg" in a]
    ours = [a for a in attrs if a.get("ProgName") == "vg_p_ringbuf"]
    assert len(ours) == 1 and ours[0]["ProgType"] == "BPF_PROG_TYPE_RAW_TRACEPOINT", attrs
    assert ours[0]["InsnCnt"] > 1
    maps = [a["bpf_map_arg"] for a in args if "bpf_map_arg" in a]
    assert {"MapType": "BPF_MAP_TYPE_RINGBUF", "MaxEntries": 65536,
            "MapName": "vg_probe_rb"} in maps
    progs = [a["bpf_prog_arg"] for a in args if "bpf_prog_arg" in a]
    assert any(p.get("ProgName") == "vg_p_ringbuf" and p["InsnCnt"] > 0 for p in progs), progs


# ---- enforcement ---------------------------------------------------------------------------

def test_fmod_ret_override_security_function(env: ModeEnv, tdir: Path) -> None:
    need("fmod_ret_security")
    body = """
  kprobes:
  - call: security_inode_mkdir
    syscall: false
    return: true
    returnArg:
      index: 0
      type: int
    args:
    - index: 1
      type: dentry
    selectors:
    - matchArgs:
      - index: 1
        operator: Postfix
        values: ["/blocked"]
      matchActions:
      - action: Override
        argError: -1
"""
    results: dict[str, Any] = {}

    def trigger() -> None:
        for n in ("blocked", "allowed"):
            try:
                os.mkdir(tdir / n)
                results[n] = 0
            except OSError as err:
                results[n] = err.errno
    with env.policy(policy("vkp-override", body)) as info:
        assert "fmod_ret security_inode_mkdir" in info.info
        evs = env.run_all(trigger, ME)
    assert results == {"blocked": errno.EPERM, "allowed": 0}
    assert not (tdir / "blocked").exists() and (tdir / "allowed").is_dir()
    assert len(evs) == 1
    body_ = _body(evs[0])
    assert body_["action"] == "KPROBE_ACTION_OVERRIDE"
    assert body_["return"] == {"int_arg": -1}
    assert body_["args"][0] == {"path_arg": {"path": "/blocked"}}  # inside its filesystem


def test_function_list_override_one_fmod_ret_per_function(env: ModeEnv, tdir: Path) -> None:
    """Override on a list of kernel functions: each function its own fmod_ret hook; a
    matching mkdir and rmdir both fail with argError, others run."""
    need("fmod_ret_security")
    body = """
  lists:
  - name: dirops
    values: ["security_inode_mkdir", "security_inode_rmdir"]
  kprobes:
  - call: "list:dirops"
    syscall: false
    args:
    - index: 1
      type: dentry
    selectors:
    - matchArgs:
      - index: 1
        operator: Postfix
        values: ["/blocked"]
      matchActions:
      - action: Override
        argError: -13
"""
    (tdir / "blocked").mkdir()
    (tdir / "d").mkdir()
    results: dict[str, int] = {}

    def trigger() -> None:
        for name, op, path in (("rmdir", os.rmdir, tdir / "blocked"),
                               ("mkdir", os.mkdir, tdir / "d" / "blocked"),
                               ("allowed", os.mkdir, tdir / "allowed")):
            try:
                op(path)
                results[name] = 0
            except OSError as err:
                results[name] = err.errno
    with env.policy(policy("vkp-list-override", body)) as info:
        assert "fmod_ret security_inode_mkdir" in info.info, info.info
        assert "fmod_ret security_inode_rmdir" in info.info, info.info
        evs = env.run_all(trigger, ME)
    assert results == {"rmdir": errno.EACCES, "mkdir": errno.EACCES, "allowed": 0}
    assert (tdir / "blocked").is_dir() and not (tdir / "d" / "blocked").exists()
    names = sorted(_body(e)["function_name"] for e in evs)
    assert names == ["security_inode_mkdir", "security_inode_rmdir"], names
    assert all(_body(e)["action"] == "KPROBE_ACTION_OVERRIDE" for e in evs)


def test_override_rejected_with_reason(env: ModeEnv) -> None:
    from vigil.errors import PolicyError
    body = """
  kprobes:
  - call: tcp_connect
    syscall: false
    selectors:
    - matchActions:
      - action: Override
        argError: -1
"""
    with pytest.raises(PolicyError) as exc:
        env.manager.add(policy("vkp-badoverride", body), source="test")
    assert "Override needs a syscall (syscall: true) or a security_* function" in " ".join(
        str(d) for d in exc.value.diagnostics)


def test_lsm_file_open_override_denies(env: ModeEnv, tdir: Path) -> None:
    need("lsm")
    secret = tdir / "secret"
    other = tdir / "other"
    secret.write_text("s")
    other.write_text("o")
    body = f"""
  lsmhooks:
  - hook: file_open
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{secret}"]
      matchBinaries:
      - operator: In
        values: ["{CAT}"]
      matchActions:
      - action: Override
        argError: -13
"""
    with env.policy(policy("vkp-lsm", body)) as info:
        assert info.info == "BPF LSM file_open"
        procs: list[subprocess.CompletedProcess[bytes]] = []
        evs = env.run_all(lambda: procs.extend([
            subprocess.run([CAT, str(secret)], capture_output=True),
            subprocess.run([CAT, str(other)], capture_output=True)]))
        assert secret.read_text() == "s"  # this python process is not cat: allowed
    assert procs[0].returncode != 0 and b"Permission denied" in procs[0].stderr
    assert procs[1].stdout == b"o"
    assert len(evs) == 1
    assert next(iter(evs[0])) == "process_lsm"
    b = _body(evs[0])
    assert b["function_name"] == "file_open" and b["action"] == "KPROBE_ACTION_OVERRIDE"
    assert b["args"] == [{"file_arg": {"path": str(secret)}}]
    assert b["process"]["binary"] == CAT and b["policy_name"] == "vkp-lsm"


def test_lsm_bprm_check_denies_exec(env: ModeEnv, tdir: Path) -> None:
    need("lsm")
    exe = tdir / "vk-true"
    shutil.copy("/bin/true", exe)
    body = """
  lsmhooks:
  - hook: bprm_check_security
    args:
    - index: 0
      type: linux_binprm
    selectors:
    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/vk-true"]
      matchActions:
      - action: Override
        argError: -1
"""
    errors: list[int] = []

    def trigger() -> None:
        for prog in (str(exe), "/bin/true"):
            try:
                errors.append(subprocess.run([prog]).returncode)
            except OSError as err:
                errors.append(-(err.errno or 0))
    with env.policy(policy("vkp-bprm", body)):
        evs = env.run_all(trigger)
    assert errors == [-errno.EPERM, 0]
    assert len(evs) == 1
    b = _body(evs[0])
    assert b["function_name"] == "bprm_check_security"
    assert b["args"] == [{"linux_binprm_arg": {"path": str(exe)}}]
    assert b["action"] == "KPROBE_ACTION_OVERRIDE"


def test_fentries_section(env: ModeEnv, tdir: Path) -> None:
    need("fentry", "fexit")
    body = f"""
  fentries:
  - call: security_file_open
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{tdir}/f"]
"""
    (tdir / "f").write_text("x")
    with env.policy(policy("vkp-fentries", body)) as info:
        assert info.info == "fentry security_file_open"
        evs = env.run_all(lambda: (tdir / "f").read_text(), ME)
    assert [_body(e)["args"] for e in evs] == [[{"file_arg": {"path": f"{tdir}/f"}}]]


def test_check_reports_mechanisms(tmp_path: Path) -> None:
    from vigil.bpf import features as F
    pol = tmp_path / "p.yaml"
    pol.write_text(policy("vkp-check", FILE_OPEN.format(d="/x")))
    out = subprocess.run([sys.executable, "-m", "vigil", "tracingpolicy", "check", str(pol)],
                         capture_output=True, text=True)
    if not (F.probe("kprobe").ok or F.probe("fentry").ok):  # the hardened host: refused
        assert out.returncode == 4 and "kprobes are not available" in out.stdout, out.stdout
        return
    assert out.returncode == 0, out.stdout + out.stderr
    want = ("fentry security_file_open" if F.probe("fentry").ok else
            "kprobe.multi security_file_open" if F.probe("kprobe_multi").ok else
            "kprobe security_file_open")
    assert f"spec.kprobes[0]: {want}" in out.stdout, out.stdout
