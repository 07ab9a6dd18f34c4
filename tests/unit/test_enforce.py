"""Enforcement without BPF LSM, the pure parts: compile_lsm, rules, marks, elf,
wire, events. No root, no kernel."""

from __future__ import annotations

import errno
import json
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from vigil.abi import _generated as abi
from vigil.abi.pack import unpack_field
from vigil.cli.policycheck import check
from vigil.enforce import elf, marks, rules, wire
from vigil.enforce.events import HookRef, LsmEvents
from vigil.policy.compiler import CompileError, KernelView, compile_policy
from vigil.policy.loader import load_policy
from vigil.policy.plan import FanSelector, StrMatch

HEAD = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: t}\nspec:\n"


def compile_yaml(body: str, view: KernelView | None = None) -> Any:
    return compile_policy(load_policy(HEAD + body), view or KernelView())


def lsm(hook: str, selectors: str, arg: str = "file", options: str = "") -> str:
    return (options + f"  lsmhooks:\n  - hook: {hook}\n    args: [{{index: 0, type: {arg}}}]\n"
            f"    selectors:\n{selectors}")


DENY_SHADOW = """    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow, /etc/gshadow]}]
      matchBinaries: [{operator: NotIn, values: [/usr/bin/passwd]}]
      matchActions: [{action: Override, argError: -1}]
"""


class Subj:
    def __init__(self, pid: int = 10, binary: str = "/usr/bin/cat", cgroup: str | None = "/a/b",
                 ns: dict[str, int] | None = None, caps: dict[str, int] | None = None) -> None:
        self.pid, self._bin, self._cg = pid, binary, cgroup
        self._ns, self._caps = ns or {}, caps or {}
        self.asked: list[str] = []

    def binary(self) -> str:
        self.asked.append("binary")
        return self._bin

    def namespace(self, name: str) -> int | None:
        return self._ns.get(name)

    def caps(self, field: str) -> int | None:
        return self._caps.get(field)

    def cgroup(self) -> str | None:
        self.asked.append("cgroup")
        return self._cg

    listed_in: frozenset[int] = frozenset()  # filter ids the task's cgroup is listed under

    def listed(self, filter_id: int) -> bool:
        self.asked.append("listed")
        return filter_id in self.listed_in


# ---- compile ---------------------------------------------------------------------------

def test_file_open_compiles_to_fanotify_hook() -> None:
    plan = compile_yaml(lsm("file_open", DENY_SHADOW))
    assert plan.hooks == ()
    (h,) = plan.enforce.fanotify
    assert h.hook == "file_open" and h.arg == "file" and h.section == "spec.lsmhooks[0]"
    (sel,) = h.selectors
    assert sel.paths == (StrMatch("Equal", ("/etc/shadow", "/etc/gshadow")),)
    assert sel.binary == StrMatch("NotEqual", ("/usr/bin/passwd",))
    assert (sel.action, sel.deny_errno, sel.post) == (int(abi.Action.OVERRIDE), errno.EPERM, True)
    assert "FAN_OPEN_PERM" in h.mechanism and "prevents" in h.enforcement
    assert plan.hook_count == 1
    assert plan.described() == [(h.section, h.mechanism, h.enforcement)]


def test_bprm_check_security_uses_exec_permission_events() -> None:
    plan = compile_yaml(lsm("bprm_check_security", DENY_SHADOW, arg="linux_binprm"))
    (h,) = plan.enforce.fanotify
    assert h.arg == "linux_binprm" and "FAN_OPEN_EXEC_PERM" in h.mechanism
    assert "before the new program runs" in h.enforcement


@pytest.mark.parametrize("arg_error, ok", [(-1, True), (-5, True), (-16, True), (-13, False),
                                           (-111, False), (0, False)])
