"""Network exporters without a network: RFC 5424/5425 formatting, the plaintext policy,
backoff, and the retry/drop accounting of RemoteExporter/RemoteSink with a fake link."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vigil.export.otlp import event_time_ns, logs_endpoint
from vigil.export.remote import (
    Backoff, ExportFailure, RemoteExporter, RemoteSink, check_target, is_loopback,
    parse_target,
)
from vigil.export.syslog import FACILITIES, format_message, frame, syslog_timestamp

EV = {"process_exec": {"process": {"binary": "/bin/true", "arguments": "x"}},
      "node_name": "node 1", "time": "2026-12-07T04:24:50.255561485Z"}


def test_rfc5424_message_and_octet_counting() -> None:
    msg = format_message(EV, facility=FACILITIES["local0"], app_name="vigil", procid="42")
    header, _, body = msg.partition(b" - ")
    assert header == b"<134>1 2026-12-07T04:24:50.255561Z node1 vigil 42 process_exec"
    assert json.loads(body) == EV
    framed = frame(msg)
    assert framed == str(len(msg)).encode() + b" " + msg


@pytest.mark.parametrize(("t", "want"), [
    ("2026-12-07T04:24:50.255561485Z", "2026-12-07T04:24:50.255561Z"),
    ("2026-12-07T04:24:50.2Z", "2026-12-07T04:24:50.2Z"),
    ("2026-12-07T04:24:50Z", "2026-12-07T04:24:50Z"),
])
def test_syslog_timestamp(t: str, want: str) -> None:
    assert syslog_timestamp(t) == want


def test_event_time_and_endpoint() -> None:
    assert event_time_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert event_time_ns("nonsense") is None
    assert logs_endpoint("https://c:4318") == "https://c:4318/v1/logs"
    assert logs_endpoint("https://c:4318/custom") == "https://c:4318/custom"


def test_plaintext_and_unverified_policy() -> None:
    kw = {"flag": "--x", "insecure_flag": "--x-allow-insecure"}
    tls = parse_target("tls://logs.example:6514", flag="--x", schemes={"tls": 6514, "tcp": 514})
    check_target(tls, skip_verify=False, allow_insecure=False, **kw)
    with pytest.raises(ValueError, match="not a loopback"):
        check_target(tls, skip_verify=True, allow_insecure=False, **kw)
    check_target(tls, skip_verify=True, allow_insecure=True, **kw)
    local = parse_target("tls://127.0.0.1", flag="--x", schemes={"tls": 6514})
    assert local.port == 6514
    check_target(local, skip_verify=True, allow_insecure=False, **kw)
    plain = parse_target("tcp://127.0.0.1:514", flag="--x", schemes={"tls": 6514, "tcp": 514})
    with pytest.raises(ValueError, match="plaintext"):
        check_target(plain, skip_verify=False, allow_insecure=False, **kw)
    with pytest.raises(ValueError, match="scheme"):
        parse_target("udp://h:514", flag="--x", schemes={"tls": 6514})
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("10.0.0.1")


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    b = Backoff(0.5, 4.0, rand=lambda lo, hi: 1.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


class FakeLink(RemoteExporter):
    """Connects or fails as scripted; records what was sent."""

    def __init__(self, script: list[str]) -> None:
        super().__init__("fake", "fake://x", backoff=Backoff(0.0, 0.0), max_attempts=3)
        self.script = script
        self.got: list[Any] = []

    def _connect(self) -> None:
        step = self.script.pop(0) if self.script else "ok"
        if step != "ok":
            raise ExportFailure(step, "scripted", permanent=step == "rejected")

    def _send(self, events: list[dict[str, Any]]) -> None:
        self.got.extend(events)

    def _disconnect(self) -> None:
        pass


def test_retries_then_delivers() -> None:
    link = FakeLink(["connect", "tls_verify"])
    link([{"a": 1}])
    assert link.got == [{"a": 1}] and link.sent == 1 and link.connected
    assert link.failures == {"connect": 1, "tls_verify": 1} and not link.dropped


def test_drops_after_max_attempts_and_counts_everything() -> None:
    link = FakeLink(["connect"] * 3 + ["rejected"])
    link([{"a": 1}, {"a": 2}])
    assert link.dropped == {"connect": 2} and link.sent == 0
    link([{"a": 3}])                          # a permanent failure: not retried
    assert link.dropped == {"connect": 2, "rejected": 1}
    sink = RemoteSink(FakeLink([]), max_events=2)
    assert sink.offer([{"n": i} for i in range(5)]) == 3
    sink.close()
    view = sink.view()
    assert view["dropped"] == {"queue_full": 3} and view["sent"] == 2


def _opts(**kw: Any) -> dict[str, Any]:
    """The agent command's parsed options for export_config, defaults as click gives."""
    from vigil.cli.export_options import OPTIONS
    out: dict[str, Any] = {}
    for opt in OPTIONS:
        param = opt(lambda: None).__click_params__[0]  # type: ignore[attr-defined]
        out[param.name] = () if param.multiple else False if param.is_flag else param.default
    out.update(kw)
    return out


def test_cli_export_config(tmp_path: Any) -> None:
    from vigil.cli.export_options import export_config
    assert export_config(_opts()).syslog is None
    cfg = export_config(_opts(export_syslog_address="tls://logs.example",
                              export_syslog_facility="authpriv",
                              export_otlp_endpoint="https://otel.example:4318",
                              export_otlp_header=("authorization=Bearer x",)))
    assert cfg.syslog.target.port == 6514 and cfg.syslog.facility == 10
    assert cfg.otlp.endpoint == "https://otel.example:4318/v1/logs"
    assert cfg.otlp.headers == (("authorization", "Bearer x"),)
    with pytest.raises(ValueError, match="plaintext"):
        export_config(_opts(export_otlp_endpoint="http://otel.example"))
    export_config(_opts(export_otlp_endpoint="http://otel.example",
                        export_otlp_allow_insecure=True))
    with pytest.raises(ValueError, match="go together"):
        export_config(_opts(export_syslog_address="tls://h", export_syslog_cert_file="c"))
    with pytest.raises(ValueError, match="facility"):
        export_config(_opts(export_syslog_address="tls://h", export_syslog_facility="x"))
    f = tmp_path / "filters.jsonl"
    f.write_text('{"redact": ["(x)"]}\n')
    assert export_config(_opts(redaction_filters=f"@{f}")).redaction_filters.startswith("{")
    with pytest.raises(ValueError, match="unknown field"):
        export_config(_opts(redaction_filters='{"redcat": ["(x)"]}'))
