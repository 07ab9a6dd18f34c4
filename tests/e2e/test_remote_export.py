"""Network exporters with the real agent: events to a real rsyslog over TLS (mutual TLS,
RFC 5425 framing) and to an OTLP/HTTPS receiver; a collector whose certificate comes
from another CA is refused and counted; the collector going away and coming back
(drops counted, reconnection). rsyslog runs with its own config, pid file and work
dir on a loopback port and is stopped after; certificates are made here."""

from __future__ import annotations

import datetime as dt
import gzip
import http.server
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agentproc import AgentProcess

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("rsyslogd") is None
                                 or not list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")),
                                 reason="rsyslog and rsyslog-gnutls not installed "
                                        "(make apt installs them)")]

WAIT = 60.0  # bounds a hang only; the exporter's backoff can reach tens of seconds


# --------------------------------------------------------------------------- certificates

def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: Any, issuer: tuple[Any, Any] | None, *, ca: bool = False,
          server: bool = False) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer_cert.subject if issuer_cert else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                          False, False), critical=True)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(d: Path, name: str, cert: Any, key: Any | None = None) -> None:
    from cryptography.hazmat.primitives import serialization
    (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (d / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        os.chmod(d / f"{name}.key", 0o600)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca (server + client certificates) and other-ca (a server certificate)."""
    d = tmp_path_factory.mktemp("pki")
    for ca_name, leaves in (("ca", ("server", "client")), ("other-ca", ("other-server",))):
        ck = _key()
        cc = _cert(f"vigil test {ca_name}", ck, None, ca=True)
        _write(d, ca_name, cc)
        for leaf in leaves:
            k = _key()
            _write(d, leaf, _cert(leaf, k, (cc, ck), server="server" in leaf), k)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- rsyslog

class Rsyslog:
    """An rsyslogd of our own: TLS listener on 127.0.0.1:port, messages to out.log."""

    def __init__(self, d: Path, pki: Path, port: int, server: str = "server",
                 mutual: bool = True) -> None:
        self.dir, self.port, self.out = d, port, d / "out.log"
        work = d / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.pidfile = d / "rsyslogd.pid"
        self.conf = d / "rsyslog.conf"
        self.conf.write_text(f"""
global(workDirectory="{work}"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{pki}/ca.pem"
       defaultNetstreamDriverCertFile="{pki}/{server}.pem"
       defaultNetstreamDriverKeyFile="{pki}/{server}.key")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="{'x509/certvalid' if mutual else 'anon'}")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="vigil" type="string"
         string="%hostname% %app-name% %procid% %msgid% %timereported:::date-rfc3339% %msg%\\n")
