"""The agent on a freshly booted host: nothing mounted for it.

Each test runs the agent (or ``vigil probe``) under tools/fresh-host.sh, a private mount
namespace in which tracefs, debugfs and bpffs are unmounted first, whatever the machine or
an earlier test left mounted. The agent must mount what it needs, say so in its log, load
a syscall policy and deliver its events; the mounts vanish with the namespace, so the
test's own view of the machine is unchanged afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess

ROOT = Path(__file__).resolve().parents[2]
FRESH = (str(ROOT / "tools" / "fresh-host.sh"),)
EXAMPLE = ROOT / "examples" / "etc-writes.yaml"


def _pseudo_mounts() -> list[str]:
    out = subprocess.run(["findmnt", "-rn", "-t", "tracefs,debugfs,bpf", "-o", "TARGET,FSTYPE"],
                         capture_output=True, text=True)
    return sorted(out.stdout.splitlines())


def _etc_write_probe() -> int:
    """Open an existing /etc file for writing (O_WRONLY|O_APPEND, nothing written: the
    file is unchanged) in a child process; its pid."""
    code = "import os; os.close(os.open('/etc/hostname', os.O_WRONLY | os.O_APPEND))"
    child = subprocess.Popen([sys.executable, "-c", code])
    child.wait()
    return child.pid


def test_agent_mounts_tracefs_and_runs_the_readme_policy(tmp_path: Path) -> None:
    before = _pseudo_mounts()
    with AgentProcess(tmp_path, "--tracing-policy", str(EXAMPLE), wrapper=FRESH) as agent:
        log = "".join(agent.stderr)
        assert "mounted tracefs on /sys/kernel/tracing" in log, log
        assert "policy etc-writes loaded" in log, log
        pid = _etc_write_probe()
        events = agent.wait_for(lambda e: e.get("process_kprobe", {}).get("process", {})
                                .get("pid") == pid)
        assert events, "".join(agent.stderr[-20:])
        kp = events[0]["process_kprobe"]
        assert kp["policy_name"] == "etc-writes"
        assert kp["args"][0] == {"string_arg": "/etc/hostname", "label": "path"}
        assert agent.stop() == 0
    assert _pseudo_mounts() == before


def test_probe_mounts_what_it_needs_and_reports_tracepoints(tmp_path: Path) -> None:
    before = _pseudo_mounts()
    out = subprocess.run([*FRESH, sys.executable, "-m", "vigil", "probe", "-o", "json"],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert out.returncode == 0, out.stderr
    assert "mounted tracefs on /sys/kernel/tracing" in out.stderr
    probes = {p["name"]: p for p in json.loads(out.stdout)["probes"]}
    assert probes["tracepoint"]["ok"], probes["tracepoint"]
    assert _pseudo_mounts() == before


def test_fresh_namespace_really_has_no_tracefs() -> None:
    """The wrapper itself: inside, no tracefs/debugfs/bpffs, whatever is mounted outside."""
    out = subprocess.run([*FRESH, "findmnt", "-rn", "-t", "tracefs,debugfs,bpf"],
                         capture_output=True, text=True)
    assert out.stdout == ""


def test_a_refused_mount_is_named_in_the_policy_error() -> None:
    """Where tracefs cannot be mounted (here: a user namespace on a fresh host, where the
    kernel refuses tracefs mounts), a syscall policy is refused with the mount's errno,
    not with "not supported on this kernel"."""
    code = ("from vigil.daemon.policies import read_format_mounting\n"
            "from vigil.policy.compiler import CompileError, KernelView, compile_policy, "
            "diagnostic\n"
            "from vigil.policy.loader import load_policy_file\n"
            f"p = load_policy_file({str(EXAMPLE)!r})\n"
            "try:\n"
            "    compile_policy(p, KernelView(formats=read_format_mounting))\n"
            "except CompileError as e:\n"
            "    print(diagnostic(e, p, 'etc-writes.yaml'))\n")
    out = subprocess.run([*FRESH, "unshare", "--user", "--map-root-user", "--mount",
                          sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == (
        "etc-writes.yaml:8:11: error: spec.kprobes[0].call: syscall hooks run on tracepoint "
        "syscalls/sys_enter_openat, whose format cannot be read: cannot mount tracefs on "
        "/sys/kernel/tracing: EPERM (Operation not permitted); debugfs on /sys/kernel/debug: "
        "EPERM (Operation not permitted)"), out.stderr


TRACEPOINT_POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: tp-openat
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 5
      type: string
    selectors:
    - matchArgs:
      - index: 5
        operator: Prefix
        values: ["/etc/"]
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory uid 65534 can read (pytest's tmp_path sits under a 0700 one)."""
    with tempfile.TemporaryDirectory(prefix="vigil-nobody-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


def test_check_as_nobody_validates_and_warns(public_dir: Path) -> None:
    """`tracingpolicy check` as uid 65534 (no capabilities, tracefs unreadable): a
    syscall tracepoint policy is valid (exit 0) with a warning naming what it could not
    verify, not an error. The check runs in a child that dropped to nobody after the
    CLI's modules were loaded (this machine's Python lives where nobody cannot read)."""
    from click.testing import CliRunner

    from vigil.cli import cli
    pol = public_dir / "tp.yaml"
    pol.write_text(TRACEPOINT_POLICY)
    os.chmod(pol, 0o644)
    warm = public_dir / "warm.yaml"  # another tracepoint: nothing of openat is cached
    warm.write_text(TRACEPOINT_POLICY.replace("sys_enter_openat", "sys_enter_getppid")
                    .split("    args:")[0])
    assert CliRunner().invoke(cli, ["tracingpolicy", "check", str(warm)]).exit_code == 0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 99
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            res = CliRunner().invoke(cli, ["tracingpolicy", "check", str(pol)])
            os.write(w, f"{res.exit_code}\n{res.output}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    rc, _, text = out.partition("\n")
    assert rc == "0", text
    assert "not root" in text and "ok: TracingPolicy 'tp-openat'" in text, text
    assert "warning: tracepoint syscalls/sys_enter_openat: field indexes and types not " \
           "verified" in text, text
