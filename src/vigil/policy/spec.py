"""The TracingPolicy schema as pydantic models (value parsers: :mod:`vigil.policy.values`).

The models mirror Tetragon's ``cilium.io/v1alpha1`` CRD so that any policy written for
Tetragon loads unchanged. Attribute names are snake_case; the YAML (camelCase) names are
the aliases, and only they are accepted on input (``extra="forbid"``: an unknown key is an
error, as Tetragon's strict unmarshalling makes it). CRD defaults are applied by the
field defaults (``syscall: true``, arg ``type: auto``, capabilities ``type: Effective``,
``rateLimitScope: thread``, ...). Explicit ``null`` means "not set", as for Kubernetes.

Types are strict: a string is never turned into a number or a boolean. The one deliberate
leniency: list items of ``values`` (and ``rateLimit``) are strings in the CRD, and a YAML
integer there is accepted and kept as its decimal text (``values: [0, 1]``).

Enumerations keep the CRD's exact spelling, case-sensitively. Operator aliases that the
CRD enum itself allows are normalised to one canonical member: ``GT`` -> ``GreaterThan``,
``LT`` -> ``LessThan``. ``Operator.code`` is Tetragon's internal operator number.

Only single-field rules live here (types, enums, formats, simple list limits); rules that
need several fields, references or the hook kind are in :mod:`vigil.policy.checks`.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from vigil.capabilities import CAPABILITIES
from vigil.policy.diagnostics import Diagnostic
from vigil.policy.values import dns_subdomain_error, parse_rate_limit

if TYPE_CHECKING:
    from vigil.policy.store_api import PolicyMode

# --------------------------------------------------------------------------------------
# Enumerations (CRD spellings)
# --------------------------------------------------------------------------------------


class PolicyKind(str, enum.Enum):
    """The two resource kinds that carry a TracingPolicySpec."""

    TRACING_POLICY = "TracingPolicy"
    TRACING_POLICY_NAMESPACED = "TracingPolicyNamespaced"


API_VERSION = "cilium.io/v1alpha1"


class HookKind(str, enum.Enum):
    """The ``spec`` list a hook comes from (its YAML key)."""

    KPROBES = "kprobes"
    FENTRIES = "fentries"
    TRACEPOINTS = "tracepoints"
    UPROBES = "uprobes"
    USDTS = "usdts"
    LSMHOOKS = "lsmhooks"


class ArgType(str, enum.Enum):
    """``KProbeArg.type``: every spelling of the CRD enum (aliases kept as written,
    because the event encoding can depend on the spelling; see :attr:`canonical`)."""

    AUTO = "auto"
    INT = "int"
    SINT8 = "sint8"
    INT8 = "int8"
    UINT8 = "uint8"
    SINT16 = "sint16"
    INT16 = "int16"
    UINT16 = "uint16"
    UINT32 = "uint32"
    SINT32 = "sint32"
    INT32 = "int32"
    ULONG = "ulong"
    UINT64 = "uint64"
    SIZE_T = "size_t"
    LONG = "long"
    SINT64 = "sint64"
    INT64 = "int64"
    CHAR_BUF = "char_buf"
    CHAR_IOVEC = "char_iovec"
    SKB = "skb"
    SOCK = "sock"
    SOCKADDR = "sockaddr"
    SOCKET = "socket"
    SOCKADDR_UN = "sockaddr_un"
    STRING = "string"
    FD = "fd"
    FILE = "file"
    FILENAME = "filename"
    PATH = "path"
    NOP = "nop"
    BPF_ATTR = "bpf_attr"
    PERF_EVENT = "perf_event"
    BPF_MAP = "bpf_map"
    USER_NAMESPACE = "user_namespace"
    CAPABILITY = "capability"
    KIOCB = "kiocb"
    IOV_ITER = "iov_iter"
    CRED = "cred"
    CONST_BUF = "const_buf"
    LOAD_INFO = "load_info"
    MODULE = "module"
    SYSCALL64 = "syscall64"
    KERNEL_CAP_T = "kernel_cap_t"
    CAP_INHERITABLE = "cap_inheritable"
    CAP_PERMITTED = "cap_permitted"
    CAP_EFFECTIVE = "cap_effective"
    LINUX_BINPRM = "linux_binprm"
    DATA_LOC = "data_loc"
    NET_DEVICE = "net_device"
    BPF_CMD = "bpf_cmd"
    DENTRY = "dentry"
    BPF_PROG = "bpf_prog"

    @property
    def canonical(self) -> ArgType:
        """One name per kernel representation: int/int32/sint32 -> ``int32``,
        long/int64/sint64 -> ``int64``, ulong/uint64 -> ``uint64``, int16/sint16 ->
        ``int16``, int8/sint8 -> ``int8``; every other type is its own canonical name."""
        return _CANONICAL_TYPE.get(self, self)

    @property
    def int_layout(self) -> tuple[int, bool] | None:
        """(bits, signed) for the integer types that selectors compare as numbers."""
        return _INT_LAYOUT.get(self.canonical)

    @property
    def is_int(self) -> bool:
        return self.canonical in _INT_LAYOUT

    @property
    def is_string(self) -> bool:
        """Types matched as a string/path (Equal/Prefix/Postfix/SubString ...)."""
        return self in STRING_ARG_TYPES

    @property
    def is_network(self) -> bool:
        return self in NETWORK_ARG_TYPES or self is ArgType.SOCKADDR


_CANONICAL_TYPE = {
    ArgType.INT: ArgType.INT32, ArgType.SINT32: ArgType.INT32,
    ArgType.LONG: ArgType.INT64, ArgType.SINT64: ArgType.INT64,
    ArgType.ULONG: ArgType.UINT64,
    ArgType.SINT16: ArgType.INT16, ArgType.SINT8: ArgType.INT8,
}
_INT_LAYOUT: dict[ArgType, tuple[int, bool]] = {
    ArgType.INT8: (8, True), ArgType.UINT8: (8, False),
    ArgType.INT16: (16, True), ArgType.UINT16: (16, False),
    ArgType.INT32: (32, True), ArgType.UINT32: (32, False),
    ArgType.INT64: (64, True), ArgType.UINT64: (64, False), ArgType.SIZE_T: (64, False),
    ArgType.SYSCALL64: (64, False), ArgType.BPF_CMD: (32, True),
    ArgType.CAPABILITY: (32, True), ArgType.KERNEL_CAP_T: (64, False),
    ArgType.CAP_INHERITABLE: (64, False), ArgType.CAP_PERMITTED: (64, False),
    ArgType.CAP_EFFECTIVE: (64, False),
}
STRING_ARG_TYPES = frozenset({
    ArgType.STRING, ArgType.CHAR_BUF, ArgType.FILENAME, ArgType.FD, ArgType.FILE,
    ArgType.PATH, ArgType.DENTRY, ArgType.LINUX_BINPRM, ArgType.DATA_LOC,
    ArgType.NET_DEVICE, ArgType.KIOCB, ArgType.SOCKADDR_UN,
})
NETWORK_ARG_TYPES = frozenset({ArgType.SOCK, ArgType.SOCKET, ArgType.SKB})


class Operator(str, enum.Enum):
    """Selector operators, canonical CRD spelling (``GT``/``LT`` are read as
    ``GreaterThan``/``LessThan``). ``In``/``NotIn`` serve matchBinaries, matchPIDs,
    matchNamespaces and capability filters."""

    EQUAL = "Equal"
    NOT_EQUAL = "NotEqual"
    PREFIX = "Prefix"
    NOT_PREFIX = "NotPrefix"
    POSTFIX = "Postfix"
    NOT_POSTFIX = "NotPostfix"
    GREATER_THAN = "GreaterThan"
    LESS_THAN = "LessThan"
    MASK = "Mask"
    SPORT = "SPort"
    NOT_SPORT = "NotSPort"
    SPORT_PRIV = "SPortPriv"
    NOT_SPORT_PRIV = "NotSportPriv"  # sic: the CRD's spelling
    DPORT = "DPort"
    NOT_DPORT = "NotDPort"
    DPORT_PRIV = "DPortPriv"
    NOT_DPORT_PRIV = "NotDPortPriv"
    SADDR = "SAddr"
    NOT_SADDR = "NotSAddr"
    DADDR = "DAddr"
    NOT_DADDR = "NotDAddr"
    PROTOCOL = "Protocol"
    FAMILY = "Family"
    STATE = "State"
    IN_MAP = "InMap"
    NOT_IN_MAP = "NotInMap"
    CAPABILITIES_GAINED = "CapabilitiesGained"
    IN_RANGE = "InRange"
    NOT_IN_RANGE = "NotInRange"
    SUBSTRING = "SubString"
    SUBSTRING_IGN_CASE = "SubStringIgnCase"
    CEL_EXPR = "CelExpr"
    FILE_TYPE = "FileType"
    NOT_FILE_TYPE = "NotFileType"
    IN = "In"
    NOT_IN = "NotIn"

    @property
    def code(self) -> int:
        """Tetragon's internal operator number (``selectors.SelectorOp``)."""
        return _OP_CODES[self]


