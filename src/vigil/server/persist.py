"""``--persist-grpc-policies``: policies added over the API survive an agent restart.

A wrapper around any :class:`~vigil.policy.store_api.PolicyStore`: after the inner store
accepted a gRPC-added policy, its YAML is written to ``<dir>/<name>.yaml`` (namespaced:
``<namespace>_<name>.yaml``; ``_`` cannot occur in Kubernetes names, so the mapping is
one to one); a disabled one also gets ``<file>.disabled``, a signed one (signed-policies
mode) ``<file>.sig`` with the signature it was added with. Delete removes all three. At start
:meth:`PersistentPolicyStore.restore` re-adds every saved policy through the same
validation as any other (a file that no longer validates is logged and left in place).

Files are 0600 and the directory 0700, root's: policies reveal what is monitored.
Writes go through a temporary file and ``rename`` so a crash never leaves half a policy.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from vigil.errors import VigilError
from vigil.policy.store_api import PolicyInfo, PolicyMode, PolicyStore

log = logging.getLogger(__name__)

DEFAULT_DIR = "/var/run/vigil/grpc-policies"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")


def policy_filename(name: str, namespace: str = "") -> str:
    """File name of a persisted policy; ValueError for names unsafe as a path."""
    for part in (name, namespace) if namespace else (name,):
        if not _SAFE.match(part) or len(part) > 253:
            raise ValueError(f"policy name {part!r} cannot be persisted (not a DNS name)")
    return f"{namespace}_{name}.yaml" if namespace else f"{name}.yaml"


def _write_private(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sig_text(signature: bytes) -> str:
    """A signature as stored text (base64), whatever form it was received in."""
    import base64

    from vigil.policy.signing import decode_signature
    return base64.b64encode(decode_signature(signature)).decode() + "\n"


class PersistentPolicyStore:
    """A PolicyStore that also keeps gRPC-added policies as files in ``directory``."""

    def __init__(self, inner: PolicyStore, directory: str | os.PathLike[str] = DEFAULT_DIR,
                 domain: str = "grpc") -> None:
        self.inner = inner
        self.dir = Path(directory)
        self.domain = domain
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)

    def _path(self, name: str, namespace: str) -> Path:
        return self.dir / policy_filename(name, namespace)

    def add(self, yaml_text: str, *, source: str, signature: bytes | str | None = None
            ) -> PolicyInfo:
        kw = {} if signature is None else {"signature": signature}
        info = self.inner.add(yaml_text, source=source, **kw)
        if source == self.domain:
            try:
                path = self._path(info.name, info.namespace)
                sig = path.with_name(path.name + ".sig")
                if signature is not None:
                    _write_private(sig, signature if isinstance(signature, str)
                                   else _sig_text(signature))
                else:
                    sig.unlink(missing_ok=True)
                _write_private(path, yaml_text)
            except (OSError, ValueError):
                self.inner.delete(info.name, info.namespace)  # all or nothing
                raise
        return info

    def delete(self, name: str, namespace: str = "") -> None:
        self.inner.delete(name, namespace)
        try:
            path = self._path(name, namespace)
        except ValueError:
            return
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".disabled").unlink(missing_ok=True)
        path.with_name(path.name + ".sig").unlink(missing_ok=True)

    def enable(self, name: str, namespace: str = "") -> None:
        self.inner.enable(name, namespace)
        self._mark_disabled(name, namespace, False)

    def disable(self, name: str, namespace: str = "") -> None:
        self.inner.disable(name, namespace)
        self._mark_disabled(name, namespace, True)

    def list(self) -> list[PolicyInfo]:
        return self.inner.list()

    def set_mode(self, name: str, namespace: str, mode: PolicyMode) -> None:
        """Forwarded; a mode set at run time is not persisted (a restart restores the
        policy-mode its YAML states, as Tetragon does)."""
        self.inner.set_mode(name, namespace, mode)

    def _mark_disabled(self, name: str, namespace: str, disabled: bool) -> None:
        try:
            path = self._path(name, namespace)
        except ValueError:
            return
        if not path.exists():
            return  # not a persisted (gRPC-added) policy
        marker = path.with_name(path.name + ".disabled")
        if disabled:
            _write_private(marker, "")
        else:
            marker.unlink(missing_ok=True)

    def restore(self) -> builtins.list[PolicyInfo]:
        """Re-add every saved policy (in name order); return those that loaded."""
        from vigil.policy.loader import read_policy_text  # reads no more than the limit
        from vigil.policy.signing import read_signature_file
        loaded = []
        for path in sorted(self.dir.glob("*.yaml")):
            try:
                sig = read_signature_file(path)
                kw: dict[str, Any] = {} if sig is None else {"signature": sig}
                info = self.inner.add(read_policy_text(path), source=self.domain, **kw)
                if path.with_name(path.name + ".disabled").exists():
                    self.inner.disable(info.name, info.namespace)
                loaded.append(info)
            except (OSError, VigilError, KeyError, ValueError) as err:
                log.error("persisted policy %s not restored: %s", path, err)
        if loaded:
            log.info("restored %d gRPC policies from %s", len(loaded), self.dir)
        return loaded
