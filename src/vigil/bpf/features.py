"""Runtime BPF feature probes: ask the running kernel, never its version number.

Each probe opens ``objects/probe.bpf.o`` with only its own program(s) autoloaded,
loads, and where the attach step is what a kernel may refuse (kprobes without
CONFIG_KPROBES, trampolines, cgroup links, ...) attaches, then detaches and closes.
Nothing is left behind: links are destroyed, the temporary cgroup is removed, nothing
is pinned. Results are cached per process (``clear_cache()`` forgets them).

    probe("fentry")   -> ProbeResult(name="fentry", ok=False,
                                     reason="load refused: EPERM (Operation not permitted)")
    probe_all()       -> [ProbeResult, ...] in FEATURES order
    require("lsm")    -> None, or raises FeatureNotSupported(feature, reason)

Kernel facts that are not program loads: ``btf_available()``, ``bpf_lsm_enabled()``,
``lockdown()``, ``kprobes_available()``, ``privileges()``; ``mount_fs()`` mounts
what is missing (``vigil.bpf.mounts``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import functools
import logging
import os
import platform
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vigil.bpf import _libbpf as L
from vigil.bpf import mounts
from vigil.bpf.object import BpfObject, Link, Program
from vigil.errors import AttachError, BpfError, FeatureNotSupported

log = logging.getLogger("vigil.features")

OBJECT = Path(__file__).parent / "objects" / "probe.bpf.o"

SECURITYFS = mounts.SECURITYFS
KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

# syscall wrappers are named <prefix>sys_<name> on architectures with syscall wrappers
_SYSCALL_PREFIX = {
    "x86_64": "__x64_sys_", "aarch64": "__arm64_sys_", "s390x": "__s390x_sys_",
    "riscv64": "__riscv_sys_", "ppc64le": "sys_", "ppc64": "sys_",
}
_SYSCALL = "getcpu"  # rarely called, present everywhere, error-injectable
_SECURITY_FN = "security_task_prctl"


@dataclass(frozen=True)
class ProbeResult:
    """One feature: ``ok`` and, when not ok, why (``reason``)."""

    name: str
    ok: bool
    reason: str = ""


# --- small utilities -------------------------------------------------------------------

def _errtext(err: int) -> str:
    """``EPERM (Operation not permitted)``."""
    return f"{_errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


@contextlib.contextmanager
def _quiet_libbpf() -> Iterator[None]:
    """Silence libbpf's warnings about the loads we expect to fail."""
    logger = logging.getLogger("vigil.libbpf")
    old = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(old)


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) of every mount of this process."""
    return mounts.mounts()


# --- mounts ----------------------------------------------------------------------------

def tracefs_path() -> str | None:
    """Where tracefs is mounted (/sys/kernel/tracing or debugfs/tracing), if anywhere."""
    return mounts.tracefs_path()


def mount_securityfs() -> str | None:
    """Mount securityfs at /sys/kernel/security unless it is there."""
    return mounts.ensure(("securityfs",)).mounted.get("securityfs")


def mount_fs() -> list[str]:
    """Ensure tracefs, bpffs, cgroup2 and securityfs are mounted (as the agent does at
    start); return the mount points mounted now."""
    return list(mounts.ensure().mounted.values())


# --- kernel facts ----------------------------------------------------------------------

def btf_available() -> bool:
    """Whether the kernel exposes its own BTF (needed for CO-RE, tp_btf, fentry, LSM)."""
    return os.path.exists(BTF_VMLINUX)


def _securityfs_file(name: str) -> str | None:
    path = f"{SECURITYFS}/{name}"
    if not os.path.exists(path):
        mount_securityfs()
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def active_lsms() -> list[str] | None:
    """The active LSMs in order (/sys/kernel/security/lsm); None if unreadable."""
    text = _securityfs_file("lsm")
    return None if text is None else [x for x in text.split(",") if x]


def bpf_lsm_enabled() -> bool | None:
    """Whether ``bpf`` is an active LSM; None if the list cannot be read."""
    lsms = active_lsms()
    return None if lsms is None else "bpf" in lsms


def lockdown() -> str | None:
    """The kernel lockdown level (none, integrity, confidentiality); None if unknown."""
    text = _securityfs_file("lockdown")
    m = re.search(r"\[(\w+)\]", text or "")
    return m.group(1) if m else None


def _cap_eff() -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def privileges() -> str | None:
    """None if this process may load and attach BPF programs, else a sentence why not."""
    caps = _cap_eff()
    has = {c: bool(caps >> c & 1) for c in (CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF)}
    if has[CAP_SYS_ADMIN] or (has[CAP_BPF] and has[CAP_PERFMON]):
        return None
    held = [n for c, n in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"),
                           (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")) if has[c]]
    return (f"loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); this "
            f"process (uid {os.geteuid()}) has "
            f"{'only ' + ', '.join(held) if held else 'none of them'}. Run it as root")


# --- probe targets ---------------------------------------------------------------------

@functools.cache
def syscall_fn(name: str) -> str:
    """The kernel function of a syscall, e.g. ``__x64_sys_getcpu`` on x86-64."""
    arch = _SYSCALL_PREFIX.get(platform.machine(), "sys_")
    candidates = list(dict.fromkeys([arch + name, "sys_" + name]))
    try:
        with open("/proc/kallsyms", encoding="utf-8", errors="replace") as f:
            present = {ln.split()[2] for ln in f if ln.rstrip().endswith("sys_" + name)}
    except OSError:
        present = set()
    return next((c for c in candidates if c in present), candidates[0])


def _uprobe_target() -> tuple[str, str]:
    """(ELF path, symbol) in this process: libc's getpid, else the interpreter's main."""
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
        for line in f:
            path = line.split(maxsplit=5)[-1].strip()
            if path.startswith("/") and re.match(r"libc([.-]|\.so)", os.path.basename(path)):
                return path, "getpid"
    return os.path.realpath(sys.executable), "Py_BytesMain"


def _cgroup2_root() -> str | None:
    return mounts.cgroup2_path()


@contextlib.contextmanager
def _temp_cgroup() -> Iterator[str]:
    """An empty cgroup v2 directory, removed on exit."""
    root = _cgroup2_root()
    if root is None:
        raise BpfError(_errno.ENOENT, "find cgroup2 mount")
    path = os.path.join(root, f"vigil-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(path)
    except OSError as err:
        raise BpfError(err.errno or _errno.EIO, "create cgroup", path) from err
    try:
        yield path
    finally:
        _rmdir_retry(path)


def _rmdir_retry(path: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != _errno.EBUSY:
                raise
            time.sleep(0.01)
    log.warning("could not remove probe cgroup %s", path)


# --- attach steps ------------------------------------------------------------------------

class _KprobeMultiOpts(ctypes.Structure):
    """``struct bpf_kprobe_multi_opts`` (libbpf >= 0.8)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("syms", ctypes.POINTER(ctypes.c_char_p)),
        ("addrs", ctypes.c_void_p),
        ("cookies", ctypes.c_void_p),
        ("cnt", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]


