"""Vigil's exceptions. Imports nothing from vigil; anyone may import it.

::

    VigilError
    ├── BpfError(OSError)       a libbpf / bpf(2) failure: .errno, .op, .target
    │   ├── VerifierError       the verifier refused a program: .program, .log (full)
    │   └── AttachError         a loaded program could not be attached: .program, .target
    ├── FeatureNotSupported     this kernel lacks something: .feature, .reason
    ├── PrivilegeError          not root / missing CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN
    ├── AbiMismatch             a shipped object disagrees with the generated layouts
    ├── PolicyError             a policy was rejected: .diagnostics
    └── ConfigError             bad configuration: .option

Loops (ring buffer, decoder, exporters) never raise these: they count and go on.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from typing import Any


class VigilError(Exception):
    """Base of every error Vigil raises on purpose."""


class BpfError(VigilError, OSError):
    """A libbpf or bpf(2) call failed; carries the errno and what was being done."""

    def __init__(self, err: int, op: str, target: str = "") -> None:
        self.op = op
        self.target = target
        text = os.strerror(err) if err else "unknown error"
        name = _errno.errorcode.get(err, str(err))
        where = f" {target}" if target else ""
        OSError.__init__(self, err, f"{op}{where}: {name} ({text})")

    def __str__(self) -> str:
        return str(self.strerror)


class VerifierError(BpfError):
    """The kernel refused to load a program. ``str()`` is short; ``.log`` is all of it."""

    def __init__(self, err: int, program: str, log: str) -> None:
        super().__init__(err, "load program", program)
        self.program = program
        self.log = log

    def tail(self, lines: int = 6) -> str:
        """The last meaningful lines of the verifier log."""
        kept = [ln for ln in self.log.splitlines() if ln.strip() and not ln.startswith("-- ")]
        return "\n".join(kept[-lines:])

    def __str__(self) -> str:
        tail = self.tail()
        return f"{self.strerror}" + (f"\nverifier log (last lines):\n{tail}" if tail else "")


class AttachError(BpfError):
    """A loaded program could not be attached to its hook."""

    def __init__(self, err: int, program: str, target: str) -> None:
        super().__init__(err, f"attach {program} to", target)
        self.program = program


class FeatureNotSupported(VigilError):
    """The running kernel does not allow something Vigil needs or a policy asks for."""

    def __init__(self, feature: str, reason: str) -> None:
        super().__init__(f"{feature} is not supported on this kernel: {reason}")
        self.feature = feature
        self.reason = reason


class PrivilegeError(VigilError):
    """The process lacks the privileges to load BPF programs."""


class AbiMismatch(VigilError):
    """A BPF object's layout differs from ``vigil.abi`` (stale build?)."""


class PolicyError(VigilError):
    """A tracing policy was rejected as a whole; ``.diagnostics`` says where and why."""

    def __init__(self, message: str, diagnostics: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.diagnostics = list(diagnostics)


class ConfigError(VigilError):
    """An option or configuration value is invalid."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
