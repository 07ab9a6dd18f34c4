"""Rules of a TracingPolicy that span several fields (hooks, arguments, selectors, actions).

The pydantic models check each field on its own. What needs more context lives here:
references (matchArgs index -> hook args, macros, ``list:NAME``), per-hook-kind action
support, operator/argument-type applicability, value formats that depend on the operator,
limits that count across fields, options and the namespaced-policy rules.

Checks run on pieces of the raw document validated one by one (each hook, each macro,
each list), so that one broken hook does not hide the problems of the others: the loader
reports every problem at once. Findings carry YAML paths; the loader turns them into
located diagnostics.

Argument types of tracepoints with ``type: auto`` are only known from tracefs; those
checks are skipped at load time and run later by the compiler through
:func:`check_arg_ops` with a resolver that knows the real types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from vigil.policy.diagnostics import Diagnostic
from vigil.policy import celexpr
from vigil.capabilities import CAPABILITIES
from vigil.policy.lsm_hooks import LSM_HOOKS
from vigil.syscalls import SYSCALL_NUMBERS, syscall_number, syscall_value
from vigil.policy.spec import (
    MAX_INMAP_VALUES,
    ADDR_OPERATORS,
    MAX_ACTIONS,
    MAX_FOLLOW_CHILDREN_SELECTORS,
    MAX_HOOK_ARGS,
    MAX_MATCH_ARGS,
    MAX_MATCH_VALUES,
    MAX_MESSAGE_LEN,
    MAX_POSTFIX_LEN,
    MAX_PREFIX_LEN,
    MAX_RESOLVE_DEPTH,
    MAX_STRING_LEN,
    MAX_SUBSTRING_LEN,
    MAX_SUBSTRINGS,
    NUMERIC_OPERATORS,
    PORT_OPERATORS,
    PRIV_PORT_OPERATORS,
    Action,
    ActionSelector,
    ArgSelector,
    ArgType,
    EnforcerSpec,
    Hook,
    HOOK_MODELS,
    HookKind,
    KProbeArg,
    KProbeSelector,
    KProbeSpec,
    LabelOperator,
    LabelSelector,
    ListSpec,
    ListType,
    LsmHookSpec,
    Operator,
    OptionSpec,
    Policy,
    PolicyKind,
    TracepointSpec,
    UProbeSpec,
    format_path,
    operators_for_type,
    suggest,
)
from vigil.policy.values import (
    FILE_TYPES,
    ValueRangeError,
    dns_label_error,
    label_value_error,
    parse_cidr,
    parse_family,
    parse_int,
    parse_int_range,
    parse_port_range,
    parse_protocol,
    parse_tcp_state,
    qualified_name_error,
)

Path = tuple[str | int, ...]
#: (hook, argument) -> the argument's real type, or None when not known (yet)
ArgResolver = Callable[[Hook, KProbeArg], ArgType | None]


@dataclass(frozen=True)
class Finding:
    """A problem at a YAML path. ``anchor`` is where to point when that differs from
    ``path`` (e.g. a missing ``returnArg`` is shown at ``return``); ``at="key"`` points
    at the key rather than the value."""

    path: Path
    code: str
    message: str
    severity: str = "error"
    at: str = "value"
    anchor: Path | None = None


@dataclass
class Report:
    """Findings collected in order, without duplicates (a macro used by several hooks is
    checked once per hook)."""

    findings: list[Finding] = field(default_factory=list)

    def error(self, path: Path, code: str, message: str, *, at: str = "value",
              anchor: Path | None = None) -> None:
        self._add(Finding(path, code, message, "error", at, anchor))

    def warning(self, path: Path, code: str, message: str, *, at: str = "value",
                anchor: Path | None = None) -> None:
        self._add(Finding(path, code, message, "warning", at, anchor))

    def _add(self, finding: Finding) -> None:
        if finding not in self.findings:
            self.findings.append(finding)


@dataclass
class SpecContext:
    """What a hook's checks need to know about the rest of the spec."""

    namespaced: bool = False
    lists: dict[str, ListSpec | None] = field(default_factory=dict)
    macro_names: set[str] = field(default_factory=set)
    macros: dict[str, KProbeSelector] = field(default_factory=dict)
    has_enforcer: bool = False


@dataclass
class HookContext:
    """One hook being checked. ``selectors`` are (position, selector) pairs: the valid
    ones, when some selectors of the hook have schema errors."""

    kind: HookKind
    hook: Hook
    path: Path
    spec: SpecContext
    resolve: ArgResolver
    selectors: list[tuple[int, KProbeSelector]] = field(default_factory=list)


def declared_type(hook: Hook, arg: KProbeArg) -> ArgType | None:
    """The load-time resolver: the written type, unknown for ``auto``."""
    return None if arg.type is ArgType.AUTO else arg.type


M = TypeVar("M", bound=BaseModel)


def _try(model: type[M], raw: Any) -> M | None:
    """Validate one piece; None if it has (already reported) schema errors."""
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


#: hook fields no other rule depends on: a schema error in one of them does not stop the
#: rest of the hook from being checked
_HOOK_INDEPENDENT = frozenset({"tags", "message", "ignore", "binaryDigests", "selectors"})


