"""Policy actions that need more than a code in the hook's configuration. Pure.

- ``TrackSock`` / ``UntrackSock`` (and ``returnArgAction``): the hook records or forgets
  the owner of a ``struct sock *`` (map ``vg_socktrack``, one per policy); every hook of
  the policy with a ``sock`` argument reports a tracked socket's owner as the event's
  process, so network hooks that run in softirq context name the owning process.
- ``Post`` with ``kernelStackTrace`` / ``userStackTrace``: return addresses in the
  record, symbolized by the agent (``vigil.events.stacks``); on process_kprobe hooks
  only (Tetragon's ProcessTracepoint, ProcessUprobe and ProcessLsm have no stack fields).
- ``Post`` with ``imaHash`` (lsmhooks on BPF LSM): a sleepable program of the hook
  hashes its file or linux_binprm argument with bpf_ima_file_hash; the event's
  ``ima_hash`` is ``ALGO:HEX`` (``vigil.events.stacks.ima_hash``).
- ``GetUrl`` / ``DnsLookup``: the event is posted with that action and the agent makes
  the request (``vigil.actions_net``), bounded and off the event path.
- ``matchReturnActions``: the selector's actions on the return path, run by the program
  that has the return value after the selector's ``matchActions``; the event's
  ``return_action``. ``Post`` (``rateLimit``; stacks taken at the return), ``NoPost``,
  ``Sigkill``, ``Signal``, ``GetUrl`` / ``DnsLookup`` (a request of its own, apart from
  an entry one of the same selector), ``TrackSock`` / ``UntrackSock`` (``argSock``: an
  argument as read at the entry), ``NotifyEnforcer``, ``CleanupEnforcerNotification``.
- ``NotifyEnforcer`` with ``spec.enforcers``: the hook notifies; the policy's enforcer
  (``enforcer.bpf.o``, planned by ``compile_enforcer``) acts at the thread's next listed
  syscall: fmod_ret on the syscall functions where the kernel allows it (the syscall
  returns argError without running, argSig is sent), otherwise a raw tracepoint on
  sys_exit that sends argSig (the syscall has run; argError cannot be applied here).
  ``CleanupEnforcerNotification`` withdraws the thread's notification not yet acted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vigil.abi import _generated as abi
from vigil.syscalls import syscall_number

_NOT_KPROBE = ("spec.tracepoints", "spec.uprobes", "spec.lsmhooks")


def _s(v: Any) -> str:
    return str(getattr(v, "value", v))


@dataclass(frozen=True)
class Request:
    """A request the agent makes when a selector's event is posted."""

    selector: int
    kind: str     # "url" (GetUrl) | "dns" (DnsLookup)
    target: str   # argUrl | argFqdn
    ret: bool = False  # asked by matchReturnActions (the record's ret_action)


@dataclass(frozen=True)
class EnforcerPlan:
    """spec.enforcers[0] on this kernel: one enforcer.bpf.o."""

    section: str
    program: str                  # vg_enf_fmodret | vg_enf_sys_exit
    functions: tuple[str, ...]    # fmod_ret targets (__x64_sys_X)
    syscalls: tuple[int, ...]     # sys_exit: the listed syscall numbers
    mechanism: str
    enforcement: str


