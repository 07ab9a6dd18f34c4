"""GetEvents filters and field filters on dict events. Pure: no protobuf, no grpc.

Inputs are the protojson (snake_case) forms of Tetragon's ``Filter`` and ``FieldFilter``
messages, e.g. ``{"event_set": ["PROCESS_EXEC"], "binary_regex": ["^/usr/bin/"]}`` and
``{"fields": "process.binary,process.pid", "action": "INCLUDE"}``, so the server (after
``MessageToDict``), ``vigil getevents --file`` and the CLI flags share one implementation.

Semantics (Tetragon's ``pkg/filters`` and ``pkg/fieldfilters`` as documented):

* a Filter matches when every field it sets matches (AND); the values of one field are
  alternatives (OR); an event matches the request when it matches at least one
  allow-list filter (or the allow list is empty) and no deny-list filter;
* process-based fields (binary, pid, namespace, pod, labels, ...) never match an event
  without a process (``process_throttle``, ``rate_limit_info``);
* regular expressions are searched, not anchored (Go ``regexp.MatchString``); Python's
  ``re`` accepts every RE2 pattern Tetragon users write in practice;
* ``pid_set`` matches the listed pids and, from then on, their descendants (a process
  whose parent is in the set joins it) -- state kept per request, as Tetragon does;
* ``cel_expression``: each expression is compiled once per request (a syntax error is a
  FilterError naming the line and column); an event matches when an expression
  evaluates to ``true`` with one variable bound: the event's oneof key
  (``process_exec``, ``process_kprobe``, ...) to the inner event as the export writes it
  (timestamps are RFC 3339 strings, 64-bit counters as the JSON form has them). An
  expression naming another event type's variable, or failing at run time, does not
  match (Tetragon's rule: an evaluation error is no match);
* field filters apply to the inner event message (paths like ``process.binary``); per
  event type, every applicable INCLUDE path is kept (union) and then every applicable
  EXCLUDE path removed, so any INCLUDE makes the other fields excluded and exclusion wins.

Events are never mutated: field filters build new dicts (process dicts are shared between
events and subscribers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vigil.capabilities import CAP_NAMES

Event = dict[str, Any]
Predicate = Callable[[Event, str, dict[str, Any]], bool]

# event oneof key -> EventType value (the oneof field numbers equal the enum values)
EVENT_TYPES: dict[str, int] = {
    "process_exec": 1,
    "process_exit": 5,
    "process_kprobe": 9,
    "process_tracepoint": 10,
    "process_loader": 11,
    "process_uprobe": 12,
    "process_throttle": 27,
    "process_lsm": 28,
    "process_usdt": 29,
    "test": 40000,
    "rate_limit_info": 40001,
}
# EventType enum name -> oneof key ("PROCESS_EXEC" -> "process_exec")
EVENT_TYPE_KEYS: dict[str, str] = {k.upper(): k for k in EVENT_TYPES}
_KEY_BY_NUMBER: dict[int, str] = {v: k for k, v in EVENT_TYPES.items()}

_CAP_BY_NAME = {n: i for i, n in enumerate(CAP_NAMES)}

# Filter fields Vigil does not evaluate: refusing them beats silently matching everything.
UNSUPPORTED_FIELDS: dict[str, str] = {}
_KNOWN_FIELDS = {
    "binary_regex", "namespace", "health_check", "pid", "pid_set", "event_set",
    "pod_regex", "arguments_regex", "labels", "policy_names", "capabilities",
    "parent_binary_regex", "cel_expression", "parent_arguments_regex", "container_id",
    "in_init_tree", "ancestor_binary_regex", "container_name_regex", "namespace_regex",
}


class FilterError(ValueError):
    """A filter or field filter in a request is invalid (bad regex, unknown event type...)."""


# --------------------------------------------------------------------------- helpers

def event_kind(ev: Mapping[str, Any]) -> str | None:
    """The event's oneof key (``"process_exec"`` ...), or None for an unknown event."""
    for key in ev:
        if key in EVENT_TYPES:
            return key
    return None


