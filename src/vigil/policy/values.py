"""Value parsers of TracingPolicy fields: integers as Tetragon reads them, ranges,
ports, CIDRs, protocol/family/TCP-state/file-type names, rate limits and Kubernetes
names. Shared by the field checks (:mod:`vigil.policy.checks`) and the compilers, so a
value the checks accept is one the compilers can read. Raise ValueError."""

from __future__ import annotations

import ipaddress
import re

IP_PROTOCOLS: dict[str, int] = {
    "IPPROTO_IP": 0, "IPPROTO_ICMP": 1, "IPPROTO_IGMP": 2, "IPPROTO_IPIP": 4,
    "IPPROTO_TCP": 6, "IPPROTO_EGP": 8, "IPPROTO_PUP": 12, "IPPROTO_UDP": 17,
    "IPPROTO_IDP": 22, "IPPROTO_TP": 29, "IPPROTO_DCCP": 33, "IPPROTO_IPV6": 41,
    "IPPROTO_RSVP": 46, "IPPROTO_GRE": 47, "IPPROTO_ESP": 50, "IPPROTO_AH": 51,
    "IPPROTO_ICMPV6": 58, "IPPROTO_MTP": 92, "IPPROTO_BEETPH": 94, "IPPROTO_ENCAP": 98,
    "IPPROTO_PIM": 103, "IPPROTO_COMP": 108, "IPPROTO_L2TP": 115, "IPPROTO_SCTP": 132,
    "IPPROTO_UDPLITE": 136, "IPPROTO_MPLS": 137, "IPPROTO_ETHERNET": 143,
    "IPPROTO_RAW": 255, "IPPROTO_MPTCP": 262,
}
ADDRESS_FAMILIES: dict[str, int] = {
    "AF_UNSPEC": 0, "AF_UNIX": 1, "AF_LOCAL": 1, "AF_INET": 2, "AF_AX25": 3,
    "AF_IPX": 4, "AF_APPLETALK": 5, "AF_NETROM": 6, "AF_BRIDGE": 7, "AF_ATMPVC": 8,
    "AF_X25": 9, "AF_INET6": 10, "AF_ROSE": 11, "AF_DECnet": 12, "AF_NETBEUI": 13,
    "AF_SECURITY": 14, "AF_KEY": 15, "AF_NETLINK": 16, "AF_ROUTE": 16, "AF_PACKET": 17,
    "AF_ASH": 18, "AF_ECONET": 19, "AF_ATMSVC": 20, "AF_RDS": 21, "AF_SNA": 22,
    "AF_IRDA": 23, "AF_PPPOX": 24, "AF_WANPIPE": 25, "AF_LLC": 26, "AF_IB": 27,
    "AF_MPLS": 28, "AF_CAN": 29, "AF_TIPC": 30, "AF_BLUETOOTH": 31, "AF_IUCV": 32,
    "AF_RXRPC": 33, "AF_ISDN": 34, "AF_PHONET": 35, "AF_IEEE802154": 36, "AF_CAIF": 37,
    "AF_ALG": 38, "AF_NFC": 39, "AF_VSOCK": 40, "AF_KCM": 41, "AF_QIPCRTR": 42,
    "AF_SMC": 43, "AF_XDP": 44, "AF_MCTP": 45,
}
TCP_STATES: dict[str, int] = {
    "TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RECV": 3, "TCP_FIN_WAIT1": 4,
    "TCP_FIN_WAIT2": 5, "TCP_TIME_WAIT": 6, "TCP_CLOSE": 7, "TCP_CLOSE_WAIT": 8,
    "TCP_LAST_ACK": 9, "TCP_LISTEN": 10, "TCP_CLOSING": 11, "TCP_NEW_SYN_RECV": 12,
    "TCP_BOUND_INACTIVE": 13,
}
#: FileType values -> S_IFMT bits of the inode mode
FILE_TYPES: dict[str, int] = {
    "sock": 0o140000, "socket": 0o140000, "lnk": 0o120000, "link": 0o120000,
    "reg": 0o100000, "regular": 0o100000, "blk": 0o060000, "block": 0o060000,
    "dir": 0o040000, "chr": 0o020000, "char": 0o020000, "fifo": 0o010000,
    "pipe": 0o010000,
}


class ValueRangeError(ValueError):
    """A well-formed number that does not fit the argument's type."""


_INT_RE = re.compile(r"^([+-]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$")
_DEC_RE = re.compile(r"^([+-]?)([0-9]+)$")


