"""Read TracingPolicy YAML into a validated :class:`~vigil.policy.spec.Policy`.

Every problem is reported at once and located (``file:line:col``) at the node that causes
it: YAML is composed with PyYAML (which keeps node positions), converted to plain data
while recording where each field path starts, validated with the pydantic models and the
cross-field rules of :mod:`vigil.policy.checks`, and each error location (a pydantic
``loc`` or a check's path, both spelled with the YAML keys) is mapped back to its node.

Decisions:

* One policy per file (like ``--tracing-policy``): a second YAML document is an error;
  empty documents (a stray ``---``) are ignored.
* Duplicate keys are errors (go-yaml and Kubernetes reject them too), anywhere.
* Mapping keys are kept as their source text (``1:`` is the key ``"1"``), as
  sigs.k8s.io/yaml turns keys into JSON strings. ``<<`` merge keys are honoured.
* Warnings (e.g. a message longer than 256 characters) do not reject the policy; they are
  on ``Policy.warnings``. A rejected policy's ``PolicyError.diagnostics`` lists errors and
  warnings, sorted by position.
* ``load_policy_file`` lets ``OSError`` through (the caller says which file it could not
  read); undecodable bytes are a ``policy.yaml`` error.

Bounds. Policies arrive from untrusted places (any gRPC client, a mounted ConfigMap), so
reading one costs little memory and time whatever it holds; a document over a bound is
rejected whole with a located ``policy.limit`` error before anything is built from it:

* Size: at most :data:`MAX_POLICY_BYTES` (1 MiB) of text. Kubernetes stores no object over
  about 1.5 MB and real policies are a few kB (Tetragon's examples: under 3 kB), so this
  is far above any real policy; files are read no further than the limit.
* Nodes: at most :data:`MAX_NODES` (100,000) keys, scalars, lists and mappings, aliases
  expanded: room for the largest value list a selector takes (65,536 ``InMap`` values)
  while composing the largest document stays near 30 MB and building and validating its
  data near 100 MB. PyYAML spends some 300 bytes per composed node, so a megabyte of
  ``[1,1,1,...]`` (half a million nodes) is refused as it is composed, at the first node
  over the limit.
* Nesting: at most :data:`MAX_DEPTH` (64) levels of lists and mappings inside each other,
  aliases expanded (real policies nest under 10). Checked while composing, so a deep
  ``[[[[...]]]]`` stops at level 65 instead of recursing into a RecursionError.
* Alias expansion: PyYAML's composer shares an anchored node between its aliases, so a
  "billion laughs" document (anchors whose lists repeat earlier anchors, level after
  level) composes into a few dozen nodes; but the plain data built from it repeats each
  alias, exponentially. The composer records the size each node has with its aliases
  expanded, and a document whose data would hold more than :func:`node_budget` nodes (10
  times the nodes written in it, at least 10,000, at most :data:`MAX_NODES`) is refused
  before anything is built from it. go-yaml (which Tetragon and Kubernetes use) refuses
  such documents too ("excessive aliasing"), by a ratio of alias to plain decoding work.
"""

from __future__ import annotations

import os
import stat
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from vigil.errors import PolicyError
from vigil.policy.checks import Finding, check_arg_ops, check_document
from vigil.policy.diagnostics import Diagnostic, sort_key
from vigil.policy.spec import Policy, format_path, suggest, type_name

Path = tuple[str | int, ...]
Pos = tuple[int, int]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

MAX_POLICY_BYTES = 1 << 20
"""Largest policy text, in UTF-8 bytes (see the module docstring)."""
MAX_DEPTH = 64
"""Deepest nesting of lists and mappings in a policy, aliases expanded."""
MAX_NODES = 100_000
"""Most nodes (keys, scalars, lists, mappings) in a policy's data, aliases expanded."""
ALIAS_FACTOR = 10
MIN_NODE_BUDGET = 10_000


def node_budget(written: int) -> int:
    """How many nodes the data of a document with ``written`` composed nodes may hold once
    its aliases are expanded: ``ALIAS_FACTOR`` times as many, at least
    ``MIN_NODE_BUDGET`` (so a small policy may reuse a block freely) and at most
    :data:`MAX_NODES` (so building the data stays cheap however aliases nest)."""
    return min(MAX_NODES, max(MIN_NODE_BUDGET, ALIAS_FACTOR * written))