def event_type_key(value: str | int) -> str:
    """An EventType name or number -> oneof key; FilterError if unknown."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value in _KEY_BY_NUMBER:
            return _KEY_BY_NUMBER[value]
    elif isinstance(value, str):
        key = EVENT_TYPE_KEYS.get(value.upper()) or (value if value in EVENT_TYPES else None)
        if key:
            return key
    raise FilterError(f"unknown event type {value!r} (known: "
                      f"{', '.join(EVENT_TYPE_KEYS)})")


def _regexes(field: str, patterns: Iterable[str]) -> list[re.Pattern[str]]:
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as err:
            raise FilterError(f"{field}: invalid regular expression {p!r}: {err}") from err
    return out


def _search_any(regexes: Sequence[re.Pattern[str]], value: str | None) -> bool:
    if value is None:
        return False
    return any(r.search(value) for r in regexes)


def _pod(proc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return proc.get("pod") if proc else None


def _as_list(field: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise FilterError(f"{field}: expected a list, got {value!r}")


# --------------------------------------------------------------------------- labels

_LABEL_TERM = re.compile(
    r"""^\s*(?:
        (?P<neg>!)\s*(?P<nkey>[\w./-]+)                               # !key
      | (?P<key>[\w./-]+)\s*(?:
            (?P<op>==|=|!=)\s*(?P<val>[\w./-]*)                       # key=v, key!=v
          | \s(?P<setop>in|notin)\s*\((?P<set>[^)]*)\)                # key in (a,b)
        )?
    )\s*$""", re.X)


def _split_selector(selector: str) -> list[str]:
    """Split a label selector on commas outside parentheses."""
    terms: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


def compile_label_selector(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """Kubernetes label-selector syntax (``a=b,c!=d,e in (f,g),!h,i``) -> predicate."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_selector(selector):
        m = _LABEL_TERM.match(term)
        if not m:
            raise FilterError(f"labels: invalid label selector term {term.strip()!r}")
        checks.append(_label_check(m))
    return lambda labels: all(c(labels) for c in checks)


def _label_check(m: re.Match[str]) -> Callable[[Mapping[str, str]], bool]:
    if m.group("neg"):
        nkey = m.group("nkey")
        return lambda labels: nkey not in labels
    key, op = m.group("key"), m.group("op")
    if op in ("=", "=="):
        val = m.group("val")
        return lambda labels: labels.get(key) == val
    if op == "!=":
        val = m.group("val")
        return lambda labels: labels.get(key) != val
    if m.group("setop"):
        values = {v.strip() for v in m.group("set").split(",") if v.strip()}
        if m.group("setop") == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    return lambda labels: key in labels


# --------------------------------------------------------------------------- capabilities

def _cap_set(field: str, names: Iterable[Any]) -> frozenset[int]:
    out = set()
    for n in names:
        if isinstance(n, int) and not isinstance(n, bool):
            out.add(n)
        elif isinstance(n, str) and n in _CAP_BY_NAME:
            out.add(_CAP_BY_NAME[n])
        else:
            raise FilterError(f"{field}: unknown capability {n!r}")
    return frozenset(out)


def _compile_cap_set(which: str, spec: Mapping[str, Any]) -> Callable[[frozenset[int]], bool]:
    ops = [k for k in ("any", "all", "exactly", "none") if spec.get(k)]
    if len(ops) != 1:
        raise FilterError(f"capabilities.{which}: set exactly one of any, all, exactly, none")
    op = ops[0]
    want = _cap_set(f"capabilities.{which}.{op}", spec[op])
    if op == "any":
        return lambda have: bool(have & want)
    if op == "all":
        return lambda have: want <= have
    if op == "exactly":
        return lambda have: have == want
    return lambda have: not have & want


def _process_caps(proc: Mapping[str, Any], which: str) -> frozenset[Any] | None:
    """Capability numbers of an event's set (a name outside the table stays a string)."""
    cap = proc.get("cap")
    if cap is None:
        return None
    return frozenset(_CAP_BY_NAME.get(n, n) if isinstance(n, str) else n
                     for n in cap.get(which, ()))


# --------------------------------------------------------------------------- one Filter

def _proc_field(path: tuple[str, ...]) -> Callable[[Mapping[str, Any] | None], Any]:
    def get(proc: Mapping[str, Any] | None) -> Any:
        cur: Any = proc
        for p in path:
            if not isinstance(cur, Mapping):
                return None
            cur = cur.get(p)
        return cur
    return get


def _regex_pred(field: str, values: Any, role: str,
                path: tuple[str, ...]) -> Predicate:
    regexes = _regexes(field, _as_list(field, values))
    get = _proc_field(path)

    def pred(ev: Event, kind: str, body: dict[str, Any]) -> bool:
        proc = body.get(role)
        if proc is None:
            return False
        return _search_any(regexes, get(proc))
    return pred


