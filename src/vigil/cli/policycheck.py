"""``vigil tracingpolicy check FILE...``: a policy linter anyone can run.

It validates everything that does not need the kernel (the document, every field, the
selectors, the actions), then compiles each policy for a kernel and says what each hook
becomes there. Which kernel:

* root, no option: this one, probed as the agent probes it (tiny BPF programs);
* not root: this one as far as files tell (the kprobe PMU in sysfs); BPF program
  features that only a load can reveal are treated as missing, and said so;
* ``--kernel-features NAME|FILE``: a profile (``vigil.policy.profiles``): ``full``,
  ``debian-6.1``, ``debian-6.12``, ``debian-7.2``, ``none``, or a JSON file.

The kernel's BTF and tracepoint formats are read from this host when readable. When
tracefs cannot be read (not mounted, or not readable by this user), tracepoint hooks are
checked against a stand-in layout and the report says their field indexes and types were
not verified: a warning, not an error. Nothing is mounted or loaded by ``check`` itself,
except the feature probes when run as root.

Exit status: 0 every policy is valid and loads on that kernel; 3 a policy is invalid
(located errors); 4 valid, but that kernel cannot load it (the reason, and which kernel
features would); 2 usage errors.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any

import click

from vigil.errors import PolicyError

EXIT_OK, EXIT_INVALID, EXIT_UNLOADABLE = 0, 3, 4


@dataclass
class _Formats:
    """Tracepoint formats for check: the real ones when tracefs can be read, else the
    stand-in layout, noting each tracepoint checked that way."""

    unverified: dict[str, str] = field(default_factory=dict)   # "subsys/event" -> why

    def __call__(self, subsystem: str, event: str) -> Any:
        from vigil.policy.tracefs import TracefsUnavailable, read_format, stand_in_format
        try:
            return read_format(subsystem, event)
        except TracefsUnavailable as err:
            self.unverified[f"{subsystem}/{event}"] = err.strerror or str(err)
            return stand_in_format(subsystem, event)


@dataclass
class _Target:
    """The kernel policies are checked against."""

    view: Any                 # vigil.policy.compiler.KernelView
    how: str                  # where its features came from
    formats: _Formats
    notes: list[str] = field(default_factory=list)


def _target(features: str | None) -> _Target:
    from vigil.policy.compiler import KernelView
    from vigil.policy.kbtf import kernel_btf
    from vigil.policy.profiles import load_profile
    formats = _Formats()
    if features:
        feats, how = load_profile(features)
        view = KernelView(**feats, btf=kernel_btf(), formats=formats, host_ns_deferred=True)
        return _Target(view, f"{how} (BTF and tracepoint formats of this host)", formats)
    if os.geteuid() == 0:
        try:
            from vigil.daemon.policies import kernel_view
            return _Target(replace(kernel_view(), formats=formats), "probed on this kernel",
                           formats)
        except Exception as err:  # libbpf missing or a probe refused: fall back to sysfs
            reason = f"probing failed: {err}"
    else:
        reason = "not root: BPF program features not probed"
    kprobes = os.path.isdir("/sys/bus/event_source/devices/kprobe")
    view = KernelView(kprobes=kprobes, btf=kernel_btf(), formats=formats,
                      host_ns_deferred=True)
    return _Target(view, f"{reason}; kprobes from sysfs ({str(kprobes).lower()}); fentry, "
                   "kprobe.multi, fmod_ret and BPF LSM treated as missing", formats)


def _needs(policy: Any, view: Any) -> list[str] | None:
    """The kernel features that would let ``policy`` compile (a minimal set, found by
    dropping features from a full kernel one at a time, rarest first), or None if even a full kernel
    refuses it (then the policy itself is at fault)."""
    from vigil.policy.compiler import CompileError, compile_policy
    from vigil.policy.profiles import FEATURES
    have = {f: True for f in FEATURES}

    def compiles(feats: dict[str, bool]) -> bool:
        try:
            compile_policy(policy, replace(view, **feats))
        except CompileError:
            return False
        return True
    if not compiles(have):
        return None
    # drop the rarest features first, so the answer names the commonest mechanism
    for f in reversed(FEATURES):
        if getattr(view, f):
            continue
        trial = {**have, f: False}
        if compiles(trial):
            have = trial
    return [f for f in FEATURES if have[f] and not getattr(view, f)]


def _check_one(path: str, target: _Target) -> dict[str, Any]:
    from vigil.policy.compiler import CompileError, compile_policy, diagnostic
    from vigil.policy.loader import load_policy_file
    from vigil.policy.profiles import FEATURES
    target.formats.unverified.clear()
    try:
        policy = load_policy_file(path)
    except PolicyError as err:
        return {"file": path, "verdict": "invalid",
                "diagnostics": [str(d) for d in err.diagnostics]}
    except OSError as err:
        return {"file": path, "verdict": "invalid",
                "diagnostics": [f"{path}: {err.strerror or err}"]}
    warnings = [str(w) for w in getattr(policy, "warnings", ()) or ()]
    try:
        plan = compile_policy(policy, target.view)
    except CompileError as err:
        diag = str(diagnostic(err, policy, path))
        needs = _needs(policy, target.view)
        if needs is None:
            return {"file": path, "verdict": "invalid", "name": policy.metadata.name,
                    "diagnostics": [diag], "warnings": warnings}
        return {"file": path, "verdict": "unloadable", "name": policy.metadata.name,
                "diagnostics": [diag], "needs": [f"{f}: {FEATURES[f]}" for f in needs],
                "warnings": warnings + _unverified(target)}
    hooks = [{"section": sec, "mechanism": mech, "enforcement": enf or "observe only (events)"}
             for sec, mech, enf in plan.described()]
    return {"file": path, "verdict": "ok", "name": plan.name, "mode": plan.mode,
            "hooks": hooks, "notes": list(plan.notes),
            "warnings": warnings + [str(diagnostic(CompileError(where, msg), policy, path,
                                                   "warning"))
                                    for where, msg in plan.warnings] + _unverified(target)}


def _unverified(target: _Target) -> list[str]:
    return [f"tracepoint {tp}: field indexes and types not verified ({why}; run as root "
            "on the target kernel to verify)" for tp, why in target.formats.unverified.items()]


def _print_text(r: dict[str, Any]) -> None:
    if r["verdict"] == "invalid":
        for d in r["diagnostics"]:
            click.echo(d)
        return
    if r["verdict"] == "unloadable":
        click.echo(f"{r['file']}: valid, but this kernel cannot load TracingPolicy "
                   f"{r['name']!r}:")
        for d in r["diagnostics"]:
            click.echo(f"  {d}")
        click.echo("  it would load with: " + "; ".join(r["needs"]))
    else:
        click.echo(f"{r['file']}: ok: TracingPolicy {r['name']!r} (mode {r['mode']})")
    for w in r["warnings"]:
        click.echo(f"  warning: {w}")
    for h in r.get("hooks", ()):
        click.echo(f"  {h['section']}: {h['mechanism']}")
        click.echo(f"      {h['enforcement']}")


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--kernel-features", metavar="NAME|FILE",
              help="Check against another kernel: a profile name (full, debian-6.1, "
                   "debian-6.12, debian-7.2, none) or a JSON file of features.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def check(files: tuple[str, ...], kernel_features: str | None, output: str) -> None:
    """Validate policies (no root needed) and show what each hook becomes.

    Exit 0: valid and loadable; 3: invalid; 4: valid, but the kernel cannot load it.
    """
    from vigil.policy.profiles import ProfileError
    try:
        target = _target(kernel_features)
    except ProfileError as err:
        raise click.BadParameter(str(err), param_hint="--kernel-features") from None
    results = [_check_one(f, target) for f in files]
    if output == "json":
        click.echo(json.dumps({"kernel": target.how, "policies": results}, indent=2))
    else:
        click.echo(f"# kernel features: {target.how}", err=True)
        for r in results:
            _print_text(r)
    verdicts = {r["verdict"] for r in results}
    if "invalid" in verdicts:
        sys.exit(EXIT_INVALID)
    if "unloadable" in verdicts:
        sys.exit(EXIT_UNLOADABLE)
