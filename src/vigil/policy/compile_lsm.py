"""Enforcement that does not need BPF LSM, fmod_ret or bpf_override_return. Pure.

Two mechanisms a hardened kernel still allows:

- ``lsmhooks`` ``file_open`` and ``bprm_check_security`` -> fanotify permission events
  (FAN_OPEN_PERM / FAN_OPEN_EXEC_PERM) answered by Vigil's decider process
  (``vigil.enforce``): the selectors users write for the LSM hook are evaluated in user
  space, Override refuses the open or the exec before it happens;
- ``security_socket_connect`` / ``_bind`` / ``_sendmsg`` (``kprobes`` with ``syscall:
  false``, or ``lsmhooks`` ``socket_connect`` ...) -> cgroup programs (cgroup/connect4/6,
  bind4/6, sendmsg4/6; ``bpf/sockguard.bpf.c``) attached to the cgroups in scope, whose
  return value refuses the call.

Scope: the ``vigil-cgroups`` option (comma-separated cgroup v2 paths, relative to the
cgroup2 mount) limits both to processes in those cgroups (and below); without it they
apply to the whole host. Tetragon ignores options it does not know, so the policy stays
loadable there.

``compile_policy`` calls :func:`routed_kprobes` and :func:`compile_enforcement`; every
refusal names the field and the reason, so ``vigil tracingpolicy check`` rejects what
cannot be honoured instead of loading it as observation only.
"""

from __future__ import annotations

import enum
import errno as _errno
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from vigil.abi import _generated as abi
from vigil.abi.keys import addr_key, eq_key, pfx_key
from vigil.abi.pack import pack
from vigil.capabilities import cap_number
from vigil.events.generic import ArgSpec
from vigil.policy.compiler import CompileError, host_ns_inum
from vigil.policy.scope import PodScope, workload_scope
from vigil.policy.plan import (
    CapMatch, EnforcePlan, FanotifyHook, FanSelector, HookPlan, NsMatch, SockRule, StrMatch,
    coverage,
)
from vigil.policy.values import ADDRESS_FAMILIES, IP_PROTOCOLS, parse_int, parse_port_range

SCOPE_OPTION = "vigil-cgroups"
FANOTIFY_HOOKS = {"file_open": "file", "bprm_check_security": "linux_binprm"}
SOCK_HOOKS = {
    "security_socket_connect": ("vg_sk_connect4", "vg_sk_connect6"),
    "security_socket_bind": ("vg_sk_bind4", "vg_sk_bind6"),
    "security_socket_sendmsg": ("vg_sk_sendmsg4", "vg_sk_sendmsg6"),
}
_CGROUP_ATTACH = {"security_socket_connect": "cgroup/connect4+connect6",
                  "security_socket_bind": "cgroup/bind4+bind6",
                  "security_socket_sendmsg": "cgroup/sendmsg4+sendmsg6 (UDP)"}
#: errnos a fanotify permission event can be refused with (Linux >= 6.14; EPERM always)
FANOTIFY_ERRNOS = {_errno.EPERM, _errno.EIO, _errno.EBUSY, _errno.ETXTBSY, _errno.EAGAIN,
                   _errno.ENOSPC, _errno.EDQUOT}
_NS_FILES = {"Uts": "uts", "Ipc": "ipc", "Mnt": "mnt", "Pid": "pid",
             "PidForChildren": "pid_for_children", "Net": "net", "Time": "time",
             "TimeForChildren": "time_for_children", "Cgroup": "cgroup", "User": "user"}
_CAP_FIELDS = {"Effective": "CapEff", "Inheritable": "CapInh", "Permitted": "CapPrm"}
_STR_OPS = ("Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix")
_UNSUPPORTED_FILTERS = ("match_parent_binaries", "match_namespace_changes",
                        "match_capability_changes", "match_data", "match_return_args",
                        "match_return_actions")
A = abi.Action


