"""Tetragon's example policies (the 71 files of its examples/tracingpolicy), read in place,
and what this version of Vigil makes of each on a kernel that offers every BPF feature.

The files are not part of the project: they sit in ``shared/tetragon-examples`` next to
the repository (``../shared`` from the repository root; the first ancestor of the
repository holding ``shared/tetragon-examples`` is taken, so a worktree nested one level
deeper finds the same copy), or wherever ``VIGIL_TETRAGON_EXAMPLES`` points.

``FULL_PROFILE`` is the compatibility table: one line per file, ``None`` when Vigil
accepts the file on a kernel with every feature, else why it refuses it. It must stay
exact (tests/unit/test_compat_profile.py): a file that starts being accepted, or a new
refusal, fails until its line is updated.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = "VIGIL_TETRAGON_EXAMPLES"


def examples_dir() -> Path:
    """Where Tetragon's example policies are; FileNotFoundError saying where it looked."""
    if os.environ.get(ENV_DIR):
        d = Path(os.environ[ENV_DIR])
        if d.is_dir():
            return d
        raise FileNotFoundError(f"{ENV_DIR}={d} is not a directory")
    looked = []
    for anc in ROOT.parents:
        d = anc / "shared" / "tetragon-examples"
        looked.append(str(d))
        if d.is_dir():
            return d
    raise FileNotFoundError(
        "Tetragon's example policies are missing: the compatibility tests read them in "
        f"place from shared/tetragon-examples beside the repository (looked in: "
        f"{', '.join(looked)}); copy shared/ next to the clone or set {ENV_DIR}")


