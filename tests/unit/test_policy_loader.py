"""TracingPolicy parsing and validation (vigil.policy.loader / spec / checks).

The fixture corpus is the bulk of it: every ``valid/*.yaml`` must load without errors or
warnings; every ``invalid/NAME.yaml`` must be rejected with exactly the diagnostics in
``invalid/NAME.expected`` (one ``file:line:col: severity: path: message`` per line, file
shown as the basename, in source order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from vigil.errors import PolicyError
from vigil.policy import diagnostics
from vigil.policy.checks import check_arg_ops
from vigil.policy.diagnostics import Diagnostic
from vigil.policy.loader import load_policy, load_policy_dir, load_policy_file, policy_files
from vigil.policy.spec import (
    Action,
    ArgType,
    CapabilityType,
    Mode,
    Operator,
    PolicyKind,
    RateLimitScope,
    TracepointSpec,
)
from vigil.policy.values import parse_cidr, parse_int, parse_int_range, parse_rate_limit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "policies"
VALID = sorted((FIXTURES / "valid").glob("*.yaml"))
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))

HEADER = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: t
"""


def rejected(text: str) -> list[str]:
    """The formatted diagnostics of a policy that must be rejected."""
    with pytest.raises(PolicyError) as info:
        load_policy(text, "p.yaml")
    return [str(d) for d in info.value.diagnostics]


# --- corpus ---------------------------------------------------------------------------


def test_corpus_is_big_enough() -> None:
    assert len(VALID) >= 15
    assert len(INVALID) >= 25
    for f in INVALID:
        assert f.with_suffix(".expected").read_text().strip(), f"{f.name}: empty .expected"


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_valid_policy_loads(path: Path) -> None:
    policy = load_policy_file(path)
    assert policy.warnings == []
    assert policy.source == str(path)
    assert policy.name == yaml.safe_load(path.read_text())["metadata"]["name"]


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_policy_diagnostics(path: Path) -> None:
    expected = path.with_suffix(".expected").read_text().splitlines()
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    got = [diagnostics.format(d.with_file(os.path.basename(d.file)))
           for d in info.value.diagnostics]
    assert got == expected
    assert all(d.file == str(path) for d in info.value.diagnostics)
    errors = sum(1 for d in info.value.diagnostics if d.is_error)
    assert errors >= 1
    assert str(info.value).endswith(f"({errors} error{'' if errors == 1 else 's'})")


# --- model: defaults, normalisation, derived values -----------------------------------


def test_crd_defaults_applied() -> None:
    p = load_policy(HEADER + """\
spec:
  kprobes:
  - call: sys_write
    args: [{index: 0, type: int}]
    selectors:
    - matchCapabilities:
      - operator: In
        values: [CAP_SYS_ADMIN]
      matchActions:
      - action: Post
        rateLimit: "10"
  tracepoints:
  - subsystem: sched
    event: sched_switch
    args: [{index: 3}]
""")
    kp = p.spec.kprobes[0]
    assert kp.syscall is True and kp.return_ is False and kp.return_arg is None
    assert p.spec.tracepoints[0].args[0].type is ArgType.AUTO
    sel = kp.selectors[0]
    assert sel.match_capabilities[0].type is CapabilityType.EFFECTIVE
    act = sel.match_actions[0]
    assert act.rate_limit_scope is RateLimitScope.THREAD
    assert act.rate_limit_ms == 10_000
    assert not act.is_set("rate_limit_scope") and act.is_set("rate_limit")


def test_values_integers_become_strings_and_operator_aliases_normalise() -> None:
    p = load_policy(HEADER + """\
spec:
  kprobes:
  - call: sys_kill
    args: [{index: 1, type: int}]
    selectors:
    - matchArgs:
      - {index: 1, operator: GT, values: [9, "0x10"]}
      - {index: 1, operator: LT, values: [100]}
""")
    a, b = p.spec.kprobes[0].selectors[0].match_args
    assert a.operator is Operator.GREATER_THAN and a.operator.value == "GreaterThan"
    assert a.operator.code == 1 and b.operator is Operator.LESS_THAN and b.operator.code == 2
    assert a.values == ["9", "0x10"] and b.values == ["100"]


def test_mode_from_options_and_enforcement() -> None:
    def mode(name: str) -> Mode:
        return load_policy_file(FIXTURES / "valid" / name).mode
    assert mode("write-stdout-sigkill.yaml") is Mode.ENFORCE
    assert mode("monitor-mode-override.yaml") is Mode.MONITOR
    assert mode("fd-install-dns.yaml") is Mode.MONITOR_ONLY
    # enforcement that only comes from a macro still counts
    assert mode("selector-macros.yaml") is Mode.ENFORCE
    assert load_policy_file(FIXTURES / "valid" / "monitor-mode-override.yaml"
                            ).requested_mode is Mode.MONITOR
    assert Mode.MONITOR_ONLY.to_api().name == "MONITOR_ONLY"


