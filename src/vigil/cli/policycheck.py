"""``vigil tracingpolicy check FILE...``: a policy linter anyone can run.

It validates everything that does not need the kernel (the document, every field, the
selectors, the actions), then compiles each policy for a kernel and says what each hook
becomes there. Which kernel:

* root, no option: this one, probed as the agent probes it (tiny BPF programs);
* not root: this one as far as files tell (the kprobe PMU in sysfs); BPF program
  features that only a load can reveal are treated as missing, and said so;
* ``--kernel-features NAME|FILE``: a profile (``vigil.policy.profiles``): ``full``,
  ``debian-6.1``, ``debian-6.12``, ``debian-7.2``, ``none``, or a JSON file.

The kernel's BTF and tracepoint formats are read from this host when readable;
``--btf FILE`` takes the BTF (which functions exist, their parameters, ``resolve`` paths)
from another kernel instead: its raw BTF or its ELF ``vmlinux``. When
tracefs cannot be read (not mounted, or not readable by this user), tracepoint hooks are
checked against a stand-in layout and the report says their field indexes and types were
not verified: a warning, not an error. Nothing is mounted or loaded by ``check`` itself,
except the feature probes when run as root.

Exit status: 0 every policy is valid and loads on that kernel; 3 a policy is refused on
every kernel: invalid (located errors), or valid but asking for a feature this version of
Vigil does not have (verdict ``unsupported``, naming it); 4 valid, but that kernel cannot
load it (the reason, and which kernel features, or which kernel build, would); 2 usage
errors.
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


def _target(features: str | None, btf_file: str | None = None) -> _Target:
    """The kernel to check against: a profile's features or this kernel's, with this
    host's BTF or the one ``btf_file`` holds."""
    btf = None
    if btf_file:
        from vigil.policy.kbtf import KernelBtf
        btf = KernelBtf.from_file(btf_file)  # first: a bad file fails before any probe
    target = _features_target(features)
    if btf is not None:
        target.view = replace(target.view, btf=btf)
        target.how = target.how.replace("BTF and tracepoint formats of this host",
                                        "tracepoint formats of this host")
        target.how += f"; BTF from {btf_file}"
    return target


def _features_target(features: str | None) -> _Target:
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
        except Exception as err:  # noqa: BLE001 - libbpf missing or a probe refused: fall back to sysfs
            reason = f"probing failed: {err}"
    else:
        reason = "not root: BPF program features not probed"
    kprobes = os.path.isdir("/sys/bus/event_source/devices/kprobe")
    from vigil.policy.kbtf import has_kfunc
    view = KernelView(kprobes=kprobes, btf=kernel_btf(), formats=formats,
                      host_ns_deferred=True, kfunc_strnstr=has_kfunc("bpf_strnstr"),
                      kfunc_strncasestr=has_kfunc("bpf_strncasestr"))
    return _Target(view, f"{reason}; kprobes from sysfs ({str(kprobes).lower()}); fentry, "
                   "kprobe.multi, fmod_ret and BPF LSM treated as missing", formats)


def _full_error(policy: Any, view: Any) -> Any:
    """The CompileError ``policy`` meets on a kernel with every BPF feature (same BTF and
    tracepoints), or None if it compiles there."""
    from vigil.policy.compiler import CompileError, compile_policy
    from vigil.policy.profiles import PROFILES
    try:
        compile_policy(policy, replace(view, **PROFILES["full"]))
    except CompileError as err:
        return err
    return None


def _needs(policy: Any, view: Any) -> list[str]:
    """The kernel features that let ``policy`` compile, which a full kernel does: a
    minimal set, found by dropping features from a full kernel one at a time, rarest
    first, so the answer names the commonest mechanism."""
    from vigil.policy.compiler import CompileError, compile_policy
    from vigil.policy.profiles import FEATURES
    have = {f: True for f in FEATURES}

    def compiles(feats: dict[str, bool]) -> bool:
        try:
            compile_policy(policy, replace(view, **feats))
        except CompileError:
            return False
        return True
    for f in reversed(FEATURES):
        if getattr(view, f):
            continue
        trial = {**have, f: False}
        if compiles(trial):
            have = trial
    return [f for f in FEATURES if have[f] and not getattr(view, f)]


