"""security_socket_* Override enforced by cgroup programs on the real kernel.

Victims run in a cgroup of their own, the policy is scoped to it (vigil-cgroups), the
servers run in this process, outside. Checked: the errno, that the connection / the
datagram / the bind did not happen, the process_kprobe event with the sockaddr argument
(through the real ring buffer, pipeline and policy events), that processes outside the
cgroup are unaffected, monitor mode, and that no program or link is left behind.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from vigil.bench.flood import Cgroup
from vigil.errors import PolicyError
from vigil.stream.throttle import cgroup2_mount

PY = os.path.realpath(sys.executable)
VICTIM = textwrap.dedent("""\
    import json, socket, sys
    op, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if op == "sendto" else socket.SOCK_STREAM
    s = socket.socket(fam, kind)
    try:
        if op == "connect":
            s.settimeout(5)
            s.connect((host, port))
        elif op == "rawconnect":  # connect(2)'s own result, whatever its sign
            import ctypes, struct
            libc = ctypes.CDLL(None, use_errno=True)
            sa = struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port),
                             socket.inet_aton(host))
            out = {"ok": True, "ret": libc.connect(s.fileno(), sa, len(sa))}
            print(json.dumps(out), flush=True)
            sys.exit(0)
        elif op == "bind":
            s.bind((host, port))
        else:
            s.sendto(b"ping", (host, port))
        out = {"ok": True}
    except OSError as e:
        out = {"ok": False, "errno": e.errno}
    print(json.dumps(out), flush=True)