_REGEX_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "binary_regex": ("process", ("binary",)),
    "parent_binary_regex": ("parent", ("binary",)),
    "arguments_regex": ("process", ("arguments",)),
    "parent_arguments_regex": ("parent", ("arguments",)),
    "pod_regex": ("process", ("pod", "name")),
    "container_id": ("process", ("docker",)),
    "container_name_regex": ("process", ("pod", "container", "name")),
    "namespace_regex": ("process", ("pod", "namespace")),
}


class _PidSet:
    """Stateful ``pid_set``: the pids asked for plus every descendant seen since."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = set(pids)

    def __call__(self, ev: Event, kind: str, body: dict[str, Any]) -> bool:
        proc = body.get("process")
        if proc is None:
            return False
        pid = proc.get("pid")
        if pid in self.pids:
            return True
        parent = body.get("parent")
        if parent is not None and parent.get("pid") in self.pids:
            if kind == "process_exec" and pid is not None:
                self.pids.add(pid)
            return True
        return False


def _pred_for(field: str, value: Any) -> Predicate | None:
    """One Filter field -> predicate (None when the field is unset/empty)."""
    if value is None or value == [] or value == {}:
        return None
    if field in UNSUPPORTED_FIELDS:
        raise FilterError(UNSUPPORTED_FIELDS[field])
    if field in _REGEX_FIELDS:
        role, path = _REGEX_FIELDS[field]
        return _regex_pred(field, value, role, path)
    builder = _BUILDERS.get(field)
    if builder is None:
        raise FilterError(f"unknown filter field {field!r}")
    return builder(value)


def _cel(value: Any) -> Predicate:
    """``cel_expression``: any of the expressions is true (see the module docstring)."""
    import cel  # the common-expression-language package: only requests that use CEL

    programs = []
    for expr in _as_list("cel_expression", value):
        try:
            programs.append(cel.compile(str(expr)))
        except (ValueError, RuntimeError, TypeError) as err:
            raise FilterError(f"cel_expression: {_cel_error(str(expr), err)}") from err

    def pred(ev: Event, kind: str, body: dict[str, Any]) -> bool:
        env = {kind: body}
        for prog in programs:
            try:
                if prog.execute(env) is True:
                    return True
            except (ValueError, RuntimeError, TypeError, KeyError):
                continue
        return False
    return pred


_CEL_POS = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")


def _cel_error(expr: str, err: Exception) -> str:
    """``invalid expression "x ==" at line 1, column 5: <reason>`` from the library's
    message (which carries ``<input>:LINE:COL: reason``)."""
    text = str(err)
    m = _CEL_POS.search(text)
    if m:
        reason = m.group(3).split("\n")[0].strip()
        return (f"invalid expression {expr!r} at line {m.group(1)}, column "
                f"{m.group(2)}: {reason}")
    return f"invalid expression {expr!r}: {text.splitlines()[0] if text else type(err).__name__}"


def _event_set(value: Any) -> Predicate:
    kinds = {event_type_key(v) for v in _as_list("event_set", value)}
    return lambda ev, kind, body: kind in kinds


def _namespace(value: Any) -> Predicate:
    names = {str(v) for v in _as_list("namespace", value)}

    def pred(ev: Event, kind: str, body: dict[str, Any]) -> bool:
        proc = body.get("process")
        if proc is None:
            return False
        pod = proc.get("pod")
        return (pod.get("namespace", "") if pod else "") in names
    return pred


def _pids(value: Any) -> Predicate:
    pids = {int(v) for v in _as_list("pid", value)}

    def pred(ev: Event, kind: str, body: dict[str, Any]) -> bool:
        proc = body.get("process")
        return proc is not None and proc.get("pid") in pids
    return pred


def _pid_set(value: Any) -> Predicate:
    return _PidSet(int(v) for v in _as_list("pid_set", value))


def _bool_field(field: str, getter: Callable[[Mapping[str, Any]], bool]) -> Callable[[Any], Predicate]:
    def build(value: Any) -> Predicate:
        if not isinstance(value, bool):
            raise FilterError(f"{field}: expected true or false, got {value!r}")

        def pred(ev: Event, kind: str, body: dict[str, Any]) -> bool:
            proc = body.get("process")
            return proc is not None and getter(proc) == value
        return pred
    return build


def _is_health_check(proc: Mapping[str, Any]) -> bool:
    container = (proc.get("pod") or {}).get("container") or {}
    return bool(container.get("maybe_exec_probe"))


def _labels(value: Any) -> Predicate:
    selectors = [compile_label_selector(str(s)) for s in _as_list("labels", value)]

    def pred(ev: Event, kind: str, body: dict[str, Any]) -> bool:
        pod = _pod(body.get("process"))
        if not pod:
            return False
        labels = pod.get("pod_labels") or {}
        return any(s(labels) for s in selectors)
    return pred


def _policy_names(value: Any) -> Predicate:
    names = {str(v) for v in _as_list("policy_names", value)}
    return lambda ev, kind, body: body.get("policy_name") in names


def _ancestor_binary(value: Any) -> Predicate:
    regexes = _regexes("ancestor_binary_regex", _as_list("ancestor_binary_regex", value))

    def pred(ev: Event, kind: str, body: dict[str, Any]) -> bool:
        return any(_search_any(regexes, a.get("binary")) for a in body.get("ancestors") or ())
    return pred


def _capabilities(value: Any) -> Predicate:
    if not isinstance(value, Mapping):
        raise FilterError("capabilities: expected an object")
    sets = [(which, _compile_cap_set(which, spec)) for which, spec in value.items()
            if spec]
    for which, _ in sets:
        if which not in ("permitted", "effective", "inheritable"):
            raise FilterError(f"capabilities: unknown set {which!r}")

    def pred(ev: Event, kind: str, body: dict[str, Any]) -> bool:
        proc = body.get("process")
        if proc is None:
            return False
        for which, check in sets:
            have = _process_caps(proc, which)
            if have is None or not check(have):
                return False
        return True
    return pred


_BUILDERS: dict[str, Callable[[Any], Predicate]] = {
    "event_set": _event_set,
    "namespace": _namespace,
    "pid": _pids,
    "pid_set": _pid_set,
    "health_check": _bool_field("health_check", _is_health_check),
    "in_init_tree": _bool_field("in_init_tree", lambda p: bool(p.get("in_init_tree"))),
    "labels": _labels,
    "policy_names": _policy_names,
    "ancestor_binary_regex": _ancestor_binary,
    "capabilities": _capabilities,
    "cel_expression": _cel,
}


class Filter:
    """One compiled Tetragon ``Filter`` (its fields AND-ed)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if not isinstance(spec, Mapping):
            raise FilterError(f"a filter must be an object, got {spec!r}")
        unknown = set(spec) - _KNOWN_FIELDS
        if unknown:
            raise FilterError(f"unknown filter field(s): {', '.join(sorted(unknown))}")
        self.preds = [p for f, v in spec.items() if (p := _pred_for(f, v)) is not None]

    def __call__(self, ev: Event, kind: str, body: dict[str, Any]) -> bool:
        return all(p(ev, kind, body) for p in self.preds)


