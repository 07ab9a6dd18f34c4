"""Load a policy plan into the kernel: one copy of generic.bpf.o per hook.

Each hook's object has its own maps (string/address/int sets, rate-limit state), so
removing a policy frees everything it made; the ring buffer, counters, cgroup-rate
state and the per-process binary map are the base sensor's, shared by fd.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

from vigil.abi._generated import GenCount
from vigil.bpf.object import BpfObject, possible_cpus
from vigil.errors import BpfError
from vigil.policy.plan import Attach, HookPlan, PolicyPlan
from vigil.sensors.base import OBJECTS_DIR, BaseSensor

log = logging.getLogger("vigil.sensors.generic")

GENERIC_OBJECT = OBJECTS_DIR / "generic.bpf.o"
# USDT hooks: the same pipeline plus libbpf's USDT argument support
USDT_OBJECT = OBJECTS_DIR / "generic_usdt.bpf.o"
# Tracepoint and raw-tracepoint hooks: the same pipeline with only the entry programs
# they use, so the open object libbpf keeps per hook is a third of the size
TRACEPOINT_OBJECT = OBJECTS_DIR / "generic_tp.bpf.o"
TRACEPOINT_PROGRAMS = frozenset({"vg_gen_tp", "vg_gen_tp_ret", "vg_gen_rawtp",
                                 "vg_gen_fl_exec", "vg_gen_fl_fork", "vg_gen_fl_exit"})
# Hooks calling kernel functions (HookPlan.kfuncs: SubString filters): the same pipeline
# with those calls, kept out of the objects above so those load on any kernel
KFUNC_OBJECTS = {("bpf_strnstr",): OBJECTS_DIR / "generic_substr.bpf.o",
                 ("bpf_strncasestr", "bpf_strnstr"): OBJECTS_DIR / "generic_substr_icase.bpf.o"}
# USDT hooks calling them: generic_usdt.bpf.o with the same calls
USDT_KFUNC_OBJECTS = {
    ("bpf_strnstr",): OBJECTS_DIR / "generic_usdt_substr.bpf.o",
    ("bpf_strncasestr", "bpf_strnstr"): OBJECTS_DIR / "generic_usdt_substr_icase.bpf.o"}
KFUNC_MAPS = ("vg_str_sub",)
BTF_ATTACH = ("fentry", "fexit", "fmod_ret", "lsm")
PRIVATE_MAPS = ("vg_str_eq", "vg_str_pfx", "vg_str_sfx", "vg_int_set", "vg_addr_lpm",
                "vg_gen_entries", "vg_gen_rate", "vg_follow")


COUNTS_SIZE = 8 * int(GenCount.MAX)


def fd_memlock(fd: int) -> int:
    """What the kernel charges for a BPF map or program fd (fdinfo ``memlock``)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class LoadedPolicy:
    plan: PolicyPlan
    objects: list[BpfObject] = field(default_factory=list)
    shared: frozenset[str] = frozenset()  # maps owned by the base sensor (not counted)
    enforcers: list[BpfObject] = field(default_factory=list)  # spec.enforcers objects
    scope_id: int = 0  # pod scoping filter id (vigil.sensors.policyfilter); 0: host-wide
    sel_scope_ids: tuple[int, ...] = ()  # matchWorkloads filter ids of its selectors

    @property
    def link_count(self) -> int:
        return sum(len(o.links) for o in self.objects)

    def kernel_memory(self) -> int:
        """Bytes the kernel charges for this policy's own maps and programs."""
        from vigil.sensors.enforcer import POLICY_MAPS
        total = 0
        counted: set[str] = set()  # maps the policy's objects share: once
        for obj in self.objects + self.enforcers:
            for m in obj.maps():
                if m.name in self.shared or m.fd < 0 or m.name in counted:
                    continue
                if m.name in POLICY_MAPS:
                    counted.add(m.name)
                total += fd_memlock(m.fd)
            total += sum(fd_memlock(p.fd) for p in obj.programs() if p.autoload and p.fd >= 0)
        return total

    def action_counts(self) -> list[int]:
        """vg_gen_counts summed over hooks and CPUs, indexed by vg_gen_count."""
        ncpu = possible_cpus()
        out = [0] * int(GenCount.MAX)
        for obj in self.generic_objects():
            raw = obj.map("vg_gen_counts").lookup(b"\0\0\0\0", value_size=COUNTS_SIZE * ncpu)
            for cpu in range(ncpu):
                for k, n in enumerate(struct.unpack_from(f"<{len(out)}Q", raw, cpu * COUNTS_SIZE)):
                    out[k] += n
        if self.enforcers:  # what the enforcer did on notification: signals, overrides
            from vigil.sensors.enforcer import enforcer_counts
            for obj in self.enforcers:
                sig, ovr = enforcer_counts(obj)
                out[int(GenCount.SIGNAL)] += sig
                out[int(GenCount.OVERRIDE)] += ovr
        return out

    def set_monitor(self, monitor: bool) -> None:
        """Switch every hook between monitor and enforce mode: one update of each hook's
        ``vg_gen_mode``; programs, links and counters stay as they are."""
        for obj in self.generic_objects():
            write_mode(obj, monitor)

    def generic_objects(self) -> list[BpfObject]:
        """The hooks' generic.bpf.c copies (not a loader hook's object, which has no
        selectors, actions or mode)."""
        return [o for o in self.objects if not o.path.endswith("/loader.bpf.o")]

    def close(self) -> None:
        for obj in self.objects + self.enforcers:
            obj.close()
        self.objects.clear()
        self.enforcers.clear()


