"""What Tetragon accepts we accept and mean the same; what it refuses we refuse, located.

Each rule here was checked against Tetragon's loader and selector parser; the kernel side
of the filters that changed is in tests/kernel/test_policies.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.unit.test_policy_refused import fixture_view
from vigil.abi import _generated as abi
from vigil.abi.pack import _fields, unpack_field
from vigil.errors import PolicyError
from vigil.policy import celexpr
from vigil.policy.checks import tracepoint_arg_position
from vigil.policy.compiler import CompileError, KernelView, compile_policy
from vigil.policy.loader import load_policy
from vigil.policy.spec import ArgType, KProbeArg, Operator, operators_for_type

HEADER = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: t
spec:
"""


def rejected(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy(text, "p.yaml")
    return [str(d) for d in info.value.diagnostics if d.is_error]


def field(hook: object, name: str) -> int:
    return unpack_field("vg_hook_cfg", name, hook.config)  # type: ignore[attr-defined]


def vals(hook: object, name: str, n: int) -> list[int]:
    """The first ``n`` numbers of a matchArg's ``vals`` array (signed 64-bit)."""
    off, size, _count = _fields("vg_hook_cfg")[name]
    data = hook.config  # type: ignore[attr-defined]
    return [int.from_bytes(data[off + k * size:off + (k + 1) * size], "little", signed=True)
            for k in range(n)]


# ---- tracepoint matchArgs index ---------------------------------------------------------

def test_tracepoint_index_is_a_field_index_or_a_position() -> None:
    args = [KProbeArg(index=4), KProbeArg(index=0)]
    # field 4 -> position 0; then field 0 (the second arg) -> position 1, which also
    # renames the 0 just produced: Tetragon renames in args order, one pass
    assert tracepoint_arg_position(4, args) == 1
    assert tracepoint_arg_position(0, args) == 1
    assert tracepoint_arg_position(1, args) == 1  # a position, no field 1 captured
    assert tracepoint_arg_position(2, args) is None
    assert tracepoint_arg_position(0, [KProbeArg(index=4)]) == 0
    assert tracepoint_arg_position(4, [KProbeArg(index=4)]) == 0


TP = HEADER + """\
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - index: 4
      type: uint64
    selectors:
    - matchArgs:
      - index: {index}
        operator: Equal
        values: ["59"]
"""


@pytest.mark.parametrize("index", [0, 4])
def test_tracepoint_index_by_position_or_field_compiles_the_same(index: int) -> None:
    [hook] = compile_policy(load_policy(TP.format(index=index)), fixture_view()).hooks
    assert field(hook, "sel[0].args[0].arg") == 0
    assert vals(hook, "sel[0].args[0].vals", 1) == [59]


def test_tracepoint_index_neither_field_nor_position_is_located() -> None:
    assert rejected(TP.format(index=1)) == [
        "p.yaml:14:16: error: spec.tracepoints[0].selectors[0].matchArgs[0].index: index 1 "
        "does not refer to an argument in args (field indexes 4 or positions 0..0)"]


# ---- values and operators ----------------------------------------------------------------

OPENAT = HEADER + """\
  kprobes:
  - call: sys_openat
    args:
    - index: 2
      type: int
    selectors:
    - matchArgs:
      - index: 2
        operator: {op}
        values: [{values}]
"""


def _openat(op: str, values: str) -> object:
    [hook] = compile_policy(load_policy(OPENAT.format(op=op, values=values)),
                            fixture_view()).hooks
    return hook


def test_four_ranges_fit_in_the_kernel() -> None:
    hook = _openat("InRange", '"1:2", "3:4", "5:6", "7:8"')
    assert field(hook, "sel[0].args[0].nvals") == 8
    assert vals(hook, "sel[0].args[0].vals", 8) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "too many values" in rejected(OPENAT.format(
        op="InRange", values='"1:2", "3:4", "5:6", "7:8", "9:9"'))[0]


def test_unsigned_32_bit_values_on_an_int_argument_are_the_same_bits() -> None:
    hook = _openat("Equal", '"4294967295", "0x80000000"')
    assert vals(hook, "sel[0].args[0].vals", 2) == [-1, -(1 << 31)]
    hook = _openat("InRange", '"2147483647:2147483648"')
    assert vals(hook, "sel[0].args[0].vals", 4) == [2147483647, 2147483647, -(1 << 31),
                                                    -(1 << 31)]
    assert rejected(OPENAT.format(op="Equal", values='"4294967296"')) == [
        "p.yaml:15:18: error: spec.kprobes[0].selectors[0].matchArgs[0].values[0]: "
        "4294967296 is out of range for a 32-bit value"]


def test_family_applies_to_sockaddr_un() -> None:
    assert Operator.FAMILY in (operators_for_type(ArgType.SOCKADDR_UN) or ())


def test_file_values_have_no_count_limit() -> None:
    values = ", ".join(f'"/p{k}"' for k in range(12))
    load_policy(HEADER + f"""\
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: [{values}]
""")


def test_resolve_may_start_with_an_index() -> None:
    load_policy(HEADER + """\
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: int
      resolve: "[0].f_flags"
""")


RET = HEADER + """\
  kprobes:
  - call: d_path
    syscall: false
    return: true
    returnArg:
      index: 0
      type: string
    selectors:
    - matchReturnArgs:
      - index: 0
        operator: Postfix
        values: ["/passwd"]
"""


def test_string_return_filters_are_accepted_and_refused_by_the_compiler_with_a_reason() -> None:
    policy = load_policy(RET)
    with pytest.raises(CompileError) as info:
        compile_policy(policy, KernelView(kprobes=True, fentry=True))
    assert not info.value.invalid
    assert "string return value" in info.value.message


def test_uretprobe_string_return_reads_the_string_and_filters_it_with_string_maps() -> None:
    policy = load_policy(HEADER + """\
  uprobes:
  - path: /bin/bash
    symbols: [readline]
    return: true
    returnArg:
      index: 0
      type: string
      label: line
    selectors:
    - matchReturnArgs:
      - index: 0
        operator: Postfix
        values: ["--force"]
""")
    hook = compile_policy(policy, fixture_view()).hooks[0]
    assert field(hook, "ret_kind") == int(abi.ArgKind.USTR)
    assert field(hook, "sel[0].nret") == 1 and field(hook, "sel[0].ret[0].arg") == 0xFF
    assert field(hook, "sel[0].ret[0].op") == int(abi.Op.POSTFIX)
    assert len(hook.map_keys["vg_str_sfx"]) == 1
    assert hook.return_arg.out == "string" and hook.return_arg.label == "line"


def test_a_string_return_value_of_a_syscall_renders_as_its_value() -> None:
    """Only uprobes read a string return (a syscall returns a number)."""
    policy = load_policy(HEADER + """\
  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    returnArg:
      index: 0
      type: string
""")
    hook = compile_policy(policy, fixture_view()).hooks[0]
    assert field(hook, "ret_kind") == 0 and hook.return_arg.out == "long"


# ---- CelExpr ------------------------------------------------------------------------------

@pytest.mark.parametrize("expr,problem", [
    ("arg0 > 5 && arg1 == 3u", None),
    ("!(arg0 == 1) || arg1 != 0u", None),
    ("int32(-1) == int32(4294967295)", None),
    ("arg0 + 1", "is of type int, not bool"),
    ("arg0 == 5u", "no matching overload for int == uint"),
    ("size(arg0) > 0", "undeclared reference to 'size'"),
    ("arg2 == 1", "the hook has 2 args"),
    ("arg0 ==", "unexpected end of expression"),
])
def test_cel_subset(expr: str, problem: str | None) -> None:
    got = celexpr.check(expr, [ArgType.INT64, ArgType.UINT64])
    assert (got is None) if problem is None else (got is not None and problem in got)


def test_cel_on_a_string_argument_is_refused() -> None:
    assert "cannot use" in (celexpr.check("arg0 == 1", [ArgType.STRING]) or "")


def test_celexpr_compiles_into_the_hooks_program() -> None:
    policy = load_policy(HEADER + """\
  kprobes:
  - call: sys_openat
    args:
    - index: 2
      type: int
    selectors:
    - matchArgs:
      - operator: CelExpr
        values: ["arg0 > int32(0)"]
""")
    hook = compile_policy(policy, fixture_view()).hooks[0]
    assert field(hook, "sel[0].args[0].op") == int(abi.Op.CEL)
    assert field(hook, "sel[0].args[0].set") == 0 and field(hook, "ncel") == 1
    # arg0, 0, int32(), swap, signed less-than
    assert field(hook, "cel[0].n") == 5
    assert [field(hook, f"cel[0].insn[{k}].op") for k in range(5)] == [
        int(abi.CelOp.ARG), int(abi.CelOp.CONST), int(abi.CelOp.S32),
        int(abi.CelOp.SWAP), int(abi.CelOp.LT)]


def test_cel_op_codes_are_the_kernels() -> None:
    for name in ("ARG", "CONST", "ADD", "SUB", "S32", "U32", "EQ", "NE", "LT", "LE", "LTU",
                 "LEU", "NOT", "AND", "OR", "SWAP"):
        assert getattr(celexpr, name) == int(abi.CelOp[name]), name
    assert celexpr.STACK_MAX == int(abi.CelLimits.CEL_STACK)


def _run(code: list[celexpr.Insn], args: list[int], sizes: list[tuple[int, bool]]) -> bool:
    """What vg_cel_eval computes, in Python: s64 values, two's complement."""
    def s64(v: int) -> int:
        v &= (1 << 64) - 1
        return v - (1 << 64) if v >> 63 else v

    def arg(i: int) -> int:
        size, signed = sizes[i]
        v = args[i] & ((1 << (8 * size)) - 1)
        return s64(v - (1 << (8 * size)) if signed and v >> (8 * size - 1) else v)
    st: list[int] = []
    for op, a, imm in code:
        if op == celexpr.ARG:
            st.append(arg(a))
        elif op == celexpr.CONST:
            st.append(imm)
        elif op in (celexpr.S32, celexpr.U32, celexpr.NOT):
            b = st.pop()
            st.append(int(not b) if op == celexpr.NOT else
                      s64((b & 0xFFFFFFFF) - ((1 << 32) if op == celexpr.S32 and b & 0x80000000
                                              else 0)))
        elif op == celexpr.SWAP:
            st[-1], st[-2] = st[-2], st[-1]
        else:
            b, x = st.pop(), st.pop()
            def u(v: int) -> int:
                return v & ((1 << 64) - 1)
            st.append({celexpr.ADD: s64(x + b), celexpr.SUB: s64(x - b),
                       celexpr.EQ: int(x == b), celexpr.NE: int(x != b),
                       celexpr.LT: int(x < b), celexpr.LE: int(x <= b),
                       celexpr.LTU: int(u(x) < u(b)), celexpr.LEU: int(u(x) <= u(b)),
                       celexpr.AND: int(bool(x) and bool(b)),
                       celexpr.OR: int(bool(x) or bool(b))}[op])
    assert len(st) == 1
    return bool(st[0])


_I64, _U64, _S32, _U32 = (8, True), (8, False), (4, True), (4, False)


@pytest.mark.parametrize("expr,types,args,want", [
    ("arg1 + 16 > 32 && arg0 != 0", "int int", [3, 17], True),
    ("arg1 + 16 > 32 && arg0 != 0", "int int", [0, 17], False),
    ("arg1 + 16 > 32 && arg0 != 0", "int int", [3, 16], False),
    ("arg0 >= arg1 || !(arg1 <= 5)", "int int", [1, 2], False),
    ("arg0 >= arg1 || !(arg1 <= 5)", "int int", [1, 6], True),
    # 64-bit wrap: the largest int plus one is the smallest
    ("arg0 + 1 < 0", "int int", [(1 << 63) - 1, 0], True),
    # uint compares unsigned; -1 read as uint is the largest
    ("arg0 > 5u", "uint uint", [-1, 0], True),
    ("arg0 - 1u > arg0", "uint uint", [0, 0], True),
    # s32: arguments sign-extended, arithmetic wraps in 32 bits
    ("arg0 < int32(0)", "s32 s32", [0xFFFFFFFF, 0], True),
    ("arg0 + int32(1) < arg0", "s32 s32", [0x7FFFFFFF, 0], True),
    # u32: zero-extended, wraps in 32 bits, unsigned compare
    ("arg0 + uint32(1u) == uint32(0u)", "u32 u32", [0xFFFFFFFF, 0], True),
    ("arg0 > uint32(2147483648u)", "u32 u32", [0xFFFFFFFF, 0], True),
    # casts keep the low 32 bits
    ("int32(arg0) == int32(-1)", "int int", [0x1FFFFFFFF, 0], True),
    ("uint32(arg0) == uint32(1u)", "uint uint", [0x100000001, 0], True),
    ("true && !false", "int int", [0, 0], True),
])
def test_cel_programs_compute_tetragons_semantics(expr: str, types: str, args: list[int],
                                                   want: bool) -> None:
    names = types.split()
    sizes = [{"int": _I64, "uint": _U64, "s32": _S32, "u32": _U32}[t] for t in names]
    code = celexpr.compile_expr(expr, names)
    assert celexpr.stack_depth(code) <= celexpr.STACK_MAX
    assert _run(code, args, sizes) is want


@pytest.mark.parametrize("expr,problem", [
    (" || ".join(f"arg0 == {k}" for k in range(7)), "compiles to 27 steps"),
    ("arg0 + (arg0 + (arg0 + (arg0 + (arg0 + (arg0 + (arg0 + (arg0 + (arg0 + 1)))))))) > 0",
     "nests too deeply"),
])
def test_cel_programs_beyond_the_kernels_bounds_are_refused(expr: str, problem: str) -> None:
    policy = load_policy(HEADER + f"""\
  kprobes:
  - call: sys_openat
    args:
    - index: 2
      type: int64
    selectors:
    - matchArgs:
      - operator: CelExpr
        values: ["{expr}"]
""")
    with pytest.raises(CompileError) as info:
        compile_policy(policy, fixture_view())
    assert problem in info.value.message and "values[0]" in info.value.where


# ---- Override with a positive value on a socket hook ---------------------------------------

def test_positive_arg_error_on_a_socket_hook_is_the_call_result_or_refused() -> None:
    policy = load_policy(HEADER + """\
  kprobes:
  - call: security_socket_connect
    syscall: false
    args:
    - index: 1
      type: sockaddr
    selectors:
    - matchArgs:
      - index: 1
        operator: Family
        values: [AF_INET]
      matchActions:
      - action: Override
        argError: 1
""")
    # with fmod_ret, security_socket_connect returns 1 itself, as under Tetragon
    plan = compile_policy(policy, KernelView(kprobes=True, fentry=True, fmod_ret=True))
    [hook] = plan.hooks
    assert not plan.enforce.sock and "fmod_ret" in hook.mechanism
    # cgroup socket programs can only refuse with an errno: refused with the reason
    with pytest.raises(CompileError) as info:
        compile_policy(policy, KernelView())
    assert not info.value.invalid
    assert info.value.where == "spec.kprobes[0].selectors[0].matchActions[0].argError"
    assert "1 cannot be honoured here" in info.value.message


# ---- field names in another letter case -----------------------------------------------------

def test_field_names_are_case_insensitive_except_kind() -> None:
    policy = load_policy("""\
apiversion: cilium.io/v1alpha1
kind: TracingPolicy
Metadata:
  name: t
  labels: {App: x}
SPEC:
  kprobes:
  - Call: sys_write
    args:
    - INDEX: 0
      type: int
""")
    assert policy.spec.kprobes[0].call == "sys_write"
    assert policy.spec.kprobes[0].args[0].index == 0
    assert policy.metadata.labels == {"App": "x"}  # map keys are data
    assert rejected("""\
apiVersion: cilium.io/v1alpha1
Kind: TracingPolicy
metadata:
  name: t
spec: {}
""") == ['p.yaml:1:1: error: kind: missing required field "kind"',
         'p.yaml:2:1: error: Kind: unknown field "Kind" (did you mean "kind"?)']


def test_an_exactly_spelled_key_wins_over_another_case() -> None:
    errs = rejected(HEADER + "  kprobes: []\n  Kprobes: []\n")
    assert errs == ['p.yaml:7:3: error: spec.Kprobes: unknown field "Kprobes" '
                    '(did you mean "kprobes"?)']


# ---- refusals ----------------------------------------------------------------------------------

def test_explicit_null_lists_are_refused() -> None:
    assert rejected(HEADER + "  kprobes: null\n") == [
        "p.yaml:6:12: error: spec.kprobes: expected list, got null (leave the field out "
        "instead)"]
    load_policy(HEADER + "  podSelector: null\n")  # other nulls still mean "not set"


def test_unknown_syscalls_are_refused() -> None:
    assert rejected(HEADER + "  kprobes:\n  - call: sys_opneat\n") == [
        'p.yaml:7:11: error: spec.kprobes[0].call: unknown syscall "sys_opneat" '
        '(syscall: true) (did you mean "sys_openat"?)']
    load_policy(HEADER + "  kprobes:\n  - call: sys_opneat\n    syscall: false\n")
    load_policy(HEADER + "  tracepoints:\n  - subsystem: syscalls\n"
                "    event: sys_enter_newfstat\n")


def test_lsm_hook_names_are_checked() -> None:
    assert rejected(HEADER + "  lsmhooks:\n  - hook: bprm_check\n") == [
        'p.yaml:7:11: error: spec.lsmhooks[0].hook: unknown LSM hook "bprm_check" '
        '(did you mean "bprm_check_security"?)']


class _Btf(SimpleNamespace):
    def raw_tp_arity(self, event: str) -> int | None:
        return {"sched_process_exec": 3}.get(event)


def test_raw_tracepoint_index_beyond_tp_proto_is_refused() -> None:
    policy = load_policy(HEADER + """\
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args:
    - index: 3
      type: uint64
""")
    with pytest.raises(CompileError) as info:
        compile_policy(policy, KernelView(btf=_Btf()))
    assert info.value.where == "spec.tracepoints[0].args[0].index"
    assert info.value.message == ("raw tracepoint sched_process_exec has 3 arguments "
                                  "(index 0..2), per btf_trace_sched_process_exec in the "
                                  "kernel's BTF")


def test_pid_filter_limit_is_the_abi_one() -> None:
    assert int(abi.GenLimits.GEN_PIDF) == 4