def test_fanotify_errnos_that_cannot_be_honoured_are_refused(arg_error: int, ok: bool) -> None:
    sel = DENY_SHADOW.replace("argError: -1", f"argError: {arg_error}")
    if ok:
        (h,) = compile_yaml(lsm("file_open", sel)).enforce.fanotify
        assert h.selectors[0].deny_errno == -arg_error
        return
    with pytest.raises(CompileError) as e:
        compile_yaml(lsm("file_open", sel))
    assert e.value.where.endswith("matchActions[0].argError") or "argError" in e.value.where


def test_monitor_mode_is_stated_and_kept() -> None:
    opts = "  options: [{name: policy-mode, value: monitor}]\n"
    plan = compile_yaml(lsm("file_open", DENY_SHADOW, options=opts))
    assert plan.mode == "monitor" and plan.enforce.monitor
    assert plan.enforce.fanotify[0].enforcement.startswith("monitor mode")


def test_other_lsm_hooks_are_rejected_with_the_reason() -> None:
    with pytest.raises(CompileError) as e:
        compile_yaml(lsm("inode_mkdir", "    - matchActions: [{action: Post}]\n", arg="int"))
    assert e.value.where == "spec.lsmhooks[0].hook"
    assert "BPF LSM" in e.value.message and "file_open" in e.value.message


@pytest.mark.parametrize("selector, where", [
    ("    - matchArgs: [{index: 0, operator: SubString, values: [x]}]\n", "operator"),
    ("    - matchParentBinaries: [{operator: In, values: [/bin/sh]}]\n", "matchParentBinaries"),
    ("    - matchActions: [{action: Post, rateLimit: 1m}]\n", "rateLimit"),
    ("    - matchActions: [{action: GetUrl, argUrl: http://x}]\n", "action"),
])
def test_unsupported_selector_parts_are_refused(selector: str, where: str) -> None:
    with pytest.raises(CompileError) as e:
        compile_yaml(lsm("file_open", selector))
    assert where in e.value.where


def test_match_workloads_on_fanotify_and_socket_hooks_compile() -> None:
    """matchWorkloads on enforced LSM hooks: (selector, PodScope) kept for the agent to
    give filter ids, host processes with hostSelector {}, a note saying who checks it."""
    from vigil.policy.scope import PodScope, Selector
    plan = compile_yaml(lsm("file_open", DENY_SHADOW.replace(
        "      matchActions", "      matchWorkloads: {hostSelector: {}}\n      matchActions")))
    (fh,) = plan.enforce.fanotify
    assert fh.workloads == ((0, PodScope(pods=False, host=True)),)
    assert any("decider looks the task's cgroup up" in n for n in plan.notes)
    assert "workloads" not in wire.hook_to_wire(fh)  # filter ids go to the decider instead
    sock = compile_yaml(
        "  lsmhooks:\n  - hook: socket_connect\n"
        "    args: [{index: 0, type: socket}, {index: 1, type: sockaddr}]\n"
        "    selectors:\n    - matchArgs: [{index: 1, operator: SPort, values: ['80']}]\n"
        "      matchWorkloads: {podSelector: {matchLabels: {app: web}}}\n"
        "      matchActions: [{action: Override, argError: -1}]\n")
    (rule,) = sock.enforce.sock
    assert rule.workloads == ((0, PodScope("", Selector.from_spec(
        {"matchLabels": {"app": "web"}}), None)),)


