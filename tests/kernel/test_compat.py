"""Compatibility report: Vigil's own equivalents of Tetragon's public example policies
(examples/tracingpolicy), each loaded and exercised with a real trigger on this kernel.

A case whose features this kernel has must load, fire and pass its check; a case whose
features it lacks must be refused with a reason (recorded, then skipped). Every outcome
goes to build/kernel-lane/results/compat-<kernel>.json, from which docs/kernels.md's
table is written (tools/compat_report.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_kprobes import ModeEnv, _body
from vigil.errors import FeatureNotSupported, PolicyError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "build" / "kernel-lane" / "results"
PY = os.path.realpath(sys.executable)
Event = dict[str, Any]


@dataclass
class Case:
    example: str                      # the Tetragon example this stands for
    spec: str                         # our own policy (spec: body), {d} = a fresh tmpfs dir
    trigger: Callable[[Path], Any]
    check: Callable[[list[Event], Any, Path], None]
    # features the BPF mechanism needs ("a|b": either). Without them the case must be
    # refused with a reason, or load through another mechanism (recorded, not exercised)
    needs: tuple[str, ...] = ("kprobe|fentry",)
    note: str = ""


# ---- triggers ---------------------------------------------------------------------------

def _read(d: Path) -> None:
    (d / "watched").write_text("x")
    (d / "watched").read_text()


def _exec_copy(d: Path) -> int:
    exe = d / "vk-prog"
    shutil.copy("/bin/true", exe)
    try:
        return subprocess.run([str(exe)]).returncode
    except OSError as err:
        return -(err.errno or 0)


def _mkdir(d: Path) -> int:
    r = subprocess.run(["/bin/mkdir", str(d / "newdir")], capture_output=True)
    return r.returncode


def _setuid_child(d: Path) -> int:
    return subprocess.run([PY, "-c", "import os; os.setgid(65534); os.setuid(65534)"]).returncode


def _tcp(d: Path) -> int:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            pass
    return port


def _udp(d: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"q", ("127.0.0.1", 53))


def _bind_priv(d: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 1023))


def _symlink(d: Path) -> None:
    (d / "target").write_text("t")
    (d / "link").symlink_to(d / "target")
    (d / "link").read_text()


def _userns_unpriv(d: Path) -> int:
    return subprocess.run(["/usr/bin/unshare", "-U", "/bin/true"], user=65534, group=65534,
                          extra_groups=[]).returncode


def _link(d: Path) -> int:
    (d / "src").write_text("s")
    try:
        os.link(d / "src", d / "dst")
        return 0
    except OSError as err:
        return err.errno or 0


def _bpf_load(d: Path) -> None:
    from vigil.bpf import features as F
    F.clear_cache()
    F.probe("raw_tp")


# ---- checks -------------------------------------------------------------------------------

def _mine(evs: list[Event]) -> list[dict[str, Any]]:
    return [_body(e) for e in evs]


def _has_path(key: str, path_of: Callable[[Path], str]) -> Callable[[list[Event], Any, Path], None]:
    def check(evs: list[Event], _r: Any, d: Path) -> None:
        want = path_of(d)
        paths = [a[key]["path"] for b in _mine(evs) for a in b.get("args", []) if key in a]
        assert want in paths, paths
    return check


def _nonempty(evs: list[Event], _r: Any, _d: Path) -> None:
    assert evs


def _override_mkdir(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc != 0 and evs and _body(evs[0])["action"] == "KPROBE_ACTION_OVERRIDE"


def _creds_changed(evs: list[Event], _r: Any, _d: Path) -> None:
    uids = [a["process_credentials_arg"]["uid"] for b in _mine(evs) for a in b["args"]
            if "process_credentials_arg" in a]
    assert 65534 in uids, uids


def _tcp_seen(evs: list[Event], port: Any, _d: Path) -> None:
    socks = [a["sock_arg"] for b in _mine(evs) for a in b["args"] if "sock_arg" in a]
    assert any(s.get("dport") == port and s.get("daddr") == "127.0.0.1" for s in socks), socks


def _udp_53(evs: list[Event], _r: Any, _d: Path) -> None:
    skbs = [a["skb_arg"] for b in _mine(evs) for a in b["args"] if "skb_arg" in a]
    assert any(s.get("dport") == 53 and s.get("protocol") == "IPPROTO_UDP" for s in skbs), skbs


def _killed(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc == -9 and any(_body(e)["action"] == "KPROBE_ACTION_SIGKILL" for e in evs), rc


def _denied_exec(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc == -errno.EPERM and evs and _body(evs[0])["action"] == "KPROBE_ACTION_OVERRIDE"


def _bpf_seen(evs: list[Event], _r: Any, _d: Path) -> None:
    names = [a["bpf_attr_arg"].get("ProgName") for b in _mine(evs) for a in b["args"]
             if "bpf_attr_arg" in a]
    assert "vg_p_raw_tp" in names, names


def _link_refused(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc == errno.EPERM and evs


CASES = [
    Case("fd_install_caps.yaml", """
  kprobes:
  - call: fd_install
    syscall: false
    args:
    - {index: 0, type: int}
    - {index: 1, type: file}
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/watched"]}]
      matchCapabilities: [{type: Effective, operator: In, values: [CAP_SYS_ADMIN]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched")),
    Case("kprobe_commit_creds.yaml", """
  kprobes:
  - call: commit_creds
    syscall: false
    args: [{index: 0, type: cred}]
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
""" % PY, _setuid_child, _creds_changed),
    Case("security_bprm_check.yaml", """
  kprobes:
  - call: security_bprm_check
    syscall: false
    args: [{index: 0, type: linux_binprm}]
    selectors:
    - matchArgs: [{index: 0, operator: Postfix, values: ["/vk-prog"]}]
""", _exec_copy, _has_path("linux_binprm_arg", lambda d: f"{d}/vk-prog")),
    Case("process-exec/process-exec-elf-begin.yaml", """
  kprobes:
  - call: security_bprm_creds_from_file
    syscall: false
    args: [{index: 1, type: file}]
    selectors:
    - matchArgs: [{index: 1, operator: Postfix, values: ["/vk-prog"]}]
""", _exec_copy, _has_path("file_arg", lambda d: f"{d}/vk-prog")),
    Case("security_inode_follow_link.yaml", """
  kprobes:
  - call: security_inode_follow_link
    syscall: false
    args: [{index: 0, type: dentry}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["/link"]}]
""", _symlink, _has_path("path_arg", lambda d: "/link"),
         note="dentry paths are relative to their filesystem"),
    Case("filename_monitoring.yaml", """
  kprobes:
  - call: security_file_permission
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 0, type: file}, {index: 1, type: int}]
    selectors:
    - matchArgs: [{index: 0, operator: Prefix, values: ["{d}/"]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched")),
    Case("override-security.yaml", """
  kprobes:
  - call: security_inode_mkdir
    syscall: false
    args: [{index: 1, type: dentry}]
    selectors:
    - matchBinaries: [{operator: In, values: ["/usr/bin/mkdir", "/bin/mkdir"]}]
      matchActions: [{action: Override, argError: -1}]
""", _mkdir, _override_mkdir, needs=("fmod_ret_security",)),
    Case("tcp-connect.yaml", """
  kprobes:
  - call: tcp_connect
    syscall: false
    args: [{index: 0, type: sock}]
    selectors:
    - matchArgs: [{index: 0, operator: DAddr, values: ["127.0.0.1"]}]
""", _tcp, _tcp_seen),
    Case("dns-only-specified-servers.yaml", """
  kprobes:
  - call: ip_output
    syscall: false
    args: [{index: 2, type: skb}]
    selectors:
    - matchArgs:
      - {index: 2, operator: DPort, values: ["53"]}
      - {index: 2, operator: Protocol, values: ["IPPROTO_UDP"]}
""", _udp, _udp_53, note="observe only here (the example's Sigkill is tested elsewhere)"),
    Case("security-socket-connect.yaml", """
  kprobes:
  - call: security_socket_connect
    syscall: false
    args: [{index: 0, type: socket}, {index: 1, type: sockaddr}]
    selectors:
    - matchArgs: [{index: 1, operator: Family, values: ["AF_INET"]}]
""", _tcp, _nonempty),
    Case("process-credentials/creds-capability-usage.yaml", """
  kprobes:
  - call: cap_capable
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 2, type: capability}]
    selectors:
    - matchArgs: [{index: 2, operator: Equal, values: ["10"]}]
      matchActions: [{action: Post, rateLimit: "1m"}]
""", _bind_priv, _nonempty),
    Case("bpf.yaml", """
  kprobes:
  - call: bpf_check
    syscall: false
    args: [{index: 1, type: bpf_attr}]
""", _bpf_load, _bpf_seen),
    Case("sandbox/.../kill_unprivileged_user_namespace.yaml", """
  kprobes:
  - call: create_user_ns
    syscall: false
    selectors:
    - matchCapabilities: [{type: Effective, operator: NotIn, values: [CAP_SYS_ADMIN]}]
      matchBinaries: [{operator: In, values: ["/usr/bin/unshare"]}]
      matchActions: [{action: Sigkill}]
""", _userns_unpriv, _killed),
    Case("lsm_file_open.yaml", """
  lsmhooks:
  - hook: file_open
    args: [{index: 0, type: file}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["{d}/watched"]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched"), needs=("lsm",)),
    Case("lsm_bprm_check.yaml", """
  lsmhooks:
  - hook: bprm_check_security
    args: [{index: 0, type: linux_binprm}]
    selectors:
    - matchArgs: [{index: 0, operator: Postfix, values: ["/vk-prog"]}]
      matchActions: [{action: Override, argError: -1}]
""", _exec_copy, _denied_exec, needs=("lsm",), note="without the example's imaHash"),
    Case("hardlink-override.yaml", """
  kprobes:
  - call: sys_linkat
    syscall: true
    args: [{index: 1, type: string}]
    selectors:
    - matchArgs: [{index: 1, operator: Postfix, values: ["/src"]}]
      matchActions: [{action: Override, argError: -1}]
""", _link, _link_refused, needs=("fmod_ret_syscall",)),
]


@pytest.fixture(scope="module")
def env() -> Iterator[ModeEnv]:
    e = ModeEnv()
    yield e
    e.close()


@pytest.fixture(scope="module")
def report() -> Iterator[list[dict[str, str]]]:
    rows: list[dict[str, str]] = []
    yield rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"compat-{os.uname().release}.json"
    out.write_text(json.dumps({"kernel": os.uname().release, "cases": rows}, indent=1) + "\n")


@pytest.fixture
def tdir() -> Iterator[Path]:
    d = Path("/tmp") / f"vkc-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=755", "vkc", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        shutil.rmtree(d, ignore_errors=True)


def _missing(needs: tuple[str, ...]) -> list[str]:
    from vigil.bpf import features as F
    return [n for n in needs if not any(F.probe(x).ok for x in n.split("|"))]


def _reason(err: Exception) -> str:
    diags = getattr(err, "diagnostics", None)
    if diags:
        return "; ".join(getattr(d, "message", str(d)) for d in diags)
    return str(err).split("\n")[0]


@pytest.mark.parametrize("case", CASES, ids=[c.example.rsplit("/", 1)[-1] for c in CASES])
def test_example(env: ModeEnv, tdir: Path, report: list[dict[str, str]], case: Case) -> None:
    doc = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n"
           f"  name: compat-{uuid.uuid4().hex[:6]}\nspec:" + case.spec.replace("{d}", str(tdir)))
    missing = _missing(case.needs)
    row = {"example": case.example, "note": case.note}
    with contextlib.ExitStack() as stack:
        try:
            info = stack.enter_context(env.policy(doc))
        except (PolicyError, FeatureNotSupported) as err:
            row.update(status="cannot run", detail=_reason(err))
            report.append(row)
            if not missing:
                raise  # this kernel has what the case needs: it must load
            pytest.skip(f"{case.example}: {row['detail']}")
        row["mechanism"] = info.info
        if missing:  # loaded through another mechanism (fanotify, cgroup programs): not
            # exercised here, the enforcement tests of that mechanism cover it
            row.update(status="loads", detail=f"without {', '.join(missing)}: {info.info}")
            report.append(row)
            pytest.skip(f"{case.example}: {row['detail']}")
        result: list[Any] = []
        evs = env.run_all(lambda: result.append(case.trigger(tdir)))
        try:
            case.check(evs, result[0], tdir)
        except AssertionError as err:
            row.update(status="FAIL", detail=str(err).split("\n")[0])
            report.append(row)
            raise
        row.update(status="pass", detail=f"{len(evs)} event(s)")
        report.append(row)