@dataclass
class Locations:
    """Where each field path's key and value start in the source (1-based)."""

    keys: dict[Path, Pos] = field(default_factory=dict)
    values: dict[Path, Pos] = field(default_factory=dict)

    def locate(self, path: Path, at: str = "value") -> Pos:
        """The key (``at="key"``) or value of ``path``; for a path that is not in the
        source (a missing or defaulted field), its nearest enclosing node."""
        if at == "key" and path in self.keys:
            return self.keys[path]
        while path and path not in self.values:
            path = path[:-1]
        return self.values.get(path, (1, 1))


def _pos(node: Node) -> Pos:
    return node.start_mark.line + 1, node.start_mark.column + 1


@dataclass
class _Problem:
    """A YAML-level problem. ``unreadable``: the value at ``path`` could not be built, so
    whatever validation says about that path is a consequence, not news."""

    pos: Pos
    path: Path
    message: str
    unreadable: bool = False


class _Builder:
    """Node tree -> plain data plus :class:`Locations`, noting duplicate keys and other
    YAML-level problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.locations = Locations()
        self.problems: list[_Problem] = []
        self._constructor = SafeConstructor()
        self._active: set[int] = set()

    def build(self, node: Node, path: Path) -> Any:
        self.locations.values[path] = _pos(node)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            self.problems.append(_Problem(_pos(node), path, "recursive YAML alias"))
            return None
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            self.problems.append(_Problem(_pos(node), path, "cannot read value: "
                                          f"unsupported YAML tag {node.tag}", True))
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            return self._mapping(node, path)  # type: ignore[arg-type]  # a MappingNode here
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as err:
            self.problems.append(_Problem(_pos(node), path, f"cannot read value: {err}",
                                          True))
            return None

    def _sequence(self, node: SequenceNode, path: Path) -> list[Any]:
        out = []
        for i, child in enumerate(node.value):
            self.locations.keys[path + (i,)] = _pos(child)
            out.append(self.build(child, path + (i,)))
        return out

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(out, value_node, path)
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self.problems.append(_Problem(_pos(key_node), path,
                                              "mapping keys must be plain scalars"))
                continue
            key = key_node.value
            if key in first:
                self.problems.append(_Problem(
                    _pos(key_node), path + (key,),
                    f'duplicate key "{key}" (first defined on line {first[key]})'))
                continue
            first[key] = key_node.start_mark.line + 1
            self.locations.keys[path + (key,)] = _pos(key_node)
            out[key] = self.build(value_node, path + (key,))
        self.locations.values[path] = _pos(node)
        return out

    def _merge(self, out: dict[str, Any], value_node: Node, path: Path) -> None:
        """``<<: *anchor`` (or a list of them): keys not written explicitly."""
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        for src in sources:
            if not isinstance(src, MappingNode):
                self.problems.append(_Problem(_pos(src), path,
                                              "a merge key (<<) needs a mapping"))
                continue
            merged = self.build(src, path)
            for key, value in merged.items():
                out.setdefault(key, value)


# --------------------------------------------------------------------------------------
# Composing
# --------------------------------------------------------------------------------------


class _Fatal(Exception):
    """A problem after which nothing else can be checked (not YAML, no document, over a
    bound)."""

    def __init__(self, pos: Pos, message: str, code: str = "policy.yaml") -> None:
        super().__init__(message)
        self.pos = pos
        self.code = code


def _mark_pos(mark: Any) -> Pos:
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, composing within :data:`MAX_NODES`, :data:`MAX_DEPTH` and
    :func:`node_budget`.

    For every list and mapping it records the size and height the node has once its
    aliases are expanded (an alias is the anchored node itself, already measured), so
    the check costs one pass over the composed nodes, however much aliases would
    expand. Nesting is refused when a collection starts too deep, before PyYAML's
    recursive composer goes further."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0                                 # collections open now
        self._nodes = 0                                 # nodes composed in this document
        self._measure: dict[int, tuple[int, int]] = {}  # id(collection) -> size, height
        self._completed: list[Node] = []                # collections, as they closed

    def compose_document(self) -> Node:
        self._nodes = 0
        self._measure.clear()
        self._completed.clear()
        node = super().compose_document()
        assert node is not None  # a document always has a root node
        self._check_aliases(node)
        return node

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in PyYAML's stubs
        if isinstance(event, AliasEvent):
            alias = super().compose_node(parent, index)
            assert alias is not None  # an alias names a node composed before
            return alias
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Fatal(_mark_pos(event.start_mark), f"too many YAML nodes: more than "
                         f"{MAX_NODES} keys, values, lists and mappings", "policy.limit")
        if isinstance(event, ScalarEvent):
            node = super().compose_node(parent, index)
            assert node is not None  # None only at the end of a stream, not inside a document
            node.end_mark = None  # never shown: dropping it saves a third of a node's cost
            return node
        if self._depth >= MAX_DEPTH:
            raise _Fatal(_mark_pos(event.start_mark), f"too deeply nested: more than "
                         f"{MAX_DEPTH} levels of lists and mappings", "policy.limit")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        assert node is not None
        node.end_mark = None
        self._measure_collection(node)
        return node

    def _measure_collection(self, node: Node) -> None:
        children = node.value if isinstance(node, SequenceNode) else \
            [n for pair in node.value for n in pair]
        size, height = 1, 0
        for child in children:
            # scalars, and a collection still open (a recursive alias): one node
            child_size, child_height = self._measure.get(id(child), (1, 0))
            size += child_size
            height = max(height, child_height)
        height += 1
        if self._depth + height > MAX_DEPTH:
            raise _Fatal(_pos(node), f"too deeply nested: with its aliases expanded this "
                         f"value nests {height} levels of lists and mappings, "
                         f"{self._depth + height} in all (at most {MAX_DEPTH})",
                         "policy.limit")
        self._measure[id(node)] = (size, height)
        self._completed.append(node)

    def _check_aliases(self, root: Node) -> None:
        """Refuse the document when its data would hold more than :func:`node_budget`
        nodes, located at the first (innermost) value that alone expands past it."""
        budget = node_budget(self._nodes)
        if self._measure.get(id(root), (1, 0))[0] <= budget:
            return
        culprit = next(n for n in self._completed if self._measure[id(n)][0] > budget)
        size = self._measure[id(culprit)][0]
        shown = f"{size}" if size < 10 ** 15 else "more than 10^15"
        raise _Fatal(_pos(culprit), f"excessive YAML aliasing: aliases expand this value "
                     f"to {shown} nodes; a policy written in {self._nodes} nodes may "
                     f"expand to at most {budget}", "policy.limit")


def _is_empty(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null" and \
        node.value in ("", "~", "null", "Null", "NULL")


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with where the construct it was reading started."""
    what = err.problem or str(err)
    if err.context and err.problem:
        where = err.context_mark
        at = f" started on line {where.line + 1}, column {where.column + 1}" if where else ""
        what += f" ({err.context}{at})"
    return what


