"""--redaction-filters with the real agent and real processes: a secret on a command
line never reaches the export file, a gRPC GetEvents stream, ``vigil getevents -o
compact``, a GetDebug process-cache dump or the agent's own log; a process found by the
/proc scan is redacted too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess
from tests.e2e.test_grpc import Stream, stub

pytestmark = pytest.mark.e2e

SECRET, SECRET2, SCANNED = "hunter2", "s3cr3tvalue", "hunter1"
FILTERS = ('{"binary_regex":["(?:^|/)foo$"],"redact":["-p(?:\\\\s+|=)(\\\\S*)"]}\n'
           '{"binary_regex":["(?:^|/)(foo|foosh)$"],"redact":["--password=(\\\\S+)"]}')
WAIT = 30.0


def test_secret_never_leaves_the_agent(tmp_path: Path) -> None:
    foo = tmp_path / "foo"
    shutil.copy("/bin/true", foo)
    foosh = tmp_path / "foosh"
    shutil.copy("/bin/sh", foosh)
    # running before the agent starts: seen by the /proc scan
    old = subprocess.Popen([str(foosh), "-c", "sleep 60", "foosh", f"--password={SCANNED}"])
    agent = compact = None
    try:
        agent = AgentProcess(tmp_path, "--redaction-filters", FILTERS)
        ch, st = stub(f"unix://{agent.socket}")
        stream = Stream(st)
        compact = subprocess.Popen(
            [sys.executable, "-m", "vigil", "getevents", "-o", "compact", "--color", "never",
             "--server-address", f"unix://{agent.socket}", "--process", "(^|/)foo$",
             "--max-events", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        argv = [str(foo), f"--password={SECRET}", "-p", SECRET2]
        deadline = time.monotonic() + WAIT
        while True:  # until both clients have subscribed and seen one foo
            subprocess.run(argv, check=True)
            got = stream.wait(lambda evs: any(
                e.get("process_exec", {}).get("process", {}).get("binary") == str(foo)
                for e in evs), timeout=0.3)
            if any(e.get("process_exec", {}).get("process", {}).get("binary") == str(foo)
                   for e in got) and compact.poll() is not None:
                break
            assert time.monotonic() < deadline, "foo's exec never reached the clients"
        out, err = compact.communicate(timeout=WAIT)
        stream.close()
        from google.protobuf import json_format

        from vigil.api.tetragon import sensors_pb2
        dump = st.GetDebug(sensors_pb2.GetDebugRequest(
            flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE), timeout=WAIT)
        cache_dump = json_format.MessageToJson(dump)
        ch.close()
        execs = agent.wait_for(lambda e: e.get("process_exec", {}).get("process", {})
                               .get("binary") == str(foo))
        scanned = agent.wait_for(lambda e: e.get("process_exec", {}).get("process", {})
                                 .get("pid") == old.pid)
    finally:
        if compact is not None and compact.poll() is None:
            compact.kill()
            compact.wait()
        if agent is not None:
            agent.stop()
        old.kill()
        old.wait()
    assert execs and scanned
    assert execs[0]["process_exec"]["process"]["arguments"] == "--password=***** -p *****"
    proc = scanned[0]["process_exec"]["process"]
    assert "procFS" in proc["flags"]
    assert proc["arguments"] == '-c "sleep 60" foosh --password=*****'
    exported = agent.export.read_text()
    grpc_seen = json.dumps(stream.events)
    log = "".join(agent.stderr)
    assert "*****" in out and str(foo) in out, out + err
    for secret in (SECRET, SECRET2, SCANNED):
        assert secret not in exported
        assert secret not in grpc_seen
        assert secret not in out
        assert secret not in log
        assert secret not in cache_dump
    assert "--password=*****" in grpc_seen
    assert "--password=*****" in cache_dump  # the scanned foosh is still running