def load_policy(plan: PolicyPlan, base: BaseSensor, scope: Any = None) -> LoadedPolicy:
    """Load and attach every hook; on any failure, undo all of it and raise. ``scope``:
    (vigil.sensors.policyfilter.PolicyFilter, filter id) of a pod-scoped policy, with a
    third item when selectors have matchWorkloads: hook id -> ((selector, filter id), ...)
    (the filter id may then be 0)."""
    from vigil.sensors.enforcer import POLICY_MAPS, load_enforcer
    loaded = LoadedPolicy(plan, shared=frozenset(base.shared_maps()) | {"vg_pf_cgroups"})
    monitor = plan.mode == "monitor"
    policy_maps: dict[str, int] = {}  # maps the policy's objects share (first one's fd)
    try:
        if plan.enforcer is not None:  # first: hooks reuse its notification map
            first = plan.hooks[0].hook_id if plan.hooks else 0
            loaded.enforcers = load_enforcer(plan.enforcer, base, first, policy_maps)
        for hook in plan.hooks:
            if hook.event == "process_loader":
                from vigil.sensors.loader import load_loader_hook
                loaded.objects.append(load_loader_hook(hook, base))
                continue
            obj = load_hook(hook, base, monitor=monitor, policy_maps=policy_maps,
                            scope=scope)
            loaded.objects.append(obj)
            for name in POLICY_MAPS:
                policy_maps.setdefault(name, obj.map(name).fd)
    except BaseException:
        loaded.close()
        raise
    return loaded


def write_mode(obj: BpfObject, monitor: bool) -> None:
    """Set one loaded hook's live policy mode (map ``vg_gen_mode``)."""
    obj.map("vg_gen_mode").update(b"\0\0\0\0", struct.pack("<I", 1 if monitor else 0))


def load_hook(hook: HookPlan, base: BaseSensor, *, monitor: bool = False,
              policy_maps: dict[str, int] | None = None, scope: Any = None) -> BpfObject:
    wanted = {a.program for a in hook.attach}
    usdt = any(a.kind == "usdt" for a in hook.attach)
    if hook.kfuncs:
        path = (USDT_KFUNC_OBJECTS if usdt else KFUNC_OBJECTS)[hook.kfuncs]
    elif usdt:
        path = USDT_OBJECT
    elif wanted <= TRACEPOINT_PROGRAMS:
        path = TRACEPOINT_OBJECT
    else:
        path = GENERIC_OBJECT
    obj = BpfObject(path, name=f"vg_h{hook.hook_id}")
    try:
        for prog in obj.programs():
            prog.autoload = prog.name in wanted
        for a in hook.attach:  # BTF programs name their target before load
            if a.kind in BTF_ATTACH:
                obj.program(a.program).set_attach_target(a.target[0])
        obj.set_rodata(base.rodata)
        obj.map(".rodata.hook").set_initial_value(hook.config)
        for name, fd in base.shared_maps().items():
            obj.map(name).reuse_fd(fd)
        for name, fd in (policy_maps or {}).items():
            obj.map(name).reuse_fd(fd)
        for name in PRIVATE_MAPS + (KFUNC_MAPS if hook.kfuncs else ()):
            obj.map(name).set_max_entries(max(1, hook.map_sizes.get(name, 0)))
        pf, pf_id, *more = scope if scope is not None else (None, 0)
        sel_ids = more[0].get(hook.hook_id, ()) if more else ()
        if pf is not None:
            pf.configure(obj, pf_id, sel_ids)
        else:
            obj.map("vg_pf_cgroups").set_max_entries(1)
        obj.load()
        if pf is not None:
            pf.loaded(obj, pf_id, bool(sel_ids))
        write_mode(obj, monitor)  # before attach: the first match sees the policy's mode
        for name, keys in hook.map_keys.items():
            m = obj.map(name)
            for key in keys:
                m.update(key, b"\x01")
        # follow programs first, then the /proc seed, then the hook: the hook never runs
        # on a follow map that misses the processes already running
        follow = [a for a in hook.attach if a.kind == "tp_btf"]
        for a in follow:
            _attach(obj, a)
        if hook.follow:
            seed_follow(obj, hook)
        for a in hook.attach:
            if a.kind != "tp_btf":
                _attach(obj, a)
        obj.settle()  # loaded for good: free libbpf's copy of the object
    except BaseException:
        obj.close()
        raise
    return obj