def _salvage(model: type[M], raw: Any, droppable: frozenset[str] | None = None) -> M | None:
    """Validate ``raw``; if that fails only because of unknown keys or of top-level fields
    in ``droppable`` (None: any field), validate it without them, so the remaining fields
    can still be checked. The dropped fields' own errors come from the schema pass."""
    if not isinstance(raw, dict):
        return _try(model, raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        bad: set[str] = set()
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            if not loc or (len(loc) == 1 and err["type"] == "missing"):
                return None
            unknown = len(loc) == 1 and err["type"] == "extra_forbidden"
            if not (unknown or droppable is None or loc[0] in droppable):
                return None
            bad.add(str(loc[0]))
    return _try(model, {k: v for k, v in raw.items() if k not in bad})


def _alias(model: type[BaseModel], name: str) -> str:
    return model.model_fields[name].alias or name


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def check_document(data: Any) -> list[Finding]:
    """Every cross-field finding of a raw (composed) policy document."""
    rep = Report()
    if not isinstance(data, dict):
        return rep.findings
    _check_envelope(data, rep)
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return rep.findings
    ctx = _spec_context(data, spec)
    _check_options(spec, rep)
    _check_lists(spec, rep)
    _check_enforcers(spec, ctx, rep)
    _check_macros(spec, ctx, rep)
    _check_workload_selectors(spec, ctx, rep)
    hooks = list(_valid_hooks(spec, ctx, declared_type))
    for hc in hooks:
        check_hook(hc, rep)
    _check_follow_children(hooks, ctx, rep)
    _check_cel_count(hooks, ctx, rep)
    return rep.findings


def _check_cel_count(hooks: list[HookContext], ctx: SpecContext, rep: Report) -> None:
    count = 0
    for hc in hooks:
        for j, sel in hc.selectors:
            for i, a in enumerate(sel.merged(ctx.macros).match_args):
                if a.operator is Operator.CEL_EXPR:
                    count += 1
                    if count == MAX_CEL_EXPRS + 1:
                        rep.error(hc.path + ("selectors", j, "matchArgs", i),
                                  "policy.limit", "too many CelExpr filters in one policy "
                                  f"(at most {MAX_CEL_EXPRS})")


def check_arg_ops(policy: Policy, resolve_type: ArgResolver) -> list[Diagnostic]:
    """Operator/argument-type rules again, with the real argument types.

    For the compiler: once it knows what tracefs says about ``type: auto`` tracepoint
    arguments, ``resolve_type(hook, arg)`` returns them (and the declared type for every
    other argument) and this returns the located errors (e.g. ``Prefix`` on an integer
    field). Arguments it still resolves to None stay unchecked."""
    rep = Report()
    ctx = SpecContext(namespaced=policy.namespaced,
                      lists={lst.name: lst for lst in policy.spec.lists},
                      macro_names=set(policy.spec.selectors_macros),
                      macros=dict(policy.spec.selectors_macros),
                      has_enforcer=bool(policy.spec.enforcers))
    for kind, i, hook in policy.spec.hooks():
        hc = HookContext(kind, hook, ("spec", kind.value, i), ctx, resolve_type)
        for j, sel in enumerate(hook.selectors):
            _check_selector(hc, sel, hc.path + ("selectors", j), rep)
    return [to_diagnostic(policy.diagnostic, f) for f in rep.findings
            if f.severity == "error"]


def to_diagnostic(make: Callable[..., Diagnostic], f: Finding) -> Diagnostic:
    """Locate a finding with a ``Policy.diagnostic``-like factory."""
    d = make(f.anchor or f.path, f.code, f.message, f.severity, f.at)
    return Diagnostic(d.file, d.line, d.col, format_path(f.path), d.code, d.message, d.severity)


# --------------------------------------------------------------------------------------
# Document-level rules
# --------------------------------------------------------------------------------------


def _check_envelope(data: dict[str, Any], rep: Report) -> None:
    """Namespaced vs cluster-scoped rules and metadata label/annotation keys."""
    meta, spec = _mapping(data.get("metadata")), _mapping(data.get("spec"))
    kind = data.get("kind")
    namespace = meta.get("namespace")
    if kind == PolicyKind.TRACING_POLICY_NAMESPACED.value:
        if namespace is None:
            rep.error(("metadata", "namespace"), "policy.required",
                      'missing required field "namespace" (TracingPolicyNamespaced is '
                      "namespaced)")
        elif isinstance(namespace, str) and (problem := dns_label_error(namespace)):
            rep.error(("metadata", "namespace"), "policy.invalid_value",
                      f"invalid namespace: {problem}")
        if spec.get("hostSelector") is not None:
            rep.error(("spec", "hostSelector"), "policy.invalid_value",
                      "hostSelector must not be set in a TracingPolicyNamespaced")
        for section in ("uprobes", "usdts"):
            if spec.get(section):
                rep.error(("spec", section), "policy.invalid_value",
                          f"{section} are not supported in a TracingPolicyNamespaced")
    elif kind == PolicyKind.TRACING_POLICY.value and namespace is not None:
        rep.warning(("metadata", "namespace"), "policy.ignored",
                    "metadata.namespace is ignored: TracingPolicy is cluster-scoped")
    _check_meta_keys(meta, "labels", rep, values=True)
    _check_meta_keys(meta, "annotations", rep, values=False)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_meta_keys(meta: dict[str, Any], name: str, rep: Report, values: bool) -> None:
    entries = meta.get(name)
    if not isinstance(entries, dict):
        return
    for key, value in entries.items():
        if problem := qualified_name_error(key):
            rep.error(("metadata", name, key), "policy.invalid_value", problem, at="key")
        if values and isinstance(value, str) and (problem := label_value_error(value)):
            rep.error(("metadata", name, key), "policy.invalid_value", problem)


def _spec_context(data: dict[str, Any], spec: dict[str, Any]) -> SpecContext:
    lists: dict[str, ListSpec | None] = {}
    for raw in spec.get("lists") or []:
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            lists.setdefault(raw["name"], _try(ListSpec, raw))
    raw_macros = spec.get("selectorsMacros")
    raw_macros = raw_macros if isinstance(raw_macros, dict) else {}
    macros = {name: m for name, raw in raw_macros.items()
              if (m := _salvage(KProbeSelector, raw)) is not None}
    return SpecContext(namespaced=data.get("kind") == PolicyKind.TRACING_POLICY_NAMESPACED,
                       lists=lists, macro_names=set(raw_macros), macros=macros,
                       has_enforcer=bool(spec.get("enforcers")))


def _valid_hooks(spec: dict[str, Any], ctx: SpecContext, resolve: ArgResolver
                 ) -> Iterable[HookContext]:
    """Each hook that passes the schema, or passes it without its independent fields
    (tags, selectors, ...), with its selectors salvaged one by one — so one bad field
    does not hide the rest of the hook's problems."""
    for kind in HookKind:
        items = spec.get(kind.value)
        if not isinstance(items, list):
            continue
        for i, raw in enumerate(items):
            hook = _salvage(HOOK_MODELS[kind], raw, _HOOK_INDEPENDENT)
            if hook is None:
                continue
            selectors = (list(enumerate(hook.selectors)) if hook.is_set("selectors")
                         else _valid_selectors(raw.get("selectors")))
            yield HookContext(kind, hook, ("spec", kind.value, i), ctx,  # type: ignore[arg-type]  # validated hook
                              resolve, selectors)


def _valid_selectors(raw: Any) -> list[tuple[int, KProbeSelector]]:
    if not isinstance(raw, list):
        return []
    return [(j, sel) for j, item in enumerate(raw)
            if (sel := _salvage(KProbeSelector, item)) is not None]


_BOOL_TEXT = {"1", "t", "T", "true", "TRUE", "True", "0", "f", "F", "false", "FALSE",
              "False"}
_OPTION_VALUES: dict[str, tuple[Callable[[str], bool], str]] = {
    "disable-kprobe-multi": (lambda v: v in _BOOL_TEXT, "a boolean (true or false)"),
    "disable-uprobe-multi": (lambda v: v in _BOOL_TEXT, "a boolean (true or false)"),
    "override-method": (lambda v: v in ("fmod-ret", "override-return"),
                        '"fmod-ret" or "override-return"'),
    "policy-mode": (lambda v: v in ("enforce", "monitor"), '"enforce" or "monitor"'),
    "sleepable-preload-size": (lambda v: v.isdigit() and int(v) > 0, "a positive integer"),
    # Vigil's own (Tetragon ignores unknown options): enforcement scope
    "vigil-cgroups": (lambda v: any(p.strip() for p in v.split(",")) and ".." not in v,
                      "comma-separated cgroup v2 paths (relative to the cgroup2 mount)"),
}


def _check_options(spec: dict[str, Any], rep: Report) -> None:
    """Known options must have a valid value; unknown ones are ignored, with a warning."""
    seen: set[str] = set()
    for i, raw in enumerate(spec.get("options") or []):
        opt = _try(OptionSpec, raw)
        if opt is None:
            continue
        path: Path = ("spec", "options", i)
        rule = _OPTION_VALUES.get(opt.name)
        if rule is None:
            rep.warning(path + ("name",), "policy.option",
                        f'unknown option "{opt.name}" is ignored'
                        f"{suggest(opt.name, list(_OPTION_VALUES))}")
            continue
        if opt.name in seen:
            rep.warning(path + ("name",), "policy.option",
                        f'option "{opt.name}" is set more than once; the last value wins')
        seen.add(opt.name)
        ok, expected = rule
        if not ok(opt.value):
            rep.error(path + ("value",), "policy.invalid_value",
                      f'invalid value "{opt.value}" for option {opt.name}: expected '
                      f"{expected}")


_SYSCALL_NAME_RE = re.compile(r"^([a-z0-9]+/)?[a-z_][a-z0-9_]*$")


def _check_lists(spec: dict[str, Any], rep: Report) -> None:
    names: set[str] = set()
    for i, raw in enumerate(spec.get("lists") or []):
        lst = _try(ListSpec, raw)
        if lst is None:
            continue
        path: Path = ("spec", "lists", i)
        if lst.name in names:
            rep.error(path + ("name",), "policy.invalid_value",
                      f'duplicate list name "{lst.name}"')
        names.add(lst.name)
        generated = lst.type in (ListType.GENERATED_SYSCALLS, ListType.GENERATED_FTRACE)
        if lst.type is ListType.GENERATED_FTRACE and not lst.pattern:
            rep.error(path + ("pattern",), "policy.required",
                      "a generated_ftrace list needs a pattern")
        if lst.pattern is not None and lst.type is not ListType.GENERATED_FTRACE:
            rep.warning(path + ("pattern",), "policy.ignored",
                        "pattern is only used by generated_ftrace lists")
        if generated and lst.values and lst.type is not None:
            rep.warning(path + ("values",), "policy.ignored",
                        f"values are ignored by a {lst.type.value} list")
        if not generated and not lst.values:
            rep.error(path + ("values",), "policy.required", "the list has no values")
        if lst.type is ListType.SYSCALLS:
            for k, value in enumerate(lst.values):
                if not _SYSCALL_NAME_RE.match(value):
                    rep.error(path + ("values", k), "policy.invalid_value",
                              f'"{value}" is not a syscall name')


def _check_list_ref(name: str, ctx: SpecContext, path: Path, rep: Report,
                    syscalls_only: bool = False) -> None:
    if name not in ctx.lists:
        rep.error(path, "policy.invalid_value",
                  f'unknown list "{name}"{suggest(name, sorted(ctx.lists))}')
        return
    lst = ctx.lists[name]
    if syscalls_only and lst is not None and lst.type not in (
            ListType.SYSCALLS, ListType.GENERATED_SYSCALLS):
        rep.error(path, "policy.invalid_value", f'list "{name}" is not a syscall list')


def _check_enforcers(spec: dict[str, Any], ctx: SpecContext, rep: Report) -> None:
    for i, raw in enumerate(spec.get("enforcers") or []):
        enf = _try(EnforcerSpec, raw)
        if enf is None:
            continue
        path: Path = ("spec", "enforcers", i, "calls")
        if not enf.calls:
            rep.error(path, "policy.required", "an enforcer needs at least one call")
        for k, call in enumerate(enf.calls):
            if call.startswith("list:"):
                _check_list_ref(call[5:], ctx, path + (k,), rep)


def _check_macros(spec: dict[str, Any], ctx: SpecContext, rep: Report) -> None:
    """Macros may not nest; unused macros are worth a warning (typo in a reference?)."""
    used = {name for kind in HookKind for hook in (spec.get(kind.value) or [])
            if isinstance(hook, dict) for sel in (hook.get("selectors") or [])
            if isinstance(sel, dict) for name in (sel.get("macros") or [])
            if isinstance(name, str)}
    for name, macro in ctx.macros.items():
        path: Path = ("spec", "selectorsMacros", name)
        if macro.macros:
            rep.error(path + ("macros",), "policy.invalid_value",
                      "a selector macro cannot use other macros")
        if name not in used:
            rep.warning(path, "policy.ignored", f'selector macro "{name}" is not used',
                        at="key")


def _check_workload_selectors(spec: dict[str, Any], ctx: SpecContext, rep: Report) -> None:
    for key in ("podSelector", "containerSelector", "nodeSelector", "hostSelector"):
        sel = _try(LabelSelector, spec.get(key)) if spec.get(key) is not None else None
        if sel is None:
            continue
        _check_label_selector(sel, ("spec", key), rep)
        if key == "hostSelector" and not sel.is_empty and not ctx.namespaced:
            rep.error(("spec", key), "policy.invalid_value",
                      "hostSelector can only be null (no host workloads) or {} (all)")


def _check_label_selector(sel: LabelSelector, path: Path, rep: Report) -> None:
    for i, req in enumerate(sel.match_expressions):
        rpath = path + ("matchExpressions", i)
        needs_values = req.operator in (LabelOperator.IN, LabelOperator.NOT_IN)
        if needs_values and not req.values:
            rep.error(rpath + ("values",), "policy.required",
                      f"operator {req.operator.value} needs at least one value")
        if not needs_values and req.values:
            rep.error(rpath + ("values",), "policy.invalid_value",
                      f"operator {req.operator.value} takes no values")


def _check_follow_children(hooks: list[HookContext], ctx: SpecContext, rep: Report) -> None:
    count = 0
    for hc in hooks:
        for j, sel in hc.selectors:
            merged = sel.merged(ctx.macros)
            for b in merged.match_binaries + merged.match_parent_binaries:
                if b.follow_children:
                    count += 1
                    if count == MAX_FOLLOW_CHILDREN_SELECTORS + 1:
                        rep.error(hc.path + ("selectors", j), "policy.limit",
                                  "too many followChildren binary selectors "
                                  f"(at most {MAX_FOLLOW_CHILDREN_SELECTORS})")


# --------------------------------------------------------------------------------------
# Hooks and arguments
# --------------------------------------------------------------------------------------


def check_hook(hc: HookContext, rep: Report) -> None:
    """All rules of one hook (and of the selectors and macros it uses)."""
    hook, path = hc.hook, hc.path
    _check_message(hook, path, rep)
    total = len(hook.args) + len(hook.data_args)
    if total > MAX_HOOK_ARGS:
        rep.error(path + ("args",), "policy.limit",
                  f"too many arguments: {total} in args and data together "
                  f"(at most {MAX_HOOK_ARGS})")
    for i, arg in enumerate(hook.args):
        _check_arg(hc, arg, path + ("args", i), "args", rep)
    for i, arg in enumerate(hook.data_args):
        _check_arg(hc, arg, path + ("data", i), "data", rep)
    if hook.return_arg_spec is not None:
        _check_arg(hc, hook.return_arg_spec, path + ("returnArg",), "returnArg", rep)
    _check_return(hc, rep)
    _check_kind_specific(hc, rep)
    for j, sel in hc.selectors:
        _check_selector(hc, sel, path + ("selectors", j), rep)


def _check_message(hook: Hook, path: Path, rep: Report) -> None:
    length = hook.original_message_length
    if 0 < length < 2:
        rep.error(path + ("message",), "policy.invalid_value",
                  "message must be at least 2 characters long")
    elif length > MAX_MESSAGE_LEN:
        rep.warning(path + ("message",), "policy.truncated",
                    f"message is {length} characters long; truncated to {MAX_MESSAGE_LEN}")


#: ``a.b[2].c``; may start with an index into the argument itself: ``[0]`` or ``[1].a``
_RESOLVE_RE = re.compile(r"^(\[[0-9]+\]|[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])?)"
                         r"(\.[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])?)*$")
_DATA_SOURCES = ("current_task", "pt_regs")


def _check_arg(hc: HookContext, arg: KProbeArg, path: Path, role: str, rep: Report) -> None:
    """Type allowed for this hook kind, and options that only fit some types/roles."""
    t = arg.type
    tpath = path + ("type",)
    if hc.kind is not HookKind.TRACEPOINTS:
        if t is ArgType.AUTO:
            rep.error(tpath, "policy.invalid_value",
                      f'argument type "auto" is only supported for tracepoints; set the '
                      f"type explicitly for {hc.kind.value}")
        elif t is ArgType.SYSCALL64:
            rep.error(tpath, "policy.invalid_value",
                      "argument type syscall64 is only supported for tracepoints")
    if t is ArgType.DATA_LOC and hc.kind in (HookKind.KPROBES, HookKind.FENTRIES,
                                             HookKind.LSMHOOKS):
        rep.error(tpath, "policy.invalid_value",
                  "argument type data_loc is a tracepoint's __data_loc field (an offset into "
                  "the tracepoint's record): a function's arguments have no such record")
    if t is ArgType.CONST_BUF:
        rep.error(tpath, "policy.invalid_value", "argument type const_buf cannot be set "
                  "in a policy")
    if arg.size_arg_index and t not in (ArgType.CHAR_BUF, ArgType.CHAR_IOVEC):
        rep.error(path + ("sizeArgIndex",), "policy.invalid_value",
                  "sizeArgIndex is only valid for char_buf and char_iovec arguments")
    if arg.max_data and t is ArgType.CHAR_IOVEC:
        rep.warning(path + ("maxData",), "policy.ignored",
                    "maxData is ignored on char_iovec arguments (Tetragon uses it for "
                    "char_buf data only): at most 4096 bytes of the iovecs are read")
    elif arg.max_data and t not in (ArgType.CHAR_BUF, ArgType.IOV_ITER):
        rep.warning(path + ("maxData",), "policy.ignored",
                    "maxData only has an effect on char_buf and iov_iter arguments")
    _check_resolve(arg, path, rep)
    _check_source(arg, path, role, rep)
    if arg.btf_type_module is not None and hc.kind not in (HookKind.KPROBES,
                                                           HookKind.FENTRIES):
        rep.error(path + ("btfTypeModule",), "policy.invalid_value",
                  "btfTypeModule is only supported for kprobes")
    if hc.kind is HookKind.USDTS and arg.resolve:
        # a USDT argument has no type of its own: the struct it points to, from btfPath
        if not getattr(hc.hook, "btf_path", None):
            rep.error(path + ("resolve",), "policy.invalid_value",
                      "resolve on a usdt needs btfPath (the BTF of the probed binary)")
        if not arg.btf_type:
            rep.error(path + ("btfType",), "policy.invalid_value",
                      "resolve on a usdt argument needs btfType (the struct in btfPath the "
                      "argument points to): a USDT argument has no type of its own")


def _check_resolve(arg: KProbeArg, path: Path, rep: Report) -> None:
    if not arg.resolve:
        return
    if not _RESOLVE_RE.match(arg.resolve):
        rep.error(path + ("resolve",), "policy.invalid_value",
                  f'invalid resolve path "{arg.resolve}": expected field names separated '
                  "by '.', optionally indexed like name[3] (or starting with [N])")
    elif len(arg.resolve.split(".")) > MAX_RESOLVE_DEPTH:
        rep.error(path + ("resolve",), "policy.limit",
                  f"resolve path is too deep: {len(arg.resolve.split('.'))} components "
                  f"(at most {MAX_RESOLVE_DEPTH})")


def _check_source(arg: KProbeArg, path: Path, role: str, rep: Report) -> None:
    if role == "data":
        if arg.source is None:
            rep.error(path + ("source",), "policy.required",
                      'missing required field "source" (current_task or pt_regs)')
        elif arg.source not in _DATA_SOURCES:
            rep.error(path + ("source",), "policy.invalid_value",
                      f'invalid source "{arg.source}": expected current_task or pt_regs')
    elif arg.source is not None:
        rep.error(path + ("source",), "policy.invalid_value",
                  f"source is only used in data, not in {role}")


def _has_return(hc: HookContext) -> bool:
    return hc.kind in (HookKind.KPROBES, HookKind.FENTRIES, HookKind.UPROBES)


def _check_return(hc: HookContext, rep: Report) -> None:
    """CEL rule of the CRD: ``return: true`` requires ``returnArg``."""
    hook, path = hc.hook, hc.path
    if not _has_return(hc):
        return
    if hook.is_return and hook.return_arg_spec is None:
        rep.error(path + ("returnArg",), "policy.required",
                  "return: true requires returnArg", anchor=path + ("return",))
    action = getattr(hook, "return_arg_action", None)
    if action is not None and not hook.is_return:
        rep.error(path + ("returnArgAction",), "policy.invalid_value",
                  "returnArgAction requires return: true")


#: syscall tracepoint names that are not the x86_64 table's names (old ABI names kept by
#: the kernel) or newer than the table; the compiler asks tracefs for the final word
#: raw tracepoints read at most 6 arguments (Tetragon: index 0..5)
MAX_RAW_TP_INDEX = 5

_EXTRA_SYSCALL_EVENTS = frozenset({
    "newfstat", "newlstat", "newstat", "newuname", "sendfile64", "umount", "file_getattr",
    "file_setattr", "open_tree_attr", "uprobe", "uretprobe"})


def known_syscall(name: str) -> bool:
    """Whether ``name`` (without ``sys_``) is a syscall Vigil knows of."""
    return syscall_number(name) is not None or name in _EXTRA_SYSCALL_EVENTS


def _syscall_of_call(call: str) -> str | None:
    """The syscall a kprobe ``call`` names (``sys_x``, ``__x64_sys_x``), else None."""
    for prefix in ("__x64_sys_", "sys_"):
        if call.startswith(prefix):
            return call[len(prefix):]
    return None


def _check_kind_specific(hc: HookContext, rep: Report) -> None:
    hook, path = hc.hook, hc.path
    if isinstance(hook, KProbeSpec):
        if not hook.call:
            rep.error(path + ("call",), "policy.required", "call must not be empty")
        elif hook.list_name is not None:
            _check_list_ref(hook.list_name, hc.spec, path + ("call",), rep)
        elif hook.syscall and hc.kind is HookKind.KPROBES and \
                (name := _syscall_of_call(hook.call)) is not None and not known_syscall(name):
            rep.error(path + ("call",), "policy.invalid_value",
                      f'unknown syscall "{hook.call}" (syscall: true)'
                      f"{suggest('sys_' + name, ['sys_' + n for n in SYSCALL_NUMBERS])}")
    elif isinstance(hook, TracepointSpec) and hook.raw:
        for i, arg in enumerate(hook.args):
            if arg.index > MAX_RAW_TP_INDEX:
                rep.error(path + ("args", i, "index"), "policy.range",
                          f"a raw tracepoint argument index is at most {MAX_RAW_TP_INDEX} "
                          f"(got {arg.index})")
    if isinstance(hook, TracepointSpec) and hook.subsystem == "syscalls" and \
            hook.event.startswith(("sys_enter_", "sys_exit_")):
        name = hook.event.split("_", 2)[2]
        if not known_syscall(name):
            rep.error(path + ("event",), "policy.invalid_value",
                      f'unknown syscall tracepoint "syscalls/{hook.event}": there is no '
                      f'syscall "{name}"')
    elif isinstance(hook, UProbeSpec):
        targets = [name for name, values in (("symbols", hook.symbols),
                                             ("offsets", hook.offsets),
                                             ("addrs", hook.addrs)) if values]
        if len(targets) > 1:
            rep.error(path + (targets[1],), "policy.invalid_value",
                      "only one of symbols, offsets and addrs may be set")
        elif not targets:
            rep.error(path + ("symbols",), "policy.required",
                      "one of symbols, offsets or addrs is required")
        n = len(hook.symbols) + len(hook.offsets) + len(hook.addrs)
        if hook.ref_ctr_offsets and len(hook.ref_ctr_offsets) != n:
            rep.error(path + ("refCtrOffsets",), "policy.invalid_value",
                      f"refCtrOffsets has {len(hook.ref_ctr_offsets)} entries for {n} probe "
                      "locations (one per location)")
    elif isinstance(hook, LsmHookSpec) and hook.hook.startswith("security_"):
        rep.error(path + ("hook",), "policy.invalid_value",
                  f'LSM hook names have no security_ prefix: use "{hook.hook[9:]}"')
    elif isinstance(hook, LsmHookSpec) and not hook.hook:
        rep.error(path + ("hook",), "policy.required", "hook must not be empty")
    elif isinstance(hook, LsmHookSpec) and hook.hook not in LSM_HOOKS:
        rep.error(path + ("hook",), "policy.invalid_value",
                  f'unknown LSM hook "{hook.hook}"{suggest(hook.hook, sorted(LSM_HOOKS))}')


# --------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------


def _check_selector(hc: HookContext, sel: KProbeSelector, path: Path, rep: Report) -> None:
    """Macros first (they are checked where they are defined), then merged-count limits,
    then the selector's own filters and actions."""
    _check_macro_refs(hc, sel, path, rep)
    merged = sel.merged(hc.spec.macros)
    count = len(merged.match_args) + len(merged.match_data)
    if count > MAX_MATCH_ARGS:
        rep.error(path, "policy.limit", f"too many matchArgs and matchData filters: "
                  f"{count} (at most {MAX_MATCH_ARGS})")
    _check_selector_fields(hc, sel, path, rep)


def _check_macro_refs(hc: HookContext, sel: KProbeSelector, path: Path, rep: Report) -> None:
    owner: dict[str, str] = {f: "" for f in sel.set_filter_fields()}
    seen: set[str] = set()
    for k, name in enumerate(sel.macros):
        mpath = path + ("macros", k)
        if name not in hc.spec.macro_names:
            rep.error(mpath, "policy.invalid_value", f'unknown selector macro "{name}"'
                      f"{suggest(name, sorted(hc.spec.macro_names))}")
            continue
        if name in seen:
            rep.error(mpath, "policy.invalid_value", f'macro "{name}" is used twice')
            continue
        seen.add(name)
        macro = hc.spec.macros.get(name)
        if macro is None:
            continue
        for f in macro.set_filter_fields():
            if f in owner:
                other = f'macro "{owner[f]}"' if owner[f] else "the selector"
                rep.error(mpath, "policy.invalid_value",
                          f'macro "{name}" sets {_alias(KProbeSelector, f)}, which '
                          f"{other} already sets")
            else:
                owner[f] = name
        _check_selector_fields(hc, macro, ("spec", "selectorsMacros", name), rep)


def _check_selector_fields(hc: HookContext, sel: KProbeSelector, path: Path,
                           rep: Report) -> None:
    hook = hc.hook
    for i, a in enumerate(sel.match_args):
        _check_arg_selector(hc, a, path + ("matchArgs", i), hook.args, "args", rep)
    for i, a in enumerate(sel.match_data):
        _check_arg_selector(hc, a, path + ("matchData", i), hook.data_args, "data", rep)
    _check_return_args(hc, sel, path, rep)
    for name in ("matchBinaries", "matchParentBinaries"):
        for i, b in enumerate(getattr(sel, "match_binaries" if name == "matchBinaries"
                                      else "match_parent_binaries")):
            _check_binary(b, path + (name, i), rep)
    named: list[tuple[str, list[Any]]] = [("matchPIDs", sel.match_pids),
                        ("matchNamespaceChanges", sel.match_namespace_changes),
                        ("matchCapabilities", sel.match_capabilities),
                        ("matchCapabilityChanges", sel.match_capability_changes)]
    for name, items in named:
        for i, item in enumerate(items):
            if not item.values:
                rep.error(path + (name, i, "values"), "policy.required",
                          f"operator {item.operator.value} needs at least one value")
    for i, ns in enumerate(sel.match_namespaces):
        _check_namespace_values(ns.values, ns.operator, path + ("matchNamespaces", i), rep)
    wl = sel.match_workloads
    for key in ("podSelector", "containerSelector", "hostSelector") if wl is not None else ():
        lsel = getattr(wl, {"podSelector": "pod_selector",
                            "containerSelector": "container_selector",
                            "hostSelector": "host_selector"}[key])
        if lsel is not None:
            _check_label_selector(lsel, path + ("matchWorkloads", key), rep)
            if key == "hostSelector" and not lsel.is_empty:
                rep.error(path + ("matchWorkloads", key), "policy.invalid_value",
                          "hostSelector can only be null (no host workloads) or {} (all)")
    _check_actions(hc, sel, path, rep)


def _check_return_args(hc: HookContext, sel: KProbeSelector, path: Path,
                       rep: Report) -> None:
    if not sel.match_return_args:
        return
    rpath = path + ("matchReturnArgs",)
    if not _has_return(hc):
        rep.error(rpath, "policy.invalid_value",
                  f"matchReturnArgs is not supported for {hc.kind.value}", at="key")
        return
    if not hc.hook.is_return:
        rep.error(rpath, "policy.invalid_value", "matchReturnArgs requires return: true",
                  at="key")
        return
    ret = hc.hook.return_arg_spec
    for i, a in enumerate(sel.match_return_args):
        if a.operator is Operator.CEL_EXPR:
            # Tetragon compiles it over [returnArg]: arg0 is the return value
            for k, pos in enumerate(a.args):
                if pos != 0:
                    rep.error(rpath + (i, "args", k), "policy.range",
                              f"args position {pos} is out of range: a return filter has "
                              "one argument, the return value (arg0)")
            _check_cel(hc, a.values, rpath + (i, "values"), rep, [_resolve(hc, ret)])
            continue
        _check_arg_values(hc, a, rpath + (i,), _resolve(hc, ret), rep)


def _resolve(hc: HookContext, arg: KProbeArg | None) -> ArgType | None:
    return hc.resolve(hc.hook, arg) if arg is not None else None


def _check_binary(b: Any, path: Path, rep: Report) -> None:
    if not b.values:
        rep.error(path + ("values",), "policy.required",
                  f"operator {b.operator.value} needs at least one value")
    if b.follow_children and b.operator not in (Operator.IN, Operator.NOT_IN):
        rep.error(path + ("followChildren",), "policy.invalid_value",
                  "followChildren is only supported with operators In and NotIn")


def _check_namespace_values(values: list[str], op: Operator, path: Path,
                            rep: Report) -> None:
    if not values:
        rep.error(path + ("values",), "policy.required",
                  f"operator {op.value} needs at least one value")
    for k, value in enumerate(values):
        if value == "host_ns":
            continue
        try:
            parse_int(value, bits=32, signed=False, base=10)
        except ValueError:
            rep.error(path + ("values", k), "policy.invalid_value",
                      f'invalid namespace "{value}": expected a decimal inode number or '
                      "host_ns")


# --------------------------------------------------------------------------------------
# matchArgs / matchData / matchReturnArgs
# --------------------------------------------------------------------------------------


def _check_arg_selector(hc: HookContext, a: ArgSelector, path: Path,
                        arglist: list[KProbeArg], listname: str, rep: Report) -> None:
    target = _referenced_arg(a, path, arglist, listname, rep,
                             tracepoint=hc.kind is HookKind.TRACEPOINTS and listname == "args")
    _check_arg_values(hc, a, path, _resolve(hc, target), rep)


def tracepoint_arg_position(index: int, args: list[KProbeArg]) -> int | None:
    """The position in a tracepoint's ``args`` that a matchArgs ``index`` selects.

    Tetragon renames the filter's index in the order of ``args``: for each argument
    (position i, field index f), an index equal to f becomes i. Whatever remains is then
    read as a position. So ``index`` may name the field (``args: [{index: 4}]`` with
    ``index: 4``) or the position (``index: 0``); a field index wins over a position.
    None: the result is not a position of ``args``."""
    for pos, arg in enumerate(args):
        if index == arg.index:
            index = pos
    return index if index < len(args) else None


def _referenced_arg(a: ArgSelector, path: Path, arglist: list[KProbeArg], listname: str,
                    rep: Report, tracepoint: bool = False) -> KProbeArg | None:
    """The hook argument a filter applies to: ``args`` positions win over ``index``."""
    if a.args:
        if len(a.args) > 1 and a.operator not in (Operator.CAPABILITIES_GAINED,
                                                  Operator.CEL_EXPR):
            rep.error(path + ("args",), "policy.invalid_value",
                      "several args positions are only allowed with CapabilitiesGained "
                      "and CelExpr")
        for k, pos in enumerate(a.args):
            if pos >= len(arglist):
                rep.error(path + ("args", k), "policy.range",
                          f"args position {pos} is out of range: the hook has "
                          f"{len(arglist)} {listname} entr{'y' if len(arglist) == 1 else 'ies'}")
        return arglist[a.args[0]] if a.args[0] < len(arglist) else None
    if a.index is None:
        if a.operator is not Operator.CEL_EXPR:
            rep.error(path + ("index",), "policy.required",
                      'missing required field "index" (or "args")')
        return None
    if tracepoint:
        pos = tracepoint_arg_position(a.index, arglist)
        if pos is None:
            have = sorted({arg.index for arg in arglist})
            known = (f"field indexes {', '.join(map(str, have))} or positions "
                     f"0..{len(arglist) - 1}" if have else "the hook has no args")
            rep.error(path + ("index",), "policy.invalid_value",
                      f"index {a.index} does not refer to an argument in args ({known})")
            return None
        return arglist[pos]
    found = next((arg for arg in arglist if arg.index == a.index), None)
    if found is None:
        have = sorted({arg.index for arg in arglist})
        known = (f"defined indexes: {', '.join(map(str, have))}" if have
                 else f"the hook has no {listname}")
        rep.error(path + ("index",), "policy.invalid_value",
                  f"index {a.index} does not refer to an argument in {listname} ({known})")
    return found


def _check_arg_values(hc: HookContext, a: ArgSelector, path: Path, t: ArgType | None,
                      rep: Report) -> None:
    """Operator valid for the argument type, value count and value formats. ``t`` None:
    type unknown yet — only checks that do not depend on it."""
    op, values, vpath = a.operator, a.values, path + ("values",)
    if not values and op not in PRIV_PORT_OPERATORS:
        rep.error(vpath, "policy.required", f"operator {op.value} needs at least one value")
    if op is Operator.CEL_EXPR:
        # with args, argK is the hook argument at position args[K] (Tetragon's variables)
        types = None if not a.args else [
            hc.resolve(hc.hook, hc.hook.args[pos]) if pos < len(hc.hook.args) else None
            for pos in a.args]
        _check_cel(hc, values, vpath, rep, types)
        return
    if t is not None:
        allowed = operators_for_type(t)
        if allowed is not None and op not in allowed:
            rep.error(path + ("operator",), "policy.invalid_value",
                      f"operator {op.value} cannot be used on an argument of type "
                      f"{t.value}")
            return
    numeric = op in NUMERIC_OPERATORS or (
        t is not None and t.is_int and op in (Operator.EQUAL, Operator.NOT_EQUAL))
    if numeric and len(values) > MAX_MATCH_VALUES:
        rep.error(vpath, "policy.limit",
                  f"too many values for operator {op.value}: {len(values)} (at most "
                  f"{MAX_MATCH_VALUES}; use InMap for more)")
    # no count limit on string values of fd/file/path arguments: Tetragon puts them in
    # hash and LPM-trie maps (the old limit of 8 inline values is gone), and so do we
    if op in (Operator.SUBSTRING, Operator.SUBSTRING_IGN_CASE) and len(values) > MAX_SUBSTRINGS:
        rep.error(vpath, "policy.limit", f"too many values for operator {op.value}: "
                  f"{len(values)} (at most {MAX_SUBSTRINGS})")
    for k, value in enumerate(values):
        problem = _value_problem(hc, op, value, t, numeric)
        if problem is not None:
            code, message = problem
            rep.error(vpath + (k,), code, message)


#: CelExpr filters one policy can have (Tetragon: generated BPF functions per policy)
MAX_CEL_EXPRS = 8


def _check_cel(hc: HookContext, values: list[str], vpath: Path, rep: Report,
               types: list[ArgType | None] | None = None) -> None:
    """One CEL expression per CelExpr filter, in the subset Tetragon compiles, over the
    hook's args (``arg0`` is the first entry of ``args``), or over ``types`` (the
    filter's ``args`` positions; a return filter: the return value alone)."""
    if len(values) > 1:
        rep.error(vpath, "policy.invalid_value",
                  f"CelExpr takes a single expression, got {len(values)} values")
    if len(values) != 1:
        return
    if types is None:
        types = [hc.resolve(hc.hook, arg) for arg in hc.hook.args]
    problem = celexpr.check(values[0], types)
    if problem:
        rep.error(vpath + (0,), "policy.invalid_value", problem)


def _value_problem(hc: HookContext, op: Operator, value: str, t: ArgType | None,
                   numeric: bool) -> tuple[str, str] | None:
    """(code, message) if ``value`` is not valid for ``op`` on type ``t``."""
    bits, signed = (t.int_layout if t is not None and t.int_layout else (64, None))
    if (bits, signed) == (32, True) and op not in (Operator.IN_MAP, Operator.NOT_IN_MAP):
        signed = None  # Tetragon takes -2147483648..4294967295: the same 32 bits
    try:
        if op in (Operator.IN_MAP, Operator.NOT_IN_MAP) and value.startswith("list:"):
            return _list_problem(hc, value[5:])
        if op in ADDR_OPERATORS:
            parse_cidr(value)
        elif op in PORT_OPERATORS:
            parse_port_range(value)
        elif op is Operator.PROTOCOL:
            parse_protocol(value)
        elif op is Operator.FAMILY:
            parse_family(value)
        elif op is Operator.STATE:
            parse_tcp_state(value)
        elif op in (Operator.FILE_TYPE, Operator.NOT_FILE_TYPE):
            if value not in FILE_TYPES:
                return ("policy.invalid_value", f'"{value}" is not a file type (expected '
                        f"one of {', '.join(FILE_TYPES)})")
        elif op in (Operator.IN_RANGE, Operator.NOT_IN_RANGE):
            if ":" not in value:
                return ("policy.invalid_value", f'invalid range "{value}": expected min:max')
            parse_int_range(value, bits=bits, signed=signed)
        elif t is ArgType.SYSCALL64 and (op in (Operator.IN_MAP, Operator.NOT_IN_MAP)
                                         or numeric) and _is_syscall_name(value):
            if syscall_value(value) is None:
                return ("policy.invalid_value", f'unknown syscall "{value}" (x86_64 names, '
                        "optionally x64/)")
        elif t is ArgType.CAPABILITY and value.startswith("CAP_") and (
                numeric or op in (Operator.IN_MAP, Operator.NOT_IN_MAP)):
            if value not in CAPABILITIES:
                return ("policy.invalid_value", f'unknown capability "{value}"'
                        f"{suggest(value, list(CAPABILITIES))}")
        elif op in (Operator.IN_MAP, Operator.NOT_IN_MAP):
            if t is None or t.is_int:
                lo, hi = parse_int_range(value, bits=bits, signed=signed)
                if hi - lo >= MAX_INMAP_VALUES:
                    return ("policy.limit", f'range "{value}" has {hi - lo + 1} values (at '
                            f"most {MAX_INMAP_VALUES} per InMap)")
        elif numeric:
            parse_int(value, bits=bits, signed=signed)
        else:
            return _string_problem(op, value, t)
    except ValueRangeError as err:
        return ("policy.range", str(err))
    except ValueError as err:
        return ("policy.invalid_value", str(err))
    return None


def _is_syscall_name(value: str) -> bool:
    return bool(value) and (value[0].isalpha() or value[0] == "_") and \
        not value.lower().startswith("0x")


def _list_problem(hc: HookContext, name: str) -> tuple[str, str] | None:
    rep = Report()
    _check_list_ref(name, hc.spec, (), rep, syscalls_only=True)
    return (rep.findings[0].code, rep.findings[0].message) if rep.findings else None


def _string_problem(op: Operator, value: str, t: ArgType | None) -> tuple[str, str] | None:
    if op in (Operator.PREFIX, Operator.NOT_PREFIX) and len(value) > MAX_PREFIX_LEN:
        return ("policy.limit", f"prefix is too long: {len(value)} characters (at most "
                f"{MAX_PREFIX_LEN})")
    if op in (Operator.POSTFIX, Operator.NOT_POSTFIX) and len(value) > MAX_POSTFIX_LEN:
        return ("policy.limit", f"postfix is too long: {len(value)} characters (at most "
                f"{MAX_POSTFIX_LEN})")
    if op in (Operator.SUBSTRING, Operator.SUBSTRING_IGN_CASE) and \
            len(value.encode()) > MAX_SUBSTRING_LEN:  # Tetragon counts bytes
        return ("policy.limit", f"substring is too long: {len(value.encode())} bytes (at "
                f"most {MAX_SUBSTRING_LEN})")
    if t is not None and t.is_string and len(value) > MAX_STRING_LEN:
        return ("policy.limit", f"value is too long: {len(value)} characters (at most "
                f"{MAX_STRING_LEN})")
    return None


# --------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------

#: parameters each action uses (snake_case); others written with it get a warning
_ACTION_PARAMS: dict[Action, frozenset[str]] = {
    Action.POST: frozenset({"rate_limit", "rate_limit_scope", "kernel_stack_trace",
                            "user_stack_trace", "ima_hash"}),
    Action.SIGKILL: frozenset(),
    Action.OVERRIDE: frozenset({"arg_error", "arg_regs", "arg_new_symbol", "arg_new_addr",
                                "arg_new_offset"}),
    Action.GET_URL: frozenset({"arg_url"}),
    Action.DNS_LOOKUP: frozenset({"arg_fqdn"}),
    Action.NO_POST: frozenset(),
    Action.SIGNAL: frozenset({"arg_sig"}),
    Action.TRACK_SOCK: frozenset({"arg_sock"}),
    Action.UNTRACK_SOCK: frozenset({"arg_sock"}),
    Action.NOTIFY_ENFORCER: frozenset({"arg_error", "arg_sig"}),
    Action.CLEANUP_ENFORCER_NOTIFICATION: frozenset(),
    Action.SET: frozenset({"arg_index", "arg_value"}),
}
_REQUIRED_PARAMS: dict[Action, tuple[str, ...]] = {
    Action.SIGNAL: ("arg_sig",), Action.GET_URL: ("arg_url",),
    Action.DNS_LOOKUP: ("arg_fqdn",), Action.SET: ("arg_index", "arg_value"),
}
_POST_ONLY = ("kernel_stack_trace", "user_stack_trace", "ima_hash")
_UPROBE_OVERRIDE = ("arg_regs", "arg_new_symbol", "arg_new_addr", "arg_new_offset")


def _check_actions(hc: HookContext, sel: KProbeSelector, path: Path, rep: Report) -> None:
    for i, act in enumerate(sel.match_actions):
        _check_action(hc, act, path + ("matchActions", i), rep)
    if sel.match_return_actions and not (_has_return(hc) and hc.hook.is_return):
        rep.error(path + ("matchReturnActions",), "policy.invalid_value",
                  "matchReturnActions requires return: true", at="key")
    for i, act in enumerate(sel.match_return_actions):
        _check_action(hc, act, path + ("matchReturnActions", i), rep)
    _ = MAX_ACTIONS  # the per-list limit is a schema rule (spec.KProbeSelector)


def _check_action(hc: HookContext, act: ActionSelector, path: Path, rep: Report) -> None:
    _check_action_hook_kind(hc, act, path, rep)
    _check_action_params(hc, act, path, rep)


def _check_action_hook_kind(hc: HookContext, act: ActionSelector, path: Path,
                            rep: Report) -> None:
    """Which hook kinds can run the action."""
    a, kind, apath = act.action, hc.kind, path + ("action",)
    if a.is_enforcement and kind is HookKind.FENTRIES:
        rep.error(apath, "policy.invalid_value",
                  f"enforcement action {a.value} is not supported for fentries")
    elif a is Action.OVERRIDE and kind in (HookKind.TRACEPOINTS, HookKind.USDTS):
        rep.error(apath, "policy.invalid_value",
                  f"action Override is not supported for {kind.value}")
    elif a is Action.OVERRIDE and isinstance(hc.hook, KProbeSpec) and \
            kind is HookKind.KPROBES and not _overridable(hc.hook):
        rep.error(apath, "policy.invalid_value",
                  f'action Override needs a syscall (syscall: true) or a security_* '
                  f'function, not "{hc.hook.call}"')
    elif a is Action.SET and kind is not HookKind.USDTS:
        rep.error(apath, "policy.invalid_value", "action Set is only supported for usdts")
    elif a in (Action.GET_URL, Action.DNS_LOOKUP) and kind in (HookKind.UPROBES,
                                                               HookKind.USDTS):
        rep.error(apath, "policy.invalid_value",
                  f"action {a.value} is not supported for {kind.value}")
    if a is Action.NOTIFY_ENFORCER and not hc.spec.has_enforcer:
        rep.error(apath, "policy.invalid_value",
                  "action NotifyEnforcer needs an enforcer in spec.enforcers")


def _overridable(hook: KProbeSpec) -> bool:
    return hook.syscall or hook.call.startswith("security_") or hook.list_name is not None


def _check_action_params(hc: HookContext, act: ActionSelector, path: Path,
                         rep: Report) -> None:
    a = act.action
    for name in _REQUIRED_PARAMS.get(a, ()):
        if getattr(act, name) is None:
            rep.error(path + (_alias(ActionSelector, name),), "policy.required",
                      f"action {a.value} requires {_alias(ActionSelector, name)}")
    if a is Action.OVERRIDE:
        _check_override_params(hc, act, path, rep)
    if a is Action.NOTIFY_ENFORCER and act.arg_error is None and act.arg_sig is None:
        rep.error(path + ("argError",), "policy.required",
                  "action NotifyEnforcer requires argError or argSig")
    if a is Action.SIGNAL and act.arg_sig is not None and not 1 <= act.arg_sig <= 64:
        rep.error(path + ("argSig",), "policy.range",
                  f"signal {act.arg_sig} is out of range (1..64)")
    for name in _POST_ONLY:
        if getattr(act, name) and a is not Action.POST:
            rep.error(path + (_alias(ActionSelector, name),), "policy.invalid_value",
                      f"{_alias(ActionSelector, name)} is only valid with action Post")
    if act.ima_hash and "matchReturnActions" in path:
        rep.error(path + ("imaHash",), "policy.invalid_value",
                  "imaHash hashes the file of an lsmhooks hook, and lsmhooks have no "
                  "return path (no matchReturnActions): use it in matchActions")
    elif act.ima_hash and hc.kind is not HookKind.LSMHOOKS:
        rep.error(path + ("imaHash",), "policy.invalid_value",
                  "imaHash is only supported for lsmhooks")
    used = _ACTION_PARAMS[a]
    for name in sorted(act.model_fields_set - used - {"action"}):
        if name in _POST_ONLY and getattr(act, name):
            continue
        alias = _alias(ActionSelector, name)
        rep.warning(path + (alias,), "policy.ignored",
                    f"{alias} is ignored by action {a.value}", at="key")


def _check_override_params(hc: HookContext, act: ActionSelector, path: Path,
                           rep: Report) -> None:
    uprobe_params = [n for n in _UPROBE_OVERRIDE if act.is_set(n)]
    if hc.kind is HookKind.UPROBES:
        if act.arg_error is None and not uprobe_params:
            rep.error(path + ("argError",), "policy.required",
                      "action Override requires argError (or argRegs/argNew*)")
        new = [n for n in uprobe_params if n != "arg_regs"]
        if len(new) > 1:
            rep.error(path + (_alias(ActionSelector, new[1]),), "policy.invalid_value",
                      "only one of argNewSymbol, argNewAddr and argNewOffset may be set")
        if "matchActions" in path:
            _check_uprobe_override_site(hc, path, rep)
        return
    if act.arg_error is None:
        rep.error(path + ("argError",), "policy.required",
                  "action Override requires argError")
    for name in uprobe_params:
        rep.error(path + (_alias(ActionSelector, name),), "policy.invalid_value",
                  f"{_alias(ActionSelector, name)} is only supported for uprobes")


def _check_uprobe_override_site(hc: HookContext, path: Path, rep: Report) -> None:
    """Override on a uprobe returns to the caller as if the function had run: only at a
    function's first instruction (a symbol), and not with a return probe on the same
    call, whose return-address swap the override would undo."""
    hook = hc.hook
    if getattr(hook, "offsets", None) or getattr(hook, "addrs", None):
        rep.error(path + ("action",), "policy.invalid_value",
                  "Override on a uprobe returns to the caller as if the function had run, "
                  "which is right only at a function's first instruction: it needs symbols, "
                  "not offsets or addrs (an instruction inside a function)")
    elif getattr(hook, "return_", False):
        rep.error(path + ("action",), "policy.invalid_value",
                  "Override on a uprobe returns to the caller before the function runs, "
                  "with the return address the return probe (return: true) would replace: "
                  "use a hook without return: true")


__all__ = ["ArgResolver", "Finding", "Report", "SpecContext", "check_arg_ops",
           "check_document", "check_hook", "declared_type"]