class EventFilter:
    """allow_list / deny_list of a GetEvents request: ``matches(event)``."""

    def __init__(self, allow: Sequence[Mapping[str, Any]] = (),
                 deny: Sequence[Mapping[str, Any]] = ()) -> None:
        self.allow = [Filter(s) for s in allow]
        self.deny = [Filter(s) for s in deny]
        self.passthrough = not self.allow and not self.deny

    def matches(self, ev: Event) -> bool:
        if self.passthrough:
            return True
        kind = event_kind(ev)
        if kind is None:
            return False
        body = ev[kind]
        if not isinstance(body, dict):
            body = {}
        if self.allow and not any(f(ev, kind, body) for f in self.allow):
            return False
        return not any(f(ev, kind, body) for f in self.deny)


# --------------------------------------------------------------------------- field filters

Tree = dict[str, "Tree"]  # an empty dict is a leaf: the whole subtree


def _snake(segment: str) -> str:
    """camelCase path segment -> snake_case (FieldMask JSON uses camelCase)."""
    if not segment or not segment[0].islower():
        return segment
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), segment)


def parse_paths(fields: Any) -> list[tuple[str, ...]]:
    """FieldMask in any of its forms (``"a.b,c"``, ``["a.b", "c"]``, ``{"paths": [...]}``)."""
    if isinstance(fields, Mapping):
        fields = fields.get("paths", [])
    if isinstance(fields, str):
        fields = fields.split(",")
    if not isinstance(fields, (list, tuple)):
        raise FilterError(f"fields: expected a field mask, got {fields!r}")
    out = []
    for f in fields:
        parts = tuple(_snake(p.strip()) for p in str(f).strip().split("."))
        if not all(parts):
            raise FilterError(f"fields: invalid path {f!r}")
        out.append(parts)
    return out


