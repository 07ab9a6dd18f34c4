"""``Override`` on uprobes in the compiler (no root): the plan loads the entry program
that may return to the caller (vg_gen_uprobe_override) with argError in the action, where
the kernel lets uprobe programs write their registers; the refusals, located on the field:
the kernel's reason elsewhere, invalid sites (offsets, addrs, return probes) everywhere,
and the register assignments Vigil does not do."""

from __future__ import annotations

import pytest

from tests.unit.test_compile_kfuncs import cfg
from tests.unit.test_compile_kprobe import doc, view
from vigil.abi import _generated as abi
from vigil.policy.compiler import CompileError, compile_policy

UP = """  uprobes:
  - path: /usr/bin/true
    symbols: ["vigil_check"]
    args: [{index: 0, type: int64}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["7"]}]
      matchActions:
      - action: Override
        argError: -13
"""
WHERE = "spec.uprobes[0].selectors[0].matchActions[0]"


def compiled(spec: str, btf, **kw):  # type: ignore[no-untyped-def]
    return compile_policy(doc(spec), view(btf, **kw))


def refusal(spec: str, btf, **kw) -> CompileError:  # type: ignore[no-untyped-def]
    with pytest.raises(CompileError) as err:
        compiled(spec, btf, **kw)
    return err.value


def test_override_loads_the_register_writing_entry_program(btf) -> None:  # type: ignore[no-untyped-def]
    (h,) = compiled(UP, btf, uprobe_regs=True).hooks
    assert [(a.program, a.kind) for a in h.attach] == [("vg_gen_uprobe_override", "uprobe")]
    c = cfg(h)
    assert c["sel[0].actions[0].action"] == int(abi.Action.OVERRIDE)
    assert c["sel[0].actions[0].arg"] == -13 & 0xFFFFFFFF
    assert h.enforcement.startswith("Override: vigil_check is not run and returns -13 to "
                                    "its caller")
    # a hook without Override keeps the plain entry program
    (plain,) = compiled(UP.replace("action: Override\n        argError: -13",
                                   "action: Post"), btf, uprobe_regs=True).hooks
    assert [a.program for a in plain.attach] == ["vg_gen_uprobe"]


def test_refused_with_the_kernel_reason_elsewhere(btf) -> None:  # type: ignore[no-untyped-def]
    err = refusal(UP, btf, uprobe_regs=False, uprobe_regs_refused="load refused: EACCES")
    assert err.where == f"{WHERE}.action"
    assert "needs a kernel whose uprobe programs may write the registers" in err.message
    assert "this kernel refuses it (load refused: EACCES)" in err.message
    assert not err.unsupported and not err.invalid


def invalid(spec: str, btf) -> None:  # type: ignore[no-untyped-def]
    """Refused by the checker (at load and check) and, past it, by the compiler: both at
    the action, as invalid."""
    import yaml

    from vigil.errors import PolicyError
    from vigil.policy.spec import Policy
    text = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"
    with pytest.raises(PolicyError) as perr:
        doc(spec)
    assert [d.path for d in perr.value.diagnostics] == [f"{WHERE}.action"]
    with pytest.raises(CompileError) as err:
        compile_policy(Policy.model_validate(yaml.safe_load(text + spec)),
                       view(btf, uprobe_regs=True))
    assert err.value.where == f"{WHERE}.action" and err.value.invalid
    assert perr.value.diagnostics[0].message == err.value.message


@pytest.mark.parametrize("site", ["offsets: [16]", "addrs: [4425]"])
def test_inside_a_function_is_invalid(btf, site: str) -> None:  # type: ignore[no-untyped-def]
    invalid(UP.replace('symbols: ["vigil_check"]', site), btf)


def test_with_a_return_probe_is_invalid(btf) -> None:  # type: ignore[no-untyped-def]
    invalid(UP.replace("    args:", "    return: true\n    returnArg: {index: 0, type: int64}\n"
                       "    args:"), btf)


def test_register_assignments_are_not_supported(btf) -> None:  # type: ignore[no-untyped-def]
    spec = UP.replace("argError: -13", 'argRegs: ["rax=1"]')
    err = refusal(spec, btf, uprobe_regs=True)
    assert err.where == f"{WHERE}.argRegs" and err.unsupported