""")


class Env:
    def __init__(self, tmp: Any) -> None:
        from vigil.daemon.policies import PolicyManager
        from vigil.enforce.service import EnforceConfig, Enforcement
        from vigil.stream.pipeline import EventOptions, Pipeline, measure_boot_wall_ns
        from vigil.policy.compiler import KernelView
        from vigil.stream.policy_events import HookRegistry, PolicyEvents
        from vigil.process.cache import ProcessCache
        from vigil.sensors.base import BaseSensor, BaseSensorConfig
        self.victim = tmp / "victim.py"
        self.victim.write_text(VICTIM)
        self.cg = Cgroup(f"vigil-sock-test-{os.getpid()}-{time.monotonic_ns() % 10**6}")
        self.scope = "/" + self.cg.name
        self.base = BaseSensor(BaseSensorConfig(ring_bytes=4 << 20))
        self.base.load()
        bw = measure_boot_wall_ns()
        self.pipe = Pipeline(ProcessCache(), EventOptions(node_name="test"), lambda: bw)
        registry = HookRegistry()
        PolicyEvents(self.pipe, registry)
        self.mgr = PolicyManager(self.base, registry, view=lambda: KernelView(),
                                 enforcement=Enforcement(EnforceConfig()))
        self.events: list[dict[str, Any]] = []

    def add(self, text: str) -> None:
        self.mgr.add(text, source="test")

    def run(self, op: str, host: str, port: int, scoped: bool = True) -> tuple[int, dict[str, Any]]:
        cmd = f"exec {PY} {self.victim} {op} {host} {port}"
        if scoped:
            cmd = f"echo $$ > {self.cg.procs_file} && {cmd}"
        p = subprocess.Popen(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=30)
        return p.pid, json.loads(out.strip().splitlines()[-1])

    def kprobe_events(self, pid: int | None = None) -> list[dict[str, Any]]:
        time.sleep(0.1)
        self.events += self.pipe.handle(self.base.ring.drain())
        return [e["process_kprobe"] for e in self.events if "process_kprobe" in e
                and (pid is None or e["process_kprobe"]["process"]["pid"] == pid)]

    def link_ids(self) -> list[int]:
        enf = self.mgr.enforcement
        return [i for lo in enf_loaded(self.mgr) for i in lo.sock.link_ids] if enf else []

    def close(self) -> None:
        try:
            self.mgr.close()
        finally:
            self.base.close()
            self.cg.remove()


def enf_loaded(mgr: Any) -> list[Any]:
    return [lo for lo in mgr._enforced.values() if lo.sock is not None]


def live_links(ids: list[int]) -> set[int]:
    out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True)
    return set(ids) & {lk["id"] for lk in json.loads(out.stdout or "[]")}


@pytest.fixture
def env(tmp_path: Any) -> Iterator[Env]:
    if not cgroup2_mount():
        pytest.skip("needs a cgroup2 mount")
    os.chmod(tmp_path, 0o755)
    e = Env(tmp_path)
    ids: list[int] = []
    try:
        yield e
        ids = e.link_ids()
    finally:
        e.close()
    assert not live_links(ids), "cgroup links left behind"


@pytest.fixture
def server() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0))
    s.listen(16)
    s.setblocking(False)
    yield s
    s.close()


def accepted(srv: socket.socket) -> int:
    n = 0
    time.sleep(0.1)
    while True:
        try:
            c, _ = srv.accept()
            c.close()
            n += 1
        except BlockingIOError:
            return n


def policy(scope: str, body: str, mode: str = "") -> str:
    opts = f"[{{name: vigil-cgroups, value: {scope}}}" + (
        f", {{name: policy-mode, value: {mode}}}]" if mode else "]")
    return ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: sock-test}\n"
            f"spec:\n  options: {opts}\n" + textwrap.indent(textwrap.dedent(body), "  "))


def connect_rule(port: int, err: int = -111, op: str = "DAddr", addr: str = "127.0.0.0/8") -> str:
    return f"""\
        kprobes:
        - call: security_socket_connect
          syscall: false
          message: egress blocked
          args: [{{index: 0, type: socket}}, {{index: 1, type: sockaddr}}]
          selectors:
          - matchArgs:
            - {{index: 0, operator: {op}, values: ["{addr}"]}}
            - {{index: 1, operator: SPort, values: ["{port}"]}}
            matchActions: [{{action: Override, argError: {err}}}]
        """


def test_connect_refused_in_scope_only(env: Env, server: socket.socket) -> None:
    port = server.getsockname()[1]
    env.add(policy(env.scope, connect_rule(port)))
    pid, res = env.run("connect", "127.0.0.1", port)
    assert res == {"ok": False, "errno": errno.ECONNREFUSED}
    assert env.run("connect", "::ffff:127.0.0.1", port)[1] == {"ok": False, "errno": errno.ECONNREFUSED}
    assert accepted(server) == 0, "a refused connection reached the server"
    (ev,) = env.kprobe_events(pid)
    assert ev["function_name"] == "security_socket_connect"
    assert ev["args"] == [{"sockaddr_arg": {"family": "AF_INET", "addr": "127.0.0.1", "port": port}}]
    assert ev["action"] == "KPROBE_ACTION_OVERRIDE" and ev["policy_name"] == "sock-test"
    assert ev["message"] == "egress blocked"
    assert env.run("connect", "127.0.0.1", port, scoped=False)[1] == {"ok": True}
    assert accepted(server) == 1


def test_not_daddr_allow_list_and_eperm(env: Env, server: socket.socket) -> None:
    port = server.getsockname()[1]
    env.add(policy(env.scope, connect_rule(port, err=-1, op="NotDAddr", addr="10.0.0.0/8")))
    assert env.run("connect", "127.0.0.1", port)[1] == {"ok": False, "errno": errno.EPERM}
    assert accepted(server) == 0


def test_positive_arg_error_is_refused_without_fmod_ret(env: Env,
                                                       server: socket.socket) -> None:
    """Override argError: 1 means "the call returns 1" (Tetragon's fmod_ret). A cgroup
    program cannot return that (the kernel turns any refusal into an errno: checked here
    with connect(2)'s own result), so without fmod_ret the policy is refused whole."""
    port = server.getsockname()[1]
    with pytest.raises(PolicyError, match=r"argError: 1 cannot be honoured here"):
        env.add(policy(env.scope, connect_rule(port, err=1)))
    assert not enf_loaded(env.mgr)
    assert env.run("rawconnect", "127.0.0.1", port)[1] == {"ok": True, "ret": 0}
    assert accepted(server) == 1


def test_monitor_mode_only_reports(env: Env, server: socket.socket) -> None:
    port = server.getsockname()[1]
    env.add(policy(env.scope, connect_rule(port), mode="monitor"))
    pid, res = env.run("connect", "127.0.0.1", port)
    assert res == {"ok": True} and accepted(server) == 1
    (ev,) = env.kprobe_events(pid)
    assert ev["action"] == "KPROBE_ACTION_OVERRIDE"


def test_udp_sendmsg_refused(env: Env) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    port = rx.getsockname()[1]
    try:
        env.add(policy(env.scope, f"""\
            lsmhooks:
            - hook: socket_sendmsg
              args: [{{index: 1, type: sockaddr}}]
              selectors:
              - matchArgs: [{{index: 1, operator: SPort, values: ["{port}"]}}]
                matchActions: [{{action: Override, argError: -1}}]
            """))
        pid, res = env.run("sendto", "127.0.0.1", port)
        assert res == {"ok": False, "errno": errno.EPERM}
        time.sleep(0.1)
        with pytest.raises(BlockingIOError):
            rx.recv(16)
        (ev,) = env.kprobe_events(pid)
        assert ev["function_name"] == "security_socket_sendmsg"
        assert env.run("sendto", "127.0.0.1", port, scoped=False)[1] == {"ok": True}
        time.sleep(0.1)
        assert rx.recv(16) == b"ping"
    finally:
        rx.close()


def test_bind_refused(env: Env) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env.add(policy(env.scope, f"""\
        lsmhooks:
        - hook: socket_bind
          args: [{{index: 1, type: sockaddr}}]
          selectors:
          - matchArgs: [{{index: 1, operator: SPort, values: ["{port}"]}}]
            matchActions: [{{action: Override, argError: -13}}]
        """))
    assert env.run("bind", "127.0.0.1", port)[1] == {"ok": False, "errno": errno.EACCES}
    assert env.run("bind", "127.0.0.1", port, scoped=False)[1] == {"ok": True}


def test_match_binaries(env: Env, server: socket.socket) -> None:
    port = server.getsockname()[1]
    rule = connect_rule(port).replace(
        "            matchActions", f"            matchBinaries: [{{operator: In, values: [{PY}]}}]\n"
        "            matchActions")
    env.add(policy(env.scope, rule))
    assert env.run("connect", "127.0.0.1", port)[1]["ok"] is False
    env.mgr.delete("sock-test")
    env.add(policy(env.scope, rule.replace(PY, "/nonexistent")))
    assert env.run("connect", "127.0.0.1", port)[1] == {"ok": True}