def compile_action(b: Any, a: Any, name: str, ap: str, aw: str) -> bool:
    """Compile one matchActions entry this module owns into ``b.cfg`` under ``ap``
    (``sel[i].actions[k]``); False: not one of them (the caller compiles it)."""
    from vigil.policy.compiler import CompileError

    flags = 0
    if getattr(a, "ima_hash", False):
        if name != "Post":
            raise CompileError(aw, "imaHash goes with action Post", invalid=True)
        if not b.where.startswith("spec.lsmhooks"):
            raise CompileError(f"{aw}.imaHash", "imaHash is only supported for lsmhooks",
                               invalid=True)
        files = [i for i, (_pos, t) in enumerate(b.args)
                 if t.kind in (int(abi.ArgKind.FILE), int(abi.ArgKind.BINPRM))]
        if not files:
            raise CompileError(f"{aw}.imaHash", "imaHash hashes the hook's file: it needs an "
                               "argument of type file or linux_binprm", unsupported=True)
        b.cfg["ima_arg"] = files[0]
        flags |= int(abi.ActionFlag.IMA)
    stacks = 0
    if getattr(a, "kernel_stack_trace", False):
        stacks |= int(abi.ActionFlag.KSTACK)
    if getattr(a, "user_stack_trace", False):
        stacks |= int(abi.ActionFlag.USTACK)
    if stacks:
        if name != "Post":
            raise CompileError(aw, "kernelStackTrace / userStackTrace go with action Post",
                               invalid=True)
        if b.where.startswith(_NOT_KPROBE):
            raise CompileError(f"{aw}.{'kernelStackTrace' if stacks & 1 else 'userStackTrace'}",
                               "stack traces are reported in process_kprobe events only "
                               "(Tetragon's tracepoint and uprobe events have no stack "
                               "fields); refused rather than ignored", unsupported=True)
        flags |= stacks
    if flags:
        b.cfg[f"{ap}.flags"] = flags
        return False  # Post itself (rate limit) is the caller's
    if name in ("GetUrl", "DnsLookup"):
        fld, yaml_name, kind = (("arg_url", "argUrl", "url") if name == "GetUrl"
                                else ("arg_fqdn", "argFqdn", "dns"))
        target = getattr(a, fld, None)
        if not target:
            raise CompileError(f"{aw}.{yaml_name}", f"action {name} requires {yaml_name}",
                               invalid=True)
        if kind == "url" and not str(target).startswith(("http://", "https://")):
            raise CompileError(f"{aw}.argUrl", "argUrl must be an http:// or https:// URL "
                               "(the agent makes HTTP requests only)", unsupported=True)
        si = int(ap.split("[", 1)[1].split("]", 1)[0])
        ret = ".ret_actions[" in ap
        reqs = b.__dict__.setdefault("requests", [])
        if not any(r.selector == si and r.ret == ret for r in reqs):
            reqs.append(Request(si, kind, str(target), ret))
        b.cfg[f"{ap}.action"] = int(abi.Action.GETURL if kind == "url" else abi.Action.DNSLOOKUP)
        return True
    if name in ("TrackSock", "UntrackSock"):
        idx = getattr(a, "arg_sock", None)
        args = list(getattr(b.hook, "args", None) or ()) if b.hook is not None else None
        if idx is None:
            idx = 0  # Tetragon's default: the first argument
        if args is not None and (idx >= len(args) or _s(args[idx].type) != "sock"):
            raise CompileError(f"{aw}.argSock", f"argSock {idx} must name a 'sock' argument "
                               "of this hook (only sockets are tracked)", unsupported=True)
        b.cfg[f"{ap}.action"] = int(abi.Action.TRACKSOCK if name == "TrackSock"
                                    else abi.Action.UNTRACKSOCK)
        b.cfg[f"{ap}.sock_arg"] = int(idx)
        return True
    if name == "NotifyEnforcer":
        err = getattr(a, "arg_error", None)
        sig = getattr(a, "arg_sig", None)
        if err is not None and int(err) != 0 and not sig and not b.view.fmod_ret_syscall:
            raise CompileError(f"{aw}.argError", "the enforcer cannot make a syscall return "
                               "argError on this kernel (no fmod_ret on syscall functions, "
                               "no bpf_override_return); add argSig to kill the process at "
                               "the syscall's exit, or load on a kernel with fmod_ret on "
                               "syscalls")
        b.cfg[f"{ap}.action"] = int(abi.Action.NOTIFYENFORCER)
        b.cfg[f"{ap}.arg"] = int(err or 0) & 0xFFFFFFFF
        b.cfg[f"{ap}.sig"] = int(sig or 0)
        return True
    if name == "CleanupEnforcerNotification":
        b.cfg[f"{ap}.action"] = int(abi.Action.CLEANUPENFORCER)
        return True
    return False


_RETURN_ACTIONS = {"Post": abi.Action.POST, "NoPost": abi.Action.NOPOST,
                   "Sigkill": abi.Action.SIGKILL, "Signal": abi.Action.SIGNAL}
