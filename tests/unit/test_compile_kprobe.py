"""Kernel-function hooks in the compiler (vigil.policy.compile_kprobe), without root: the
mechanism chosen per kernel view, the refusals and their reasons, resolve offsets from
BTF, and the rendering of kernel-object records."""

from __future__ import annotations

import struct

import pytest

from vigil.abi import _generated as abi
from vigil.events.generic import ArgSpec, render_arg
from vigil.policy.compiler import CompileError, KernelView, compile_policy
from vigil.policy.loader import load_policy

def view(btf, **kw):
    base = dict(kprobes=True, fentry=True, lsm=True, kprobe_multi=True, fmod_ret=True, btf=btf)
    base.update(kw)
    return KernelView(**base)


def doc(spec: str) -> object:
    return load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
                       "metadata:\n  name: t\nspec:\n" + spec, source="t")


OPEN = """  kprobes:
  - call: security_file_open
    syscall: false
    args: [{index: 0, type: file}]
"""
OPEN_RET = """  kprobes:
  - call: security_file_open
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 0, type: file}]
"""


@pytest.mark.parametrize("kw,spec,mech,progs", [
    ({}, OPEN, "fentry security_file_open", ["vg_gen_fentry"]),
    ({}, OPEN_RET, "fexit security_file_open (arguments and return value)", ["vg_gen_fexit"]),
    ({"fentry": False}, OPEN_RET, "kprobe.multi security_file_open + kretprobe.multi (merged)",
     ["vg_gen_kpm", "vg_gen_kretpm"]),
    ({"fentry": False, "kprobe_multi": False}, OPEN_RET,
     "kprobe security_file_open + kretprobe (merged)", ["vg_gen_kprobe", "vg_gen_kretprb"]),
    ({"kprobe_mode": "kprobe"}, OPEN, "kprobe security_file_open", ["vg_gen_kprobe"]),
])
def test_mechanism_choice(btf, kw, spec, mech, progs) -> None:
    plan = compile_policy(doc(spec), view(btf, **kw))
    (h,) = plan.hooks
    assert h.mechanism == mech
    assert [a.program for a in h.attach] == progs
    assert ("vg_gen_entries" in h.map_sizes) == (progs[-1] in ("vg_gen_kretpm", "vg_gen_kretprb"))


def test_forced_mode_missing_is_refused(btf) -> None:
    with pytest.raises(CompileError, match="kprobe.multi is not available"):
        compile_policy(doc(OPEN), view(btf, kprobe_multi=False, kprobe_mode="kprobe_multi"))


def test_override_security_uses_fmod_ret_pair(btf) -> None:
    spec = """  kprobes:
  - call: security_inode_mkdir
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 1, type: dentry}]
    selectors:
    - matchActions: [{action: Override, argError: -1}]
"""
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert [a.kind for a in h.attach] == ["fmod_ret", "fexit"]
    assert "returns -1 (fmod_ret)" in h.enforcement
    with pytest.raises(CompileError, match="needs fmod_ret"):
        compile_policy(doc(spec), view(btf, fmod_ret=False))


def test_missing_function_and_ignore(btf) -> None:
    spec = """  kprobes:
  - call: vigil_no_such_function
    syscall: false
"""
    with pytest.raises(CompileError, match="no such function in this kernel"):
        compile_policy(doc(spec), view(btf))
    plan = compile_policy(doc(spec + "    ignore: {callNotFound: true}\n"), view(btf))
    assert plan.hooks == () and "ignored" in plan.notes[0]


def test_no_kprobes_no_trampolines_keeps_old_reason(btf) -> None:
    with pytest.raises(CompileError, match="kprobes are not available on this kernel"):
        compile_policy(doc(OPEN), view(btf, kprobes=False, fentry=False))


def test_lsm_hooks_on_bpf_lsm(btf) -> None:
    spec = """  lsmhooks:
  - hook: file_open
    args: [{index: 0, type: file}]
    selectors:
    - matchActions: [{action: Override, argError: -13}]
"""
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert (h.event, h.mechanism, h.hook_label) == ("process_lsm", "BPF LSM file_open",
                                                    "lsm:file_open")
    assert [(a.program, a.kind, a.target) for a in h.attach] == [("vg_gen_lsm", "lsm", ("file_open",))]
    bad = spec.replace("-13", "5")
    with pytest.raises(CompileError, match="negative errno"):
        compile_policy(doc(bad), view(btf))