def _attach_kprobe_multi(prog: Program, func: str) -> Link:
    """bpf_program__attach_kprobe_multi_opts (object.py does not wrap it yet)."""
    if not L.has("bpf_program__attach_kprobe_multi_opts"):
        raise AttachError(_errno.EOPNOTSUPP, prog.name, "kprobe.multi (libbpf < 0.8)")
    fn = L.lib().bpf_program__attach_kprobe_multi_opts
    fn.restype = L.BpfLinkP
    fn.argtypes = [L.BpfProgramP, ctypes.c_char_p, ctypes.POINTER(_KprobeMultiOpts)]
    syms = (ctypes.c_char_p * 1)(func.encode())
    o = L.opts(_KprobeMultiOpts, syms=syms, cnt=1)
    ptr = fn(prog._ptr, None, ctypes.byref(o))
    if not ptr:
        raise AttachError(ctypes.get_errno() or _errno.EINVAL, prog.name, f"kprobe.multi {func}")
    return Link(ptr, prog.name, f"kprobe.multi {func}")


def _by_section(prog: Program) -> None:
    prog.attach().destroy()


def _kprobe(prog: Program) -> None:
    prog.attach_kprobe(syscall_fn(_SYSCALL)).destroy()


def _kretprobe(prog: Program) -> None:
    prog.attach_kprobe(syscall_fn(_SYSCALL), retprobe=True).destroy()


