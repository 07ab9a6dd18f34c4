"""What the gRPC API needs from the tracing-policy engine, and nothing more.

The server (``vigil.server``) manages policies only through :class:`PolicyStore`, so the
engine can change without touching the API, and tests can use a fake
(``vigil.server.fakes.StaticPolicyStore``). Imports nothing heavy: the engine and the
CLI may import it freely.

Errors a store raises and what the API answers:

* ``vigil.errors.PolicyError``          -> INVALID_ARGUMENT (message + diagnostics)
* :class:`PolicyExistsError`             -> ALREADY_EXISTS
* ``KeyError``                           -> NOT_FOUND
* ``vigil.errors.FeatureNotSupported``,
  ``vigil.errors.BpfError``              -> FAILED_PRECONDITION (cannot load on this kernel)
* :class:`PolicyModeError`               -> FAILED_PRECONDITION (mode cannot change)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from vigil.errors import VigilError


class PolicyState(enum.IntEnum):
    """TracingPolicyState values of Tetragon's API."""

    UNKNOWN = 0
    ENABLED = 1
    DISABLED = 2
    LOAD_ERROR = 3
    ERROR = 4
    LOADING = 5
    UNLOADING = 6
    SKIPPED = 7
    PARTIALLY_ENABLED = 8


class PolicyMode(enum.IntEnum):
    """TracingPolicyMode values of Tetragon's API."""

    UNKNOWN = 0
    ENFORCE = 1
    MONITOR = 2
    MONITOR_ONLY = 3


@dataclass(frozen=True)
class ActionCounters:
    """TracingPolicyActionCounters: how often each action fired since the policy loaded."""

    post: int = 0
    signal: int = 0
    monitor_signal: int = 0
    override: int = 0
    monitor_override: int = 0
    notify_enforcer: int = 0
    monitor_notify_enforcer: int = 0
    set: int = 0
    monitor_set: int = 0
    nopost: int = 0


@dataclass(frozen=True)
class HookInfo:
    """One hook of a policy (TracingPolicyStatus.hook_statuses): the spec section it
    comes from, how it is attached, and whether it is in the kernel now."""

    section: str          # e.g. "spec.tracepoints[0]"
    description: str      # e.g. "tracepoint syscalls/sys_enter_dup"
    loaded: bool = True


@dataclass(frozen=True)
class PolicyInfo:
    """One row of ListTracingPolicies (TracingPolicyStatus)."""

    id: int
    name: str
    namespace: str = ""
    info: str = ""
    sensors: tuple[str, ...] = ()
    state: PolicyState = PolicyState.ENABLED
    error: str = ""
    mode: PolicyMode = PolicyMode.ENFORCE
    filter_id: int = 0
    kernel_memory_bytes: int = 0
    domain: str = "grpc"          # "static" (files), "grpc" (added over the API)
    stats: ActionCounters | None = None
    hooks: tuple[HookInfo, ...] = ()

    @property
    def enabled(self) -> bool:
        """The deprecated ``enabled`` field: true only when fully enabled."""
        return self.state == PolicyState.ENABLED


class PolicyExistsError(VigilError):
    """A policy with this name (and namespace) is already loaded."""

    def __init__(self, name: str, namespace: str = "") -> None:
        where = f"{namespace}/{name}" if namespace else name
        super().__init__(f"tracing policy {where} already exists")
        self.name = name
        self.namespace = namespace


class PolicyModeError(VigilError):
    """A policy's mode cannot be changed as asked (e.g. enforce on a policy without
    enforcement actions, whose mode is monitor_only)."""


@runtime_checkable
class PolicyStore(Protocol):
    """Loaded tracing policies. Thread-safe: the gRPC server calls it from its workers."""

    def add(self, yaml_text: str, *, source: str, signature: bytes | str | None = None
            ) -> PolicyInfo:
        """Validate and load one policy document; ``source`` is its domain ("grpc", ...);
        ``signature`` its detached signature (checked in signed-policies mode).

        Validation is the same whatever the source. Raises PolicyError, PolicyExistsError,
        FeatureNotSupported or BpfError (see the module docstring).
        """
        ...

    def delete(self, name: str, namespace: str = "") -> None:
        """Unload and forget a policy; KeyError if there is none by that name."""
        ...

    def enable(self, name: str, namespace: str = "") -> None:
        """Attach a disabled policy again; KeyError if unknown."""
        ...

    def disable(self, name: str, namespace: str = "") -> None:
        """Detach a policy but keep it listed (state DISABLED); KeyError if unknown."""
        ...

    def list(self) -> list[PolicyInfo]:
        """Every policy, in load order."""
        ...

    def set_mode(self, name: str, namespace: str, mode: PolicyMode) -> None:
        """Switch a policy between ENFORCE and MONITOR in place (no reload; counters
        keep counting). KeyError if unknown; PolicyModeError when the policy is
        MONITOR_ONLY and ENFORCE is asked, or for a mode other than the two."""
        ...


__all__ = ["ActionCounters", "HookInfo", "PolicyExistsError", "PolicyModeError", "PolicyInfo", "PolicyMode", "PolicyState",
           "PolicyStore"]