def test_decider_workloads_follow_the_kernel_filter() -> None:
    """The decider's check mirrors policyfilter.bpf.h: listed under the filter id, or a
    host filter and not listed under the id of every pod's cgroups."""
    hook = wire.hook_from_wire(wire.hook_to_wire(compile_yaml(lsm(
        "file_open", DENY_SHADOW)).enforce.fanotify[0]))
    wl = rules.workloads_from_wire({"policy": 0, "selectors": {str(hook.hook_id): [[0, 7]]},
                                    "host": [7], "host_id": 3, "controller": "",
                                    "root": "/sys/fs/cgroup"})
    assert wl is not None and wl.selector(hook.hook_id, 0) == 7
    in_pod, in_other_pod, on_host = Subj(), Subj(), Subj()
    in_pod.listed_in = frozenset({7, 3})
    in_other_pod.listed_in = frozenset({3})
    for subj, denied in ((in_pod, True), (in_other_pod, False), (on_host, True)):
        d = rules.decide(hook, "/etc/shadow", subj, workloads=wl)
        assert (d is not None and d.deny_errno == errno.EPERM) == denied
    pods_only = rules.Workloads(selectors={hook.hook_id: {0: 7}}, host_id=3)
    assert rules.decide(hook, "/etc/shadow", on_host, workloads=pods_only) is None
    scoped = rules.Workloads(policy=5)  # a pod-scoped policy: the task must be listed
    assert rules.decide(hook, "/etc/shadow", on_host, workloads=scoped) is None
    assert rules.parse_cgroup("5:memory,pids:/kubepods/x\n0::/user", "pids") == "/kubepods/x"
    assert rules.parse_cgroup("5:memory:/kubepods/x\n0::/user") == "/user"


def test_scope_option_and_generic_hooks_do_not_mix() -> None:
    opts = "  options: [{name: vigil-cgroups, value: 'victims, /a/b/'}]\n"
    plan = compile_yaml(lsm("file_open", DENY_SHADOW, options=opts))
    assert plan.enforce.cgroups == ("/victims", "/a/b")
    tp = ("  tracepoints:\n  - subsystem: sched\n    event: sched_process_exit\n")
    view = KernelView(formats=lambda s, e: SimpleNamespace(fields=[]))  # type: ignore[arg-type, return-value]
    with pytest.raises(CompileError) as e:
        compile_yaml(lsm("file_open", DENY_SHADOW, options=opts) + tp, view)
    assert "vigil-cgroups" in e.value.message


CONNECT = """  kprobes:
  - call: security_socket_connect
    syscall: false
    args: [{index: 0, type: socket}, {index: 1, type: sockaddr}]
    selectors:
    - matchArgs:
      - {index: 0, operator: NotDAddr, values: [10.0.0.0/8, "::1"]}
      - {index: 0, operator: DPort, values: ["80", "8000:8080"]}
      - {index: 1, operator: Family, values: [AF_INET, AF_INET6]}
      - {index: 0, operator: Protocol, values: [IPPROTO_TCP]}
      matchBinaries: [{operator: In, values: [/usr/bin/curl]}]
      matchActions: [{action: Override, argError: -111}]
"""


def test_security_socket_connect_override_goes_to_cgroup_programs() -> None:
    plan = compile_yaml(CONNECT)
    assert plan.hooks == ()
    (r,) = plan.enforce.sock
    assert r.function == "security_socket_connect"
    assert r.programs == ("vg_sk_connect4", "vg_sk_connect6")
    cfg = r.config
    def f(name: str) -> int:
        return unpack_field("vg_sock_cfg", name, cfg)
    assert f("hook_id") == r.hook_id and f("nsel") == 1 and f("has_sockaddr") == 1
    assert f("sel[0].nmatch") == 4
    assert (f("sel[0].m[0].field"), f("sel[0].m[0].negate")) == (int(abi.SockField.ADDR), 1)
    assert f("sel[0].m[1].field") == int(abi.SockField.PORT)
    assert unpack_field("vg_sock_cfg", "sel[0].err", cfg, signed=True) == -111
    assert f("sel[0].action") == int(abi.Action.OVERRIDE)
    assert f("sel[0].bin_op") == int(abi.Op.IN)
    keys = r.map_keys["vg_sk_addr"]
    assert struct.unpack_from("<III", keys[0]) == (64 + 8, f("sel[0].m[0].set"), 2)
    assert struct.unpack_from("<III", keys[1])[2] == 10
    assert r.event is not None and r.event.function_name == "security_socket_connect"
    assert [a.out for a in r.event.args] == ["sockaddr"]
    assert "cgroup/connect4+connect6" in r.mechanism and "prevents" in r.enforcement