def _kprobe_multi(prog: Program) -> None:
    _attach_kprobe_multi(prog, syscall_fn(_SYSCALL)).destroy()


def _uprobe(prog: Program, retprobe: bool = False) -> None:
    path, symbol = _uprobe_target()
    prog.attach_uprobe(path, symbol=symbol, retprobe=retprobe, pid=os.getpid()).destroy()


def _uretprobe(prog: Program) -> None:
    _uprobe(prog, retprobe=True)


def _cgroup(prog: Program) -> None:
    with _temp_cgroup() as path:
        prog.attach_cgroup(path).destroy()


# --- the probe table ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Spec:
    programs: tuple[str, ...]
    attach: Callable[[Program], None] | None = None  # None: loading decides
    target: Callable[[], str] | None = None  # BTF attach target set before load
    maps: tuple[str, ...] = ()


def _sys_target() -> str:
    return syscall_fn(_SYSCALL)


_SPECS: dict[str, _Spec] = {
    "tp_btf": _Spec(("vg_p_tp_btf",), _by_section),
    "raw_tp": _Spec(("vg_p_raw_tp",), _by_section),
    "tracepoint": _Spec(("vg_p_tracepoint",), _by_section),
    "kprobe": _Spec(("vg_p_kprobe",), _kprobe),
    "kretprobe": _Spec(("vg_p_kretprobe",), _kretprobe),
    "kprobe_multi": _Spec(("vg_p_kp_multi",), _kprobe_multi),
    "fentry": _Spec(("vg_p_fentry",), _by_section, _sys_target),
    "fexit": _Spec(("vg_p_fexit",), _by_section, _sys_target),
    "fentry_security": _Spec(("vg_p_fentry_sec",), _by_section),
    "fmod_ret_security": _Spec(("vg_p_fmodret_sec",), _by_section),
    "fmod_ret_syscall": _Spec(("vg_p_fmodret_sys",), _by_section, _sys_target),
    "lsm": _Spec(("vg_p_lsm_open", "vg_p_lsm_bprm"), _by_section),
    "uprobe": _Spec(("vg_p_uprobe",), _uprobe),
    "uretprobe": _Spec(("vg_p_uretprobe",), _uretprobe),
    "cgroup_sock_addr": _Spec(("vg_p_connect4",), _cgroup),
    "iter_task": _Spec(("vg_p_iter_task",), _by_section),
    "send_signal": _Spec(("vg_p_signal",)),
    "override_return": _Spec(("vg_p_override",)),
    "probe_write_user": _Spec(("vg_p_write_user",)),
    "uprobe_regs": _Spec(("vg_p_uprobe_regs",)),
    "d_path": _Spec(("vg_p_d_path",), _by_section),
    "ringbuf": _Spec(("vg_p_ringbuf",), maps=("vg_probe_rb",)),
    "bpf_loop": _Spec(("vg_p_bpf_loop",)),
    "ktime_boot": _Spec(("vg_p_ktime_boot",)),
}

FEATURES: tuple[str, ...] = tuple(_SPECS)

_cache: dict[str, ProbeResult] = {}


def _set_autocreate(obj: BpfObject, wanted: tuple[str, ...]) -> None:
    """Create only the maps a probe uses (bpf_map__set_autocreate, libbpf >= 0.8)."""
    if not L.has("bpf_map__set_autocreate"):
        return
    fn = L.lib().bpf_map__set_autocreate
    fn.restype = ctypes.c_int
    fn.argtypes = [L.BpfMapP, ctypes.c_bool]
    for m in obj.maps():
        L.check_int(fn(m._ptr, m.name in wanted), "set autocreate", m.name)