_OP_CODES = {
    Operator.GREATER_THAN: 1, Operator.LESS_THAN: 2, Operator.EQUAL: 3,
    Operator.NOT_EQUAL: 4, Operator.IN: 5, Operator.NOT_IN: 6, Operator.PREFIX: 8,
    Operator.POSTFIX: 9, Operator.IN_MAP: 10, Operator.NOT_IN_MAP: 11, Operator.MASK: 12,
    Operator.SADDR: 13, Operator.DADDR: 14, Operator.SPORT: 15, Operator.DPORT: 16,
    Operator.PROTOCOL: 17, Operator.NOT_SPORT: 18, Operator.NOT_DPORT: 19,
    Operator.SPORT_PRIV: 20, Operator.NOT_SPORT_PRIV: 21, Operator.DPORT_PRIV: 22,
    Operator.NOT_DPORT_PRIV: 23, Operator.NOT_SADDR: 24, Operator.NOT_DADDR: 25,
    Operator.NOT_PREFIX: 26, Operator.NOT_POSTFIX: 27, Operator.FAMILY: 28,
    Operator.STATE: 29, Operator.CAPABILITIES_GAINED: 30, Operator.IN_RANGE: 31,
    Operator.NOT_IN_RANGE: 32, Operator.SUBSTRING: 33, Operator.SUBSTRING_IGN_CASE: 34,
    Operator.CEL_EXPR: 35, Operator.FILE_TYPE: 36, Operator.NOT_FILE_TYPE: 37,
}
OPERATOR_ALIASES = {"GT": Operator.GREATER_THAN, "LT": Operator.LESS_THAN}