def test_resolve_steps(btf) -> None:
    step = btf.resolve(btf.struct_id("linux_binprm"), "file.f_path.dentry")
    file_off = next(m.bit_offset // 8 for m in btf.members(btf.struct_id("linux_binprm"))
                    if m.name == "file")
    assert step.offsets[0] == file_off and len(step.offsets) == 2 and step.last == "ptr"
    step = btf.resolve(btf.struct_id("cred"), "euid.val")
    assert step.last == "int" and step.size == 4 and len(step.offsets) == 1
    from vigil.policy.kbtf import BtfError
    with pytest.raises(BtfError, match="has no member"):
        btf.resolve(btf.struct_id("cred"), "nope")


def _rec(rec: str, **vals: object) -> bytes:
    st = getattr(abi, rec.upper())
    fields = getattr(abi, rec.upper() + "_FIELDS")
    idx = getattr(abi, rec.upper() + "_INDEX")
    out = [0] * len(st.unpack(bytes(st.size)))
    for f in fields:
        v = vals.get(f)
        if v is not None:
            out[idx[f]] = v
        elif isinstance(st.unpack(bytes(st.size))[idx[f]], bytes):
            out[idx[f]] = b""
    return st.pack(*out)


def test_render_sock_and_skb() -> None:
    raw = _rec("vg_sock_rec", family=2, type=1, protocol=6, state=2, sport=40000, dport=80,
               saddr=bytes([127, 0, 0, 1]), daddr=bytes([10, 0, 0, 2]))
    assert render_arg(ArgSpec("sock"), raw) == {"sock_arg": {
        "family": "AF_INET", "type": "SOCK_STREAM", "protocol": "IPPROTO_TCP",
        "saddr": "127.0.0.1", "daddr": "10.0.0.2", "sport": 40000, "dport": 80,
        "state": "TCP_SYN_SENT"}}
    raw = _rec("vg_skb_rec", len=33, family=2, protocol=17, sport=5000, dport=53,
               saddr=bytes([127, 0, 0, 1]), daddr=bytes([127, 0, 0, 1]))
    assert render_arg(ArgSpec("skb"), raw)["skb_arg"] == {
        "len": 33, "saddr": "127.0.0.1", "daddr": "127.0.0.1", "sport": 5000, "dport": 53,
        "proto": 17, "protocol": "IPPROTO_UDP", "family": "AF_INET"}


def test_render_cred_caps_bpf_module() -> None:
    raw = _rec("vg_creds", uid=1000, euid=0, cap_effective=(1 << 21) | 1)
    cred = render_arg(ArgSpec("cred"), raw)["process_credentials_arg"]
    assert cred["uid"] == 1000 and cred["caps"] == {"effective": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}
    assert cred["user_ns"]["ns"]["is_host"] is True
    assert render_arg(ArgSpec("kernel_cap_t"), struct.pack("<q", 0x1ff)) == {
        "kernel_cap_t_arg": "00000000000001ff"}
    raw = _rec("vg_bpf_rec", type=2, insn_cnt=7, name=b"prog\0")
    assert render_arg(ArgSpec("bpf_prog"), raw) == {"bpf_prog_arg": {
        "ProgType": "BPF_PROG_TYPE_KPROBE", "InsnCnt": 7, "ProgName": "prog"}}
    raw = _rec("vg_module_rec", sig_ok=1, taints=4096, name=b"hello\0")
    assert render_arg(ArgSpec("load_info"), raw) == {"module_arg": {
        "name": "hello", "signature_ok": True, "tainted": ["TAINT_OUT_OF_TREE_MODULE"]}}


def test_syscall_override_reason_on_trampoline_kernels(btf) -> None:
    spec = """  kprobes:
  - call: sys_linkat
    syscall: true
    args: [{index: 1, type: string}]
    selectors:
    - matchActions: [{action: Override, argError: -1}]
"""
    with pytest.raises(CompileError, match="refuses fmod_ret on syscall functions"):
        compile_policy(doc(spec), view(btf))


