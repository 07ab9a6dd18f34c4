"""Policy actions that act beyond the hook, in the real kernel: NotifyEnforcer with
spec.enforcers, Post with kernel/user stack traces, GetUrl / DnsLookup (the agent's
requests, to a local HTTP server and a local DNS responder, never the internet).

The same PolicyManager, ring buffer and pipeline as tests/kernel/test_policies.py.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_policies import Env, _body, openat_policy, touch
from vigil.actions_net import RequestLimits, Requester

pytestmark = pytest.mark.kernel

PY = os.path.realpath(sys.executable)


@pytest.fixture
def tdir() -> Iterator[Path]:
    d = Path("/tmp") / f"va-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _own_python(tdir: Path) -> str:
    """A copy of the interpreter under its own path, for matchBinaries."""
    dst = tdir / "vpy"
    shutil.copy2(PY, dst)
    return str(dst)


# ---- NotifyEnforcer + spec.enforcers -------------------------------------------------------

def _killer(binary: str, action: str) -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: va-killer
spec:
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2", "__ia32_sys_dup"]
  enforcers:
  - calls: ["list:dups"]
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - index: 4
      type: syscall64
    selectors:
    - matchArgs:
      - index: 0
        operator: InMap
        values: ["list:dups"]
      matchBinaries:
      - operator: In
        values: ["{binary}"]
      matchActions:
      - {action}
"""


def test_notify_enforcer_kills_at_the_syscall(env: Env, tdir: Path) -> None:
    vpy = _own_python(tdir)
    code = "import os, sys; sys.stdout.write('before\\n'); sys.stdout.flush(); " \
           "os.dup2(1, 7); sys.stdout.write('after\\n')"
    procs: list[subprocess.CompletedProcess[bytes]] = []
    with env.policy(_killer(vpy, "action: NotifyEnforcer\n        argError: -1\n"
                                 "        argSig: 9")):
        evs = env.run(lambda: procs.append(subprocess.run(
            [vpy, "-c", code], capture_output=True, timeout=30)))
        # the same code under another binary is not notified, so not killed
        other = subprocess.run([PY, "-c", code], capture_output=True, timeout=30)
        info = next(i for i in env.manager.list() if i.name == "va-killer")
    assert "spec.enforcers[0]" in [h.section for h in info.hooks]
    assert ("raw_tp sys_exit filtered to dup, dup2" in info.info or
            "fmod_ret __x64_sys_dup, __x64_sys_dup2" in info.info)
    assert info.stats.signal == 1  # the enforcer's SIGKILL, in the policy's counters
    p = procs[0]
    assert p.returncode == -9
    assert p.stdout == b"before\n"  # killed at dup2(): never printed "after"
    assert other.returncode == 0 and other.stdout == b"before\nafter\n"
    mine = [e for e in evs if _body(e)["process"]["binary"] == vpy]
    assert [_body(e)["action"] for e in mine] == ["KPROBE_ACTION_NOTIFYENFORCER"]
    assert _body(mine[0])["args"][0]["syscall_id"] == {"id": 33, "abi": "x64"}


def test_notify_enforcer_error_without_signal(env: Env, tdir: Path) -> None:
    """argError alone: where the kernel allows fmod_ret on syscall functions the notified
    dup2 does not run and returns EPERM (-1); elsewhere the policy is refused with that
    reason, nothing loaded."""
    from vigil.bpf import features as F
    from vigil.errors import FeatureNotSupported
    vpy = _own_python(tdir)
    pol = _killer(vpy, "action: NotifyEnforcer\n        argError: -1")
    code = ("import os\ntry:\n    os.dup2(1, 7)\n    print('ran')\n"
            "except OSError as e:\n    print('errno', e.errno)\n")
    if not F.probe("fmod_ret_syscall").ok:
        with pytest.raises(FeatureNotSupported, match="cannot make a syscall return argError"):
            env.manager.add(pol, source="test")
        return
    with env.policy(pol):
        info = next(i for i in env.manager.list() if i.name == "va-killer")
        p = subprocess.run([vpy, "-c", code], capture_output=True, timeout=30)
        other = subprocess.run([PY, "-c", code], capture_output=True, timeout=30)
    assert "fmod_ret __x64_sys_dup, __x64_sys_dup2" in info.info
    assert p.returncode == 0 and p.stdout == b"errno 1\n"  # dup2 returned -1: EPERM
    assert other.stdout == b"ran\n"


def test_notify_enforcer_monitor_mode_only_reports(env: Env, tdir: Path) -> None:
    vpy = _own_python(tdir)
    pol = _killer(vpy, "action: NotifyEnforcer\n        argSig: 9").replace(
        "spec:\n", "spec:\n  options:\n  - name: policy-mode\n    value: monitor\n", 1)
    procs: list[subprocess.CompletedProcess[bytes]] = []
    with env.policy(pol):
        evs = env.run(lambda: procs.append(subprocess.run(
            [vpy, "-c", "import os; os.dup2(1, 7)"], capture_output=True, timeout=30)))
    assert procs[0].returncode == 0
    mine = [e for e in evs if _body(e)["process"]["binary"] == vpy]
    assert [_body(e)["action"] for e in mine] == ["KPROBE_ACTION_NOTIFYENFORCER"]


# ---- stack traces ------------------------------------------------------------------------