def _s(v: Any) -> str:
    return str(v.value) if isinstance(v, enum.Enum) else str(v)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(r.capitalize() for r in rest)


# ---- routing --------------------------------------------------------------------------

def _has_override(selectors: Sequence[Any]) -> bool:
    return any(_s(a.action) == "Override" for s in selectors for a in s.match_actions or ())


def routed_kprobes(spec: Any, view: Any, selectors_of: Callable[[Any], Sequence[Any]]) -> set[int]:
    """Indexes of ``spec.kprobes`` this module compiles (to cgroup programs): the
    security_socket_* hooks that Override, or any of them when the kernel has no kprobes."""
    out = set()
    for i, kp in enumerate(getattr(spec, "kprobes", None) or ()):
        if kp.call in SOCK_HOOKS and not kp.syscall:
            if _positive_override(selectors_of(kp)) and getattr(view, "fmod_ret", False):
                continue  # fmod_ret returns the value itself, as Tetragon does
            if _has_override(selectors_of(kp)) or not getattr(view, "kprobes", False):
                out.add(i)
    return out


def _positive_override(selectors: Sequence[Any]) -> bool:
    """Override with a positive argError: the call's result, not an errno."""
    return any(_s(a.action) == "Override" and (getattr(a, "arg_error", None) or 0) > 0
               for s in selectors for a in s.match_actions or ())


def scope_of(spec: Any) -> tuple[str, ...]:
    """The ``vigil-cgroups`` option as normalised cgroup paths ("/a/b")."""
    raw = spec.option(SCOPE_OPTION) if hasattr(spec, "option") else None
    if not raw:
        return ()
    out = []
    for part in raw.split(","):
        p = part.strip()
        if not p:
            continue
        p = "/" + p.strip("/")
        if ".." in p.split("/"):
            raise CompileError("spec.options", f'{SCOPE_OPTION}: "{part}" must not contain ".."')
        out.append(p)
    return tuple(out)


def compile_enforcement(policy: Any, view: Any, hook_id: int,
                        selectors_of: Callable[[Any], Sequence[Any]], routed: set[int],
                        has_generic: bool) -> EnforcePlan:
    """lsmhooks + routed kprobes -> EnforcePlan; hook ids from ``hook_id`` on."""
    spec = policy.spec
    monitor = _s(getattr(policy, "mode", "enforce")) == "monitor"
    scope = scope_of(spec)
    fan: list[FanotifyHook] = []
    sock: list[SockRule] = []
    for i, lh in enumerate(getattr(spec, "lsmhooks", None) or ()):
        where = f"spec.lsmhooks[{i}]"
        name = lh.hook.removeprefix("security_")
        if name in FANOTIFY_HOOKS:
            fan.append(compile_fanotify_hook(lh, name, where, hook_id, selectors_of(lh), view,
                                             monitor, scope))
        elif f"security_{name}" in SOCK_HOOKS:
            sock.append(compile_sock_hook(lh, f"security_{name}", where, hook_id,
                                          selectors_of(lh), monitor, scope))
        else:
            raise CompileError(f"{where}.hook", _lsm_reason(name, view))
        hook_id += 1
    for i in sorted(routed):
        kp = spec.kprobes[i]
        sock.append(compile_sock_hook(kp, kp.call, f"spec.kprobes[{i}]", hook_id,
                                      selectors_of(kp), monitor, scope))
        hook_id += 1
    if scope and has_generic:
        raise CompileError("spec.options", f"{SCOPE_OPTION} scopes lsmhooks and "
                           "security_socket_* enforcement only; this policy has other hooks "
                           "that would not honour it (split it into two policies)")
    return EnforcePlan(tuple(fan), tuple(sock), scope, monitor)