def test_trailing_nul_of_a_string_value_is_dropped(btf) -> None:
    """As Tetragon: Equal "security.capability\\0" matches the string security.capability
    (tetragon-examples/cves/cve-2023-2640-overlayfs-ubuntu.yaml)."""
    def keys(value: str) -> object:
        plan = compile_policy(doc(f"""  kprobes:
  - call: security_kernel_module_request
    syscall: false
    args: [{{index: 0, type: string}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: ["{value}"]}}]
"""), view(btf))
        return plan.hooks[0].map_keys["vg_str_eq"]
    assert keys("net-pf-12\\0") == keys("net-pf-12")


def test_nop_argument_is_not_read_nor_rendered(btf) -> None:
    """Tetragon's nop: a placeholder for a parameter; not read, left out of the event's
    args, and not something a selector can filter on."""
    spec = """  kprobes:
  - call: security_mmap_file
    syscall: false
    args: [{index: 0, type: file}, {index: 1, type: uint32}, {index: 2, type: nop}]
"""
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert [a.out for a in h.args] == ["file", "uint", "nop"]
    with pytest.raises(CompileError, match="type nop: it is not read"):
        compile_policy(doc(spec + """    selectors:
    - matchArgs: [{index: 2, operator: Equal, values: ["1"]}]
"""), view(btf))


@pytest.mark.parametrize("tname,out", [("net_device", "string"), ("user_namespace", "user_ns"),
                                       ("perf_event", "perf_event")])
def test_kernel_object_types_compile(btf, tname, out) -> None:
    fn, idx = {"net_device": ("dev_hard_start_xmit", 1), "user_namespace": ("cap_capable", 1),
               "perf_event": ("security_perf_event_alloc", 0)}[tname]
    spec = f"""  kprobes:
  - call: {fn}
    syscall: false
    args: [{{index: {idx}, type: {tname}}}]
"""
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert [a.out for a in h.args] == [out]


def test_net_device_takes_string_operators(btf) -> None:
    spec = """  kprobes:
  - call: dev_hard_start_xmit
    syscall: false
    args: [{index: 1, type: net_device}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["lo"]}]
"""
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert len(h.map_keys["vg_str_eq"]) == 1


def test_render_user_ns_and_perf_event() -> None:
    raw = _rec("vg_userns_rec", level=1, uid=1000, gid=1000, inum=4026532000)
    assert render_arg(ArgSpec("user_ns", "ns"), raw) == {"user_ns_arg": {
        "level": 1, "uid": 1000, "gid": 1000, "ns": {"inum": 4026532000, "is_host": False}},
        "label": "ns"}
    raw = _rec("vg_userns_rec", level=0, uid=0, gid=0, inum=4026531837)
    assert render_arg(ArgSpec("user_ns"), raw)["user_ns_arg"]["ns"] == {
        "inum": 4026531837, "is_host": True}
    raw = _rec("vg_perf_rec", type=6, config=0, probe_offset=0, kprobe_func=b"commit_creds\0")
    assert render_arg(ArgSpec("perf_event"), raw) == {"perf_event_arg": {
        "KprobeFunc": "commit_creds", "Type": "6"}}
    raw = _rec("vg_perf_rec", type=2, config=812, kprobe_func=b"")
    assert render_arg(ArgSpec("perf_event"), raw) == {"perf_event_arg": {
        "Type": "PERF_TYPE_TRACEPOINT", "Config": "812"}}
    assert render_arg(ArgSpec("user_ns"), b"") == {}


def test_raw_tracepoint_linux_binprm(btf) -> None:
    spec = """  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args: [{index: 2, type: linux_binprm}]
    selectors:
    - matchArgs: [{index: 2, operator: Postfix, values: ["/true"]}]
"""
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert [a.out for a in h.args] == ["binprm"]
    assert h.attach[0].kind == "raw_tracepoint"
    assert render_arg(h.args[0], b"/usr/bin/true") == {
        "linux_binprm_arg": {"path": "/usr/bin/true"}}