def example_files(d: Path) -> list[str]:
    """Every policy file under ``d``, as paths relative to it."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                  if p.suffix in (".yaml", ".yml") and p.is_file())


# Why a file is refused: ("vigil", TEXT) a feature this version of Vigil does not have;
# ("btf", TEXT) the host kernel's BTF lacks what the file names (a function, or this
# function's parameters differ). TEXT is a piece of the refusal's text ("field: message").
def vigil(text: str) -> tuple[str, str]:
    return ("vigil", text)


def btf(text: str) -> tuple[str, str]:
    return ("btf", text)


ACCEPTED = None

FULL_PROFILE: dict[str, tuple[str, str] | None] = {
    "bpf.yaml": ACCEPTED,
    "cves/cve-2023-2640-overlayfs-ubuntu.yaml": ACCEPTED,
    "cves/cve-2024-3094-xz-ssh.yaml": ACCEPTED,
    "datagram-with-selectors.yaml": ACCEPTED,
    "datagram-with-sock-tracking.yaml": ACCEPTED,
    "datagram.yaml": ACCEPTED,
    "datagram_518.yaml": ACCEPTED,
    "dev_hard_start_xmit.yaml": ACCEPTED,
    "dev_queue_xmit.yaml": ACCEPTED,
    "dns-only-specified-servers.yaml": ACCEPTED,
    "fd_install_cap_changes.yaml": ACCEPTED,
    "fd_install_caps.yaml": ACCEPTED,
    "fd_install_ns.yaml": ACCEPTED,
    "fd_install_ns_host.yaml": ACCEPTED,
    "filename_monitoring.yaml": ACCEPTED,
    "filename_monitoring_filtered.yaml": ACCEPTED,
    "hardlink-observe.yaml": ACCEPTED,
    "hardlink-override.yaml": ACCEPTED,
    "host-changes/monitor-kernel-modules.yaml": btf("do_init_module: no such function"),
    "host-changes/monitor-signed-kernel-modules.yaml": btf("find_module_sections: no such function"),
    "killer.yaml": ACCEPTED,
    "kprobe_commit_creds.yaml": ACCEPTED,
    "list-generated-ftrace.yaml": ACCEPTED,
    "list-syscalls-generated.yaml": ACCEPTED,
    "list-syscalls-tracepoint.yaml": ACCEPTED,
    "list-syscalls.yaml": ACCEPTED,
    "loader.yaml": ACCEPTED,
    "lsm_bprm_check.yaml": ACCEPTED,
    "lsm_file_open.yaml": ACCEPTED,
    "lsm_track_grandparent.yml": ACCEPTED,
    "modules-nohost.yaml": ACCEPTED,
    "open_dnsrequest.yaml": ACCEPTED,
    "open_geturl.yaml": ACCEPTED,
    "openat_write.yaml": ACCEPTED,
    "override-security.yaml": ACCEPTED,
    "process-credentials/creds-capability-usage.yaml": ACCEPTED,
    "process-credentials/process-creds-changed.yaml": btf("override_creds: no such function"),
    "process-credentials/process-creds-installed.yaml": ACCEPTED,
    "process-credentials/process.credentials.changes.at.syscalls.yaml": ACCEPTED,
    "process-exec/process-exec-elf-begin.yaml": ACCEPTED,
    "raw_syscalls.yaml": ACCEPTED,
    "rawtp.yaml": ACCEPTED,
    "sandbox/linux-namespaces/kill_unprivileged_user_namespace.yaml": ACCEPTED,
    "sandbox/linux-namespaces/kill_unprivileged_user_namespace_in_pid_namespace.yaml": ACCEPTED,
    "security-socket-connect-block-others.yaml": ACCEPTED,
    "security-socket-connect.yaml": ACCEPTED,
    "security_bprm_check.yaml": ACCEPTED,
    "security_inode_follow_link.yaml": ACCEPTED,
    "stack_traces.yaml": btf("kfree_skb_reason: no such function"),
    "symlink-observe.yaml": ACCEPTED,
    "symlink-override.yaml": ACCEPTED,
    "sys_clock_settime.yaml": ACCEPTED,
    "sys_mount.yaml": ACCEPTED,
    "sys_pivot_root.yaml": ACCEPTED,
    "sys_ptrace.yaml": ACCEPTED,
    "sys_setuid.yaml": ACCEPTED,
    "tcp-accept.yaml": ACCEPTED,
    "tcp-connect-only-local-addrs.yaml": ACCEPTED,
    "tcp-connect-only-private-addrs.yaml": ACCEPTED,
    "tcp-connect-with-selectors.yaml": ACCEPTED,
    "tcp-connect.yaml": ACCEPTED,
    "tcp-listen.yaml": ACCEPTED,
    "tty.yaml": ACCEPTED,
    "tty_54.yaml": btf("tty_write has 2 parameters"),
    "uprobe-binaries.yaml": ACCEPTED,
    "uprobe-host.yaml": ACCEPTED,
    "uprobe-pid.yaml": ACCEPTED,
    "uprobe.yaml": ACCEPTED,
    "usdt-set.yaml": ACCEPTED,
    "usdt.yaml": ACCEPTED,
    "write.yaml": ACCEPTED,
}

# The namespaces a full-profile view calls the host's (host_ns selectors compile against
# them; the values only have to be fixed, not the machine's).
HOST_NS = {"uts": 4026531838, "ipc": 4026531839, "mnt": 4026531841, "pid": 4026531836,
           "pid_for_children": 4026531836, "net": 4026531840, "time": 4026531834,
           "time_for_children": 4026531834, "cgroup": 4026531835, "user": 4026531837}


def full_view(kernel_btf: object, formats: object) -> object:
    """A KernelView offering every BPF feature, with this BTF and these tracepoint
    formats: what Vigil itself can do, whatever the running kernel allows."""
    from vigil.policy.compiler import KernelView
    from vigil.policy.profiles import PROFILES
    return KernelView(**PROFILES["full"], btf=kernel_btf, host_ns=dict(HOST_NS),
                      formats=formats)  # type: ignore[arg-type]


def refusal(path: Path, view: object) -> str | None:
    """Why Vigil refuses the policy file ``path`` on ``view`` ("field: message"; every
    diagnostic of a policy the loader refuses), or None when it compiles."""
    from vigil.errors import PolicyError
    from vigil.policy.compiler import CompileError, compile_policy
    from vigil.policy.loader import load_policy_file
    try:
        compile_policy(load_policy_file(path), view)  # type: ignore[arg-type]
    except PolicyError as err:
        return "; ".join(f"{d.path}: {d.message}" for d in err.diagnostics) or str(err)
    except CompileError as err:
        return f"{err.where}: {err.message}"
    return None
