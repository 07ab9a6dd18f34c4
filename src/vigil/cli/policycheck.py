"""``vigil tracingpolicy check FILE...``: validate policies and say what each hook becomes.

Needs neither root nor libbpf: what this kernel allows is probed when possible (root and
libbpf present) and otherwise read from sysfs, or taken from ``--kernel-features FILE``
(JSON: {"kprobes", "fentry", "lsm", "kprobe_multi", "fmod_ret", "fmod_ret_syscall": bool,
"kprobe_mode": "auto" | "kprobe" | "kprobe_multi" | "fentry"}). Exit 0 when every policy would
load, 3 when any is invalid or cannot load here.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from vigil.errors import PolicyError


def _view(features_file: str | None) -> tuple[Any, str]:
    from vigil.policy.compiler import KernelView
    from vigil.policy.tracefs import read_format, tracefs_root
    formats = read_format if tracefs_root() else None
    if features_file:
        with open(features_file) as f:
            feats = json.load(f)
        return KernelView(kprobes=bool(feats.get("kprobes")), fentry=bool(feats.get("fentry")),
                          lsm=bool(feats.get("lsm")), formats=formats,
                          kprobe_multi=bool(feats.get("kprobe_multi")),
                          fmod_ret=bool(feats.get("fmod_ret")),
                          fmod_ret_syscall=bool(feats.get("fmod_ret_syscall")),
                          kprobe_mode=str(feats.get("kprobe_mode") or "auto"),
                          host_ns_deferred=True), \
            f"from {features_file}"
    if os.geteuid() == 0:
        try:
            from vigil.daemon.policies import kernel_view
            return kernel_view(), "probed on this kernel"
        except Exception as err:  # libbpf missing or a probe refused: fall back to sysfs
            reason = f"probing failed: {err}"
    else:
        reason = "not root: BPF features not probed"
    kprobes = os.path.isdir("/sys/bus/event_source/devices/kprobe")
    return KernelView(kprobes=kprobes, formats=formats, host_ns_deferred=True), \
        f"{reason}; kprobes from sysfs"


def _check_one(path: str, view: Any) -> dict[str, Any]:
    from vigil.policy.compiler import CompileError, compile_policy, diagnostic
    from vigil.policy.loader import load_policy_file
    try:
        policy = load_policy_file(path)
    except PolicyError as err:
        return {"file": path, "ok": False, "diagnostics": [str(d) for d in err.diagnostics]}
    except OSError as err:
        return {"file": path, "ok": False, "diagnostics": [f"{path}: {err.strerror}"]}
    try:
        plan = compile_policy(policy, view)
    except CompileError as err:
        return {"file": path, "ok": False, "name": policy.metadata.name,
                "diagnostics": [str(diagnostic(err, policy, path))]}
    hooks = [{"section": sec, "mechanism": mech, "enforcement": enf or "observe only (events)"}
             for sec, mech, enf in plan.described()]
    return {"file": path, "ok": True, "name": plan.name, "mode": plan.mode, "hooks": hooks,
            "notes": list(plan.notes),
            "warnings": [str(w) for w in getattr(policy, "warnings", ()) or ()]
            + [str(diagnostic(CompileError(where, msg), policy, path, "warning"))
               for where, msg in plan.warnings]}


def _print_text(r: dict[str, Any]) -> None:
    if not r["ok"]:
        for d in r["diagnostics"]:
            click.echo(d)
        return
    click.echo(f"{r['file']}: ok: TracingPolicy {r['name']!r} (mode {r['mode']})")
    for w in r["warnings"]:
        click.echo(f"  warning: {w}")
    for h in r["hooks"]:
        click.echo(f"  {h['section']}: {h['mechanism']}")
        click.echo(f"      {h['enforcement']}")


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--kernel-features", metavar="FILE",
              help="JSON {kprobes, fentry, lsm} describing another kernel, instead of probing.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def check(files: tuple[str, ...], kernel_features: str | None, output: str) -> None:
    """Validate policies (no root needed) and show what each hook becomes here."""
    view, how = _view(kernel_features)
    results = [_check_one(f, view) for f in files]
    if output == "json":
        click.echo(json.dumps({"kernel": how, "policies": results}, indent=2))
    else:
        click.echo(f"# kernel features: {how}", err=True)
        for r in results:
            _print_text(r)
    if not all(r["ok"] for r in results):
        sys.exit(3)