def _lsm_reason(name: str, view: Any) -> str:
    if getattr(view, "lsm", False):
        return (f"LSM hook {name}: only file_open, bprm_check_security (fanotify) and "
                "socket_connect/bind/sendmsg (cgroup programs) are supported by this version "
                "of Vigil")
    return (f"LSM hook {name} needs BPF LSM, which this kernel refuses; here only "
            "file_open and bprm_check_security (fanotify permission events) and "
            "socket_connect/bind/sendmsg (cgroup programs) can be enforced")


def _unsupported(sel: Any, w: str, what: str) -> None:
    for f in _UNSUPPORTED_FILTERS:
        if getattr(sel, f, None):
            raise CompileError(f"{w}.{_camel(f)}", f"not supported on {what}")


# ---- actions (both mechanisms) ---------------------------------------------------------

def _actions(sel: Any, w: str, *, fanotify: bool) -> tuple[int, bool, int, int]:
    """(event action, post, errno to refuse with, signal) of a selector's matchActions."""
    action, post, err, sig = int(A.POST), True, 0, 0
    for k, a in enumerate(sel.match_actions or ()):
        aw = f"{w}.matchActions[{k}]"
        name = _s(a.action)
        if name == "Post":
            if getattr(a, "rate_limit", None):
                raise CompileError(f"{aw}.rateLimit", "rateLimit is not supported on "
                                   "enforced LSM/socket hooks here")
            if getattr(a, "ima_hash", False) or getattr(a, "kernel_stack_trace", False) \
                    or getattr(a, "user_stack_trace", False):
                raise CompileError(aw, "imaHash and stack traces need BPF LSM / kprobes, "
                                   "which this mechanism does not use")
        elif name == "NoPost":
            post = False
        elif name == "Override":
            if a.arg_error is None or a.arg_error == 0:
                raise CompileError(f"{aw}.argError", "Override needs a non-zero argError "
                                   "(e.g. -1 for EPERM): 0 would let the call go on")
            if a.arg_error > 0:  # Tetragon's fmod_ret returns it: the call ends with it
                what = ("a fanotify permission event" if fanotify else
                        "a cgroup socket program (the kernel turns it into EPERM)")
                raise CompileError(f"{aw}.argError", f"{a.arg_error} cannot be honoured "
                                   f"here: {what} can only refuse with an errno, and fmod_ret"
                                   " (which would return it) is not available on this kernel")
            err = -int(a.arg_error)
            if fanotify and err not in FANOTIFY_ERRNOS:
                names = ", ".join(sorted(_errno.errorcode[e] for e in FANOTIFY_ERRNOS))
                raise CompileError(f"{aw}.argError", f"{a.arg_error} "
                                   f"({_errno.errorcode.get(err, '?')}) cannot be honoured: a "
                                   f"fanotify permission event can only be refused with {names}"
                                   " (use -1 for EPERM)")
            action = int(A.OVERRIDE)
        elif name in ("Sigkill", "Signal"):
            if not fanotify:
                raise CompileError(f"{aw}.action", f"{name} cannot be sent from a cgroup "
                                   "socket program (no bpf_send_signal there); use Override")
            sig = 9 if name == "Sigkill" else int(a.arg_sig or 0)
            if action != int(A.OVERRIDE):
                action = int(A.SIGKILL if name == "Sigkill" else A.SIGNAL)
        else:
            raise CompileError(f"{aw}.action", f"action {name} is not supported on this hook")
    return action, post, err, sig


def _enforcement_text(selectors: Sequence[Any], monitor: bool, what: str, kills: str) -> str:
    acts = {_s(a.action) for s in selectors for a in s.match_actions or ()}
    parts = []
    if "Override" in acts:
        parts.append(f"Override: prevents ({what})")
    if acts & {"Sigkill", "Signal"}:
        parts.append(f"Sigkill/Signal: kills after ({kills})")
    if not parts:
        return ""
    text = "; ".join(parts)
    return f"monitor mode: would {text[0].lower()}{text[1:]} - only reported" if monitor else text


# ---- fanotify hooks ----------------------------------------------------------------------