action(type="omfile" file="{self.out}" template="vigil")
""")
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Rsyslog:
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + WAIT
        while True:  # listening?
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.proc.poll() is None, f"rsyslogd exited: {self.proc.stdout.read()}"
                assert time.monotonic() < deadline, "rsyslogd never listened"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def messages(self) -> list[tuple[list[str], dict[str, Any]]]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            parts = line.split(" ", 5)
            if len(parts) == 6:
                try:
                    out.append((parts[:5], json.loads(parts[5])))
                except ValueError:
                    continue
        return out


@pytest.fixture
def rsyslog(tmp_path: Path, pki: Path) -> Iterator[Callable[..., Rsyslog]]:
    started: list[Rsyslog] = []

    def make(**kw: Any) -> Rsyslog:
        r = Rsyslog(tmp_path / f"rsyslog{len(started)}", pki, **kw)
        r.dir.mkdir(exist_ok=True)
        started.append(r)
        return r.start()
    yield make
    for r in started:
        r.stop()


def run_marker(tag: str) -> None:
    subprocess.run(["/bin/true", tag], check=True)


def has_exec(tag: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("process_exec", {}).get("process", {}).get("arguments") == tag


def wait_until(pred: Callable[[], Any], what: str, timeout: float = WAIT,
               poke: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if poke is not None:
            poke()
        time.sleep(0.2)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def metric(m: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for k, v in m.items():
        if k.split("{")[0] == name and all(f'{lk}="{lv}"' in k for lk, lv in labels.items()):
            total += v
    return total


# --------------------------------------------------------------------------- syslog

def test_syslog_tls_delivery_outage_and_reconnect(tmp_path: Path, pki: Path,
                                                  rsyslog: Callable[..., Rsyslog]) -> None:
    port, mport = free_port(), free_port()
    server = rsyslog(port=port, mutual=True)
    with AgentProcess(tmp_path, "--export-syslog-address", f"tls://127.0.0.1:{port}",
                      "--export-syslog-ca-file", str(pki / "ca.pem"),
                      "--export-syslog-cert-file", str(pki / "client.pem"),
                      "--export-syslog-key-file", str(pki / "client.key"),
                      "--export-syslog-queue-size", "8",
                      "--metrics-server", f"127.0.0.1:{mport}") as agent:
        tag = f"vigil-syslog-{os.getpid()}-1"
        got = wait_until(lambda: [m for m in server.messages() if has_exec(tag)(m[1])],
                         "the marker in rsyslog's output", poke=lambda: run_marker(tag))
        header, ev = got[0]
        assert header[1] == "vigil" and header[3] == "process_exec"
        assert header[0] == ev["node_name"]
        assert ev["process_exec"]["process"]["binary"] == "/bin/true"
        (tmp_path / "received.txt").write_text(server.out.read_text())
        line = next(x for x in server.out.read_text().splitlines() if tag in x)
        print(f"\nrsyslog received over TLS (mTLS): {line[:600]}")
        m = scrape(mport)
        assert metric(m, "vigil_export_remote_connected", exporter="syslog") == 1
        assert metric(m, "vigil_export_remote_events_sent_total", exporter="syslog") > 0

        # the collector goes away: events pile up in the 8-event queue, the rest dropped
        server.stop()
        wait_until(lambda: metric(scrape(mport), "vigil_export_remote_events_dropped_total",
                                  exporter="syslog", reason="queue_full") > 0,
                   "queue_full drops", poke=lambda: [run_marker("x") for _ in range(10)])
        wait_until(lambda: metric(scrape(mport), "vigil_export_remote_failures_total",
                                  exporter="syslog", reason="connect") > 0,
                   "a refused connection")
        assert metric(scrape(mport), "vigil_export_remote_connected", exporter="syslog") == 0
        # ... and comes back on the same port: the exporter reconnects
        server.start()
        tag2 = f"vigil-syslog-{os.getpid()}-2"
        wait_until(lambda: [m for m in server.messages() if has_exec(tag2)(m[1])],
                   "the marker after the collector came back", poke=lambda: run_marker(tag2))
        m = scrape(mport)
        assert metric(m, "vigil_export_remote_connections_total", exporter="syslog") >= 2
        agent_log = "".join(agent.stderr)
    assert "cannot reach" in agent_log or "lost" in agent_log


def test_syslog_collector_from_another_ca_is_refused(tmp_path: Path, pki: Path,
                                                     rsyslog: Callable[..., Rsyslog]) -> None:
    port, mport = free_port(), free_port()
    server = rsyslog(port=port, server="other-server", mutual=False)
    with AgentProcess(tmp_path, "--export-syslog-address", f"tls://127.0.0.1:{port}",
                      "--export-syslog-ca-file", str(pki / "ca.pem"),
                      "--metrics-server", f"127.0.0.1:{mport}") as agent:
        wait_until(lambda: metric(scrape(mport), "vigil_export_remote_failures_total",
                                  exporter="syslog", reason="tls_verify") > 0,
                   "a refused certificate", poke=lambda: run_marker("x"))
        m = scrape(mport)
        assert metric(m, "vigil_export_remote_events_sent_total", exporter="syslog") == 0
        assert metric(m, "vigil_export_remote_connected", exporter="syslog") == 0
        log = "".join(agent.stderr)
    assert server.messages() == []
    assert "certificate verify failed" in log or "unable to get local issuer" in log


def test_plaintext_syslog_refused_unless_forced(tmp_path: Path) -> None:
    import sys
    r = subprocess.run([sys.executable, "-m", "vigil", "agent", "--export-syslog-address",
                        "tcp://192.0.2.1:514"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "plaintext" in r.stderr


# --------------------------------------------------------------------------- OTLP

class OtlpReceiver:
    """A small OTLP/HTTPS logs receiver: decodes ExportLogsServiceRequest protobufs."""

    def __init__(self, pki: Path, server: str = "server", *, port: int = 0,
                 client_ca: bool = False) -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        self.records: list[tuple[dict[str, str], Any]] = []
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                enc = self.headers.get("Content-Encoding", "")
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                req = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
                for rl in req.resource_logs:
                    res = {a.key: a.value.string_value for a in rl.resource.attributes}
                    for sl in rl.scope_logs:
                        for lr in sl.log_records:
                            recv.records.append((res, lr))
                out = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / f"{server}.pem", pki / f"{server}.key")
        if client_ca:  # mutual TLS: the agent must present a certificate from our CA
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki / "ca.pem")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(10)


def otlp_found(recv: OtlpReceiver, tag: str) -> Callable[[], list[Any]]:
    return lambda: [(res, lr, json.loads(lr.body.string_value))
                    for res, lr in list(recv.records) if tag in lr.body.string_value]


def test_otlp_https_mtls_delivery_outage_and_reconnect(tmp_path: Path, pki: Path) -> None:
    recv = OtlpReceiver(pki, client_ca=True)
    port, mport = recv.port, free_port()
    try:
        with AgentProcess(tmp_path, "--export-otlp-endpoint", f"https://127.0.0.1:{port}",
                          "--export-otlp-ca-file", str(pki / "ca.pem"),
                          "--export-otlp-cert-file", str(pki / "client.pem"),
                          "--export-otlp-key-file", str(pki / "client.key"),
                          "--export-otlp-queue-size", "8",
                          "--metrics-server", f"127.0.0.1:{mport}",
                          "--node-name", "otlp-node"):
            tag = f"vigil-otlp-{os.getpid()}-1"
            got = wait_until(otlp_found(recv, tag), "the marker at the OTLP receiver",
                             poke=lambda: run_marker(tag))
            res, lr, ev = got[0]
            assert res["service.name"] == "vigil" and res["host.name"] == "otlp-node"
            assert lr.event_name == "process_exec" and has_exec(tag)(ev)
            assert lr.time_unix_nano > 0
            assert metric(scrape(mport), "vigil_export_remote_events_sent_total",
                          exporter="otlp") > 0
            # the collector goes away: failures and drops are counted
            recv.close()
            wait_until(lambda: metric(scrape(mport), "vigil_export_remote_failures_total",
                                      exporter="otlp", reason="connect") > 0,
                       "a refused connection", poke=lambda: run_marker("x"))
            wait_until(lambda: metric(scrape(mport), "vigil_export_remote_events_dropped_total",
                                      exporter="otlp") > 0,
                       "dropped events", poke=lambda: [run_marker("x") for _ in range(10)])
            assert metric(scrape(mport), "vigil_export_remote_connected", exporter="otlp") == 0
            # ... and comes back on the same port
            recv = OtlpReceiver(pki, client_ca=True, port=port)
            tag2 = f"vigil-otlp-{os.getpid()}-2"
            wait_until(otlp_found(recv, tag2), "the marker after the collector came back",
                       poke=lambda: run_marker(tag2))
            assert metric(scrape(mport), "vigil_export_remote_connected", exporter="otlp") == 1
    finally:
        recv.close()


def test_otlp_collector_from_another_ca_is_refused(tmp_path: Path, pki: Path) -> None:
    recv = OtlpReceiver(pki, server="other-server")
    mport = free_port()
    try:
        with AgentProcess(tmp_path, "--export-otlp-endpoint",
                          f"https://127.0.0.1:{recv.port}",
                          "--export-otlp-ca-file", str(pki / "ca.pem"),
                          "--metrics-server", f"127.0.0.1:{mport}"):
            wait_until(lambda: metric(scrape(mport), "vigil_export_remote_failures_total",
                                      exporter="otlp", reason="tls_verify") > 0,
                       "a refused certificate", poke=lambda: run_marker("x"))
    finally:
        recv.close()
    assert recv.records == []