def _tree(paths: Iterable[tuple[str, ...]]) -> Tree:
    root: Tree = {}
    for path in paths:
        node = root
        for i, part in enumerate(path):
            if part in node and not node[part]:
                break  # an ancestor is already whole
            if i == len(path) - 1:
                node[part] = {}
            else:
                node = node.setdefault(part, {})
    return root


def _include(value: Any, tree: Tree) -> Any:
    if isinstance(value, list):
        return [_include(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        sub = tree.get(k)
        if sub is None:
            continue
        out[k] = v if not sub else _include(v, sub)
    return out


def _exclude(value: Any, tree: Tree) -> Any:
    if isinstance(value, list):
        return [_exclude(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        sub = tree.get(k)
        if sub is None:
            out[k] = v
        elif sub:
            out[k] = _exclude(v, sub)
    return out


class _FieldFilterSpec:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        if not isinstance(spec, Mapping):
            raise FilterError(f"a field filter must be an object, got {spec!r}")
        action = spec.get("action", "INCLUDE")
        if action in (0, "INCLUDE"):
            self.include = True
        elif action in (1, "EXCLUDE"):
            self.include = False
        else:
            raise FilterError(f"field filter action must be INCLUDE or EXCLUDE, got {action!r}")
        kinds = spec.get("event_set") or []
        self.kinds = {event_type_key(k) for k in _as_list("event_set", kinds)}
        self.invert = bool(spec.get("invert_event_set", False))
        self.paths = parse_paths(spec.get("fields", []))

    def applies(self, kind: str) -> bool:
        if not self.kinds:
            return True
        return (kind in self.kinds) != self.invert


class FieldFilters:
    """The ``field_filters`` of a request: ``apply(event)`` returns the trimmed event."""

    def __init__(self, specs: Sequence[Mapping[str, Any]] = ()) -> None:
        self.specs = [_FieldFilterSpec(s) for s in specs]
        self._plans: dict[str, tuple[Tree | None, Tree | None]] = {}

    def __bool__(self) -> bool:
        return bool(self.specs)

    def _plan(self, kind: str) -> tuple[Tree | None, Tree | None]:
        plan = self._plans.get(kind)
        if plan is None:
            inc = [p for s in self.specs if s.include and s.applies(kind) for p in s.paths]
            exc = [p for s in self.specs if not s.include and s.applies(kind) for p in s.paths]
            has_inc = any(s.include and s.applies(kind) for s in self.specs)
            plan = (_tree(inc) if has_inc else None, _tree(exc) if exc else None)
            self._plans[kind] = plan
        return plan

    def apply(self, ev: Event) -> Event:
        """A new event with the fields trimmed (or ``ev`` itself when nothing applies)."""
        if not self.specs:
            return ev
        kind = event_kind(ev)
        if kind is None:
            return ev
        inc, exc = self._plan(kind)
        if inc is None and exc is None:
            return ev
        body = ev[kind]
        if inc is not None:
            body = _include(body, inc)
        if exc is not None:
            body = _exclude(body, exc)
        return {k: (body if k == kind else v) for k, v in ev.items()}


def cli_filter(*, event_types: Sequence[str] = (), binaries: Sequence[str] = (),
               namespaces: Sequence[str] = (), pods: Sequence[str] = (),
               policy_names: Sequence[str] = (), pids: Sequence[int] = (),
               namespace_regex: Sequence[str] = (), containers: Sequence[str] = (),
               host: bool = False, cel_expressions: Sequence[str] = ()
               ) -> dict[str, Any] | None:
    """The one allow-list Filter ``tetra getevents`` builds from its flags (None if empty)."""
    spec: dict[str, Any] = {}
    if event_types:
        spec["event_set"] = [event_type_key(t).upper() for t in event_types]
    if binaries:
        spec["binary_regex"] = list(binaries)
    ns = list(namespaces) + ([""] if host else [])
    if ns:
        spec["namespace"] = ns
    if pods:
        spec["pod_regex"] = list(pods)
    if policy_names:
        spec["policy_names"] = list(policy_names)
    if pids:
        spec["pid"] = list(pids)
    if namespace_regex:
        spec["namespace_regex"] = list(namespace_regex)
    if containers:
        spec["container_name_regex"] = list(containers)
    if cel_expressions:
        spec["cel_expression"] = list(cel_expressions)
    return spec or None


__all__ = ["EVENT_TYPES", "EVENT_TYPE_KEYS", "EventFilter", "FieldFilters", "Filter",
           "FilterError", "cli_filter", "compile_label_selector", "event_kind",
           "event_type_key", "parse_paths"]