def test_capability_filters_namespace_and_changes(btf) -> None:
    """isNamespaceCapability carries the host's user namespace (a task in it never
    matches); matchCapabilityChanges filters take the next caps[] slots with change=1."""
    from vigil.abi.pack import unpack_field
    spec = """  kprobes:
  - call: fd_install
    syscall: false
    args: [{index: 0, type: int}, {index: 1, type: file}]
    selectors:
    - matchCapabilities:
      - {type: Effective, operator: In, isNamespaceCapability: true,
         values: [CAP_CHOWN, CAP_NET_RAW]}
      matchCapabilityChanges:
      - {type: Permitted, operator: NotIn, values: [CAP_SYS_ADMIN]}
"""
    (h,) = compile_policy(doc(spec), view(btf, host_ns={"user": 4026531837})).hooks

    def f(name: str) -> int:
        return unpack_field("vg_hook_cfg", name, h.config)
    assert f("sel[0].ncaps") == 2
    assert (f("sel[0].caps[0].set"), f("sel[0].caps[0].change"), f("sel[0].caps[0].userns"),
            f("sel[0].caps[0].mask")) == (0, 0, 4026531837, (1 << 0) | (1 << 13))
    assert (f("sel[0].caps[1].set"), f("sel[0].caps[1].change"), f("sel[0].caps[1].userns"),
            f("sel[0].caps[1].op")) == (2, 1, 0, int(abi.Op.NOTIN))
    with pytest.raises(CompileError, match="namespaces are unknown"):
        compile_policy(doc(spec), view(btf))


def test_kiocb_is_its_file_and_iov_iter_takes_max_data(btf) -> None:
    from vigil.abi.pack import unpack_field
    spec = """  kprobes:
  - call: tty_write
    syscall: false
    args: [{index: 0, type: kiocb}, {index: 1, type: iov_iter, maxData: true}]
"""
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert [a.out for a in h.args] == ["file", "bytes"]

    def f(name: str) -> int:
        return unpack_field("vg_hook_cfg", name, h.config)
    assert f("args[0].kind") == int(abi.ArgKind.FILE)
    assert f("args[0].nres") == 1 and f("args[0].flags") & int(abi.ArgFlag.RES_DEREF)
    assert f("args[1].kind") == int(abi.ArgKind.IOV_ITER)
    assert f("args[1].max_len") == int(abi.DataLimits.MAX_DATA)
    assert f("chunk_args") == 0b10  # bit 1: argument 1


LIST_OVERRIDE = """  lists:
  - {name: links, type: syscalls, values: [sys_linkat, sys_symlinkat]}
  kprobes:
  - call: "list:links"
    args: [{index: 1, type: string}]
    selectors:
    - matchActions:
      - {action: Override, argError: -13}
"""


def test_syscall_list_override_is_one_fmod_ret_hook_per_syscall(btf) -> None:  # type: ignore[no-untyped-def]
    """Where fmod_ret may attach to syscall functions, a syscall list with Override is one
    fmod_ret hook per syscall (hook ids in a row); elsewhere it is refused naming the
    kernel's lack, not as unsupported."""
    plan = compile_policy(doc(LIST_OVERRIDE), view(btf, fmod_ret_syscall=True))
    assert [(h.hook_id, h.attach[0].program, h.attach[0].target) for h in plan.hooks] == [
        (1, "vg_gen_fmodret", ("__x64_sys_linkat",)),
        (2, "vg_gen_fmodret", ("__x64_sys_symlinkat",))]
    with pytest.raises(CompileError) as err:
        compile_policy(doc(LIST_OVERRIDE), view(btf, fmod_ret_syscall=False))
    assert err.value.where == "spec.kprobes[0].selectors" and not err.value.unsupported
    assert "refuses fmod_ret on syscall functions" in err.value.message


def test_function_list_override_is_one_hook_per_function(btf) -> None:  # type: ignore[no-untyped-def]
    """A list of kernel functions with Override: each function one fmod_ret hook, as a
    single hook with Override would be; without fmod_ret, the kernel's lack is named."""
    spec = ("  lists:\n  - {name: f, values: [security_file_open, security_inode_mkdir]}\n"
            "  kprobes:\n  - call: \"list:f\"\n    args: [{index: 0, type: int}]\n"
            "    selectors:\n    - matchActions:\n      - {action: Override, argError: -1}\n")
    plan = compile_policy(doc(spec), view(btf))
    assert [(h.attach[0].program, h.attach[0].target) for h in plan.hooks] == [
        ("vg_gen_fmodret", ("security_file_open",)),
        ("vg_gen_fmodret", ("security_inode_mkdir",))]
    with pytest.raises(CompileError) as err:
        compile_policy(doc(spec), view(btf, fmod_ret=False, fentry=False))
    assert not err.value.unsupported and "fmod_ret" in err.value.message
