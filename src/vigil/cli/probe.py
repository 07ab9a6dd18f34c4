"""``vigil probe``: which BPF features the running kernel allows, like ``tetra probe``.

Text: one ``name: true|false`` line per feature, with the reason after false ones.
JSON: ``{"probes": [{"name", "ok", "reason"}, ...], "kernel": {...}}``. The last probes
are the kernel functions (kfuncs) policy features call, found in the kernel's BTF.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from vigil.bpf.features import ProbeResult

# (probe name, kernel function, the policy feature that needs it)
KFUNCS = (("kfunc_strnstr", "bpf_strnstr", "SubString"),
          ("kfunc_strncasestr", "bpf_strncasestr", "SubStringIgnCase"))


def kfunc_results() -> list[ProbeResult]:
    """One result per entry of KFUNCS: whether the kernel's BTF has the function."""
    from vigil.bpf.features import ProbeResult
    from vigil.policy.kbtf import has_kfunc
    out = []
    for name, func, feature in KFUNCS:
        ok = has_kfunc(func)
        out.append(ProbeResult(name, ok, "" if ok else
                           f"{func} is not in this kernel's BTF: {feature} is refused"))
    return out


@click.command("probe")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
@click.option("--mount/--no-mount", default=True, show_default=True,
              help="Mount tracefs, bpffs, cgroup2 and securityfs first if missing (as the "
                   "agent does).")
def probe(output: str, mount: bool) -> None:
    """Probe which BPF features this kernel allows (loads tiny programs; root)."""
    from vigil.bpf import features as F
    from vigil.bpf import mounts

    if mount:
        report = mounts.ensure()
        for kind, where in report.mounted.items():
            click.echo(f"mounted {kind} on {where}", err=True)
        for why in report.failed.values():
            click.echo(f"warning: {why}", err=True)
    why = F.privileges()
    if why:
        click.echo(f"warning: {why}", err=True)
    results = [*F.probe_all(), *kfunc_results()]
    if output == "json":
        kernel = {
            "btf": F.btf_available(), "bpf_lsm": F.bpf_lsm_enabled(),
            "lockdown": F.lockdown(), "privileges": why,
        }
        doc = {"probes": [{"name": r.name, "ok": r.ok, "reason": r.reason} for r in results],
               "kernel": kernel}
        click.echo(json.dumps(doc, indent=2))
        return
    for r in results:
        line = f"{r.name}: {str(r.ok).lower()}"
        click.echo(line if r.ok else f"{line} ({r.reason})")
