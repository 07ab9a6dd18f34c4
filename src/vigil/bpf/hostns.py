"""The host's namespaces as the kernel knows them: hostns.bpf.o's task iterator.

For hosts where ``/proc/1/ns`` cannot be read (hardened kernels and sandboxes hide it
even from root) or where the agent's ``/proc`` is not the host's. The iterator's program
walks from the reading task up the ``real_parent`` chain to pid 0, so it finds pid 1 of
the initial pid namespace and init_task even from inside a container.

Needs BPF privileges (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) and kernel BTF; loads,
reads once and closes: nothing stays attached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vigil.abi import _generated as abi
from vigil.bpf.object import BpfObject
from vigil.errors import BpfError
from vigil.process.model import Namespaces

OBJECT = Path(__file__).resolve().parent / "objects" / "hostns.bpf.o"
_NAMES = tuple(Namespaces.__dataclass_fields__)


@dataclass(frozen=True)
class KernelHostNamespaces:
    """What the iterator saw.

    ``pid1``: pid 1 of the initial pid namespace, what ``/proc/1/ns`` shows there and
    what Tetragon's ``host_ns`` means. ``init``: init_task's (pid 0), the initial
    namespaces, which every kernel thread keeps. Each is None if the walk did not reach
    it. ``hops``: parents walked from the reading task to pid 0.
    """

    pid1: Namespaces | None
    init: Namespaces | None
    hops: int


def decode(raw: bytes) -> KernelHostNamespaces:
    """One ``struct vg_host_ns`` as the iterator wrote it."""
    if len(raw) < abi.VG_HOST_NS.size:
        raise BpfError(5, "read host namespaces",
                       f"iterator wrote {len(raw)} bytes, expected {abi.VG_HOST_NS.size}")
    vals = abi.VG_HOST_NS.unpack_from(raw)
    field = dict(zip(abi.VG_HOST_NS_FIELDS, vals, strict=True))
    flags = field["flags"]

    def ns(prefix: str, flag: int) -> Namespaces | None:
        if not flags & flag:
            return None
        return Namespaces(*(field[f"{prefix}.{n}"] for n in _NAMES))
    return KernelHostNamespaces(ns("pid1", abi.HostNsFlag.PID1), ns("init", abi.HostNsFlag.INIT),
                                field["hops"])


def read_kernel_host_namespaces(path: str | Path = OBJECT) -> KernelHostNamespaces:
    """Load the iterator, run it once, detach and close. Raises BpfError (including
    LibbpfMissing and VerifierError) when the kernel or this process cannot."""
    with BpfObject(path, name="vigil_hostns") as obj:
        obj.load()
        link = obj.program("vg_host_ns_iter").attach_iter()
        try:
            raw = link.read_iter()
        finally:
            link.destroy()
    return decode(raw)