_RETURN_REFUSED = {
    "Override": "the call has already run when return actions run (Override decides at "
                "the call's entry: use matchActions)",
    "Set": "Set writes a USDT argument at the probe; it has no return path",
}


def compile_return_actions(b: Any, sel: Any, p: str, w: str) -> None:
    """A selector's ``matchReturnActions`` into ``{p}.ret_actions[k]`` (``p``:
    ``sel[i]``): run once the selector matched, matchReturnArgs included, by the program
    that has the return value."""
    from vigil.policy.compiler import CompileError

    actions = list(sel.match_return_actions or ())
    for k, a in enumerate(actions):
        name = _s(a.action)
        aw = f"{w}.matchReturnActions[{k}]"
        ap = f"{p}.ret_actions[{k}]"
        if name in _RETURN_REFUSED:
            raise CompileError(f"{aw}.action", _RETURN_REFUSED[name], unsupported=True)
        if getattr(a, "ima_hash", False):
            raise CompileError(f"{aw}.imaHash", "imaHash hashes the file of an lsmhooks "
                               "hook, and lsmhooks have no return path (no "
                               "matchReturnActions): use it in matchActions",
                               invalid=True)
        if compile_action(b, a, name, ap, aw):
            continue
        if name not in _RETURN_ACTIONS:
            raise CompileError(f"{aw}.action", f"action {name} is not supported by this "
                               "version of Vigil")
        b.cfg[f"{ap}.action"] = int(_RETURN_ACTIONS[name])
        if name == "Signal":
            if a.arg_sig is None:
                raise CompileError(f"{aw}.argSig", "action Signal requires argSig",
                                   invalid=True)
            b.cfg[f"{ap}.arg"] = int(a.arg_sig)
        rate_ms = getattr(a, "rate_limit_ms", 0) or 0
        if name == "Post" and rate_ms:
            scopes = {"thread": 0, "process": 1, "global": 2}
            b.cfg[f"{ap}.rate_ns"] = int(rate_ms) * 1_000_000
            b.cfg[f"{ap}.scope"] = scopes[_s(getattr(a, "rate_limit_scope", "thread")
                                          or "thread")]
    b.cfg[f"{p}.nret_actions"] = len(actions)


def return_action(cfg: dict[str, Any], hook: Any, where: str) -> None:
    """returnArgAction TrackSock / UntrackSock on the returned ``struct sock *``."""
    from vigil.policy.compiler import CompileError

    ra = getattr(hook, "return_arg_action", None)
    if ra is None:
        return
    name = _s(ra)
    if name not in ("TrackSock", "UntrackSock"):
        raise CompileError(f"{where}.returnArgAction", f"returnArgAction {name} is not "
                           "supported by this version of Vigil (TrackSock / UntrackSock are)")
    ret = getattr(hook, "return_arg", None)
    if ret is None or _s(ret.type) != "sock":
        raise CompileError(f"{where}.returnArgAction", f"returnArgAction {name} needs a "
                           "returnArg of type sock (only sockets are tracked)",
                           unsupported=True)
    cfg["ret_action"] = int(abi.Action.TRACKSOCK if name == "TrackSock"
                            else abi.Action.UNTRACKSOCK)


def _wants_ima(cfg: dict[str, Any]) -> bool:
    """Does an action of the hook ask for imaHash? (Only action flags: an argument's
    ``args[i].flags`` are ArgFlag bits, another namespace.)"""
    ima = int(abi.ActionFlag.IMA)
    return any(".actions[" in k and k.endswith(".flags") and v & ima for k, v in cfg.items())


def extra_attach(cfg: dict[str, Any], attach: list[Any]) -> list[Any]:
    """imaHash: the hook's sleepable hashing program, attached after the hook's own (a
    trampoline runs the newest first, so the hash is ready when the hook posts)."""
    if _wants_ima(cfg):
        from vigil.policy.plan import Attach
        return [*attach, Attach("vg_gen_lsm_ima", "lsm", attach[0].target)]
    return attach