def compile_fanotify_hook(lh: Any, name: str, where: str, hook_id: int,
                          selectors: Sequence[Any], view: Any, monitor: bool,
                          scope: tuple[str, ...]) -> FanotifyHook:
    args = list(getattr(lh, "args", None) or ())
    want = FANOTIFY_HOOKS[name]
    arg, label = "", ""
    for j, a in enumerate(args):
        t = _s(a.type)
        if a.index != 0 or t not in (want, "file", "path", "linux_binprm") or \
                getattr(a, "resolve", None):
            raise CompileError(f"{where}.args[{j}]", f"{name} has one argument here "
                               f"(fanotify, without BPF LSM): index 0, type {want}, no "
                               "resolve")
        arg, label = want, a.label or ""
    sels = tuple(_fan_selector(s, f"{where}.selectors[{k}]", bool(arg), view)
                 for k, s in enumerate(selectors))
    event = "FAN_OPEN_EXEC_PERM" if name == "bprm_check_security" else "FAN_OPEN_PERM"
    cover = _coverage_text(sels)
    mech = f"fanotify {event}, decided in user space ({cover}){' in cgroups ' + ','.join(scope) if scope else ''}"
    if name == "bprm_check_security":
        what = "the exec fails with the errno before the new program runs"
    else:
        what = "the open fails with the errno; no file descriptor is created"
    enforcement = _enforcement_text(selectors, monitor, what,
                                    "SIGKILL/the signal is sent from user space while the "
                                    "task waits on the decision: a fatal signal ends the "
                                    "wait, the open/exec fails and the process dies before "
                                    "its next instruction")
    if enforcement and not monitor:
        enforcement += ("; a decision not made within the deadline is answered by the "
                        "watchdog (fail-open by default)")
    return FanotifyHook(hook_id=hook_id, section=where, hook=name, selectors=sels, arg=arg,
                        arg_label=label, message=getattr(lh, "message", "") or "",
                        tags=tuple(getattr(lh, "tags", None) or ()), mechanism=mech,
                        enforcement=enforcement, workloads=_workloads(selectors))


def _workloads(selectors: Sequence[Any]) -> tuple[tuple[int, PodScope], ...]:
    """(selector index, PodScope) of the selectors with a matchWorkloads filter."""
    out = []
    for si, sel in enumerate(selectors):
        wl = workload_scope(getattr(sel, "match_workloads", None))
        if wl is not None:
            out.append((si, wl))
    return tuple(out)


def _coverage_text(sels: Sequence[FanSelector]) -> str:
    kind, paths = coverage(sels)
    if kind == "exact":
        return f"marks only {', '.join(paths)}"
    if kind == "prefix":
        return f"marks the filesystems under {', '.join(paths)}"
    return "marks every filesystem; paths no selector can match are cached in the kernel"


def _fan_selector(sel: Any, w: str, has_arg: bool, view: Any) -> FanSelector:
    _unsupported(sel, w, "fanotify-enforced hooks")
    paths = []
    for k, ma in enumerate(sel.match_args or ()):
        mw = f"{w}.matchArgs[{k}]"
        pos = list(getattr(ma, "args", None) or ()) or [ma.index]
        if not has_arg or pos != [0]:
            raise CompileError(f"{mw}.index", "matchArgs must refer to argument 0 (the file), "
                               "declared in args")
        op = _s(ma.operator)
        if op not in _STR_OPS:
            raise CompileError(f"{mw}.operator", f"{op} does not apply to a file path here")
        paths.append(StrMatch(op, tuple(str(v) for v in ma.values or ())))
    binary = None
    if sel.match_binaries:
        mb = sel.match_binaries[0]
        if getattr(mb, "follow_children", False):
            raise CompileError(f"{w}.matchBinaries[0].followChildren", "not supported here")
        op = {"In": "Equal", "NotIn": "NotEqual"}.get(_s(mb.operator), _s(mb.operator))
        binary = StrMatch(op, tuple(str(v) for v in mb.values or ()))
    pids: tuple[int, ...] = ()
    pneg = False
    if sel.match_pids:
        if len(sel.match_pids) > 1:
            raise CompileError(f"{w}.matchPIDs", "one matchPIDs filter per selector")
        mp = sel.match_pids[0]
        if mp.is_namespace_pid or mp.follow_forks:
            raise CompileError(f"{w}.matchPIDs[0]", "isNamespacePID and followForks are "
                               "not supported here")
        pids, pneg = tuple(int(v) for v in mp.values), _s(mp.operator) == "NotIn"
    return FanSelector(paths=tuple(paths), binary=binary, pids=pids, pids_negate=pneg,
                       namespaces=tuple(_namespaces(sel, w, view)), caps=tuple(_caps(sel, w)),
                       **_selector_actions(sel, w))


