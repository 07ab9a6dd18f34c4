"""Linux capability numbers <-> names: the one table the policy checks, the compilers,
the event encoders and the gRPC filters share. Pure data.

Two spellings exist. Policies name capabilities as the kernel does (``CAP_DAC_OVERRIDE``);
Tetragon's ``CapabilitiesType`` protobuf enum, and so every event and filter, spells bit 1
``DAC_OVERRIDE`` without the prefix. ``cap_number`` accepts both.
"""

from __future__ import annotations

#: capability names without ``CAP_``, indexed by number (include/uapi/linux/capability.h)
_BARE_NAMES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)

#: kernel names (``CAP_SYS_ADMIN``) -> number: what policies write
CAPABILITIES: dict[str, int] = {f"CAP_{n}": i for i, n in enumerate(_BARE_NAMES)}

#: Tetragon's CapabilitiesType enum names, indexed by number (bit 1 is "DAC_OVERRIDE")
CAP_NAMES: tuple[str, ...] = tuple(
    n if n == "DAC_OVERRIDE" else f"CAP_{n}" for n in _BARE_NAMES)

_NUMBER_BY_NAME: dict[str, int] = {**CAPABILITIES, **{n: i for i, n in enumerate(CAP_NAMES)}}


def cap_number(name: str) -> int:
    """A capability name in either spelling -> its number; ValueError when unknown."""
    try:
        return _NUMBER_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown capability {name}") from None