def test_rate_limit_units() -> None:
    assert parse_rate_limit("5") == 5_000
    assert parse_rate_limit("5s") == 5_000
    assert parse_rate_limit("2m") == 120_000
    assert parse_rate_limit("1h") == 3_600_000
    for bad in ("", "0", "1d", "-1s", "1.5m", "m"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad)
    p = load_policy_file(FIXTURES / "valid" / "file-permission-ratelimit.yaml")
    sel = p.spec.kprobes[0].selectors[0]
    assert sel.match_actions[0].rate_limit_ms == 60_000
    assert sel.match_actions[0].rate_limit_scope is RateLimitScope.PROCESS
    assert sel.match_return_actions[0].rate_limit_ms == 30_000


def test_integer_parsing() -> None:
    assert parse_int("10") == 10
    assert parse_int("0x1f") == 31
    assert parse_int("017") == 15
    assert parse_int("0") == 0
    assert parse_int("-3", bits=32, signed=True) == -3
    assert parse_int("0xffffffff", bits=32, signed=False) == 0xFFFFFFFF
    with pytest.raises(ValueError):
        parse_int("-1", bits=32, signed=False)
    with pytest.raises(ValueError):
        parse_int("128", bits=8, signed=True)
    with pytest.raises(ValueError):
        parse_int("08")  # not octal
    assert parse_int_range("1:0x10") == (1, 16)
    assert parse_int_range("7") == (7, 7)
    with pytest.raises(ValueError):
        parse_int_range("9:1")
    assert str(parse_cidr("10.1.2.3/8")) == "10.0.0.0/8"


def test_macros_are_merged_for_the_compiler() -> None:
    p = load_policy_file(FIXTURES / "valid" / "selector-macros.yaml")
    hook = p.spec.kprobes[0]
    first, second = p.spec.effective_selectors(hook)
    assert [b.values for b in first.match_binaries] == [["/bin/sh", "/bin/bash",
                                                          "/usr/bin/zsh"]]
    assert [a.action for a in first.match_actions] == [Action.SIGKILL]
    assert second.match_actions == [] and second.match_binaries[0].follow_children
    assert hook.selectors[0].match_binaries == []  # the model itself keeps the source form


def test_namespaced_policy() -> None:
    p = load_policy_file(FIXTURES / "valid" / "namespaced-exec.yaml")
    assert p.kind is PolicyKind.TRACING_POLICY_NAMESPACED and p.namespaced
    assert p.namespace == "frontend"
    assert p.spec.pod_selector is not None
    assert p.spec.pod_selector.match_labels == {"app": "web"}


def test_round_trip_through_yaml() -> None:
    for path in VALID:
        p = load_policy_file(path)
        dumped = p.model_dump(mode="json", by_alias=True, exclude_unset=True)
        again = load_policy(yaml.safe_dump(dumped), "again")
        assert again.model_dump() == p.model_dump(), path.name


# --- warnings ---------------------------------------------------------------------------


def test_long_message_is_truncated_with_a_warning() -> None:
    p = load_policy(HEADER + f"""\
spec:
  kprobes:
  - call: sys_sync
    message: "{'m' * 300}"
""", "p.yaml")
    assert p.spec.kprobes[0].message == "m" * 256
    assert [str(w) for w in p.warnings] == [
        "p.yaml:8:14: warning: spec.kprobes[0].message: message is 300 characters long; "
        "truncated to 256"]
    assert p.warnings[0].code == "policy.truncated"


def test_cluster_policy_namespace_and_unknown_option_warn() -> None:
    p = load_policy("""\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: t
  namespace: default
spec:
  options:
  - name: future-option
    value: "1"
""", "p.yaml")
    assert p.namespace == ""
    assert [(w.code, w.line, w.col) for w in p.warnings] == [
        ("policy.ignored", 5, 14), ("policy.option", 8, 11)]


# --- YAML level -------------------------------------------------------------------------


def test_empty_document() -> None:
    assert rejected("# nothing here\n") == [
        "p.yaml:1:1: error: no policy: the document is empty"]


def test_trailing_empty_document_is_ignored() -> None:
    assert load_policy(HEADER + "spec: {}\n---\n").name == "t"


def test_merge_keys_and_anchors() -> None:
    p = load_policy(HEADER + """\
spec:
  kprobes:
  - &base
    call: sys_read
    syscall: true
  - <<: *base
    call: sys_write
""")
    assert [k.call for k in p.spec.kprobes] == ["sys_read", "sys_write"]


def test_error_inside_anchor_is_located_at_its_definition() -> None:
    assert rejected(HEADER + """\
spec:
  kprobes:
  - call: sys_read
    args: &a [{index: x, type: int}]
  - call: sys_write
    args: *a
""") == [
        "p.yaml:8:23: error: spec.kprobes[0].args[0].index: expected integer, got string",
        "p.yaml:8:23: error: spec.kprobes[1].args[0].index: expected integer, got string"]


def test_non_scalar_key() -> None:
    assert rejected(HEADER + "spec:\n  ? [a]\n  : 1\n") == [
        "p.yaml:6:5: error: spec: mapping keys must be plain scalars"]


