"""The operator options of ``vigil agent`` (Tetragon's names), each on the real agent:
export allow/deny lists and field filters (the export file changes, a gRPC stream does
not), configuration precedence (vigil.yaml < --config-dir < VIGIL_AGENT_* < flags),
the grpc.health.v1 health server, JSON log lines, and --keep-sensors-on-exit (a Sigkill
tracepoint policy keeps killing while no agent runs; the next agent replaces the pinned
links; an agent without the flag leaves no pin behind).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.agentproc import AgentProcess, live_links
from tests.e2e.test_grpc import Stream, stub
from vigil.api.tetragon import events_pb2
from vigil.bpf.keep import KEEP_ROOT, kept_links, release_kept

pytestmark = pytest.mark.e2e

WAIT = 30.0  # bounds a hang only


def _copy_true(path: Path) -> Path:
    shutil.copy("/bin/true", path)
    return path


def _execs(events: list[dict[str, Any]], binary: Path) -> list[dict[str, Any]]:
    return [e for e in events
            if e.get("process_exec", {}).get("process", {}).get("binary") == str(binary)]


# --------------------------------------------------------------------------- filters

def test_export_filters_change_the_export_file_not_grpc(tmp_path: Path) -> None:
    allowed = _copy_true(tmp_path / "vk-allowed")
    denied = _copy_true(tmp_path / "vk-denied")
    allow = '{"event_set":["PROCESS_EXEC"]}'
    deny = json.dumps({"binary_regex": [re.escape(str(denied)) + "$"]})
    fields = ('{"event_set":["PROCESS_EXEC"],"fields":"process.binary,process.pid",'
              '"action":"INCLUDE"}')
    with AgentProcess(tmp_path, "--export-allowlist", allow, "--export-denylist", deny,
                      "--field-filters", fields) as ag:
        ch, st = stub(f"unix://{ag.socket}")
        stream = Stream(st, events_pb2.GetEventsRequest())
        try:
            # the stream subscribes asynchronously: run the denied binary until it shows
            for _ in range(50):
                subprocess.run([denied], check=True)
                if stream.wait(lambda evs: _execs(evs, denied), timeout=0.5):
                    break
            subprocess.run([allowed], check=True)
            grpc_events = stream.wait(lambda evs: _execs(evs, allowed) and any(
                e.get("process_exit", {}).get("process", {}).get("binary") == str(allowed)
                for e in evs))
            exported = ag.wait_for(lambda e: bool(_execs([e], allowed)))
        finally:
            stream.close()
            ch.close()
        everything = ag.events()
    # the export: only exec events, the denied binary never, fields trimmed
    assert exported and all(set(e["process_exec"]["process"]) == {"binary", "pid"}
                            for e in exported)
    assert not _execs(everything, denied)
    assert all("process_exec" in e for e in everything), \
        {next(iter(e)) for e in everything if "process_exec" not in e}
    # the gRPC stream: untouched by the export filters
    full = _execs(grpc_events, denied)
    assert full and "exec_id" in full[0]["process_exec"]["process"]
    assert "parent" in _execs(grpc_events, allowed)[0]["process_exec"]
    assert any("process_exit" in e for e in grpc_events)


def test_invalid_export_filter_is_refused_with_its_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vigil", "agent", "--export-denylist",
         '{"binary_regex":["x"]}\n{"no_such_field":1}'],
        capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 2
    assert "--export-denylist: line 2" in out.stderr and "no_such_field" in out.stderr


# --------------------------------------------------------------------------- configuration

def _conf(ag: AgentProcess) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "vigil", "info", "-o", "json",
                          "--server-address", f"unix://{ag.socket}"],
                         capture_output=True, text=True, timeout=WAIT, check=True)
    return {c["key"]: c["value"]["value"] for c in json.loads(out.stdout)["conf"]}


def test_config_precedence(tmp_path: Path) -> None:
    """vigil.yaml (cwd) < --config-dir files < VIGIL_AGENT_* < command-line flags."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "vigil.yaml").write_text(textwrap.dedent("""\
        export-file-max-backups: 7
        process-cache-size: 1111
        node-name: from-yaml
        """))
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    (conf_dir / "process-cache-size").write_text("2222\n")
    (conf_dir / "node-name").write_text("from-config-dir\n")
    (conf_dir / "export-rate-limit").write_text("600\n")
    (conf_dir / "..data").mkdir()  # a ConfigMap mount's internals are skipped
    env = {"VIGIL_AGENT_NODE_NAME": "from-env", "VIGIL_AGENT_EXPORT_RATE_LIMIT": "700"}
    with AgentProcess(tmp_path, "--config-dir", str(conf_dir), "--node-name", "from-flag",
                      cwd=cwd, env=env) as ag:
        conf = _conf(ag)
        stderr = "".join(ag.stderr)
    assert conf["export-file-max-backups"] == "7"     # vigil.yaml only
    assert conf["process-cache-size"] == "2222"       # config dir over vigil.yaml
    assert conf["export-rate-limit"] == "700"         # env over config dir
    assert conf["node-name"] == "from-flag"           # flag over env
    assert f"configuration read from {conf_dir}/node-name" in stderr
    assert f"configuration read from {cwd}/vigil.yaml" in stderr


def test_unknown_key_in_a_config_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "export-filenme").write_text("/tmp/x\n")
    out = subprocess.run([sys.executable, "-m", "vigil", "agent", "--config-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 2
    assert f"{tmp_path}/export-filenme: unknown option 'export-filenme'" in out.stderr


# --------------------------------------------------------------------------- health, logs

def test_health_server_and_json_logs(tmp_path: Path) -> None:
    with AgentProcess(tmp_path, "--health-server-address", "127.0.0.1:0",
                      "--health-server-interval", "1", "--log-format", "json") as ag:
        lines = [json.loads(line) for line in ag.stderr]
        bound = next(m.group(1) for ln in lines
                     if (m := re.search(r"listening on (\S+), checked", ln["msg"])))
        with grpc.insecure_channel(bound) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            live = health.Check(health_pb2.HealthCheckRequest(service="liveness"),
                                timeout=WAIT)
            server = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
            with pytest.raises(grpc.RpcError) as err:
                health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=WAIT)
    assert live.status == health_pb2.HealthCheckResponse.SERVING
    assert server.status == health_pb2.HealthCheckResponse.SERVING
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    records = [json.loads(line) for line in ag.stderr if line.strip()]  # every line parses
    assert all({"time", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["msg"].startswith("vigil agent started") for r in records)


# --------------------------------------------------------------------------- keep sensors

KILL_POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-keep-kill
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    selectors:
    - matchArgs:
      - index: 6
        operator: Equal
        values: ["{target}"]
      matchActions:
      - action: Sigkill
"""


