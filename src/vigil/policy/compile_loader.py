"""``spec.loader: true`` -> one loader hook: ``process_loader`` events. Pure.

Tetragon reads executable mappings from a kprobe on perf_event_mmap_output; Vigil uses
the mmap(2) syscall tracepoints, which every kernel with tracefs has (no kprobes, no
trampolines): see bpf/loader.bpf.c for what that sees and what it does not.
"""

from __future__ import annotations

from typing import Any

from vigil.abi import _generated as abi
from vigil.policy.plan import Attach, HookPlan

MECHANISM = ("tracepoints syscalls/sys_enter_mmap + sys_exit_mmap: each file mapped "
             "executable by mmap(2) (shared libraries, dlopen); build id read from the "
             "file's ELF note")


def compile_loader(spec: Any, hook_id: int) -> list[HookPlan]:
    if not getattr(spec, "loader", False):
        return []
    attach = (Attach("vg_loader_enter", "tracepoint", ("syscalls", "sys_enter_mmap")),
              Attach("vg_loader_exit", "tracepoint", ("syscalls", "sys_exit_mmap")))
    return [HookPlan(hook_id=hook_id, section="spec.loader", event="process_loader",
                     opcode=int(abi.MsgOp.LOADER), attach=attach, config=b"",
                     mechanism=MECHANISM)]


__all__ = ["MECHANISM", "compile_loader"]