def parse_int(text: str, *, bits: int = 64, signed: bool | None = None,
              base: int = 0) -> int:
    """An integer as Go's ``strconv.ParseInt(s, base, bits)`` reads it, the one integer
    reader of policy values. ``base=0`` (Tetragon's matchArgs values): decimal, ``0x``
    hex, leading-``0`` (or ``0o``) octal, ``0b`` binary; ``base=10`` (Tetragon's
    matchNamespaces, port, protocol, family and state values): decimal only. Optional sign. ``signed=None``
    (type not known) accepts the union of the signed and unsigned ranges. Raises
    ValueError (ValueRangeError for a well-formed number out of range)."""
    if base not in (0, 10):
        raise ValueError(f"unsupported base {base}")
    text_ = text.strip()
    m = _INT_RE.match(text_.replace("_", "")) if base == 0 else _DEC_RE.match(text_)
    if not m:
        raise ValueError(f'"{text}" is not an integer')
    body = m.group(2)
    if base == 10:
        value = int(body, 10)
    elif len(body) > 1 and body[0] == "0" and body[1].isdigit():
        value = int(body, 8)
    else:
        value = int(body, 0)
    if m.group(1) == "-":
        value = -value
    lo = -(1 << (bits - 1)) if signed in (True, None) else 0
    hi = (1 << bits) - 1 if signed in (False, None) else (1 << (bits - 1)) - 1
    if not lo <= value <= hi:
        kind = {True: "a signed", False: "an unsigned", None: "a"}[signed]
        raise ValueRangeError(f"{text} is out of range for {kind} {bits}-bit value")
    return value


def parse_int_range(text: str, *, bits: int = 64, signed: bool | None = None,
                    base: int = 0) -> tuple[int, int]:
    """``"min:max"`` (inclusive) or a single integer (min == max)."""
    lo_text, sep, hi_text = text.partition(":")
    lo = parse_int(lo_text, bits=bits, signed=signed, base=base)
    hi = parse_int(hi_text, bits=bits, signed=signed, base=base) if sep else lo
    if lo > hi:
        raise ValueError(f'range "{text}" has min > max')
    return lo, hi


def parse_port_range(text: str) -> tuple[int, int]:
    """A port or ``"min:max"`` port range (0..65535), decimal as Tetragon reads them."""
    try:
        return parse_int_range(text, bits=16, signed=False, base=10)
    except ValueRangeError:
        raise ValueRangeError(f'port "{text}" is out of range (0..65535)') from None


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4/IPv6 address or CIDR; host bits may be set (they are masked off)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f'"{text}" is not an IP address or CIDR') from None


def _named_int(table: dict[str, int], what: str, text: str, bits: int) -> int:
    """A name of ``table`` or a decimal number (Tetragon reads these base 10)."""
    if text in table:
        return table[text]
    try:
        return parse_int(text, bits=bits, signed=False, base=10)
    except ValueError:
        raise ValueError(f'"{text}" is not a {what} number or name') from None


def parse_protocol(text: str) -> int:
    """``Protocol`` value: a number or an ``IPPROTO_*`` name."""
    return _named_int(IP_PROTOCOLS, "protocol", text, 16)


def parse_family(text: str) -> int:
    """``Family`` value: a number or an ``AF_*`` name."""
    return _named_int(ADDRESS_FAMILIES, "address family", text, 16)


def parse_tcp_state(text: str) -> int:
    """``State`` value: a number or a ``TCP_*`` name."""
    return _named_int(TCP_STATES, "TCP state", text, 8)


def parse_file_type(text: str) -> int:
    """``FileType`` value -> S_IFMT bits."""
    try:
        return FILE_TYPES[text]
    except KeyError:
        raise ValueError(f'"{text}" is not a file type (expected one of '
                         f'{", ".join(FILE_TYPES)})') from None


_RATE_RE = re.compile(r"^([0-9]+)([smh]?)$")
_RATE_UNIT_MS = {"": 1000, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_rate_limit(text: str) -> int:
    """``rateLimit`` -> milliseconds: ``N`` (seconds), ``Ns``, ``Nm`` or ``Nh``."""
    m = _RATE_RE.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f'invalid rateLimit "{text}": expected a positive N, Ns, Nm or Nh')
    return int(m.group(1)) * _RATE_UNIT_MS[m.group(2)]


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
DNS_LABEL_RE = re.compile(rf"^{_DNS_LABEL}$")
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def dns_subdomain_error(name: str) -> str | None:
    """Why ``name`` is not an RFC 1123 DNS subdomain (object names), or None."""
    if not name:
        return "must not be empty"
    if len(name) > 253:
        return f"must be at most 253 characters (got {len(name)})"
    if not DNS_SUBDOMAIN_RE.match(name):
        return (f'"{name}" is not a valid DNS subdomain name: lower case alphanumerics, '
                "'-' and '.', starting and ending with an alphanumeric")
    return None


def dns_label_error(name: str) -> str | None:
    """Why ``name`` is not an RFC 1123 DNS label (namespaces), or None."""
    if not name:
        return "must not be empty"
    if len(name) > 63:
        return f"must be at most 63 characters (got {len(name)})"
    if not DNS_LABEL_RE.match(name):
        return (f'"{name}" is not a valid DNS label: lower case alphanumerics and \'-\', '
                "starting and ending with an alphanumeric")
    return None


def qualified_name_error(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label/annotation key (``[prefix/]name``), or None."""
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or dns_subdomain_error(prefix)):
        return f'invalid key "{key}": the prefix must be a DNS subdomain'
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.match(name):
        return (f'invalid key "{key}": the name part must be 1..63 alphanumerics, '
                "'-', '_' or '.', starting and ending with an alphanumeric")
    return None


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid Kubernetes label value, or None."""
    if value and (len(value) > 63 or not _QUALIFIED_NAME_RE.match(value)):
        return (f'invalid label value "{value}": at most 63 alphanumerics, \'-\', \'_\' '
                "or '.', starting and ending with an alphanumeric")
    return None