def test_socket_hooks_refuse_what_a_cgroup_program_cannot_do() -> None:
    with pytest.raises(CompileError) as e:
        compile_yaml(CONNECT.replace("action: Override, argError: -111", "action: Sigkill"))
    assert "bpf_send_signal" in e.value.message
    with pytest.raises(CompileError):
        compile_yaml(CONNECT.replace("operator: NotDAddr", "operator: State").replace(
            "[10.0.0.0/8, \"::1\"]", "[TCP_ESTABLISHED]"))


def test_bind_and_sendmsg_lsm_hooks() -> None:
    plan = compile_yaml("""  lsmhooks:
  - hook: socket_bind
    args: [{index: 1, type: sockaddr}]
    selectors:
    - matchArgs: [{index: 1, operator: SPort, values: ["1:1023"]}]
      matchActions: [{action: Override, argError: -13}]
  - hook: socket_sendmsg
    selectors:
    - matchActions: [{action: Post}]
""")
    bind, send = plan.enforce.sock
    assert bind.programs == ("vg_sk_bind4", "vg_sk_bind6")
    assert unpack_field("vg_sock_cfg", "sel[0].m[0].vals", bind.config) == 1 << 16 | 1023
    assert send.programs == ("vg_sk_sendmsg4", "vg_sk_sendmsg6") and send.enforcement == ""
    assert bind.hook_id != send.hook_id


def test_socket_kprobe_without_override_stays_on_kprobes_when_the_kernel_has_them() -> None:
    from vigil.policy import compile_lsm
    spec = load_policy(HEAD + CONNECT.replace("action: Override, argError: -111",
                                               "action: Post")).spec
    assert compile_lsm.routed_kprobes(spec, KernelView(kprobes=True), lambda h: h.selectors) == set()
    assert compile_lsm.routed_kprobes(spec, KernelView(), lambda h: h.selectors) == {0}


def test_check_command_reports_mechanism_and_guarantee(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text(HEAD + lsm("file_open", DENY_SHADOW) + CONNECT)
    feats = tmp_path / "f.json"
    feats.write_text(json.dumps({"kprobes": False, "fentry": False, "lsm": False}))
    res = CliRunner().invoke(check, [str(pol), "--kernel-features", str(feats), "-o", "json"])
    assert res.exit_code == 0, res.output
    hooks = json.loads(res.output)["policies"][0]["hooks"]
    assert [h["section"] for h in hooks] == ["spec.kprobes[0]", "spec.lsmhooks[0]"]
    assert all("prevents" in h["enforcement"] for h in hooks)
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + lsm("file_open", DENY_SHADOW.replace("-1", "-13")))
    res = CliRunner().invoke(check, [str(bad), "--kernel-features", str(feats)])
    # valid (BPF LSM honours any errno), but fanotify cannot: exit 4, naming the feature
    assert res.exit_code == 4 and "cannot be honoured" in res.output
    assert "it would load with: lsm: BPF LSM" in res.output


# ---- rules -----------------------------------------------------------------------------

@pytest.mark.parametrize("op, value, s, hit", [
    ("Equal", "/etc/shadow", "/etc/shadow", True), ("Equal", "/etc/shadow", "/etc/shadow2", False),
    ("NotEqual", "/etc/shadow", "/etc/passwd", True), ("Prefix", "/etc/", "/etc/x", True),
    ("NotPrefix", "/etc/", "/etc/x", False), ("Postfix", ".so", "/lib/a.so", True),
    ("NotPostfix", ".so", "/lib/a.so", False),
])
def test_str_match(op: str, value: str, s: str, hit: bool) -> None:
    assert rules.str_match(StrMatch(op, (value,)), s) is hit


def _hook(*sels: FanSelector) -> Any:
    from vigil.policy.plan import FanotifyHook
    return FanotifyHook(1, "spec.lsmhooks[0]", "file_open", tuple(sels), arg="file")