def _selector_actions(sel: Any, w: str) -> dict[str, Any]:
    action, post, err, sig = _actions(sel, w, fanotify=True)
    return {"action": action, "post": post, "deny_errno": err, "signal": sig}


def _namespaces(sel: Any, w: str, view: Any) -> list[NsMatch]:
    out = []
    for k, f in enumerate(sel.match_namespaces or ()):
        ns = _NS_FILES[_s(f.namespace)]
        vals = []
        for v in f.values:
            if str(v) == "host_ns":
                vals.append(host_ns_inum(view, ns, f"{w}.matchNamespaces[{k}].values"))
            else:
                vals.append(int(str(v), 0))
        out.append(NsMatch(ns, _s(f.operator) == "NotIn", tuple(vals)))
    return out


def _caps(sel: Any, w: str) -> list[CapMatch]:
    out = []
    for k, f in enumerate(sel.match_capabilities or ()):
        if getattr(f, "is_namespace_capability", False):
            raise CompileError(f"{w}.matchCapabilities[{k}].isNamespaceCapability",
                               "not supported here")
        mask = 0
        for v in f.values:
            name = _s(v)
            try:
                mask |= 1 << cap_number(name)
            except ValueError:
                raise CompileError(f"{w}.matchCapabilities[{k}].values",
                                   f"unknown {name}") from None
        out.append(CapMatch(_CAP_FIELDS[_s(f.type)], _s(f.operator) == "NotIn", mask))
    return out


# ---- cgroup socket hooks ------------------------------------------------------------------

SK = abi.SockField
def compile_sock_hook(hook: Any, function: str, where: str, hook_id: int,
                      selectors: Sequence[Any], monitor: bool,
                      scope: tuple[str, ...]) -> SockRule:
    """A security_socket_* hook -> one copy of sockguard.bpf.o for the cgroups in scope."""
    if getattr(hook, "return_", False) or getattr(hook, "return_arg", None) is not None:
        raise CompileError(f"{where}.return", "return probes are not available on "
                           "cgroup-enforced socket hooks (the decision is the return value)")
    arg_types: dict[int, str] = {}
    sa_pos = None
    for j, a in enumerate(getattr(hook, "args", None) or ()):
        t = _s(a.type)
        if a.index == 0 and t in ("socket", "sock"):
            arg_types[j] = "socket"
        elif a.index == 1 and t == "sockaddr":
            arg_types[j] = "sockaddr"
            sa_pos = j
        elif a.index == 2 and t in ("int", "sint32", "int32", "uint32"):
            arg_types[j] = "int"
        else:
            raise CompileError(f"{where}.args[{j}]", f"{function}(socket, sockaddr, addrlen): "
                               f"argument {a.index} of type {t} is not available here")
    keys: dict[str, list[bytes]] = {}
    cfg: dict[str, Any] = {"hook_id": hook_id, "nsel": len(selectors),
                           "monitor": 1 if monitor else 0, "has_sockaddr": 1 if sa_pos is not None else 0}
    next_set = [1]
    for si, sel in enumerate(selectors):
        _sock_selector(sel, f"{where}.selectors[{si}]", f"sel[{si}]", function, hook,
                       arg_types, cfg, keys, next_set)
    label = ""
    if sa_pos is not None:
        label = hook.args[sa_pos].label or ""
    event = HookPlan(
        hook_id=hook_id, section=where, event="process_kprobe",
        opcode=int(abi.MsgOp.GENERIC_KPROBE), attach=(), config=b"",
        args=(ArgSpec("sockaddr", label),) if sa_pos is not None else (),
        function_name=function, message=getattr(hook, "message", "") or "",
        tags=tuple(getattr(hook, "tags", None) or ()))
    where_cg = ",".join(scope) if scope else "/ (every process)"
    mech = f"{_CGROUP_ATTACH[function]} BPF programs on cgroup {where_cg}"
    call = {"security_socket_connect": "connect(2)", "security_socket_bind": "bind(2)",
            "security_socket_sendmsg": "sendto/sendmsg(2) with an address (UDP)"}[function]
    enforcement = _enforcement_text(selectors, monitor,
                                    f"{call} fails with the errno in the kernel; nothing is "
                                    "sent", "")
    return SockRule(hook_id=hook_id, section=where, function=function,
                    programs=SOCK_HOOKS[function], config=pack("vg_sock_cfg", cfg),
                    map_keys={m: tuple(k) for m, k in keys.items()}, event=event,
                    mechanism=mech, enforcement=enforcement, workloads=_workloads(selectors))


