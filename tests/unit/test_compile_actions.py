"""Compiling the actions that act beyond the hook (pure: no kernel, no root).

The enforcer's mechanism follows the kernel view (fmod_ret on syscalls, else raw_tp
sys_exit + signal, where argError alone is refused with the kernel reason); stack
symbolization is checked against a kallsyms text and this interpreter's own ELF.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.test_policy_refused import fixture_view
from vigil.policy.compiler import CompileError, compile_policy
from vigil.policy.loader import load_policy

KILLER = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: killer
spec:
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2", "__ia32_sys_dup"]
  enforcers:
  - calls: ["list:dups"]
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - index: 4
      type: syscall64
    selectors:
    - matchArgs:
      - index: 0
        operator: InMap
        values: ["list:dups"]
      matchActions:
      - action: NotifyEnforcer
{extra}
"""


def _plan(extra: str, **view: bool):
    from dataclasses import replace
    policy = load_policy(KILLER.format(extra=extra), source="t.yaml")
    return compile_policy(policy, replace(fixture_view(), **view))


def test_enforcer_without_fmod_ret_is_sys_exit_and_signal() -> None:
    plan = _plan("        argError: -1\n        argSig: 9")
    e = plan.enforcer
    assert e.program == "vg_enf_sys_exit" and e.syscalls == (32, 33)
    assert "__ia32_sys_dup" in e.mechanism and "the syscall has run" in e.enforcement


def test_enforcer_with_fmod_ret_on_syscalls() -> None:
    plan = _plan("        argError: -1", fmod_ret_syscall=True)
    e = plan.enforcer
    assert e.program == "vg_enf_fmodret"
    assert e.functions == ("__x64_sys_dup", "__x64_sys_dup2")
    assert "does not run" in e.enforcement


def test_error_only_notification_needs_fmod_ret_on_syscalls() -> None:
    with pytest.raises(CompileError, match="cannot make a syscall return argError") as err:
        _plan("        argError: -1")
    assert not err.value.unsupported and not err.value.invalid  # a kernel reason


def test_kernel_symbols(tmp_path: Path) -> None:
    from vigil.events.stacks import Symbolizer
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffff81000000 T _stext\nffffffff81000100 T do_thing\n"
                  "ffffffff81000200 t helper\nffffffffc0000000 t modfn\t[mymod]\n"
                  "ffffffff81000150 d some_data\n")
    s = Symbolizer(kallsyms=str(ks))
    out = s.kernel([0xffffffff81000110, 0, 0xffffffffc0000004, 0xffffffff81000100])
    assert out == [
        {"address": str(0xffffffff81000110), "offset": "16", "symbol": "do_thing"},
        {"address": str(0xffffffffc0000004), "offset": "4", "symbol": "modfn",
         "module": "mymod"},
        {"address": str(0xffffffff81000100), "symbol": "do_thing"}]


def test_user_symbols_from_this_process() -> None:
    """An address inside libc's `getpid` (found through ctypes' dlsym) symbolizes to it."""
    import ctypes
    from vigil.events.stacks import Symbolizer
    libc = ctypes.CDLL(None)
    addr = ctypes.cast(libc.getpid, ctypes.c_void_p).value + 1
    out = Symbolizer().user(os.getpid(), [addr, 12345])
    assert len(out) == 1  # 12345 is in no mapping: left out
    assert out[0]["module"].endswith("libc.so.6") and "getpid" in out[0]["symbol"]
    assert out[0]["offset"] == "1"


def test_request_outcomes_are_a_metric() -> None:
    """Every GetUrl / DnsLookup outcome, drops included, is counted in a metric family."""
    from types import SimpleNamespace

    from vigil.actions_net import Requester
    from vigil.metrics.collectors import AgentCollector, MetricsSources
    req = Requester()
    req.counts[("url", "ok")] = 3
    req.counts[("dns", "dropped_queue_full")] = 2
    pe = SimpleNamespace(requester=req)
    fams = {f.name: f for f in AgentCollector("vigil", MetricsSources(
        policy_events=lambda: pe)).collect()}
    samples = {(s.labels["kind"], s.labels["result"]): s.value
               for s in fams["vigil_policy_action_requests"].samples if s.name.endswith("_total")}
    assert samples == {("url", "ok"): 3, ("dns", "dropped_queue_full"): 2}


RETURN_ACTIONS = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: ret-actions
spec:
  kprobes:
  - call: sys_openat
    return: true
    returnArg:
      index: 0
      type: int
    selectors:
    - matchActions:
      - action: Post
      matchReturnArgs:
      - index: 0
        operator: LT
        values: ["0"]
      matchReturnActions:
      - action: Signal
        argSig: 15
      - action: Post
        rateLimit: 2m
        rateLimitScope: process
    - matchReturnActions:
      - action: Sigkill
      - action: NoPost
