"""String heads of matchArgs filters (pure: no kernel, no root): the first bytes of every
value compiled inline, which the hook compares with a string's first 8 bytes before it
reads the whole string (vg_str_head_may_match in bpf/generic.bpf.c)."""

from __future__ import annotations

from tests.unit.test_policy_refused import fixture_view
from vigil.abi.pack import unpack_field
from vigil.policy.compiler import compile_policy
from vigil.policy.loader import load_policy

OPENAT = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: heads
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: {op}
        values: {values}
"""


def _slot(op: str, values: list[str]) -> dict[str, object]:
    policy = load_policy(OPENAT.format(op=op, values=values), source="t.yaml")
    cfg = compile_policy(policy, fixture_view()).hooks[0].config
    f = "sel[0].args[0]"
    return {"head_len": unpack_field("vg_hook_cfg", f"{f}.head_len", cfg),
            "nvals": unpack_field("vg_hook_cfg", f"{f}.nvals", cfg),
            "vals": [unpack_field("vg_hook_cfg", f"{f}.vals", cfg[8 * k:]) for k in range(2)]}


def test_prefix_heads_are_the_first_bytes_of_each_value() -> None:
    s = _slot("Prefix", ["/nonexistent/vigil-bench/", "/etc/"])
    assert s["head_len"] == 5 and s["nvals"] == 2  # the shortest value: "/etc/"
    assert s["vals"] == [int.from_bytes(b"/none", "little"), int.from_bytes(b"/etc/", "little")]


def test_long_values_keep_eight_bytes() -> None:
    s = _slot("Equal", ["/etc/passwd", "/etc/shadow"])
    assert s["head_len"] == 8
    assert s["vals"][0] == int.from_bytes(b"/etc/pas", "little")


def test_no_heads_for_negated_or_suffix_filters_or_an_empty_value() -> None:
    for op, values in (("NotPrefix", ["/etc/"]), ("Postfix", ["passwd"]),
                       ("NotEqual", ["/etc/passwd"]), ("Prefix", ["", "/etc/"])):
        s = _slot(op, values)
        assert s["head_len"] == 0 and s["nvals"] == 0, (op, values)


def test_no_heads_for_more_values_than_fit_inline() -> None:
    s = _slot("Prefix", [f"/p{k}/" for k in range(9)])
    assert s["head_len"] == 0
