"""followChildren / followForks without root: the /proc seed rule and what the compiler
makes of the selectors (the kernel side is tests/kernel/test_policies.py::test_follow_*)."""

from __future__ import annotations

from vigil.abi import _generated as abi
from vigil.abi.pack import unpack_field
from vigil.policy.compiler import KernelView, compile_policy
from vigil.policy.follow import FollowSel, Proc, seed_bits
from vigil.policy.loader import load_policy

# init(1) -> bash(10) -> python(11) -> cat(12);  init -> sshd(20) -> bash(21);  cat(30)
PROCS = [Proc(1, 0, "/sbin/init", 1), Proc(10, 1, "/bin/bash", 10),
         Proc(11, 10, "/usr/bin/python3", 11), Proc(12, 11, "/bin/cat", 12),
         Proc(20, 1, "/usr/sbin/sshd", 20), Proc(21, 20, "/bin/bash", 21),
         Proc(30, 1, "/bin/cat", 5)]


def test_binary_marks_the_process_and_all_its_descendants() -> None:
    bits = seed_bits(PROCS, [FollowSel(2, binaries=("/bin/bash",))])
    assert bits == {10: 4, 11: 4, 12: 4, 21: 4}


def test_pids_mark_descendants_not_the_pid_itself() -> None:
    bits = seed_bits(PROCS, [FollowSel(0, pids=(10,))])
    assert bits == {11: 1, 12: 1}
    # isNamespacePID compares NSpid: process 30 is pid 5 in its namespace
    assert seed_bits(PROCS + [Proc(31, 30, "/bin/sh", 6)], [FollowSel(1, pids=(5,), ns_pid=True)]) \
        == {31: 2}


def test_several_selectors_and_a_cycle_terminate() -> None:
    procs = PROCS + [Proc(40, 41, "/x", 40), Proc(41, 40, "/bin/bash", 41)]
    bits = seed_bits(procs, [FollowSel(0, binaries=("/usr/sbin/sshd",)), FollowSel(1, pids=(11,))])
    assert bits[21] == 1 and bits[20] == 1 and bits[12] == 2
    assert 40 not in bits and 41 not in bits


def _policy(sel: str) -> object:
    return load_policy(f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: f
spec:
  kprobes:
  - call: sys_getpid
    selectors:
    - matchPIDs:
      - operator: In
        values: [1]
    - {sel}
""", source="f.yaml")


def test_compiler_adds_follow_programs_and_flags() -> None:
    plan = compile_policy(_policy("""matchBinaries:
      - operator: NotIn
        values: ["/bin/bash"]
        followChildren: true
      matchPIDs:
      - operator: In
        values: [7]
        followForks: true"""), KernelView())
    [hook] = plan.hooks
    pid_bit = int(abi.FollowFlag.PID_BIT) + 1 * int(abi.GenLimits.GEN_PIDF) + 0
    assert hook.follow == (FollowSel(1, ("/bin/bash",)), FollowSel(pid_bit, (), (7,), False))
    assert [a.program for a in hook.attach] == ["vg_gen_tp", "vg_gen_fl_exec", "vg_gen_fl_fork",
                                                "vg_gen_fl_exit"]
    assert hook.map_sizes["vg_follow"] == int(abi.GenLimits.FOLLOW_ENTRIES)
    def field(name: str) -> int:
        return unpack_field("vg_hook_cfg", name, hook.config)
    assert field("follow") == 0b10
    assert field("sel[0].follow") == 0
    assert field("sel[1].follow") == int(abi.FollowFlag.BIN | abi.FollowFlag.PIDS)
    assert field("sel[1].pids[0].follow") == 1 and field("sel[1].npidf") == 1
    assert field("sel[0].pids[0].follow") == 0
    assert "follow descendants" in hook.mechanism


def test_no_follow_no_programs() -> None:
    [hook] = compile_policy(_policy("matchBinaries: [{operator: In, values: [/bin/sh]}]"),
                            KernelView()).hooks
    assert [a.program for a in hook.attach] == ["vg_gen_tp"] and not hook.follow
    assert "vg_follow" not in hook.map_sizes


def test_each_matchpids_filter_has_its_own_slot_and_follow_bit() -> None:
    """Several matchPIDs filters in one selector all must hold (Tetragon ANDs them): each
    gets its own slot, and a followForks filter its own vg_follow bit."""
    plan = compile_policy(_policy("""matchPIDs:
      - operator: NotIn
        values: [0, 1]
      - operator: NotIn
        isNamespacePID: true
        followForks: true
        values: [1]"""), KernelView())
    [hook] = plan.hooks

    def field(name: str) -> int:
        return unpack_field("vg_hook_cfg", name, hook.config)
    assert field("sel[1].npidf") == 2
    assert field("sel[1].pids[0].op") == int(abi.Op.NOTIN)
    assert field("sel[1].pids[0].nvals") == 2 and field("sel[1].pids[0].ns") == 0
    assert field("sel[1].pids[1].ns") == 1 and field("sel[1].pids[1].follow") == 1
    bit = int(abi.FollowFlag.PID_BIT) + int(abi.GenLimits.GEN_PIDF) + 1
    assert hook.follow == (FollowSel(bit, (), (1,), True),)