def _compose(text: str) -> tuple[Node, list[_Problem]]:
    """The policy's document node, plus a problem if the file has several. Raises
    :class:`_Fatal` for text that is not YAML or is over a bound."""
    loader = _BoundedLoader(text)
    docs: list[Node] = []
    try:
        while len(docs) < 2 and loader.check_node():  # a second one is an error already:
            node = loader.get_node()                   # the rest is not read
            if node is not None and not _is_empty(node):
                docs.append(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise _Fatal(pos, f"invalid YAML: {_yaml_problem(err)}") from None
    except yaml.YAMLError as err:
        raise _Fatal((1, 1), f"invalid YAML: {err}") from None
    finally:
        loader.dispose()
    if not docs:
        raise _Fatal((1, 1), "no policy: the document is empty")
    extra = [_Problem(_pos(d), (), "more than one YAML document: a policy file holds "
                      "exactly one policy") for d in docs[1:2]]
    return docs[0], extra


# --------------------------------------------------------------------------------------
# Errors -> diagnostics
# --------------------------------------------------------------------------------------

_TYPE_WORDS = {
    "int_type": "integer", "int_parsing": "integer", "bool_type": "boolean",
    "bool_parsing": "boolean", "string_type": "string", "list_type": "list",
    "dict_type": "mapping", "model_type": "mapping", "model_attributes_type": "mapping",
    "float_type": "number", "enum": "string",
}
_LIMIT_NOUNS = {
    "selectors": "selectors", "matchActions": "actions",
    "matchReturnActions": "return actions", "matchBinaries": "matchBinaries entries",
    "matchParentBinaries": "matchParentBinaries entries",
    "matchNamespaces": "namespace filters",
    "matchNamespaceChanges": "matchNamespaceChanges filters", "tags": "tags",
    "enforcers": "enforcers", "values": "values",
}


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and Optional[...] to the underlying type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            inner = [a for a in get_args(tp) if a is not type(None)]
            if len(inner) != 1:
                return tp
            tp = inner[0]
        else:
            return tp


def _model_at(path: Path) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` (for suggestions)."""
    tp: Any = Policy
    for seg in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found = next((f for f in tp.model_fields.values() if f.alias == seg), None)
            if found is None:
                return None
            tp = found.annotation
        elif get_origin(tp) is list and isinstance(seg, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _fold_field_case(data: dict[str, Any], builder: _Builder,
                     null_lists: list[Path]) -> dict[str, Any]:
    """Field names in another letter case, renamed to the schema's spelling.

    Tetragon decodes the policy with Go's encoding/json, which matches struct fields
    case-insensitively at every level (``apiversion``, ``Spec``, ``Call``...). The one
    exception is ``kind``: the first, unstructured decoding reads it by its exact key and
    refuses an object without it, so ``Kind`` stays unknown (and ``kind`` is then missing).
    Keys of maps (labels, selectorsMacros names) are data, never renamed. A key that
    is already spelled right wins over a differently cased duplicate (which stays unknown).

    Also collects, in ``null_lists``, list fields written as an explicit ``null``: the
    CRD declares no field nullable and Tetragon refuses ``kprobes: null``, where other
    explicit nulls read as "not set".
    """
    renames: list[tuple[Path, Path]] = []

    def walk(value: Any, tp: Any, path: Path) -> Any:
        tp = _unwrap(tp)
        if isinstance(value, dict) and isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias: f for f in tp.model_fields.values() if f.alias}
            folded = {a.lower(): a for a in fields if not (tp is Policy and a == "kind")}
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = key
                if key not in fields and key.lower() in folded and \
                        folded[key.lower()] not in value and folded[key.lower()] not in out:
                    name = folded[key.lower()]
                    renames.append((path + (key,), path + (name,)))
                field_tp = fields[name].annotation if name in fields else None
                if item is None and get_origin(_unwrap(field_tp)) is list:
                    null_lists.append(path + (name,))
                out[name] = walk(item, field_tp, path + (name,))
            return out
        if isinstance(value, list) and get_origin(tp) is list:
            return [walk(v, get_args(tp)[0], path + (i,)) for i, v in enumerate(value)]
        if isinstance(value, dict) and get_origin(tp) is dict:
            return {k: walk(v, get_args(tp)[1], path + (k,)) for k, v in value.items()}
        return value

    folded_data: dict[str, Any] = walk(data, Policy, ())
    for old, new in renames:
        for table in (builder.locations.keys, builder.locations.values):
            for p in [p for p in table if p[:len(old)] == old]:
                table[new + p[len(old):]] = table.pop(p)
    return folded_data


def _unknown_field(path: Path) -> str:
    key = str(path[-1])
    model = _model_at(path[:-1])
    known = [f.alias for f in model.model_fields.values() if f.alias] if model else []
    return f'unknown field "{key}"{suggest(key, known)}'


def _pydantic_finding(err: Any) -> Finding:
    """One pydantic error, in our codes and words, at the YAML path it names."""
    loc: Path = tuple(seg for seg in err["loc"]
                      if isinstance(seg, int) or not seg.startswith("["))
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return Finding(loc, "policy.required", f'missing required field "{loc[-1]}"',
                       anchor=loc[:-1])
    if kind == "extra_forbidden":
        return Finding(loc, "policy.unknown_field", _unknown_field(loc), at="key")
    if kind.startswith("policy."):
        return Finding(loc, kind, err["msg"])
    if kind in _TYPE_WORDS:
        return Finding(loc, "policy.type",
                       f"expected {_TYPE_WORDS[kind]}, got {type_name(err['input'])}")
    if kind in ("greater_than_equal", "greater_than"):
        return Finding(loc, "policy.range",
                       f"{err['input']} is out of range (minimum {ctx.get('ge', ctx.get('gt'))})")
    if kind in ("less_than_equal", "less_than"):
        return Finding(loc, "policy.range",
                       f"{err['input']} is out of range (maximum {ctx.get('le', ctx.get('lt'))})")
    if kind == "too_long":
        noun = _LIMIT_NOUNS.get(str(loc[-1]) if loc else "", "items")
        return Finding(loc, "policy.limit", f"too many {noun}: {ctx.get('actual_length')} "
                       f"(at most {ctx.get('max_length')})")
    if kind == "string_too_long":
        return Finding(loc, "policy.limit", f"too long: {_chars(len(err['input']))} "
                       f"(at most {ctx.get('max_length')})")
    if kind == "string_too_short":
        return Finding(loc, "policy.limit", f"too short: {_chars(len(err['input']))} "
                       f"(at least {ctx.get('min_length')})")
    return Finding(loc, "policy.invalid_value", str(err["msg"]))


def _chars(n: int) -> str:
    return f"{n} character{'' if n == 1 else 's'}"


def _diagnostic(f: Finding, locs: Locations, source: str) -> Diagnostic:
    line, col = locs.locate(f.anchor if f.anchor is not None else f.path, f.at)
    if f.severity == "warning":
        return Diagnostic(source, line, col, format_path(f.path), f.code, f.message,
                          "warning")
    return Diagnostic(source, line, col, format_path(f.path), f.code, f.message)


def _sorted_unique(diags: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(set(diags), key=sort_key)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def check_policy_size(text: str, source: str = "<string>", *, complete: bool = True) -> None:
    """Raise PolicyError when ``text`` is longer than :data:`MAX_POLICY_BYTES` in UTF-8.
    ``complete=False``: ``text`` is only the start of the policy (its size is unknown)."""
    size = len(text)
    if size * 4 > MAX_POLICY_BYTES and not text.isascii():  # up to 4 bytes a character
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        _too_large(source, size if complete else None)


def _too_large(source: str, size: int | None) -> NoReturn:
    """Reject a policy of ``size`` bytes (None: unknown, only that it is too large)."""
    message = f"policy too large: {size} bytes (at most {MAX_POLICY_BYTES})" \
        if size is not None else \
        f"policy too large: over the limit of {MAX_POLICY_BYTES} bytes"
    _raise(source, [Diagnostic(source, 1, 1, "", "policy.limit", message)])


def load_document(text: str, source: str = "<string>") -> Any:
    """One YAML (or JSON) document as plain data, under the same bounds as a policy
    (size, nodes, aliases, depth): for policy-shaped input that is not validated as a
    policy, e.g. a Kubernetes object to sign. Raises PolicyError with the location."""
    data, _node, _builder, diags = _read(text, source)
    if any(d.is_error for d in diags):
        _raise(source, diags)
    return data


def _read(text: str, source: str) -> tuple[Any, Node, _Builder, list[Diagnostic]]:
    """The bounded read shared by policies and plain documents: (data, its node, the
    builder with its locations, the diagnostics so far). Raises PolicyError for text
    that is not YAML or is over a bound."""
    check_policy_size(text, source)
    try:
        node, problems = _compose(text)
    except _Fatal as fatal:
        _raise(source, [Diagnostic(source, *fatal.pos, "", fatal.code, str(fatal))])
    builder = _Builder()
    data = builder.build(node, ())
    diags = [Diagnostic(source, *p.pos, format_path(p.path), "policy.yaml", p.message)
             for p in problems + builder.problems]
    return data, node, builder, diags


def load_policy(text: str, source: str = "<string>") -> Policy:
    """Parse and validate one policy. Raises PolicyError listing every problem."""
    data, node, builder, diags = _read(text, source)
    if not isinstance(data, dict):
        diags.append(Diagnostic(source, *_pos(node), "", "policy.yaml",
                                f"a policy must be a mapping, got {type_name(data)}"))
        _raise(source, diags)
    null_lists: list[Path] = []
    data = _fold_field_case(data, builder, null_lists)
    policy, findings = _validate(data)
    findings += [Finding(p, "policy.type", "expected list, got null (leave the field "
                         "out instead)") for p in null_lists]
    unreadable = [p.path for p in builder.problems if p.unreadable]
    diags += [_diagnostic(f, builder.locations, source) for f in findings
              if not any(f.path[:len(u)] == u for u in unreadable)]
    diags = _sorted_unique(diags)
    if policy is None or any(d.is_error for d in diags):
        _raise(source, diags)
    _attach(policy, source, diags, builder.locations)
    return policy


def _attach(policy: Policy, source: str, warnings: list[Diagnostic],
            locations: Locations) -> None:
    """What later stages need besides the document: where it came from and its nodes."""
    policy._source = source
    policy._warnings = warnings
    policy._locate = locations.locate


def _validate(data: dict[str, Any]) -> tuple[Policy | None, list[Finding]]:
    findings: list[Finding] = []
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        findings += [_pydantic_finding(e) for e in exc.errors(include_url=False)]
    findings += check_document(data)
    return policy, findings


def _raise(source: str, diags: list[Diagnostic]) -> NoReturn:
    errors = sum(1 for d in diags if d.is_error)
    raise PolicyError(f"{source}: invalid tracing policy ({errors} error"
                      f"{'' if errors == 1 else 's'})", diags)


def read_policy_text(path: str | os.PathLike[str]) -> str:
    """The text of the policy file ``path``, read no further than one byte past
    :data:`MAX_POLICY_BYTES`. PolicyError (named as ``path`` is given) when it is larger
    or not UTF-8; OSError when it cannot be read."""
    source = os.fspath(path)
    with open(source, "rb") as f:
        raw = f.read(MAX_POLICY_BYTES + 1)
        if len(raw) > MAX_POLICY_BYTES:
            st = os.fstat(f.fileno())
            _too_large(source, st.st_size if stat.S_ISREG(st.st_mode) else None)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        _raise(source, [Diagnostic(source, 1, 1, "", "policy.yaml",
                                   f"not UTF-8 text: {err.reason} at byte {err.start}")])


def load_policy_file(path: str | os.PathLike[str]) -> Policy:
    """Load the policy in ``path``; diagnostics name the file as given."""
    return load_policy(read_policy_text(path), os.fspath(path))


def policy_files(directory: str | os.PathLike[str]) -> list[str]:
    """The files ``load_policy_dir`` reads, in order: the regular files of ``directory``
    and of its immediate sub-directories (one level, as Tetragon's
    ``--tracing-policy-dir``, which suits Kubernetes ConfigMap mounts), no symlinks.
    ``*.sig`` files are the detached signatures of policies (signed-policies mode), not
    policies."""
    found: list[str] = []
    for entry in _scan(directory):
        if entry.is_file(follow_symlinks=False):
            found.append(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            found += [sub.path for sub in _scan(entry.path)
                      if sub.is_file(follow_symlinks=False)]
    return sorted(p for p in found if not p.endswith(".sig"))


def _scan(directory: str | os.PathLike[str]) -> Iterator[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        yield from list(it)


def load_policy_dir(directory: str | os.PathLike[str]) -> list[Policy]:
    """Every policy of a directory (see :func:`policy_files`); the first bad file raises
    its PolicyError."""
    return [load_policy_file(p) for p in policy_files(directory)]


__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_POLICY_BYTES", "Locations", "check_arg_ops",
           "check_policy_size", "load_policy", "load_policy_dir", "load_policy_file",
           "node_budget", "policy_files", "read_policy_text"]