def _refusal(err: Any, policy: Any, path: str, target: _Target) -> dict[str, Any]:
    """Why ``policy`` does not compile for the target, classified: invalid (its own
    fault), unsupported (a feature this version of Vigil lacks, on every kernel), or
    unloadable (valid; another kernel, or other BPF features, would load it)."""
    from vigil.policy.compiler import diagnostic
    from vigil.policy.profiles import FEATURES
    out: dict[str, Any] = {"file": path, "name": policy.metadata.name}
    if not err.kernel_lacks:
        full = _full_error(policy, target.view)
        if full is None:
            return {**out, "verdict": "unloadable",
                    "diagnostics": [str(diagnostic(err, policy, path))],
                    "needs": [f"{f}: {FEATURES[f]}" for f in _needs(policy, target.view)]}
        if full.kernel_lacks or full.unsupported:
            err = full  # what stands in the way on any kernel is the news
        else:
            return {**out, "verdict": "invalid",
                    "diagnostics": [str(diagnostic(err, policy, path))]}
    diag = [str(diagnostic(err, policy, path))]
    if err.kernel_lacks:  # valid for another kernel build: no BPF feature helps
        return {**out, "verdict": "unloadable", "diagnostics": diag,
                "needs": [f"a kernel with {err.kernel_lacks} (this kernel has none)"]}
    return {**out, "verdict": "unsupported", "diagnostics": diag}


def _check_one(path: str, target: _Target) -> dict[str, Any]:
    from vigil.policy.compiler import CompileError, compile_policy, diagnostic
    from vigil.policy.loader import load_policy_file
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
        return {**_refusal(err, policy, path, target),
                "warnings": warnings + _unverified(target)}
    hooks = [{"section": sec, "mechanism": mech, "enforcement": enf or "observe only (events)"}
             for sec, mech, enf in plan.described()]
    from vigil.policy.scope import describe_selector
    nodes = describe_selector(plan.node_selector) if plan.node_selector is not None else ""
    return {"file": path, "verdict": "ok", "name": plan.name, "mode": plan.mode,
            "hooks": hooks, "notes": list(plan.notes), "node_selector": nodes,
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
    if r["verdict"] == "unsupported":
        click.echo(f"{r['file']}: valid, but this version of Vigil cannot load "
                   f"TracingPolicy {r['name']!r} on any kernel:")
        for d in r["diagnostics"]:
            click.echo(f"  {d}")
        return
    if r["verdict"] == "unloadable":
        click.echo(f"{r['file']}: valid, but this kernel cannot load TracingPolicy "
                   f"{r['name']!r}:")
        for d in r["diagnostics"]:
            click.echo(f"  {d}")
        click.echo("  it would load with: " + "; ".join(r["needs"]))
    else:
        click.echo(f"{r['file']}: ok: TracingPolicy {r['name']!r} (mode {r['mode']})")
    if r.get("node_selector"):
        click.echo(f"  loads only on nodes whose labels match spec.nodeSelector "
                   f"({r['node_selector']}); on other nodes it is listed as skipped")
    for w in r["warnings"]:  # located ones read "file:line:col: warning: ..." already
        click.echo(f"  {w}" if ": warning: " in w else f"  warning: {w}")
    for h in r.get("hooks", ()):
        click.echo(f"  {h['section']}: {h['mechanism']}")
        click.echo(f"      {h['enforcement']}")


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--kernel-features", metavar="NAME|FILE",
              help="Check against another kernel: a profile name (full, debian-6.1, "
                   "debian-6.12, debian-7.2, none) or a JSON file of features.")
@click.option("--btf", "btf_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Another kernel's BTF (raw, as its /sys/kernel/btf/vmlinux, or its "
                   "ELF vmlinux): which functions exist and their parameters.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def check(files: tuple[str, ...], kernel_features: str | None, btf_file: str | None,
          output: str) -> None:
    """Validate policies (no root needed) and show what each hook becomes.

    Exit 0: valid and loadable; 3: invalid; 4: valid, but the kernel cannot load it.
    """
    from vigil.policy.kbtf import BtfError
    from vigil.policy.profiles import ProfileError
    try:
        target = _target(kernel_features, btf_file)
    except ProfileError as err:
        raise click.BadParameter(str(err), param_hint="--kernel-features") from None
    except (OSError, BtfError) as err:
        raise click.BadParameter(f"{btf_file}: {getattr(err, 'strerror', None) or err}",
                                 param_hint="--btf") from None
    results = [_check_one(f, target) for f in files]
    if output == "json":
        click.echo(json.dumps({"kernel": target.how, "policies": results}, indent=2))
    else:
        click.echo(f"# kernel features: {target.how}", err=True)
        for r in results:
            _print_text(r)
    verdicts = {r["verdict"] for r in results}
    if verdicts & {"invalid", "unsupported"}:
        sys.exit(EXIT_INVALID)
    if "unloadable" in verdicts:
        sys.exit(EXIT_UNLOADABLE)