def seed_follow(obj: BpfObject, hook: HookPlan, rounds: int = 2) -> int:
    """Mark the running processes a follow selector covers (see vigil.policy.follow).

    The exec/fork programs are attached first; a second /proc snapshot catches processes
    forked from a not-yet-seeded parent between the first snapshot and its seeding.
    Bits are OR-ed into what the kernel recorded meanwhile. Returns the entries written.
    """
    from vigil.policy.follow import read_procs, seed_bits, start_time
    m = obj.map("vg_follow")
    written = 0
    for _ in range(rounds):
        procs = read_procs()
        starts = {p.pid: p.start for p in procs}
        for tgid, bits in seed_bits(procs, hook.follow).items():
            key = tgid.to_bytes(4, "little")
            try:
                old = int.from_bytes(m.lookup(key), "little")
            except (BpfError, KeyError):
                old = 0
            if old | bits == old:
                continue
            try:
                m.update(key, (old | bits).to_bytes(4, "little"))
                written += 1
            except BpfError as err:
                log.warning("hook %s: cannot follow pid %d: %s", hook.section, tgid, err)
                continue
            # exited before the entry existed: vg_gen_fl_exit could not delete it
            if start_time(tgid) != starts[tgid]:
                with contextlib.suppress(KeyError, BpfError):
                    m.delete(key)
                written -= 1
    return written


def _attach(obj: BpfObject, a: Attach) -> None:
    prog = obj.program(a.program)
    if a.kind == "tracepoint":
        prog.attach_tracepoint(*a.target)
    elif a.kind == "raw_tracepoint":
        prog.attach_raw_tracepoint(a.target[0])
    elif a.kind in ("kprobe", "kretprobe"):
        prog.attach_kprobe(a.target[0], retprobe=a.kind == "kretprobe", cookie=a.cookie)
    elif a.kind in ("kprobe_multi", "kretprobe_multi"):
        # every function of the target (a list hook: all of them), its index as cookie
        prog.attach_kprobe_multi(list(a.target), retprobe=a.kind == "kretprobe_multi",
                                 cookies=list(range(len(a.target))))
    elif a.kind in BTF_ATTACH or a.kind == "tp_btf":
        prog.attach()
    elif a.kind in ("uprobe", "uretprobe"):
        _attach_uprobe(prog, a)
    elif a.kind == "usdt":
        path, provider, name = a.target
        prog.attach_usdt(path, provider, name)
    else:
        raise BpfError(22, "attach", f"{a.program}: unknown attach kind {a.kind}")


def _attach_uprobe(prog: Any, a: Attach) -> None:
    """A uprobe; with binaryDigests, on the very file whose digest matched."""
    path, symbol = a.target
    checked = None
    if a.digests:
        from vigil.sensors.binaries import DigestMismatch, check_binary
        try:
            checked = check_binary(path, a.digests, f"uprobe {path}:{symbol or hex(a.offset)}")
        except DigestMismatch as err:
            if not a.digest_ignore:
                raise
            log.warning("%s (ignore.digestVerificationFailure: this probe is skipped)", err)
            return
    try:
        prog.attach_uprobe(checked.path if checked else path, offset=a.offset,
                           symbol=symbol or None, retprobe=a.kind == "uretprobe",
                           ref_ctr_offset=a.ref_ctr_offset)
        if checked is not None and not checked.unchanged():
            from vigil.sensors.binaries import DigestMismatch
            raise DigestMismatch(f"uprobe {path}: the binary changed while its digest was "
                                 "verified; the uprobe is not attached")
    finally:
        if checked is not None:
            checked.close()
