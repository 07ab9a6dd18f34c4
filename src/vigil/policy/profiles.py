"""Kernel feature profiles: what another kernel allows, for checking policies against it.

``vigil tracingpolicy check --kernel-features NAME|FILE`` compiles policies for the kernel a
profile describes instead of the running one. A profile names only BPF program features
(the attach mechanisms a policy may need); the kernel's BTF (function signatures,
``resolve`` paths) is still read from this host, so a profile is exact for the same kernel
build with other settings and close for other kernels.

The named profiles are the stock kernels the project tests under qemu, as measured by
``vigil probe`` inside them, plus ``full`` (every feature) and ``none``. The ``kfunc_*``
features are kernel functions BPF programs may call: a kernel has them when its BTF
names them (``vigil.policy.kbtf.has_kfunc``).
"""

from __future__ import annotations

import json
from typing import Any

#: every BPF feature a profile sets, with what needs it; commonest first
FEATURES: dict[str, str] = {
    "kprobes": "kernel-function hooks (kprobes, kretprobes)",
    "kprobe_multi": "kernel-function lists attached at once (kprobe.multi)",
    "fentry": "BPF trampolines (fentry/fexit: spec.fentries)",
    "lsm": "BPF LSM (lsmhooks, Override on LSM hooks)",
    "fmod_ret": "fmod_ret on security_* functions (Override)",
    "fmod_ret_syscall": "fmod_ret on syscall functions (Override on syscalls)",
    "probe_write_user": "writing user memory (bpf_probe_write_user: Set on usdts; refused "
                        "under kernel lockdown)",
    "uprobe_regs": "uprobe programs that write the registers (Override on uprobes)",
    "kfunc_strnstr": "the BPF kernel function bpf_strnstr (SubString; Linux 6.17 or later)",
    "kfunc_strncasestr": "the BPF kernel function bpf_strncasestr (SubStringIgnCase; Linux "
                         "6.19 or later)",
}

PROFILES: dict[str, dict[str, Any]] = {
    "full": {f: True for f in FEATURES},
    "none": {f: False for f in FEATURES},
    "debian-6.1": {"kprobes": True, "kprobe_multi": False, "fentry": True, "lsm": True,
                   "fmod_ret": True, "fmod_ret_syscall": False, "probe_write_user": True,
                   "uprobe_regs": False, "kfunc_strnstr": False, "kfunc_strncasestr": False},
    "debian-6.12": {"kprobes": True, "kprobe_multi": True, "fentry": True, "lsm": True,
                    "fmod_ret": True, "fmod_ret_syscall": False, "probe_write_user": True,
                    "uprobe_regs": False, "kfunc_strnstr": False, "kfunc_strncasestr": False},
    "debian-7.2": {"kprobes": True, "kprobe_multi": True, "fentry": True, "lsm": True,
                   "fmod_ret": True, "fmod_ret_syscall": True, "probe_write_user": True,
                   "uprobe_regs": True, "kfunc_strnstr": True, "kfunc_strncasestr": True},
}


class ProfileError(ValueError):
    """A profile name that does not exist, or a profile file that cannot be used."""


def load_profile(name_or_file: str) -> tuple[dict[str, Any], str]:
    """The features of a named profile or of a JSON file (``{"kprobes": true, ...,
    "kprobe_mode": "auto"}``; missing features are false), and how to describe it."""
    if name_or_file in PROFILES:
        return dict(PROFILES[name_or_file]), f"profile {name_or_file}"
    try:
        with open(name_or_file, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ProfileError(f"{name_or_file}: no such profile or file (profiles: "
                           f"{', '.join(PROFILES)})") from None
    except (OSError, ValueError) as err:
        raise ProfileError(f"{name_or_file}: {err}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{name_or_file}: expected a JSON object of features")
    unknown = sorted(set(raw) - set(FEATURES) - {"kprobe_mode"})
    if unknown:
        raise ProfileError(f"{name_or_file}: unknown feature(s) {', '.join(unknown)} "
                           f"(known: {', '.join(FEATURES)}, kprobe_mode)")
    feats: dict[str, Any] = {f: bool(raw.get(f)) for f in FEATURES}
    feats["kprobe_mode"] = str(raw.get("kprobe_mode") or "auto")
    return feats, f"from {name_or_file}"


__all__ = ["FEATURES", "PROFILES", "ProfileError", "load_profile"]