def hook_extras(b: Any, cfg: dict[str, Any], monitor: bool) -> tuple[tuple[Request, ...], str]:
    """(requests, what the hook's new actions guarantee) for the hook's plan."""
    acts = {v for k, v in cfg.items() if k.endswith(".action")}
    notes = []
    if int(abi.Action.NOTIFYENFORCER) in acts:
        notes.append("monitor mode: enforcer notifications are only reported" if monitor
                     else "notifies the policy's enforcer (spec.enforcers)")
    if acts & {int(abi.Action.GETURL), int(abi.Action.DNSLOOKUP)}:
        notes.append("GetUrl / DnsLookup made by the agent after the event (queued, "
                     "rate-limited, dropped and counted when the queue is full)")
    if _wants_ima(cfg):
        notes.append("imaHash: the file hashed by a sleepable BPF LSM program "
                     "(bpf_ima_file_hash) before the event is posted")
    if any(k == "ret_action" or k.endswith(".sock_arg") for k in cfg) or \
            acts & {int(abi.Action.TRACKSOCK), int(abi.Action.UNTRACKSOCK)}:
        notes.append("tracks socket owners for the policy's sock arguments")
    return tuple(getattr(b, "requests", ())), "; ".join(notes)


def _syscall_name(call: str) -> tuple[str, bool]:
    """("dup", 32-bit entry point?) of an enforcer call name."""
    for prefix, compat in (("__x64_sys_", False), ("__ia32_sys_", True),
                           ("__ia32_compat_sys_", True), ("compat_sys_", True),
                           ("sys_", False)):
        if call.startswith(prefix):
            return call[len(prefix):], compat
    return call, False


def compile_enforcer(spec: Any, view: Any, monitor: bool) -> EnforcerPlan | None:
    """Plan spec.enforcers (at most one, by the schema) for this kernel."""
    from vigil.policy.compiler import CompileError

    enforcers = getattr(spec, "enforcers", None) or ()
    if not enforcers:
        return None
    where = "spec.enforcers[0]"
    lists = {str(lst.name): [str(v) for v in lst.values]
             for lst in getattr(spec, "lists", None) or ()
             if _s(lst.type if lst.type is not None else "syscalls") == "syscalls"}
    names: list[str] = []
    for j, call in enumerate(enforcers[0].calls):
        call = str(call)
        if call.startswith("list:"):
            lst = lists.get(call[5:])
            if lst is None:
                raise CompileError(f"{where}.calls[{j}]", f"no list {call[5:]} in spec.lists",
                                   invalid=True)
            names += lst
        else:
            names.append(call)
    nums: dict[int, str] = {}
    compat: list[str] = []
    for name in names:
        base, is_compat = _syscall_name(name)
        if is_compat:
            compat.append(name)  # 32-bit entry points: see the mechanism text
            continue
        nr = syscall_number(base)
        if nr is None:
            raise CompileError(f"{where}.calls", f"unknown syscall {name}")
        nums.setdefault(nr, base)
    if not nums:
        raise CompileError(f"{where}.calls", "the enforcer lists no 64-bit syscall",
                           invalid=True)
    skipped = f"; 32-bit entry points not hooked: {', '.join(compat)}" if compat else ""
    if view.fmod_ret_syscall:
        funcs = tuple(f"__x64_sys_{n}" for n in nums.values())
        return EnforcerPlan(where, "vg_enf_fmodret", funcs, (),
                            f"fmod_ret {', '.join(funcs)}{skipped}",
                            "monitor mode: notifications only reported" if monitor else
                            "a notified thread's next listed syscall does not run: it "
                            "returns argError, and argSig is sent")
    return EnforcerPlan(where, "vg_enf_sys_exit", (), tuple(sorted(nums)),
                        "raw_tp sys_exit filtered to " + ", ".join(nums.values()) +
                        " (fmod_ret on syscalls unavailable: the kernel refuses it)" + skipped,
                        "monitor mode: notifications only reported" if monitor else
                        "argSig sent at the exit of the notified thread's listed syscall: "
                        "the process never sees its result, but the syscall has run "
                        "(argError cannot be applied without fmod_ret on syscalls)")
