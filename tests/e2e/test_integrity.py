"""Tamper-evident export and signed policies, with the real agent and real processes.

Export: the agent chains every line it writes (small files, so it rotates and gzips);
``vigil export verify`` passes the untouched set and names each tampering: a flipped
byte, a dropped, swapped or inserted line, a truncated file, a deleted rotated file.

Policies: with ``--policy-signing-key`` only validly signed policies load, from a file,
a directory, gRPC and the persisted gRPC policies; without it everything loads as before.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.e2e.agentproc import AgentProcess, exit_of
from vigil.api.tetragon import sensors_pb2, sensors_pb2_grpc

pytestmark = pytest.mark.e2e

WAIT = 60.0  # bounds a hang only
POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  tracepoints:
  - subsystem: sched
    event: sched_process_fork
    args:
    - index: 7
"""


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil", *args], capture_output=True,
                          text=True, timeout=WAIT)


def run_processes(n: int) -> None:
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)


# ------------------------------------------------------------------ tamper-evident export


def _backups(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.startswith("events-")
                  and p.name.endswith(".log.gz"))


def test_export_chain_names_every_tampering(tmp_path: Path) -> None:
    d = tmp_path / "out"
    d.mkdir()
    key = tmp_path / "key"
    assert vigil("export", "keygen", str(key)).returncode == 0
    orig = tmp_path / "key.orig"  # the verifier's copy (off the host in real life)
    shutil.copy(key, orig)
    # also: an unsigned policy still loads when --policy-signing-key is not given
    pol = tmp_path / "plain.yaml"
    pol.write_text(POLICY.format(name="plain"))
    with AgentProcess(d, "--export-integrity-key-file", str(key),
                      "--export-file-max-size-mb", "0.02", "--export-file-compress",
                      "--export-file-max-backups", "0", "--tracing-policy", str(pol),
                      export_name="events.log") as ag:
        run_processes(150)
        marker = subprocess.Popen(["/bin/true"])
        marker.wait()
        assert ag.wait_for(exit_of(marker.pid)), "the agent did not export the marker"
        assert ag.stop() == 0
    assert key.read_bytes() != orig.read_bytes()  # the key evolved as files rotated
    export = d / "events.log"
    gz = _backups(d)
    assert len(gz) >= 4, sorted(p.name for p in d.iterdir())
    assert all(Path(str(p).removesuffix(".gz") + ".chain").exists() for p in gz)

    def verify() -> subprocess.CompletedProcess[str]:
        return vigil("export", "verify", "--key-file", str(orig), str(export))

    ok = verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "lines intact" in ok.stdout
    # the evolved key on the host cannot vouch for the old files
    assert vigil("export", "verify", "--key-file", str(key), str(export)).returncode == 1

    # a rotated file of ordinary lines (one very long exec line, e.g. a process with a
    # long command line, can fill a small file by itself)
    def lines_of(p: Path) -> list[bytes]:
        return gzip.decompress(p.read_bytes()).split(b"\n")[:-1]

    victim = next((p for p in gz[1:-1] if len(lines_of(p)) >= 4), None)
    assert victim is not None, [len(lines_of(p)) for p in gz]
    successor = gz[gz.index(victim) + 1]  # the file whose chain names the victim
    saved = victim.read_bytes()
    lines = lines_of(victim)

    def put(new: list[bytes]) -> str:
        victim.write_bytes(gzip.compress(b"".join(ln + b"\n" for ln in new)))
        r = verify()
        victim.write_bytes(saved)
        assert r.returncode == 1, r.stdout + r.stderr
        return r.stderr

    flipped = bytearray(lines[2])
    flipped[len(flipped) // 2] ^= 0x01
    assert f"TAMPERED: {victim.name}:3: line altered" in put(
        lines[:2] + [bytes(flipped)] + lines[3:])
    assert f"TAMPERED: {victim.name}:2: line removed" in put(lines[:1] + lines[2:])
    assert f"TAMPERED: {victim.name}:2: line reordered" in put(
        [lines[0], lines[2], lines[1], *lines[3:]])
    assert f"TAMPERED: {victim.name}:3: line inserted" in put(
        lines[:2] + [lines[0]] + lines[2:])
    assert verify().returncode == 0

    # truncate the active file (inside its last line)
    active = export.read_bytes()
    export.write_bytes(active[:-7])
    r = verify()
    export.write_bytes(active)
    n = active.count(b"\n")
    assert r.returncode == 1 and f"TAMPERED: events.log:{n}: truncated" in r.stderr, r.stderr
    # drop whole lines at its end (two, or the one line a file just rotated has): the
    # verifier names the first line missing
    k = min(2, n)
    export.write_bytes(b"".join(ln + b"\n" for ln in active.split(b"\n")[:n - k]))
    r = verify()
    export.write_bytes(active)
    assert r.returncode == 1 and f"events.log:{n - k + 1}: truncated" in r.stderr, r.stderr

    # delete a rotated file: alone, then with its chain file
    victim.unlink()
    r = verify()
    assert r.returncode == 1
    assert f"TAMPERED: {victim.name.removesuffix('.gz')}: missing" in r.stderr, r.stderr
    chain = Path(str(victim).removesuffix(".gz") + ".chain")
    chain.unlink()
    r = verify()
    assert r.returncode == 1
    assert (f"TAMPERED: {victim.name.removesuffix('.gz')}: rotated file missing (named by "
            f"{successor.name.removesuffix('.gz')}") in r.stderr, r.stderr


def test_export_chain_continues_across_restart(tmp_path: Path) -> None:
    d = tmp_path / "out"
    d.mkdir()
    key = tmp_path / "key"
    assert vigil("export", "keygen", str(key)).returncode == 0
    orig = tmp_path / "key.orig"
    shutil.copy(key, orig)
    for _ in range(2):
        with AgentProcess(d, "--export-integrity-key-file", str(key),
                          export_name="events.log") as ag:
            marker = subprocess.Popen(["/bin/true"])
            marker.wait()
            assert ag.wait_for(exit_of(marker.pid))
            assert ag.stop() == 0
    r = vigil("export", "verify", "--key-file", str(orig), str(d / "events.log"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (d / "events.log.chain").read_text().count("\nS ") == 2


def test_export_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    assert vigil("export", "keygen", str(key)).returncode == 0
    key.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "vigil", "agent", "--export-filename",
                        str(tmp_path / "e.log"), "--export-integrity-key-file", str(key),
                        "--server-address", ""], capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 1
    assert "mode 0644 gives group/other access" in r.stderr, r.stderr


# ------------------------------------------------------------------------ signed policies


class Keys:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.priv, self.pub = self._pair("trusted")
        self.other_priv, _ = self._pair("other")

    def _pair(self, name: str) -> tuple[Path, Path]:
        k = ed25519.Ed25519PrivateKey.generate()
        priv = self.tmp / f"{name}.pem"
        priv.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        pub = self.tmp / f"{name}.pub"
        pub.write_bytes(k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return priv, pub

    def policy(self, d: Path, name: str, how: str) -> Path:
        """A policy file ``how``: signed | unsigned | wrong-key | modified."""
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{name}.yaml"
        p.write_text(POLICY.format(name=name))
        if how == "unsigned":
            return p
        key = self.other_priv if how == "wrong-key" else self.priv
        r = vigil("tracingpolicy", "sign", "--key", str(key), str(p))
        assert r.returncode == 0, r.stderr
        if how == "modified":
            p.write_text(POLICY.format(name=name).replace("index: 7", "index: 7 "))
        return p


def _fires(ag: AgentProcess, name: str, tmp: Path) -> None:
    sh = tmp / f"forker-{name}"
    shutil.copy("/bin/sh", sh)
    subprocess.run([str(sh), "-c", "/bin/true & wait"], check=True)
    got = ag.wait_for(lambda e: e.get("process_tracepoint", {}).get("policy_name") == name
                      and e["process_tracepoint"]["process"]["binary"] == str(sh))
    assert got, f"policy {name} did not fire"


def test_signed_mode_file_dir_grpc_and_persisted(tmp_path: Path) -> None:
    keys = Keys(tmp_path)
    signed = keys.policy(tmp_path / "files", "signed-file", "signed")
    pdir = tmp_path / "pdir"
    keys.policy(pdir, "signed-dir", "signed")
    persist = tmp_path / "persist"
    d = tmp_path / "run"
    d.mkdir()
    args = ("--policy-signing-key", str(keys.pub), "--tracing-policy", str(signed),
            "--tracing-policy-dir", str(pdir), "--persist-grpc-policies",
            "--persist-grpc-policies-dir", str(persist))
    with AgentProcess(d, *args) as ag:
        _fires(ag, "signed-file", tmp_path)
        _fires(ag, "signed-dir", tmp_path)
        addr = ["--server-address", f"unix://{ag.socket}"]
        g = tmp_path / "grpc"
        for how in ("unsigned", "wrong-key", "modified"):
            p = keys.policy(g, f"g-{how}", how)
            r = vigil("tracingpolicy", "add", str(p), *addr)
            assert r.returncode == 1, (how, r.stdout, r.stderr)
            assert "PERMISSION_DENIED" in r.stderr or "refused AddTracingPolicy" in r.stderr
            assert "policy refused" in r.stderr, r.stderr
        # the status code itself, from a plain grpc client
        with grpc.insecure_channel(f"unix://{ag.socket}") as ch:
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(
                    yaml=POLICY.format(name="raw-unsigned")))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "not signed" in err.value.details()
            wrong = keys.policy(g, "raw-wrong", "wrong-key")
            with pytest.raises(grpc.RpcError) as err:
                stub.AddTracingPolicy(
                    sensors_pb2.AddTracingPolicyRequest(yaml=wrong.read_text()),
                    metadata=(("vigil-policy-signature",
                               Path(f"{wrong}.sig").read_text().strip()),))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "does not match" in err.value.details()
        # signed: with --signature, and with POLICY.sig found next to the file
        ok1 = keys.policy(g, "g-signed", "signed")
        sig = tmp_path / "elsewhere.sig"
        shutil.move(f"{ok1}.sig", sig)
        r = vigil("tracingpolicy", "add", str(ok1), "--signature", str(sig), *addr)
        assert r.returncode == 0, r.stderr
        ok2 = keys.policy(g, "g-tampered-later", "signed")
        r = vigil("tracingpolicy", "add", str(ok2), *addr)
        assert r.returncode == 0, r.stderr
        _fires(ag, "g-signed", tmp_path)
        r = vigil("tp", "list", "-o", "json", *addr)
        import json
        names = {p["name"] for p in json.loads(r.stdout)["policies"]}
        assert names == {"signed-file", "signed-dir", "g-signed", "g-tampered-later"}
        assert ag.stop() == 0
    # persisted policies: the signature is kept; a persisted file changed while the agent
    # was down is not restored
    assert (persist / "g-signed.yaml.sig").exists()
    tampered = persist / "g-tampered-later.yaml"
    tampered.write_text(tampered.read_text().replace("index: 7", "index: 7 "))
    with AgentProcess(d, *args) as ag:
        addr = ["--server-address", f"unix://{ag.socket}"]
        r = vigil("tp", "list", "-o", "json", *addr)
        import json
        names = {p["name"] for p in json.loads(r.stdout)["policies"]}
        assert names == {"signed-file", "signed-dir", "g-signed"}, names
        assert any("g-tampered-later.yaml not restored" in ln and "does not match" in ln
                   for ln in ag.stderr), "".join(ag.stderr[-20:])
        _fires(ag, "g-signed", tmp_path)


@pytest.mark.parametrize("source", ["file", "dir"])
@pytest.mark.parametrize("how", ["unsigned", "wrong-key", "modified"])
def test_signed_mode_refuses_at_start(tmp_path: Path, source: str, how: str) -> None:
    keys = Keys(tmp_path)
    p = keys.policy(tmp_path / "pol", f"start-{how}", how)
    where = (["--tracing-policy", str(p)] if source == "file"
             else ["--tracing-policy-dir", str(p.parent)])
    r = subprocess.run([sys.executable, "-m", "vigil", "agent", "--policy-signing-key",
                        str(keys.pub), *where, "--export-filename", str(tmp_path / "e.log"),
                        "--server-address", ""], capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 1, r.stderr
    want = {"unsigned": "it is not signed", "wrong-key": "does not match",
            "modified": "does not match"}[how]
    assert f"vigil agent: {p}: policy refused: " in r.stderr and want in r.stderr, r.stderr


def test_unsigned_policies_load_without_the_option(tmp_path: Path) -> None:
    keys = Keys(tmp_path)
    pdir = tmp_path / "pdir"
    keys.policy(pdir, "plain-dir", "unsigned")
    d = tmp_path / "run"
    d.mkdir()
    with AgentProcess(d, "--tracing-policy-dir", str(pdir)) as ag:
        _fires(ag, "plain-dir", tmp_path)
        g = keys.policy(tmp_path / "g", "plain-grpc", "unsigned")
        r = vigil("tracingpolicy", "add", str(g), "--server-address", f"unix://{ag.socket}")
        assert r.returncode == 0, r.stderr
        _fires(ag, "plain-grpc", tmp_path)