"""


def test_return_actions_in_the_selectors() -> None:
    """matchReturnActions go to the selector's ret_actions (its actions untouched), count
    as enforcement, and size the rate-limit map for a rate-limited return Post."""
    from vigil.abi._generated import Action
    from vigil.abi.pack import unpack_field
    plan = compile_policy(load_policy(RETURN_ACTIONS, source="t.yaml"), fixture_view())
    [hook] = plan.hooks
    cfg = hook.config

    def f(name: str) -> int:
        return unpack_field("vg_hook_cfg", name, cfg)
    assert (f("sel[0].nactions"), f("sel[0].actions[0].action")) == (1, int(Action.POST))
    assert f("sel[0].nret_actions") == 2
    assert (f("sel[0].ret_actions[0].action"), f("sel[0].ret_actions[0].arg")) == (
        int(Action.SIGNAL), 15)
    assert (f("sel[0].ret_actions[1].action"), f("sel[0].ret_actions[1].rate_ns"),
            f("sel[0].ret_actions[1].scope")) == (int(Action.POST), 120 * 10**9, 1)
    assert f("sel[1].nret_actions") == 2
    assert [f(f"sel[1].ret_actions[{k}].action") for k in range(2)] == [
        int(Action.SIGKILL), int(Action.NOPOST)]
    assert f("sel[1].nactions") == 1  # a selector without matchActions posts
    assert hook.map_sizes.get("vg_gen_rate")
    assert "signal sent synchronously" in hook.enforcement
    assert plan.mode == "enforce"


RETURN_NEW = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: ret-new
spec:
  enforcers:
  - calls: ["sys_dup2"]
  kprobes:
  - call: sys_openat
    return: true
    args:
    - index: 1
      type: string
    returnArg:
      index: 0
      type: int
    selectors:
    - matchActions:
      - action: GetUrl
        argUrl: http://127.0.0.1:9/entry
      - action: CleanupEnforcerNotification
      matchReturnActions:
      - action: GetUrl
        argUrl: http://127.0.0.1:9/return
      - action: NotifyEnforcer
        argSig: 9
      - action: Post
        userStackTrace: true
    - matchReturnActions:
      - action: DnsLookup
        argFqdn: ret.example
      - action: CleanupEnforcerNotification
"""


def test_new_return_actions_and_their_requests() -> None:
    """GetUrl / DnsLookup, NotifyEnforcer, CleanupEnforcerNotification and a stack Post
    in matchReturnActions compile to ret_actions; an entry and a return GetUrl of one
    selector are two requests, told apart by `ret`."""
    from vigil.abi._generated import Action, ActionFlag
    from vigil.abi.pack import unpack_field
    from vigil.policy.compile_actions import Request
    plan = compile_policy(load_policy(RETURN_NEW, source="t.yaml"), fixture_view())
    [hook] = plan.hooks
    cfg = hook.config

    def f(name: str) -> int:
        return unpack_field("vg_hook_cfg", name, cfg)
    assert [f(f"sel[0].actions[{k}].action") for k in range(2)] == [
        int(Action.GETURL), int(Action.CLEANUPENFORCER)]
    assert [f(f"sel[0].ret_actions[{k}].action") for k in range(3)] == [
        int(Action.GETURL), int(Action.NOTIFYENFORCER), int(Action.POST)]
    assert (f("sel[0].ret_actions[1].sig"), f("sel[0].ret_actions[2].flags")) == (
        9, int(ActionFlag.USTACK))
    assert [f(f"sel[1].ret_actions[{k}].action") for k in range(2)] == [
        int(Action.DNSLOOKUP), int(Action.CLEANUPENFORCER)]
    assert sorted(hook.requests, key=lambda r: (r.selector, r.ret)) == [
        Request(0, "url", "http://127.0.0.1:9/entry", False),
        Request(0, "url", "http://127.0.0.1:9/return", True),
        Request(1, "dns", "ret.example", True)]


def test_ima_hash_in_return_actions_is_invalid() -> None:
    """lsmhooks have no return path: imaHash in matchReturnActions is malformed."""
    from vigil.errors import PolicyError
    pol = RETURN_NEW.replace("        userStackTrace: true", "        imaHash: true")
    with pytest.raises(PolicyError) as err:
        load_policy(pol, source="t.yaml")
    [d] = err.value.diagnostics
    assert d.path.endswith("matchReturnActions[2].imaHash")
    assert "lsmhooks have no return path" in d.message