def _sock_field(op: str, arg: str, function: str, w: str) -> tuple[int, bool]:
    """(enum vg_sock_field, negate) for an operator on the socket or sockaddr argument."""
    neg = op.startswith("Not")
    base = op[3:] if neg else op
    base = {"SportPriv": "SPortPriv"}.get(base, base)
    if base == "Family":
        return int(SK.FAMILY), False
    if base == "Protocol" and arg == "socket":
        return int(SK.PROTOCOL), False
    local = function == "security_socket_bind"
    # the call's address: on the sockaddr argument it is SAddr/SPort (Tetragon's naming);
    # on the socket it is the destination (connect, sendmsg) or the source (bind)
    side = "S" if (arg == "sockaddr" or local) else "D"
    if base in (f"{side}Addr",):
        return int(SK.ADDR), neg
    if base in (f"{side}Port",):
        return int(SK.PORT), neg
    if base in (f"{side}PortPriv",):
        return int(SK.PORT_PRIV), neg
    raise CompileError(f"{w}.operator", f"{op} on the {arg} argument of {function} is not "
                       "available to the cgroup program (it sees the call's family, protocol "
                       f"and {'local' if local else 'destination'} address)")


def _sock_selector(sel: Any, w: str, p: str, function: str, hook: Any,
                   arg_types: dict[int, str], cfg: dict[str, Any],
                   keys: dict[str, list[bytes]], next_set: list[int]) -> None:
    _unsupported(sel, w, "cgroup-enforced socket hooks")
    for f in ("match_pids", "match_namespaces", "match_capabilities"):
        if getattr(sel, f, None):
            raise CompileError(f"{w}.{_camel(f)}", "not supported on cgroup-enforced socket "
                               "hooks (scope them with the vigil-cgroups option)")
    matches = list(sel.match_args or ())
    if len(matches) > int(abi.SockLimits.MATCH):
        raise CompileError(f"{w}.matchArgs", f"at most {int(abi.SockLimits.MATCH)} here")
    for k, ma in enumerate(matches):
        mw = f"{w}.matchArgs[{k}]"
        pos = (list(getattr(ma, "args", None) or ()) or [None])[0]
        if pos is None:
            pos = next((j for j, a in enumerate(hook.args or ()) if a.index == ma.index), None)
        if pos is None or pos not in arg_types or arg_types[pos] == "int":
            raise CompileError(f"{mw}.index", "must refer to the socket or sockaddr argument, "
                               "declared in args")
        op = _s(ma.operator)
        field, neg = _sock_field(op, arg_types[pos], function, mw)
        slot = f"{p}.m[{k}]"
        cfg[f"{slot}.field"] = field
        cfg[f"{slot}.negate"] = 1 if neg else 0
        values = [str(v) for v in ma.values or ()]
        if field == int(SK.ADDR):
            set_id = next_set[0]
            next_set[0] += 1
            for v in values:
                keys.setdefault("vg_sk_addr", []).append(_addr_key(set_id, v, mw))
            cfg[f"{slot}.set"] = set_id
            continue
        if field == int(SK.PORT_PRIV):
            cfg[f"{slot}.field"] = int(SK.PORT)
            nums = [0 << 16 | 1023]
        elif field == int(SK.PORT):
            nums = [_port_range(v, mw) for v in values]
        elif field == int(SK.FAMILY):
            nums = [_named(v, ADDRESS_FAMILIES, mw) for v in values]
        else:
            nums = [_named(v, IP_PROTOCOLS, mw) for v in values]
        if len(nums) > int(abi.SockLimits.VALUES):
            raise CompileError(f"{mw}.values", f"at most {int(abi.SockLimits.VALUES)} values")
        cfg[f"{slot}.vals"] = nums
        cfg[f"{slot}.nvals"] = len(nums)
    cfg[f"{p}.nmatch"] = len(matches)
    if sel.match_binaries:
        mb = sel.match_binaries[0]
        bw = f"{w}.matchBinaries[0]"
        op = _s(mb.operator)
        code = {"In": abi.Op.IN, "NotIn": abi.Op.NOTIN, "Prefix": abi.Op.PREFIX,
                "NotPrefix": abi.Op.NOTPREFIX}.get(op)
        if code is None or getattr(mb, "follow_children", False):
            raise CompileError(bw, f"{op}{' with followChildren' if mb.follow_children else ''}"
                               " is not supported on cgroup-enforced socket hooks (In, NotIn, "
                               "Prefix, NotPrefix are)")
        set_id = next_set[0]
        next_set[0] += 1
        for v in mb.values or ():
            raw = str(v).encode()
            if code in (abi.Op.IN, abi.Op.NOTIN):
                if len(raw) >= int(abi.GenLimits.STR_KEY):
                    raise CompileError(f"{bw}.values", "path too long")
                keys.setdefault("vg_sk_bin_eq", []).append(
                    eq_key(set_id, raw))
            else:
                if len(raw) >= int(abi.GenLimits.PFX_KEY):
                    raise CompileError(f"{bw}.values", "prefix too long")
                keys.setdefault("vg_sk_bin_pfx", []).append(
                    pfx_key(set_id, raw))
        cfg[f"{p}.bin_op"] = int(code)
        cfg[f"{p}.bin_set"] = set_id
    action, post, err, _sig = _actions(sel, w, fanotify=False)
    cfg[f"{p}.action"] = action
    cfg[f"{p}.post"] = 1 if post else 0
    cfg[f"{p}.err"] = -err


def _named(v: str, table: dict[str, int], w: str) -> int:
    if v in table:
        return table[v]
    try:
        return parse_int(v, bits=16, signed=False, base=10)
    except ValueError as err:
        raise CompileError(f"{w}.values", f"{v!r} is not a number or a known name") from err


def _port_range(v: str, w: str) -> int:
    try:
        a, z = parse_port_range(v)
    except ValueError as err:
        raise CompileError(f"{w}.values", f"{v!r} is not a port or min:max range") from err
    if not 0 <= a <= z <= 65535:
        raise CompileError(f"{w}.values", f"{v!r} is not a valid port range")
    return a << 16 | z


def _addr_key(set_id: int, value: str, w: str) -> bytes:
    """LPM key of vg_sk_addr: prefixlen (set + family + address bits), set, family, addr."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as err:
        raise CompileError(f"{w}.values", f"{value!r} is not an address or CIDR") from err
    return addr_key(set_id, net)