def test_post_with_kernel_and_user_stack_traces(env: Env, tdir: Path) -> None:
    target = tdir / "stacked"
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchActions:
      - action: Post
        kernelStackTrace: true
        userStackTrace: true"""
    with env.policy(openat_policy("va-stacks", sel)):
        evs = env.run(lambda: touch(target), {os.getpid()})
    assert len(evs) == 1
    body = _body(evs[0])
    # the first user frame is libc's openat wrapper, in libc's file
    ust = body["user_stack_trace"]
    top = ust[0]
    assert top["module"].endswith(("/libc.so.6",)), top
    assert "open" in top["symbol"], top
    print("user_stack_trace:", ust[:2])
    # the kernel stack on a syscall tracepoint: some kernels (Debian's 6.1) give no frames
    # there, and the field is then absent; a kernel-function hook must give them
    kst = body.get("kernel_stack_trace")
    if kst is not None:
        _syscall_path(kst)
        print("kernel_stack_trace:", kst[:4])
    from vigil.bpf import features as F
    if not (F.probe("kprobe").ok or F.probe("fentry").ok):
        assert kst is not None, "no kernel stack on the syscall tracepoint, no kprobes"
        return
    pol = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: va-kstack
spec:
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{target}"]
      matchActions:
      - action: Post
        kernelStackTrace: true
"""
    with env.policy(pol) as info:
        evs = env.run(lambda: touch(target), {os.getpid()})
    assert evs, info.info  # one per open of the file
    kst = _body(evs[0])["kernel_stack_trace"]
    _syscall_path(kst)
    print(f"kernel_stack_trace ({info.info}):", kst[:4])


def _syscall_path(kst: list[dict]) -> None:
    """Kernel frames of a syscall, symbolized from /proc/kallsyms."""
    ksyms = [e.get("symbol") for e in kst]
    assert "do_syscall_64" in ksyms, ksyms
    assert all(int(e["address"]) >= 1 << 63 for e in kst)


def test_stack_traces_on_tracepoints_are_refused(env: Env) -> None:
    from vigil.errors import PolicyError
    pol = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: va-tp-stacks
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_getpgid
    selectors:
    - matchActions:
      - action: Post
        kernelStackTrace: true
"""
    with pytest.raises(PolicyError, match="process_kprobe events only"):
        env.manager.add(pol, source="test")


# ---- GetUrl / DnsLookup ------------------------------------------------------------------

class _Http(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_a: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    _Http.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Http.seen
    srv.shutdown()
    srv.server_close()
    t.join(5)


class _Dns:
    """A test-only DNS responder on 127.0.0.1 (UDP): answers A queries with 192.0.2.1
    and records the names asked."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.names: list[tuple[str, str]] = []
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        import dns.message
        import dns.rdatatype
        import dns.rrset
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            q = dns.message.from_wire(data)
            name = q.question[0].name
            rtype = dns.rdatatype.to_text(q.question[0].rdtype)
            self.names.append((name.to_text(), rtype))
            r = dns.message.make_response(q)
            if rtype == "A":
                r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1"))
            self.sock.sendto(r.to_wire(), peer)

    def close(self) -> None:
        self._stop = True
        self._t.join(5)
        self.sock.close()


@pytest.fixture
def dns_server() -> Iterator[_Dns]:
    d = _Dns()
    yield d
    d.close()


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_get_url_and_dns_lookup(env: Env, tdir: Path, http_server: tuple[str, list[str]],
                                dns_server: _Dns) -> None:
    base, seen = http_server
    req = Requester(RequestLimits(timeout=3.0, dns_servers=("127.0.0.1",),
                                  dns_port=dns_server.port))
    env.policy_events.request = req.submit
    url_file, dns_file = tdir / "fetch", tdir / "resolve"
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{url_file}"]
      matchActions:
      - action: GetUrl
        argUrl: {base}/vigil-test?x=1
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{dns_file}"]
      matchActions:
      - action: DnsLookup
        argFqdn: vigil-test.example"""
    try:
        with env.policy(openat_policy("va-requests", sel)):
            evs = env.run(lambda: touch(url_file, dns_file), {os.getpid()})
        assert [_body(e)["action"] for e in evs] == ["KPROBE_ACTION_GETURL",
                                                     "KPROBE_ACTION_DNSLOOKUP"]
        assert _wait(lambda: seen == ["/vigil-test?x=1"]), seen
        assert _wait(lambda: ("vigil-test.example.", "A") in dns_server.names), \
            dns_server.names
        assert _wait(lambda: req.counts[("url", "ok")] == 1 and req.counts[("dns", "ok")] == 1)
    finally:
        env.policy_events.request = None
        req.stop()


def test_requests_are_bounded_and_drops_counted(http_server: tuple[str, list[str]]) -> None:
    """No kernel needed: a full queue and the rate limit drop requests, counted."""
    base, seen = http_server
    req = Requester(RequestLimits(workers=1, queue=2, rate=1000.0, burst=5, timeout=2.0))
    try:
        results = [req.submit("url", f"{base}/n{i}") for i in range(50)]
        assert results.count(True) <= 5
        dropped = req.counts[("url", "dropped_rate_limited")] + \
            req.counts[("url", "dropped_queue_full")]
        assert results.count(False) == dropped > 0
        assert _wait(lambda: req.counts[("url", "ok")] == results.count(True))
    finally:
        req.stop()
