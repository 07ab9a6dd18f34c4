"""The one integer reader of policy values reads as Tetragon does (Go's strconv with base
0 for matchArgs, base 10 for matchNamespaces), and the one capability table serves both
spellings."""

from __future__ import annotations

import pytest

from vigil.capabilities import CAP_NAMES, CAPABILITIES, cap_number
from vigil.policy.values import ValueRangeError, parse_int


@pytest.mark.parametrize("text, value", [
    ("10", 10), ("-10", -10), ("+7", 7), ("0x1f", 31), ("0X1F", 31), ("017", 15),
    ("0o17", 15), ("0b101", 5), ("1_000", 1000), ("0", 0),
])
def test_base0_reads_go_literals(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["0x10", "0b101", "1_000", "", "ten", "4294967296"])
def test_base10_reads_decimal_only(text: str) -> None:
    with pytest.raises(ValueError):
        parse_int(text, bits=32, signed=False, base=10)


def test_base10_reads_decimal() -> None:
    assert parse_int("4026531838", bits=32, signed=False, base=10) == 4026531838


def test_range_errors_are_value_range_errors() -> None:
    with pytest.raises(ValueRangeError):
        parse_int("256", bits=8, signed=False)
    with pytest.raises(ValueRangeError):
        parse_int("-1", bits=32, signed=False)


def test_capability_table_both_spellings() -> None:
    assert len(CAP_NAMES) == len(CAPABILITIES) == 41
    assert CAP_NAMES[1] == "DAC_OVERRIDE"
    assert cap_number("CAP_DAC_OVERRIDE") == cap_number("DAC_OVERRIDE") == 1
    assert cap_number("CAP_SYS_ADMIN") == 21
    assert cap_number("CAP_CHECKPOINT_RESTORE") == 40
    with pytest.raises(ValueError):
        cap_number("CAP_NOPE")


def test_ports_protocols_families_states_are_decimal_or_names() -> None:
    from vigil.policy.values import (parse_family, parse_port_range, parse_protocol,
                                     parse_tcp_state)
    assert parse_port_range("80") == (80, 80)
    assert parse_port_range("1024:65535") == (1024, 65535)
    assert parse_protocol("IPPROTO_TCP") == parse_protocol("6") == 6
    assert parse_family("AF_INET6") == parse_family("10") == 10
    assert parse_tcp_state("TCP_LISTEN") == 10
    for parse, text in ((parse_port_range, "0x50"), (parse_protocol, "0x6"),
                        (parse_family, "0b10"), (parse_port_range, "65536")):
        with pytest.raises(ValueError):
            parse(text)