def _cat(target: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["/bin/cat", str(target)], capture_output=True, timeout=WAIT)


def _tracepoints_of(events: list[dict[str, Any]], pid: int) -> list[dict[str, Any]]:
    return [e for e in events
            if e.get("process_tracepoint", {}).get("process", {}).get("pid") == pid]


def _pinned_link_id(path: Path) -> int:
    out = subprocess.run(["bpftool", "-j", "link", "show", "pinned", str(path)],
                         capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout)["id"])


def test_keep_sensors_on_exit(tmp_path: Path) -> None:
    if kept_links():
        pytest.skip(f"{KEEP_ROOT} holds another agent's links")
    target = tmp_path / "forbidden"
    target.write_text("secret")
    policy = tmp_path / "kill.yaml"
    policy.write_text(KILL_POLICY.format(target=target))
    try:
        with AgentProcess(tmp_path, "--tracing-policy", str(policy),
                          "--keep-sensors-on-exit", export_name="a.log") as ag:
            assert _cat(target).returncode == -9
        assert ag.proc.returncode == 0
        pins = kept_links()
        assert pins, "".join(ag.stderr[-20:])
        kept_ids = {_pinned_link_id(p) for p in pins}
        assert any("BPF links pinned under" in ln for ln in ag.stderr)

        # no agent runs: the kernel still kills
        assert _cat(target).returncode == -9

        # a restarted agent replaces the kept links: one event per kill, no duplicate
        with AgentProcess(tmp_path, "--tracing-policy", str(policy),
                          "--keep-sensors-on-exit", export_name="b.log") as ag:
            assert any(f"replaced {len(pins)} BPF links kept" in ln for ln in ag.stderr)
            assert not kept_links()
            done = _cat(target)
            assert done.returncode == -9
            # the pid of the killed cat: from its exec event
            execs = ag.wait_for(lambda e: e.get("process_exec", {}).get("process", {})
                                .get("arguments") == str(target))
            pid = execs[-1]["process_exec"]["process"]["pid"]
            ag.wait_for(lambda e: bool(_tracepoints_of([e], pid)))
            ag.wait_for(lambda e: e.get("process_exit", {}).get("process", {})
                        .get("pid") == pid)
            assert len(_tracepoints_of(ag.events(), pid)) == 1
        assert kept_links()

        # an agent without the flag replaces them and leaves nothing behind
        with AgentProcess(tmp_path, export_name="c.log") as ag:
            assert any("BPF links kept by the previous agent" in ln for ln in ag.stderr)
        assert not kept_links() and not Path(KEEP_ROOT).exists()
        assert not live_links(kept_ids)  # the kernel dropped the kept links
        assert _cat(target).returncode == 0
    finally:
        release_kept()
