"""gRPC status codes, as the wire carries them (``grpc-status`` trailer).

The agent serves gRPC over its own HTTP/2 transport, so it needs only the vocabulary of
status codes, not the grpcio runtime (whose native core costs ~15 MB of resident memory
in a process that never uses it). Each member's value is ``(number, name)``, the same
shape as ``grpc.StatusCode``, so code written against either reads the same.
"""

from __future__ import annotations

import enum


class StatusCode(enum.Enum):
    """The status codes of the gRPC protocol (``doc/statuscodes.md`` upstream)."""

    OK = (0, "ok")
    CANCELLED = (1, "cancelled")
    UNKNOWN = (2, "unknown")
    INVALID_ARGUMENT = (3, "invalid argument")
    DEADLINE_EXCEEDED = (4, "deadline exceeded")
    NOT_FOUND = (5, "not found")
    ALREADY_EXISTS = (6, "already exists")
    PERMISSION_DENIED = (7, "permission denied")
    RESOURCE_EXHAUSTED = (8, "resource exhausted")
    FAILED_PRECONDITION = (9, "failed precondition")
    ABORTED = (10, "aborted")
    OUT_OF_RANGE = (11, "out of range")
    UNIMPLEMENTED = (12, "unimplemented")
    INTERNAL = (13, "internal")
    UNAVAILABLE = (14, "unavailable")
    DATA_LOSS = (15, "data loss")
    UNAUTHENTICATED = (16, "unauthenticated")