def test_decide_first_matching_selector_wins_and_paths_are_checked_first() -> None:
    a = FanSelector(paths=(StrMatch("Prefix", ("/etc/",)),),
                    binary=StrMatch("Equal", ("/usr/bin/vi",)), action=5, deny_errno=1)
    b = FanSelector(paths=(StrMatch("Equal", ("/etc/shadow",)),), action=1)
    h = _hook(a, b)
    s = Subj(binary="/usr/bin/vi")
    assert rules.decide(h, "/etc/shadow", s) == rules.Decision(0, 5, True, 1, 0)
    assert rules.decide(h, "/etc/shadow", Subj(binary="/usr/bin/cat")) == rules.Decision(1, 1, True, 0, 0)
    s2 = Subj()
    assert rules.decide(h, "/tmp/x", s2) is None and s2.asked == []  # no /proc read at all
    assert rules.path_decides_nothing(h, "/tmp/x") and not rules.path_decides_nothing(h, "/etc/a")


def test_decide_scope_namespaces_caps_pids_and_monitor() -> None:
    from vigil.policy.plan import CapMatch, NsMatch
    sel = FanSelector(paths=(StrMatch("Equal", ("/f",)),), action=5, deny_errno=1,
                      namespaces=(NsMatch("mnt", False, (7,)),), caps=(CapMatch("CapEff", True, 1 << 21),),
                      pids=(10,), pids_negate=False)
    h = _hook(sel)
    ok = Subj(ns={"mnt": 7}, caps={"CapEff": 0})
    assert rules.decide(h, "/f", ok, scope=("/a",)).deny_errno == 1
    assert rules.decide(h, "/f", ok, scope=("/a/b",)) is not None
    assert rules.decide(h, "/f", ok, scope=("/a/bb",)) is None
    assert rules.decide(h, "/f", Subj(cgroup=None), scope=("/a",)) is None
    assert rules.decide(h, "/f", Subj(ns={"mnt": 8}, caps={"CapEff": 0})) is None
    assert rules.decide(h, "/f", Subj(ns={"mnt": 7}, caps={"CapEff": 1 << 21})) is None
    assert rules.decide(h, "/f", Subj(pid=11, ns={"mnt": 7}, caps={"CapEff": 0})) is None
    mon = rules.decide(h, "/f", ok, monitor=True)
    assert mon == rules.Decision(0, 5, True, 0, 0, True)


def test_no_selectors_posts_everything() -> None:
    h = _hook()
    assert rules.decide(h, "/x", Subj()) == rules.Decision(0, 1, True, 0, 0)
    assert not rules.path_decides_nothing(h, "/x")


def test_proc_parsers_and_mode_string() -> None:
    assert rules.parse_cgroup("12:pids:/x\n0::/a/b\n") == "/a/b"
    assert rules.parse_cgroup("0::/\n") == "/"
    assert rules.parse_caps("Name:\tx\nCapEff:\t0000000000200000\n")["CapEff"] == 1 << 21
    assert rules.mode_string(0o100644) == "-rw-r--r--"
    assert rules.mode_string(0o104755) == "-rwsr-xr-x"
    assert rules.mode_string(0o041777) == "drwxrwxrwt"
    assert rules.parse_fdinfo_mnt_id("pos:\t0\nflags:\t0100000\nmnt_id:\t47\nino:\t9\n") == 47
    assert rules.parse_fdinfo_mnt_id("pos:\t0\n") is None
    assert rules.mountinfo_ids("22 1 0:21 / / rw - ext4 /dev/vda rw\n"
                               "47 22 0:40 / /usr rw - overlay o rw\n") == {22, 47}


# ---- elf -------------------------------------------------------------------------------

def _elf(e_type: int, phdrs: list[int]) -> bytes:
    head = bytearray(64 + 56 * len(phdrs))
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<H", head, 16, e_type)
    struct.pack_into("<Q", head, 32, 64)
    struct.pack_into("<HH", head, 54, 56, len(phdrs))
    for i, t in enumerate(phdrs):
        struct.pack_into("<I", head, 64 + 56 * i, t)
    return bytes(head)