def _prepare(obj: BpfObject, spec: _Spec) -> list[Program]:
    """Autoload only the spec's programs, create only its maps, set BTF targets."""
    for p in obj.programs():
        p.autoload = p.name in spec.programs
    _set_autocreate(obj, spec.maps)
    progs = [obj.program(n) for n in spec.programs]
    if spec.target is not None:
        target = spec.target()
        for p in progs:
            try:
                p.set_attach_target(target)
            except BpfError as err:
                raise _Refused(f"attach target {target} not found: {_errtext(err.errno or 0)}") from err
    return progs


class _Refused(Exception):
    """A probe's answer is no; the message is the reason."""


def _load_and_attach(spec: _Spec) -> None:
    """Raise _Refused with the reason if the kernel refuses the spec's programs."""
    with BpfObject(OBJECT, name="vigil_probe") as obj:
        progs = _prepare(obj, spec)
        try:
            obj.load()
        except BpfError as err:
            raise _Refused(f"load refused: {_errtext(err.errno or 0)}") from err
        if spec.attach is None:
            return
        for p in progs:
            try:
                spec.attach(p)
            except (BpfError, OSError) as err:
                raise _Refused(f"attach failed: {_errtext(err.errno or _errno.EINVAL)}") from err


_KPROBE_FEATURES = ("kprobe", "kretprobe", "kprobe_multi")


def _hint(name: str) -> str:
    """A likely cause to append to a refusal, from facts that are cheap to check."""
    if name in _KPROBE_FEATURES and not os.path.isdir(KPROBE_PMU):
        return f"; no kprobe support in this kernel ({KPROBE_PMU} is missing)"
    if name == "tracepoint" and tracefs_path() is None:
        return "; tracefs is not mounted (vigil mounts it at start)"
    return ""


def _extra_check(name: str) -> str | None:
    """Conditions beyond load+attach; a reason when they fail."""
    if name == "lsm" and bpf_lsm_enabled() is False:
        return f"BPF LSM not active: 'bpf' is not in {SECURITYFS}/lsm (boot with lsm=...,bpf)"
    return None


def _run(name: str) -> ProbeResult:
    if not OBJECT.exists():
        return ProbeResult(name, False, f"probe object {OBJECT} is missing (run `make bpf`)")
    why = privileges()
    if why:
        return ProbeResult(name, False, why)
    try:
        with _quiet_libbpf():
            _load_and_attach(_SPECS[name])
    except _Refused as refused:
        return ProbeResult(name, False, str(refused) + _hint(name))
    except BpfError as err:  # open/prepare failed: libbpf missing, object unreadable, ...
        return ProbeResult(name, False, str(err))
    extra = _extra_check(name)
    return ProbeResult(name, extra is None, extra or "")


# --- public API ----------------------------------------------------------------------------

def probe(name: str) -> ProbeResult:
    """Whether the running kernel allows feature ``name`` (one of FEATURES); cached."""
    if name not in _SPECS:
        raise ValueError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
    if name not in _cache:
        _cache[name] = _run(name)
        log.debug("probe %s: %s %s", name, _cache[name].ok, _cache[name].reason)
    return _cache[name]


def probe_all() -> list[ProbeResult]:
    """Every probe, in FEATURES order."""
    return [probe(n) for n in FEATURES]


def require(name: str) -> None:
    """Raise FeatureNotSupported(name, reason) unless the kernel allows ``name``."""
    res = probe(name)
    if not res.ok:
        raise FeatureNotSupported(name, res.reason)


def clear_cache() -> None:
    """Forget cached results (the next probe asks the kernel again)."""
    _cache.clear()


def kprobes_available() -> bool:
    """Whether kprobes can be attached: the kprobe PMU exists, or the attach probe works."""
    return os.path.isdir(KPROBE_PMU) or probe("kprobe").ok


__all__ = [
    "FEATURES", "ProbeResult", "probe", "probe_all", "require", "clear_cache",
    "btf_available", "bpf_lsm_enabled", "active_lsms", "lockdown", "kprobes_available",
    "privileges", "syscall_fn", "tracefs_path", "mount_fs", "mount_securityfs",
]