ARG_OPERATORS = frozenset(Operator) - {Operator.IN, Operator.NOT_IN}
BINARY_OPERATORS = frozenset({Operator.IN, Operator.NOT_IN, Operator.PREFIX,
                              Operator.NOT_PREFIX, Operator.POSTFIX, Operator.NOT_POSTFIX})
SET_OPERATORS = frozenset({Operator.IN, Operator.NOT_IN})

#: operators whose values are numbers compared in the kernel (at most 4 values)
NUMERIC_OPERATORS = frozenset({Operator.GREATER_THAN, Operator.LESS_THAN, Operator.MASK,
                               Operator.IN_RANGE, Operator.NOT_IN_RANGE})
ADDR_OPERATORS = frozenset({Operator.SADDR, Operator.NOT_SADDR, Operator.DADDR,
                            Operator.NOT_DADDR})
PORT_OPERATORS = frozenset({Operator.SPORT, Operator.NOT_SPORT, Operator.DPORT,
                            Operator.NOT_DPORT})
PRIV_PORT_OPERATORS = frozenset({Operator.SPORT_PRIV, Operator.NOT_SPORT_PRIV,
                                 Operator.DPORT_PRIV, Operator.NOT_DPORT_PRIV})
STRING_OPERATORS = frozenset({Operator.EQUAL, Operator.NOT_EQUAL, Operator.PREFIX,
                              Operator.NOT_PREFIX, Operator.POSTFIX, Operator.NOT_POSTFIX,
                              Operator.SUBSTRING, Operator.SUBSTRING_IGN_CASE})
INT_OPERATORS = frozenset({Operator.EQUAL, Operator.NOT_EQUAL, Operator.GREATER_THAN,
                           Operator.LESS_THAN, Operator.MASK, Operator.IN_RANGE,
                           Operator.NOT_IN_RANGE, Operator.IN_MAP, Operator.NOT_IN_MAP})
NETWORK_OPERATORS = (ADDR_OPERATORS | PORT_OPERATORS | PRIV_PORT_OPERATORS
                     | {Operator.PROTOCOL, Operator.FAMILY, Operator.STATE})
SOCKADDR_OPERATORS = frozenset({Operator.SADDR, Operator.NOT_SADDR, Operator.SPORT,
                                Operator.NOT_SPORT, Operator.SPORT_PRIV,
                                Operator.NOT_SPORT_PRIV, Operator.FAMILY})


def operators_for_type(t: ArgType) -> frozenset[Operator] | None:
    """matchArgs operators valid on an argument of type ``t``; None = not restricted
    here (types whose applicability the reference does not pin down)."""
    if t.is_int:
        return INT_OPERATORS | {Operator.CEL_EXPR}
    if t in (ArgType.FILE, ArgType.PATH):
        return STRING_OPERATORS | {Operator.FILE_TYPE, Operator.NOT_FILE_TYPE,
                                   Operator.CEL_EXPR}
    if t is ArgType.SOCKADDR_UN:
        return STRING_OPERATORS | {Operator.FAMILY, Operator.CEL_EXPR}
    if t.is_string:
        return STRING_OPERATORS | {Operator.CEL_EXPR}
    if t in NETWORK_ARG_TYPES:
        return NETWORK_OPERATORS | {Operator.CEL_EXPR}
    if t is ArgType.SOCKADDR:
        return SOCKADDR_OPERATORS | {Operator.CEL_EXPR}
    if t is ArgType.CRED:
        return frozenset({Operator.CAPABILITIES_GAINED, Operator.CEL_EXPR})
    return None


class Action(str, enum.Enum):
    """``matchActions[].action`` (CRD enum, case-sensitive)."""

    POST = "Post"
    SIGKILL = "Sigkill"
    OVERRIDE = "Override"
    GET_URL = "GetUrl"
    DNS_LOOKUP = "DnsLookup"
    NO_POST = "NoPost"
    SIGNAL = "Signal"
    TRACK_SOCK = "TrackSock"
    UNTRACK_SOCK = "UntrackSock"
    NOTIFY_ENFORCER = "NotifyEnforcer"
    CLEANUP_ENFORCER_NOTIFICATION = "CleanupEnforcerNotification"
    SET = "Set"

    @property
    def is_enforcement(self) -> bool:
        """Actions that change what the traced process experiences; a policy without
        any of them is ``monitor_only``."""
        return self in ENFORCEMENT_ACTIONS