def test_elf_kind() -> None:
    assert elf.elf_kind(_elf(elf.ET_DYN, [1, 2])) == "loader"          # ld.so, static-pie
    assert elf.elf_kind(_elf(elf.ET_DYN, [6, elf.PT_INTERP])) == "program"
    assert elf.elf_kind(_elf(elf.ET_EXEC, [1])) == "program"
    assert elf.elf_kind(b"#!/bin/sh\n" + bytes(100)) == "other"
    assert elf.elf_kind(_elf(elf.ET_DYN, [1] * 3)[:100]) == "other"     # truncated headers


def test_syscall_parsing() -> None:
    assert elf.parse_syscall("running\n") is None
    nr, args = elf.parse_syscall("59 0x7ffd10 0x7ffd20 0x7ffd30 0x0 0x0 0x0 0x7ffc 0x7f00\n")  # type: ignore[misc]
    assert nr == 59 and args[0] == 0x7ffd10
    assert elf.exec_call(59, args, "x86_64") == (elf.AT_FDCWD, 0x7ffd10, 0)
    at = [3, 0x10, 0, 0, 0x1000, 0]
    assert elf.exec_call(322, at, "x86_64") == (3, 0x10, 0x1000)
    assert elf.exec_call(0, at, "x86_64") is None


# ---- marks -----------------------------------------------------------------------------

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:5 / /proc rw - proc proc rw
24 22 0:30 / /tmp rw - tmpfs tmpfs rw
25 24 0:31 / /tmp/my\\040disk rw - tmpfs tmpfs rw
26 22 0:30 /sub /srv/bind rw - tmpfs tmpfs rw
"""


def test_parse_mountinfo() -> None:
    ms = marks.parse_mountinfo(MOUNTINFO)
    assert [m.mountpoint for m in ms] == ["/", "/proc", "/tmp", "/tmp/my disk", "/srv/bind"]
    assert marks.mount_of("/tmp/my disk/x", ms).dev == "0:31"  # type: ignore[union-attr]
    assert marks.mount_of("/etc/x", ms).dev == "254:0"  # type: ignore[union-attr]


def _sel(op: str | None, *values: str) -> FanSelector:
    return FanSelector(paths=(StrMatch(op, values),) if op else ())


def test_coverage_and_marks_name_only_what_rules_name() -> None:
    ms = marks.parse_mountinfo(MOUNTINFO)
    def isdir(p: str) -> bool:
        return p in ("/", "/etc", "/tmp", "/tmp/my disk", "/srv")
    exact = [_sel("Equal", "/etc/shadow", "/etc/gshadow")]
    assert marks.coverage(exact) == ("exact", ("/etc/shadow", "/etc/gshadow"))
    assert marks.plan_marks([(0x10000, exact)], ms, isdir, lambda p: False) == [marks.Mark("dir", "/etc", 0x10000)]
    assert marks.plan_marks([(0x10000, exact)], ms, isdir, lambda p: p == "/etc/shadow") == [
        marks.Mark("file", "/etc/shadow", 0x10000), marks.Mark("dir", "/etc", 0x10000)]
    missing = [_sel("Equal", "/tmp/nodir/x")]
    assert marks.plan_marks([(1, missing)], ms, isdir, lambda p: False) == [marks.Mark("fs", "/tmp", 1),
                                                            marks.Mark("fs", "/tmp/my disk", 1)]
    prefix = [_sel("Prefix", "/tmp/")]
    assert {m.path for m in marks.plan_marks([(1, prefix)], ms, isdir)} == {"/tmp", "/tmp/my disk"}
    everything = [_sel("NotEqual", "/bin/true")]
    got = marks.plan_marks([(1, everything)], ms, isdir)
    assert [m.path for m in got] == ["/", "/tmp", "/tmp/my disk"]   # one per fs, no procfs
    assert marks.coverage([_sel(None)]) == ("all", ())
    both = marks.plan_marks([(1, exact), (2, everything)], ms, isdir, lambda p: False)
    assert marks.Mark("dir", "/etc", 1) in both and marks.Mark("fs", "/", 2) in both


# ---- wire, events ------------------------------------------------------------------------

def test_wire_round_trip() -> None:
    plan = compile_yaml(lsm("file_open", DENY_SHADOW))
    h = plan.enforce.fanotify[0]
    req = json.loads(json.dumps(wire.add_request("t", (h,), ("/x",), False)))
    assert wire.hook_from_wire(req["hooks"][0]) == h


class FakeCache:
    def __init__(self, procs: dict[int, Any], by_id: dict[str, Any]) -> None:
        self.procs, self.by_id = procs, by_id

    def current(self, pid: int) -> Any:
        return self.procs.get(pid)

    def get(self, exec_id: str) -> Any:
        return self.by_id.get(exec_id)


class FakePipeline:
    def __init__(self, cache: FakeCache) -> None:
        self.cache = cache
        self.opts = SimpleNamespace(node_name="node")

    def _boot_wall_ns(self) -> int:
        return 1_700_000_000 * 10**9

    def process_json(self, p: Any) -> dict[str, Any]:
        return {"exec_id": p.exec_id, "pid": p.pid, "binary": p.binary}


def test_lsm_event_shape_and_process_attribution() -> None:
    plan = compile_yaml(lsm("file_open", DENY_SHADOW).replace(
        "args: [{index: 0, type: file}]", "message: shadow read\n    tags: [secrets]\n"
        "    args: [{index: 0, type: file, label: target}]"))
    h = plan.enforce.fanotify[0]
    parent = SimpleNamespace(exec_id="P", pid=1, tid=1, binary="/bin/sh", parent_exec_id="",
                             ktime=1, refcnt=2)
    old = SimpleNamespace(exec_id="A", pid=42, tid=42, binary="/usr/bin/cat",
                          parent_exec_id="P", ktime=100, refcnt=1)
    new = SimpleNamespace(exec_id="B", pid=42, tid=42, binary="/usr/bin/vi",
                          parent_exec_id="P", ktime=900, refcnt=1)
    cache = FakeCache({42: old}, {"P": parent})
    ev = LsmEvents(FakePipeline(cache))
    ev.hooks[h.hook_id] = HookRef(h, "t")
    rep = {"h": h.hook_id, "pid": 42, "path": "/etc/shadow", "perm": "-rw-r-----", "a": 5,
           "m": False, "sel": 0, "err": 1, "k": 500, "bin": "/usr/bin/cat"}
    out = ev.build(rep, ev.arrived(rep))
    body = out["process_lsm"]
    assert list(body) == ["process", "parent", "function_name", "policy_name", "message", "args",
                          "action", "tags"]
    assert body["process"]["exec_id"] == "A" and body["parent"]["exec_id"] == "P"
    # the process with the cache's reference count, as in every policy event
    assert body["process"]["refcnt"] == 1 and "refcnt" not in body["parent"]
    assert body["args"] == [{"file_arg": {"path": "/etc/shadow", "permission": "-rw-r-----"},
                             "label": "target"}]
    assert body["action"] == "KPROBE_ACTION_OVERRIDE" and body["tags"] == ["secrets"]
    assert out["node_name"] == "node" and out["time"].startswith("2023-")
    seen = ev.arrived(rep)
    cache.procs[42] = new  # it exec'd after the decision: the report is about the old one
    assert ev.build(rep, seen)["process_lsm"]["process"]["exec_id"] == "A"
    assert ev.build(rep, None)["process_lsm"]["process"] == {"pid": 42, "tid": 42,
                                                              "binary": "/usr/bin/cat"}
    assert ev.stale_process == 1
    assert ev.build({**rep, "h": 999}) is None and ev.unknown_hook == 1
