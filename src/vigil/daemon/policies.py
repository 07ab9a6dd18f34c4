"""Loaded tracing policies: validate -> compile -> load -> register; and the reverse.

Implements ``vigil.policy.store_api.PolicyStore`` for the gRPC server and the start-up
flags (--tracing-policy, --tracing-policy-dir). A policy is rejected whole: if any hook
fails to compile or load, nothing of it stays in the kernel. Thread-safe (one lock).

``spec.nodeSelector``: a policy whose selector does not match this node's labels is
accepted and listed, state SKIPPED with the reason as its error, and nothing of it is
loaded; ``set_node_labels`` (the Kubernetes Node watch) loads and unloads such policies
as the node's labels change. Without the Kubernetes API the node has no known labels: a
selector that needs one does not match.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vigil.errors import BpfError, FeatureNotSupported, PolicyError
from vigil.policy.compiler import CompileError, KernelView, compile_policy, diagnostic
from vigil.policy.plan import FanotifyHook, HookPlan, PolicyPlan, SockRule
from vigil.policy.profiles import PROFILES
from vigil.policy.tracefs import TpFormat
from vigil.abi._generated import GenCount
from vigil.policy.store_api import (ActionCounters, HookInfo, PolicyExistsError, PolicyInfo,
                                    PolicyMode, PolicyModeError, PolicyState)
from vigil.stream.policy_events import HookRegistry, RegisteredHook
from vigil.sensors.base import BaseSensor
from vigil.sensors.generic import LoadedPolicy, load_policy

log = logging.getLogger("vigil.policies")

_MODES = {"enforce": PolicyMode.ENFORCE, "monitor": PolicyMode.MONITOR,
          "monitor_only": PolicyMode.MONITOR_ONLY}


@dataclass
class _Entry:
    id: int
    plan: PolicyPlan
    domain: str
    loaded: LoadedPolicy | None
    yaml_text: str
    counts: list[int] = field(default_factory=list)  # action counts of earlier loads
    skip: str = ""      # why spec.nodeSelector keeps it off this node ("": it does not)
    want: bool = True   # enabled by the user (disable: False), whatever the node
    error: str = ""     # why it failed to load when the node's labels came to match


def kernel_view(kprobe_mode: str | None = None, procfs: str = "/proc") -> KernelView:
    """Probe what this kernel allows (cached by vigil.bpf.features). ``kprobe_mode``
    (auto | kprobe | kprobe_multi | fentry; default: $VIGIL_KPROBE_MODE or auto) forces
    the mechanism of kernel-function hooks; ``procfs`` is where the host's namespaces are
    read first (``host_ns``; the agent's --procfs)."""
    import os

    from vigil.bpf import features
    from vigil.policy.kbtf import has_kfunc, shared_kernel_btf

    def ok(name: str) -> bool:
        return features.probe(name).ok
    return KernelView(kprobes=ok("kprobe"), fentry=ok("fentry") and ok("fexit"), lsm=ok("lsm"),
                      kprobe_multi=ok("kprobe_multi"), fmod_ret=ok("fmod_ret_security"),
                      fmod_ret_syscall=ok("fmod_ret_syscall"),
                      probe_write_user=ok("probe_write_user"),
                      probe_write_user_refused=_write_user_refused(features),
                      uprobe_regs=ok("uprobe_regs"),
                      uprobe_regs_refused=features.probe("uprobe_regs").reason or "allowed",
                      kfunc_strnstr=has_kfunc("bpf_strnstr"),
                      kfunc_strncasestr=has_kfunc("bpf_strncasestr"),
                      kprobe_mode=kprobe_mode or os.environ.get("VIGIL_KPROBE_MODE") or "auto",
                      btf=shared_kernel_btf(), formats=read_format_mounting,
                      ftrace_functions=read_ftrace_functions, **_host_ns(procfs))


def read_ftrace_functions() -> list[str] | None:
    """Traceable kernel functions (generated_ftrace lists), mounting tracefs first when
    it is missing; None when they cannot be read (the compiler then takes BTF's)."""
    from vigil.policy.tracefs import read_ftrace_functions as read
    names = read()
    if names is None:
        from vigil.bpf import mounts
        try:
            names = read((mounts.ensure_tracefs(),))
        except OSError:
            return None
    return names


def _write_user_refused(features: Any) -> str:
    """Why bpf_probe_write_user is refused here: the probe's answer and the lockdown mode."""
    res = features.probe("probe_write_user")
    mode = features.lockdown()
    why = f"this kernel refuses it ({res.reason or 'refused'}"
    if mode and mode != "none":
        why += f"; kernel lockdown is '{mode}', which forbids writing user memory from BPF"
    return why + ")"


def read_format_mounting(subsystem: str, event: str) -> TpFormat:
    """A tracepoint's format, mounting tracefs first when it is missing (a fresh host has
    nothing mounted); when the mount is refused, the error names the mount."""
    from vigil.policy.tracefs import TracefsUnavailable, read_format
    try:
        return read_format(subsystem, event)
    except TracefsUnavailable:
        from vigil.bpf import mounts
        try:
            root = mounts.ensure_tracefs()
        except OSError as err:
            raise TracefsUnavailable(err.errno, err.strerror) from err
        return read_format(subsystem, event, root)


def _host_ns(procfs: str) -> dict[str, Any]:
    """KernelView's host_ns fields: the inums, or why a policy using host_ns is refused."""
    from vigil.daemon.agent import cached_host_namespaces
    known = cached_host_namespaces(procfs)
    if known.ns is None:
        return {"host_ns": {},
                "host_ns_unknown": f"the host's namespaces are unknown: {known.source}"}
    return {"host_ns": {k: getattr(known.ns, k) for k in known.ns.__dataclass_fields__}}


def _loads_on_another_kernel(policy: Any, view: KernelView) -> bool:
    """Whether ``policy`` compiles for a kernel offering every BPF feature, or fails
    there only because this kernel's build lacks a function, tracepoint or signature it
    names: then a CompileError here means "this kernel cannot", not "this policy is
    wrong"."""
    full = replace(view, **PROFILES["full"])
    try:
        compile_policy(policy, full)
    except CompileError as err:
        return bool(err.kernel_lacks)
    except Exception:  # noqa: BLE001 - invalid anyway (or not decidable): the first error stands
        return False
    return True


class PolicyManager:
    def __init__(self, base: BaseSensor, registry: HookRegistry,
                 view: Callable[[], KernelView] = kernel_view, enforcement: Any = None) -> None:
        self.base = base
        self.registry = registry
        self._view = view
        # vigil.enforce.service.Enforcement (fanotify decider, cgroup socket
        # programs); made on first use when the agent does not pass one (then without events)
        self.enforcement = enforcement
        self._enforced: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._next_policy_id = 1
        self._next_hook_id = 1
        # signed-policies mode (--policy-signing-key): a vigil.policy.signing.PolicyVerifier
        # every policy must pass, whatever its source; None loads every valid policy
        self.verifier: Any = None
        # pod scoping (vigil.k8s.scopes.ScopeManager, with --enable-k8s-api): scoped
        # policies' hooks run only in matching pods' cgroups; None: scoped policies refused
        self.scopes: Any = None
        # this node's labels, for spec.nodeSelector: {} without Kubernetes (none known);
        # None while the Kubernetes API has not told them yet (such policies wait, skipped)
        self.node_labels: dict[str, str] | None = {}
        self.node_about = "no node labels without the Kubernetes API (--enable-k8s-api)"

    # -- PolicyStore -----------------------------------------------------------------

    def add(self, yaml_text: str, *, source: str,
            signature: bytes | str | None = None, signature_checked: bool = False) -> PolicyInfo:
        """Validate, compile and load one policy. In signed-policies mode ``signature``
        must be a valid signature of ``yaml_text`` (its UTF-8 bytes) or the policy is
        refused (PolicySignatureError, naming ``source``) before it is even parsed.
        ``signature_checked``: the caller verified a signature over another form of the
        same policy (a Kubernetes resource's canonical JSON, vigil.k8s.policies)."""
        if self.verifier is not None and not signature_checked:
            self.verifier.check(yaml_text.encode("utf-8", "surrogateescape"), signature,
                                source)
        from vigil.policy.loader import load_policy as parse
        policy = parse(yaml_text, source=source)
        for w in getattr(policy, "warnings", ()) or ():
            log.warning("%s", w)
        with self._lock:
            key = (policy.metadata.name, getattr(policy.metadata, "namespace", None) or "")
            if key in self._entries:
                raise PolicyExistsError(*key)
            plan = self._compile(policy, source)
            skip = self._node_skip(plan)
            loaded = None if skip else self._load(plan)
            entry = _Entry(self._next_policy_id, plan, _domain(source), loaded, yaml_text,
                           skip=skip)
            self._next_policy_id += 1
            self._entries[key] = entry
            for note in plan.notes:
                log.info("policy %s: %s", plan.name, note)
            if skip:
                log.info("policy %s skipped on this node: %s", plan.name, skip)
                return self._info(entry)
            log.info("policy %s loaded: %s", plan.name,
                     "; ".join(f"{sec} -> {mech}" for sec, mech, _e in plan.described())
                     or "no hooks")
            return self._info(entry)

    def add_file(self, path: str | Path) -> PolicyInfo:
        from vigil.policy.loader import read_policy_text  # reads no more than the limit
        p = Path(path)
        signature = None
        if self.verifier is not None:
            from vigil.policy.signing import read_signature_file
            signature = read_signature_file(p)
        return self.add(read_policy_text(p), source=str(p), signature=signature)

    def replace(self, yaml_text: str, *, source: str) -> PolicyInfo:
        """Load a new version of a loaded, enabled policy (same name), then unload the old
        one: no moment without either. Its id, domain and counters stay. Used for the
        built-in self-protection policy when the agent's helper pids change."""
        from vigil.policy.loader import load_policy as parse
        policy = parse(yaml_text, source=source)
        with self._lock:
            key = (policy.metadata.name, getattr(policy.metadata, "namespace", None) or "")
            entry = self._entries[key]
            plan = self._compile(policy, source)
            if plan.enforce or entry.plan.enforce:
                raise ValueError(f"policy {key[0]}: a policy enforcing through fanotify or "
                                 "cgroup programs cannot be replaced in place")
            if entry.loaded is None:  # disabled: the new version loads when enabled
                entry.plan, entry.yaml_text = plan, yaml_text
                return self._info(entry)
            loaded = self._load(plan)
            old = replace(entry)
            entry.plan, entry.loaded, entry.yaml_text = plan, loaded, yaml_text
            self._unload(old)  # counts its actions into old.counts
            entry.counts = old.counts
            return self._info(entry)

    def delete(self, name: str, namespace: str = "") -> None:
        with self._lock:
            entry = self._entries.pop((name, namespace))
            self._unload(entry)

    def enable(self, name: str, namespace: str = "") -> None:
        with self._lock:
            entry = self._entries[(name, namespace)]
            entry.want = True
            if entry.loaded is None and not entry.skip:  # skipped: loads when the node matches
                entry.loaded = self._load(entry.plan)
                entry.error = ""

    def disable(self, name: str, namespace: str = "") -> None:
        with self._lock:
            entry = self._entries[(name, namespace)]
            entry.want = False
            self._unload(entry)

    def list(self) -> list[PolicyInfo]:
        with self._lock:
            return [self._info(e) for e in self._entries.values()]

    def set_mode(self, name: str, namespace: str, mode: PolicyMode) -> None:
        """Flip monitor <-> enforce: one update of each hook's mode map when loaded; the
        plan keeps the new mode so a later enable loads it in that mode."""
        names = {PolicyMode.ENFORCE: "enforce", PolicyMode.MONITOR: "monitor"}
        if mode not in names:
            raise PolicyModeError(f"mode {PolicyMode(mode).name} cannot be set; "
                                  "only ENFORCE or MONITOR")
        with self._lock:
            entry = self._entries[(name, namespace)]
            if entry.plan.mode == "monitor_only":
                if mode == PolicyMode.ENFORCE:
                    raise PolicyModeError(f"tracing policy {name} is monitor_only (it has no "
                                          "enforcement action): it cannot be set to enforce")
                return
            if entry.plan.enforce:
                raise PolicyModeError(
                    f"tracing policy {name} enforces through fanotify or cgroup socket "
                    "programs, whose mode is fixed at load: delete and add it again with "
                    "policy-mode set instead")
            if entry.plan.mode == names[mode]:
                return
            if entry.loaded is not None:
                entry.loaded.set_monitor(mode == PolicyMode.MONITOR)
            entry.plan = replace(entry.plan, mode=names[mode])
            log.info("policy %s: mode set to %s", name, names[mode])

    def set_node_labels(self, labels: dict[str, str] | None, about: str = "") -> None:
        """This node's labels changed (None: not known yet): policies with a
        ``spec.nodeSelector`` that now match load (unless disabled), those that no
        longer match unload and are listed as skipped."""
        with self._lock:
            self.node_labels = dict(labels) if labels is not None else None
            if about:
                self.node_about = about
            for entry in self._entries.values():
                if entry.plan.node_selector is None:
                    continue
                skip = self._node_skip(entry.plan)
                if skip:
                    if not entry.skip:
                        self._unload(entry)
                        log.info("policy %s unloaded: %s", entry.plan.name, skip)
                    entry.skip, entry.error = skip, ""
                    continue
                if not entry.skip:
                    continue
                entry.skip = ""
                if not entry.want:
                    continue
                try:
                    entry.loaded = self._load(entry.plan)
                except Exception as err:  # noqa: BLE001 - listed as a load error, others go on
                    entry.error = str(err)
                    log.error("policy %s: node labels match spec.nodeSelector, but it did "
                              "not load: %s", entry.plan.name, err)
                    continue
                entry.error = ""
                log.info("policy %s loaded: this node's labels match spec.nodeSelector",
                         entry.plan.name)

    def close(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                self._unload(entry)
            self._entries.clear()
            if self.enforcement is not None:
                self.enforcement.close()

    # -- helpers ---------------------------------------------------------------------

    def _compile(self, policy: Any, source: str) -> PolicyPlan:
        view = self._view()
        try:
            plan = compile_policy(policy, view, hook_id_base=self._next_hook_id)
        except CompileError as err:
            d = diagnostic(err, policy, source)
            if err.kernel_lacks or _loads_on_another_kernel(policy, view):
                # valid, not for this kernel
                raise FeatureNotSupported(f"policy {policy.metadata.name}", f"{d}") from err
            raise PolicyError(f"{d}", [d]) from err
        self._next_hook_id += plan.hook_count + 1
        return plan

    def _load(self, plan: PolicyPlan) -> LoadedPolicy:
        scope = self._scope(plan)
        sel_ids = self._selector_scopes(plan, scope)
        try:
            loaded = load_policy(plan, self.base,
                                 scope if not sel_ids else
                                 (self.scopes.filter, scope[1] if scope else 0, sel_ids))
        except BaseException as err:
            if scope is not None:
                self.scopes.release(scope[1])
            for pairs in sel_ids.values():
                for _si, sid in pairs:
                    self.scopes.release(sid)
            if isinstance(err, BpfError):
                raise FeatureNotSupported(f"policy {plan.name}", str(err)) from err
            raise
        loaded.scope_id = scope[1] if scope is not None else 0
        loaded.sel_scope_ids = tuple(sid for pairs in sel_ids.values() for _si, sid in pairs)
        if plan.enforce:
            try:
                self._enforced[(plan.name, plan.namespace)] = self._enforcer().load(
                    plan, self.base,
                    None if scope is None and not sel_ids else
                    (self.scopes.filter, scope[1] if scope else 0, sel_ids))
            except BaseException as err:
                loaded.close()
                for sid in (loaded.scope_id, *loaded.sel_scope_ids):
                    if sid:
                        self.scopes.release(sid)
                if isinstance(err, BpfError):
                    raise FeatureNotSupported(f"policy {plan.name}", str(err)) from err
                raise
            self.registry.add([RegisteredHook(r.event, plan.name, plan.namespace)
                               for r in plan.enforce.sock if r.event is not None])
        self.registry.add([RegisteredHook(h, plan.name, plan.namespace) for h in plan.hooks])
        return loaded

    def _node_skip(self, plan: PolicyPlan) -> str:
        """Why ``plan`` does not load on this node ("" when it does)."""
        sel = plan.node_selector
        if sel is None:
            return ""
        from vigil.policy.scope import describe_selector
        what = f"spec.nodeSelector ({describe_selector(sel)})"
        if self.node_labels is None:
            return f"{what}: waiting for this node's labels ({self.node_about})"
        if sel.matches(self.node_labels):
            return ""
        return f"{what} does not match this node ({self.node_about})"

    def _scope(self, plan: PolicyPlan) -> tuple[Any, int] | None:
        """(policy filter, filter id) of a pod-scoped plan, registered with the scopes."""
        if plan.scope is None:
            return None
        if self.scopes is None:
            raise FeatureNotSupported(
                f"policy {plan.name}", f"{plan.scope.describe()}: pod-scoped policies need "
                "the Kubernetes API (--enable-k8s-api) to know which cgroups are pods; "
                "refusing rather than applying the policy to the whole host")
        return self.scopes.filter, self.scopes.register(plan)

    def _selector_scopes(self, plan: PolicyPlan, scope: tuple[Any, int] | None
                         ) -> dict[int, tuple[tuple[int, int], ...]]:
        """matchWorkloads: a filter id for every such selector, registered with the
        scopes: hook id -> ((selector index, filter id), ...)."""
        every: list[HookPlan | SockRule | FanotifyHook] = [
            *plan.hooks, *plan.enforce.sock, *plan.enforce.fanotify]
        wanted = [h for h in every if h.workloads]
        if not wanted:
            return {}
        if self.scopes is None:
            raise FeatureNotSupported(
                f"policy {plan.name}", f"{wanted[0].section}: matchWorkloads needs the "
                "Kubernetes API (--enable-k8s-api) to know which cgroups are pods; "
                "refusing rather than applying the selector to the whole host")
        out: dict[int, tuple[tuple[int, int], ...]] = {}
        try:
            for h in wanted:
                out[h.hook_id] = tuple((si, self.scopes.register_scope(s))
                                       for si, s in h.workloads)
        except BaseException:
            for pairs in out.values():
                for _si, sid in pairs:
                    self.scopes.release(sid)
            if scope is not None:
                self.scopes.release(scope[1])
            raise
        return out

    def _enforcer(self) -> Any:
        if self.enforcement is None:
            from vigil.enforce.service import Enforcement
            self.enforcement = Enforcement()
        return self.enforcement

    def _unload(self, entry: _Entry) -> None:
        if entry.loaded is not None:
            entry.counts = _add(entry.counts, _counts(entry.loaded))
            entry.loaded.close()
            if entry.loaded.scope_id and self.scopes is not None:
                self.scopes.release(entry.loaded.scope_id)
            for sid in entry.loaded.sel_scope_ids if self.scopes is not None else ():
                self.scopes.release(sid)
            entry.loaded = None
        self.registry.remove([h.hook_id for h in entry.plan.hooks])
        enforced = self._enforced.pop((entry.plan.name, entry.plan.namespace), None)
        if enforced is not None:
            self.enforcement.unload(enforced)
            self.registry.remove([r.hook_id for r in entry.plan.enforce.sock])

    def _info(self, e: _Entry) -> PolicyInfo:
        sensors = {f"generic_{h.event.removeprefix('process_')}" for h in e.plan.hooks}
        sensors |= {"fanotify"} if e.plan.enforce.fanotify else set()
        sensors |= {"cgroup_sock"} if e.plan.enforce.sock else set()
        c = _add(e.counts, _counts(e.loaded) if e.loaded is not None else [])
        c += [0] * (int(GenCount.MAX) - len(c))
        return PolicyInfo(
            id=e.id, name=e.plan.name, namespace=e.plan.namespace,
            info="; ".join(m for _s, m, _e in e.plan.described()), sensors=tuple(sorted(sensors)),
            state=(PolicyState.SKIPPED if e.skip else PolicyState.ENABLED if e.loaded is not None
                   else PolicyState.LOAD_ERROR if e.error and e.want else PolicyState.DISABLED),
            error=e.skip or e.error,
            mode=_MODES.get(e.plan.mode, PolicyMode.UNKNOWN), domain=e.domain,
            kernel_memory_bytes=e.loaded.kernel_memory() if e.loaded is not None else 0,
            hooks=tuple(HookInfo(sec, mech, e.loaded is not None)
                        for sec, mech, _enf in e.plan.described()),
            stats=ActionCounters(
                post=c[GenCount.POST], nopost=c[GenCount.NOPOST], signal=c[GenCount.SIGNAL],
                monitor_signal=c[GenCount.MONITOR_SIGNAL], override=c[GenCount.OVERRIDE],
                monitor_override=c[GenCount.MONITOR_OVERRIDE]))


def _counts(loaded: LoadedPolicy) -> list[int]:
    try:
        return loaded.action_counts()
    except (BpfError, KeyError) as err:  # a map that cannot be read: report zeros, say why
        log.warning("policy %s: cannot read action counters: %s", loaded.plan.name, err)
        return []


def _add(a: list[int], b: list[int]) -> list[int]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


def _domain(source: str) -> str:
    return source if source in ("grpc", "k8s") else "static"