ENFORCEMENT_ACTIONS = frozenset({Action.SIGKILL, Action.SIGNAL, Action.NOTIFY_ENFORCER,
                                 Action.OVERRIDE, Action.SET})
RETURN_ARG_ACTIONS = frozenset({Action.TRACK_SOCK, Action.UNTRACK_SOCK})


class RateLimitScope(str, enum.Enum):
    THREAD = "thread"
    PROCESS = "process"
    GLOBAL = "global"


class CapabilityType(str, enum.Enum):
    EFFECTIVE = "Effective"
    INHERITABLE = "Inheritable"
    PERMITTED = "Permitted"


class NamespaceType(str, enum.Enum):
    UTS = "Uts"
    IPC = "Ipc"
    MNT = "Mnt"
    PID = "Pid"
    PID_FOR_CHILDREN = "PidForChildren"
    NET = "Net"
    TIME = "Time"
    TIME_FOR_CHILDREN = "TimeForChildren"
    CGROUP = "Cgroup"
    USER = "User"


class ListType(str, enum.Enum):
    SYSCALLS = "syscalls"
    GENERATED_SYSCALLS = "generated_syscalls"
    GENERATED_FTRACE = "generated_ftrace"


class LabelOperator(str, enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class Mode(str, enum.Enum):
    """Effective policy mode: enforce, monitor, or monitor_only when nothing enforces."""

    ENFORCE = "enforce"
    MONITOR = "monitor"
    MONITOR_ONLY = "monitor_only"

    def to_api(self) -> PolicyMode:
        """The gRPC ``TracingPolicyMode`` value."""
        from vigil.policy.store_api import PolicyMode
        return {Mode.ENFORCE: PolicyMode.ENFORCE, Mode.MONITOR: PolicyMode.MONITOR,
                Mode.MONITOR_ONLY: PolicyMode.MONITOR_ONLY}[self]


#: spec.options names and what their value must be
KNOWN_OPTIONS = ("disable-kprobe-multi", "disable-uprobe-multi", "override-method",
                 "policy-mode", "sleepable-preload-size")

BINARY_DIGEST_LENGTHS = {"sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128,
                         "build-id": 0}

MAX_PREFIX_LEN = 256
MAX_POSTFIX_LEN = 127
MAX_STRING_LEN = 4096
MAX_BINARY_PATH_LEN = 255
MAX_SUBSTRINGS = 100
MAX_SUBSTRING_LEN = 99
MAX_MATCH_VALUES = 4
MAX_INMAP_VALUES = 65536   # InMap / NotInMap: values once ranges are expanded (Vigil)
MAX_SELECTORS = 5
MAX_ACTIONS = 3
MAX_HOOK_ARGS = 5
MAX_MATCH_ARGS = 5
MAX_NAMESPACE_FILTERS = 10
MAX_NAMESPACE_VALUES = 4
MAX_PID_VALUES = 4
MAX_TAGS = 16
MAX_MESSAGE_LEN = 256
MAX_RESOLVE_DEPTH = 10
MAX_FOLLOW_CHILDREN_SELECTORS = 64

# --------------------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------------------


def type_name(value: Any) -> str:
    """How a YAML value's type is named in messages."""
    if value is None:
        return "null"
    for cls, name in ((bool, "boolean"), (int, "integer"), (float, "number"),
                      (str, "string"), (list, "list"), (dict, "mapping"),
                      (bytes, "binary")):
        if isinstance(value, cls):
            return name
    return "timestamp" if hasattr(value, "isoformat") else type(value).__name__


def _fail(code: str, message: str) -> PydanticCustomError:
    """A validation error carrying our stable code; the message is passed as context so
    braces in user text are never interpreted."""
    return PydanticCustomError(code, "{msg}", {"msg": message})


def suggest(word: str, choices: list[str]) -> str:
    """`` (did you mean "X"?)`` for a near miss, else ``""``."""
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return f' (did you mean "{lowered[word.lower()]}"?)'
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


E = TypeVar("E", bound=enum.Enum)


def _enum_field(cls: type[E], what: str, allowed: frozenset[Any] | None = None,
                aliases: dict[str, Any] | None = None) -> BeforeValidator:
    """Validator for a CRD enum: exact spelling, listed aliases normalised, optionally
    restricted to a subset (e.g. the operators matchBinaries accepts)."""
    members = [m for m in cls if allowed is None or m in allowed]
    names = [str(m.value) for m in members]

    def check(value: Any) -> Any:
        if isinstance(value, cls) and value in members:
            return value
        if not isinstance(value, str):
            raise _fail("policy.type", f"expected string, got {type_name(value)}")
        member = (aliases or {}).get(value)
        if member is None:
            member = next((m for m in members if m.value == value), None)
        if member is None or member not in members:
            hint = suggest(value, names + list(aliases or {}))
            for alias, target in (aliases or {}).items():
                hint = hint.replace(f'"{alias}"', f'"{target.value}"')
            raise _fail("policy.invalid_value", f'invalid {what} "{value}"' + (
                hint or f": expected one of {', '.join(names)}"))
        return member
    return BeforeValidator(check)


def _value_text(value: Any) -> Any:
    """``values`` items are strings; integers are accepted and kept as decimal text."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _fail("policy.type", f"expected string, got {type_name(value)}")
    return str(value)


U32 = Annotated[StrictInt, Field(ge=0, le=0xFFFF_FFFF)]
U64 = Annotated[StrictInt, Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]
I32 = Annotated[StrictInt, Field(ge=-(1 << 31), le=(1 << 31) - 1)]
I64 = Annotated[StrictInt, Field(ge=-(1 << 63), le=(1 << 63) - 1)]
Str = StrictStr
Bool = StrictBool
ValueStr = Annotated[str, BeforeValidator(_value_text)]
Tag = Annotated[StrictStr, Field(min_length=2, max_length=128)]
BinaryPath = Annotated[StrictStr, Field(max_length=MAX_BINARY_PATH_LEN)]

ArgTypeField = Annotated[ArgType, _enum_field(ArgType, "argument type")]
ArgOperatorField = Annotated[Operator, _enum_field(Operator, "operator", ARG_OPERATORS,
                                                   OPERATOR_ALIASES)]
BinaryOperatorField = Annotated[Operator, _enum_field(Operator, "operator",
                                                      BINARY_OPERATORS)]
SetOperatorField = Annotated[Operator, _enum_field(Operator, "operator", SET_OPERATORS)]
ActionField = Annotated[Action, _enum_field(Action, "action")]
ReturnArgActionField = Annotated[Action, _enum_field(Action, "returnArgAction",
                                                     RETURN_ARG_ACTIONS)]
RateLimitScopeField = Annotated[RateLimitScope, _enum_field(RateLimitScope,
                                                            "rateLimitScope")]
CapabilityTypeField = Annotated[CapabilityType, _enum_field(CapabilityType,
                                                            "capability set")]
NamespaceTypeField = Annotated[NamespaceType, _enum_field(NamespaceType, "namespace")]
_NS_BY_LOWER = {m.value.lower(): m for m in NamespaceType}


def _ns_change_name(value: Any) -> Any:
    """matchNamespaceChanges values: Tetragon looks each name up lower-cased (its CRD
    lists no enum for them), so "mnt" and "MNT" name Mnt too."""
    if isinstance(value, str):
        return _NS_BY_LOWER.get(value.lower(), value)
    return value


# (the enum check after the lower-cased lookup gives an unknown name its error)
NamespaceChangeField = Annotated[NamespaceType, _enum_field(NamespaceType, "namespace"),
                                 BeforeValidator(_ns_change_name)]
ListTypeField = Annotated[ListType, _enum_field(ListType, "list type")]
LabelOperatorField = Annotated[LabelOperator, _enum_field(LabelOperator, "operator")]
KindField = Annotated[PolicyKind, _enum_field(PolicyKind, "kind")]


def _capability_name(value: Any) -> Any:
    value = _value_text(value)
    if value not in CAPABILITIES:
        raise _fail("policy.invalid_value",
                    f'unknown capability "{value}"{suggest(value, list(CAPABILITIES))}')
    return value


CapabilityName = Annotated[str, BeforeValidator(_capability_name)]


def _digest(value: Any) -> Any:
    if not isinstance(value, str):
        raise _fail("policy.type", f"expected string, got {type_name(value)}")
    algo, _, hexdigits = value.partition(":")
    want = BINARY_DIGEST_LENGTHS.get(algo)
    ok = (want is not None and re.fullmatch(r"[0-9a-fA-F]+", hexdigits or "") is not None
          and (len(hexdigits) == want if want else len(hexdigits) % 2 == 0))
    if not ok:
        raise _fail("policy.invalid_value",
                    f'invalid binary digest "{value}": expected ALGO:HEX with ALGO one of '
                    f"{', '.join(BINARY_DIGEST_LENGTHS)} and the digest length it implies")
    return value


BinaryDigest = Annotated[str, BeforeValidator(_digest)]

# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class _Model(BaseModel):
    """Common configuration: camelCase aliases only, unknown keys rejected, nulls unset."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel,
                              validate_by_alias=True, validate_by_name=False,
                              serialize_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        """Kubernetes prunes ``null`` fields before defaulting: treat them as absent."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    def is_set(self, field: str) -> bool:
        """Whether the policy wrote this field (as opposed to taking the default)."""
        return field in self.model_fields_set


class KProbeArg(_Model):
    """An argument (``args``), extra data (``data``) or ``returnArg``."""

    index: U32
    type: ArgTypeField = ArgType.AUTO
    resolve: Str = ""
    size_arg_index: U32 = 0
    return_copy: Bool = False
    max_data: Bool = False
    label: Str | None = None
    source: Str | None = None
    btf_type: Str | None = None
    btf_type_module: Str | None = None


class LabelSelectorRequirement(_Model):
    key: Str
    operator: LabelOperatorField
    values: list[Str] = []


class LabelSelector(_Model):
    """Kubernetes ``metav1.LabelSelector``; empty = select everything."""

    match_labels: dict[Str, Str] = {}
    match_expressions: list[LabelSelectorRequirement] = []

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


class PIDSelector(_Model):
    operator: SetOperatorField
    values: Annotated[list[U32], Field(max_length=MAX_PID_VALUES)] = []
    is_namespace_pid: Bool = Field(False, alias="isNamespacePID")
    follow_forks: Bool = False


class ArgSelector(_Model):
    """matchArgs / matchData / matchReturnArgs entry. ``values`` stay text; use the
    module's parsers (``parse_int`` ...) for the argument's type."""

    index: U32 | None = None
    args: list[U32] = []
    operator: ArgOperatorField
    values: list[ValueStr] = []

    @property
    def arg_positions(self) -> list[int]:
        """Positions in the hook's ``args`` list when ``args`` is given (it wins)."""
        return list(self.args)


class BinarySelector(_Model):
    operator: BinaryOperatorField
    values: list[BinaryPath] = []
    follow_children: Bool = False


class NamespaceSelector(_Model):
    namespace: NamespaceTypeField
    operator: SetOperatorField
    values: Annotated[list[ValueStr], Field(max_length=MAX_NAMESPACE_VALUES)] = []


class NamespaceChangesSelector(_Model):
    operator: SetOperatorField
    values: list[NamespaceChangeField] = []


class CapabilitiesSelector(_Model):
    type: CapabilityTypeField = CapabilityType.EFFECTIVE
    operator: SetOperatorField
    is_namespace_capability: Bool = False
    values: list[CapabilityName] = []


class WorkloadSelector(_Model):
    pod_selector: LabelSelector | None = None
    container_selector: LabelSelector | None = None
    host_selector: LabelSelector | None = None


class ActionSelector(_Model):
    """One ``matchActions`` / ``matchReturnActions`` entry."""

    action: ActionField
    arg_error: I32 | None = None
    arg_sig: U32 | None = None
    arg_fqdn: Str | None = None
    arg_url: Str | None = None
    arg_sock: U32 | None = None
    rate_limit: ValueStr | None = None
    rate_limit_scope: RateLimitScopeField = RateLimitScope.THREAD
    kernel_stack_trace: Bool = False
    user_stack_trace: Bool = False
    ima_hash: Bool = False
    arg_index: U32 | None = None
    arg_value: U32 | None = None
    arg_regs: list[Str] = []
    arg_new_symbol: Str | None = None
    arg_new_addr: U64 | None = None
    arg_new_offset: I64 | None = None

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_format(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_rate_limit(value)
            except ValueError as err:
                raise _fail("policy.invalid_value", str(err)) from None
        return value

    @property
    def rate_limit_ms(self) -> int | None:
        """``rateLimit`` in milliseconds (None: not rate limited)."""
        return parse_rate_limit(self.rate_limit) if self.rate_limit is not None else None


SELECTOR_FILTER_FIELDS = ("match_pids", "match_args", "match_data", "match_return_args",
                          "match_binaries", "match_parent_binaries", "match_namespaces",
                          "match_namespace_changes", "match_capabilities",
                          "match_capability_changes", "match_workloads", "match_actions",
                          "match_return_actions")


class KProbeSelector(_Model):
    """One selector: filters AND-ed, then up to 3 actions. Macros are merged by
    :meth:`merged` (the loader has already checked they exist and do not collide)."""

    label: Str | None = None
    match_pids: list[PIDSelector] = Field([], alias="matchPIDs")
    match_args: list[ArgSelector] = []
    match_data: list[ArgSelector] = []
    match_return_args: list[ArgSelector] = []
    match_binaries: Annotated[list[BinarySelector], Field(max_length=1)] = []
    match_parent_binaries: Annotated[list[BinarySelector], Field(max_length=1)] = []
    match_namespaces: Annotated[list[NamespaceSelector],
                                Field(max_length=MAX_NAMESPACE_FILTERS)] = []
    match_namespace_changes: Annotated[list[NamespaceChangesSelector],
                                       Field(max_length=1)] = []
    match_capabilities: list[CapabilitiesSelector] = []
    match_capability_changes: list[CapabilitiesSelector] = []
    match_workloads: WorkloadSelector | None = None  # an object in Tetragon's CRD
    match_actions: Annotated[list[ActionSelector], Field(max_length=MAX_ACTIONS)] = []
    match_return_actions: Annotated[list[ActionSelector],
                                    Field(max_length=MAX_ACTIONS)] = []
    macros: list[Str] = []

    def set_filter_fields(self) -> list[str]:
        """The filter/action fields this selector writes (snake_case names)."""
        return [f for f in SELECTOR_FILTER_FIELDS if getattr(self, f)]

    def merged(self, macros: dict[str, KProbeSelector]) -> KProbeSelector:
        """This selector with its ``macros`` folded in (unknown names are skipped)."""
        if not self.macros:
            return self
        update: dict[str, Any] = {}
        for name in self.macros:
            macro = macros.get(name)
            if macro is None:
                continue
            for f in macro.set_filter_fields():
                if not getattr(self, f) and f not in update:
                    update[f] = getattr(macro, f)
            if self.label is None and macro.label is not None and "label" not in update:
                update["label"] = macro.label
        return self.model_copy(update=update)

    def all_actions(self) -> Iterator[ActionSelector]:
        yield from self.match_actions
        yield from self.match_return_actions


class _HookBase(_Model):
    """Fields every hook kind has."""

    message: Str | None = None
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []
    args: list[KProbeArg] = []
    selectors: Annotated[list[KProbeSelector], Field(max_length=MAX_SELECTORS)] = []

    _message_length: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _truncate_message(self) -> _HookBase:
        """Tetragon keeps at most 256 message characters; the loader warns."""
        self._message_length = len(self.message or "")
        if self.message is not None and len(self.message) > MAX_MESSAGE_LEN:
            self.message = self.message[:MAX_MESSAGE_LEN]
        return self

    @property
    def original_message_length(self) -> int:
        return self._message_length

    @property
    def data_args(self) -> list[KProbeArg]:
        return list(getattr(self, "data", []))

    @property
    def is_return(self) -> bool:
        return bool(getattr(self, "return_", False))

    @property
    def return_arg_spec(self) -> KProbeArg | None:
        return getattr(self, "return_arg", None)


class KProbeIgnore(_Model):
    call_not_found: Bool = False


class KProbeSpec(_HookBase):
    """``kprobes[]`` and ``fentries[]``."""

    call: Str
    syscall: Bool = True
    return_: Bool = Field(False, alias="return")
    return_arg: KProbeArg | None = None
    return_arg_action: ReturnArgActionField | None = None
    data: list[KProbeArg] = []
    ignore: KProbeIgnore | None = None

    @property
    def list_name(self) -> str | None:
        """NAME for ``call: "list:NAME"``."""
        return self.call[5:] if self.call.startswith("list:") else None


class TracepointSpec(_HookBase):
    subsystem: Str
    event: Str
    raw: Bool = False


class UProbeIgnore(_Model):
    digest_verification_failure: Bool = False


class UProbeSpec(_HookBase):
    path: Str
    btf_path: Str | None = None
    symbols: list[Str] = []
    offsets: list[U64] = []
    addrs: list[U64] = []
    ref_ctr_offsets: list[U64] = []
    return_: Bool = Field(False, alias="return")
    return_arg: KProbeArg | None = None
    data: list[KProbeArg] = []
    binary_digests: list[BinaryDigest] = []
    ignore: UProbeIgnore | None = None


class UsdtSpec(_HookBase):
    path: Str
    btf_path: Str | None = None
    provider: Str
    name: Str


class LsmHookSpec(_HookBase):
    hook: Str


Hook = KProbeSpec | TracepointSpec | UProbeSpec | UsdtSpec | LsmHookSpec

HOOK_MODELS: dict[HookKind, type[_HookBase]] = {
    HookKind.KPROBES: KProbeSpec, HookKind.FENTRIES: KProbeSpec,
    HookKind.TRACEPOINTS: TracepointSpec, HookKind.UPROBES: UProbeSpec,
    HookKind.USDTS: UsdtSpec, HookKind.LSMHOOKS: LsmHookSpec,
}


class EnforcerSpec(_Model):
    calls: list[Str]


class ListSpec(_Model):
    name: Str
    values: list[Str] = []
    type: ListTypeField | None = None
    pattern: Str | None = None
    validated: Bool = False


class OptionSpec(_Model):
    name: Str
    value: Str = ""


class Spec(_Model):
    """``TracingPolicySpec``."""

    kprobes: list[KProbeSpec] = []
    fentries: list[KProbeSpec] = []
    tracepoints: list[TracepointSpec] = []
    uprobes: list[UProbeSpec] = []
    usdts: list[UsdtSpec] = []
    lsmhooks: list[LsmHookSpec] = []
    loader: Bool = False
    enforcers: Annotated[list[EnforcerSpec], Field(max_length=1)] = []
    lists: list[ListSpec] = []
    options: list[OptionSpec] = []
    selectors_macros: dict[Str, KProbeSelector] = {}
    pod_selector: LabelSelector | None = None
    container_selector: LabelSelector | None = None
    host_selector: LabelSelector | None = None
    node_selector: LabelSelector | None = None

    def hooks(self) -> Iterator[tuple[HookKind, int, Hook]]:
        """Every hook with its kind and position in its list."""
        for kind in HookKind:
            for i, hook in enumerate(getattr(self, kind.value)):
                yield kind, i, hook

    def option(self, name: str) -> str | None:
        """Value of ``spec.options`` entry ``name`` (the last one wins), or None."""
        found = None
        for opt in self.options:
            if opt.name == name:
                found = opt.value
        return found

    def list_by_name(self, name: str) -> ListSpec | None:
        return next((lst for lst in self.lists if lst.name == name), None)

    def effective_selectors(self, hook: Hook) -> list[KProbeSelector]:
        """The hook's selectors with macros merged in — what the compiler compiles."""
        return [sel.merged(self.selectors_macros) for sel in hook.selectors]


class Metadata(_Model):
    """The ObjectMeta fields a policy uses; server-populated ones are accepted and
    ignored so ``kubectl get -o yaml`` output loads."""

    name: Str
    namespace: Str | None = None
    labels: dict[Str, Str] = {}
    annotations: dict[Str, Str] = {}
    generate_name: Any = None
    uid: Any = None
    resource_version: Any = None
    generation: Any = None
    creation_timestamp: Any = None
    deletion_timestamp: Any = None
    deletion_grace_period_seconds: Any = None
    owner_references: Any = None
    finalizers: Any = None
    managed_fields: Any = None

    @field_validator("name")
    @classmethod
    def _dns_subdomain(cls, value: str) -> str:
        problem = dns_subdomain_error(value)
        if problem:
            raise _fail("policy.invalid_value", f"invalid policy name: {problem}")
        return value


def _api_version(value: Any) -> Any:
    if not isinstance(value, str):
        raise _fail("policy.type", f"expected string, got {type_name(value)}")
    if value != API_VERSION:
        raise _fail("policy.invalid_value",
                    f'unsupported apiVersion "{value}": expected "{API_VERSION}"')
    return value


class Policy(_Model):
    """A loaded, validated TracingPolicy or TracingPolicyNamespaced.

    Besides the document, it carries the loader's ``warnings``, the source name and the
    node positions, so later stages (compiler) can report located diagnostics with
    :meth:`diagnostic`."""

    api_version: Annotated[str, BeforeValidator(_api_version)] = Field(alias="apiVersion")
    kind: KindField
    metadata: Metadata
    spec: Spec
    status: Any = None  # TracingPolicyStatus written by the agent; ignored on input

    _warnings: list[Diagnostic] = PrivateAttr(default_factory=list)
    _source: str = PrivateAttr(default="<string>")
    _locate: Callable[[tuple[str | int, ...], str], tuple[int, int]] | None = PrivateAttr(
        default=None)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """The namespace of a TracingPolicyNamespaced; "" for cluster-wide policies."""
        if self.kind is PolicyKind.TRACING_POLICY_NAMESPACED:
            return self.metadata.namespace or ""
        return ""

    @property
    def namespaced(self) -> bool:
        return self.kind is PolicyKind.TRACING_POLICY_NAMESPACED

    @property
    def source(self) -> str:
        return self._source

    @property
    def warnings(self) -> list[Diagnostic]:
        return list(self._warnings)

    @property
    def requested_mode(self) -> Mode:
        """The ``policy-mode`` option (default enforce)."""
        return Mode(self.spec.option("policy-mode") or "enforce")

    @property
    def has_enforcement(self) -> bool:
        """Whether any selector (macros merged) uses an enforcement action."""
        for _, _, hook in self.spec.hooks():
            for sel in self.spec.effective_selectors(hook):
                if any(a.action.is_enforcement for a in sel.all_actions()):
                    return True
        return False

    @property
    def mode(self) -> Mode:
        """enforce / monitor as requested, forced to monitor_only without enforcement."""
        return self.requested_mode if self.has_enforcement else Mode.MONITOR_ONLY

    def locate(self, path: tuple[str | int, ...], at: str = "value") -> tuple[int, int]:
        """(line, col) of a YAML path like ``("spec", "kprobes", 0, "call")``: the value
        (or ``at="key"``: its key); the nearest enclosing node when absent; (1, 1) when
        the policy was built without a loader."""
        return self._locate(path, at) if self._locate else (1, 1)

    def diagnostic(self, path: tuple[str | int, ...], code: str, message: str,
                   severity: str = "error", at: str = "value") -> Diagnostic:
        """A diagnostic located in this policy's source — for the compiler's own checks."""
        line, col = self.locate(path, at)
        return Diagnostic(self._source, line, col, format_path(path), code, message,
                          "warning" if severity == "warning" else "error")


_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(path: tuple[str | int, ...]) -> str:
    """``("spec", "kprobes", 0, "call")`` -> ``spec.kprobes[0].call``; keys that are not
    identifiers (label keys ...) are quoted: ``metadata.labels["app.kubernetes.io/x"]``."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _IDENT_RE.match(seg):
            out += f".{seg}" if out else seg
        else:
            out += f'["{seg}"]'
    return out


__all__ = [
    "API_VERSION", "Action", "ActionSelector", "ArgSelector", "ArgType",
    "BinarySelector", "CapabilitiesSelector", "CapabilityType",
    "ENFORCEMENT_ACTIONS", "EnforcerSpec", "HOOK_MODELS", "Hook", "HookKind",
    "KNOWN_OPTIONS", "KProbeArg", "KProbeIgnore", "KProbeSelector",
    "KProbeSpec", "LabelOperator", "LabelSelector", "LabelSelectorRequirement",
    "ListSpec", "ListType", "LsmHookSpec", "Metadata", "Mode", "NamespaceChangesSelector",
    "NamespaceSelector", "NamespaceType", "Operator", "OptionSpec", "PIDSelector", "Policy",
    "PolicyKind", "RateLimitScope", "Spec", "TracepointSpec", "UProbeIgnore",
    "UProbeSpec", "UsdtSpec", "WorkloadSelector", "format_path", "operators_for_type",
]