def test_unsafe_tag_is_rejected() -> None:
    out = rejected(HEADER + "spec: !!python/object:os.system {}\n")
    assert len(out) == 1 and out[0].startswith("p.yaml:5:7: error: spec: cannot read value")


# --- diagnostics ------------------------------------------------------------------------


def test_diagnostic_format_and_json() -> None:
    d = Diagnostic("a.yaml", 3, 5, "spec.kprobes[0].call", "policy.type", "boom")
    assert diagnostics.format(d) == "a.yaml:3:5: error: spec.kprobes[0].call: boom"
    assert str(d) == diagnostics.format(d)
    w = Diagnostic("a.yaml", 1, 1, "", "policy.option", "meh", "warning")
    assert diagnostics.format(w) == "a.yaml:1:1: warning: meh"
    data = json.loads(diagnostics.to_json([d, w]))
    assert data[0] == {"file": "a.yaml", "line": 3, "col": 5,
                       "path": "spec.kprobes[0].call", "code": "policy.type",
                       "message": "boom", "severity": "error"}
    assert data[1]["severity"] == "warning"
    assert not w.is_error and d.is_error


def test_label_keys_are_quoted_in_paths() -> None:
    assert rejected(HEADER.replace("  name: t\n", "  name: t\n  labels:\n    a.b/c: 1\n")
                    + "spec: {}\n") == [
        'p.yaml:6:12: error: metadata.labels["a.b/c"]: expected string, got integer']


def test_policy_diagnostic_for_later_stages() -> None:
    p = load_policy(HEADER + "spec:\n  kprobes:\n  - call: not_a_symbol\n", "p.yaml")
    d = p.diagnostic(("spec", "kprobes", 0, "call"), "policy.symbol", "no such symbol")
    assert str(d) == "p.yaml:7:11: error: spec.kprobes[0].call: no such symbol"
    assert p.locate(("spec", "kprobes", 0, "call"), at="key") == (7, 5)
    assert p.locate(("spec", "kprobes", 0, "args")) == (7, 5)  # absent: enclosing node


# --- deferred operator/type checks -----------------------------------------------------

TP_AUTO = HEADER + """\
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 5
    selectors:
    - matchArgs:
      - index: 5
        operator: Prefix
        values: [/etc/]
"""


def test_check_arg_ops_with_real_types() -> None:
    p = load_policy(TP_AUTO, "tp.yaml")  # type unknown at load time: accepted

    def as_int(hook: object, arg: object) -> ArgType | None:
        return ArgType.INT if isinstance(hook, TracepointSpec) else None

    assert [str(d) for d in check_arg_ops(p, as_int)] == [
        "tp.yaml:14:19: error: spec.tracepoints[0].selectors[0].matchArgs[0].operator: "
        "operator Prefix cannot be used on an argument of type int"]
    assert check_arg_ops(p, lambda hook, arg: ArgType.STRING) == []
    assert check_arg_ops(p, lambda hook, arg: None) == []


def test_check_arg_ops_value_range_for_resolved_type() -> None:
    p = load_policy(TP_AUTO.replace("Prefix", "Equal").replace("/etc/", '"70000"'))
    diags = check_arg_ops(p, lambda hook, arg: ArgType.UINT16)
    assert [(d.code, d.path) for d in diags] == [
        ("policy.range", "spec.tracepoints[0].selectors[0].matchArgs[0].values[0]")]


# --- directories ------------------------------------------------------------------------


def _write(path: Path, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER.replace("name: t", f"name: {name}") + "spec: {}\n")


def test_load_policy_dir_walks_one_level(tmp_path: Path) -> None:
    _write(tmp_path / "b.yaml", "b")
    _write(tmp_path / "a.yaml", "a")
    _write(tmp_path / "sub" / "c.yaml", "c")
    _write(tmp_path / "sub" / "deeper" / "d.yaml", "d")  # two levels down: not read
    (tmp_path / "link.yaml").symlink_to(tmp_path / "a.yaml")  # not a regular file
    names = [p.name for p in load_policy_dir(tmp_path)]
    assert names == ["a", "b", "c"]
    assert [os.path.relpath(f, tmp_path) for f in policy_files(tmp_path)] == [
        "a.yaml", "b.yaml", os.path.join("sub", "c.yaml")]


def test_load_policy_dir_bad_file_raises_its_diagnostics(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "a")
    (tmp_path / "z.yaml").write_text(HEADER.replace("name: t", "name: Z") + "spec: {}\n")
    with pytest.raises(PolicyError) as info:
        load_policy_dir(tmp_path)
    [d] = info.value.diagnostics
    assert d.file == str(tmp_path / "z.yaml") and (d.line, d.col) == (4, 9)
    assert d.path == "metadata.name" and d.code == "policy.invalid_value"


def test_non_utf8_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_bytes(b"kind: \xff\n")
    with pytest.raises(PolicyError) as info:
        load_policy_file(f)
    assert info.value.diagnostics[0].code == "policy.yaml"
