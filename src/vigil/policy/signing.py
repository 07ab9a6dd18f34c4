"""Signed tracing policies: ed25519 detached signatures over a policy file's exact bytes.

With ``vigil agent --policy-signing-key KEY`` the agent loads a policy only when it
comes with a valid signature under KEY, whatever its source: ``POLICY.sig`` next to a
file given with ``--tracing-policy`` or found in ``--tracing-policy-dir``; the
``vigil-policy-signature`` metadata header of a gRPC ``AddTracingPolicy`` call; the
``.sig`` kept beside a persisted gRPC policy. The signature covers the bytes of the
policy (UTF-8 text as sent, no normalisation), so any change after signing, even of a
comment or of line endings, makes it invalid.

A TracingPolicy resource has no bytes of its own: the API server stores the object (with
the CRD's defaults filled in) and hands it back as JSON. Its signature, in the
annotation ``vigil.dev/policy-signature``, covers the object's canonical JSON
(``k8s_signed_bytes``: apiVersion, kind, name, namespace and spec, keys sorted, no
spaces), made from the object as the cluster stores it (``kubectl get -o yaml | vigil
tracingpolicy sign --k8s``). Labels, other annotations and status are not covered.

Keys: the public key is PEM (``-----BEGIN PUBLIC KEY-----``, as ``openssl pkey
-pubout`` writes) or the raw 32 bytes; the private key (for ``vigil tracingpolicy
sign``) is PEM PKCS#8 (``openssl genpkey -algorithm ed25519``) or the raw 32-byte seed.
A signature is the raw 64 bytes or their base64 (what ``sign`` writes).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from vigil.errors import VigilError

SIGNATURE_SUFFIX = ".sig"
METADATA_KEY = "vigil-policy-signature"  # gRPC request header: base64 of the signature
K8S_ANNOTATION = "vigil.dev/policy-signature"  # on TracingPolicy resources: base64
MAX_KEY_BYTES = 16384


class PolicySignatureError(VigilError):
    """A policy refused because it has no valid signature (signed-policies mode)."""


class SigningKeyError(VigilError):
    """A signing or verification key that cannot be used."""


def _read_small(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_BYTES + 1)
    except OSError as err:
        raise SigningKeyError(f"{what} {path}: {err.strerror}") from None
    if len(data) > MAX_KEY_BYTES:
        raise SigningKeyError(f"{what} {path}: larger than {MAX_KEY_BYTES} bytes")
    return data


def load_public_key(path: str) -> Any:
    """The ed25519 public key in ``path`` (PEM or raw 32 bytes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    data = _read_small(path, "policy signing key")
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY" in data:
            raise SigningKeyError(f"policy signing key {path}: a private key; the agent "
                                  "needs only the public key (openssl pkey -pubout)")
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as err:
            raise SigningKeyError(f"policy signing key {path}: not a PEM public key: "
                                  f"{err}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise SigningKeyError(f"policy signing key {path}: not an ed25519 key "
                                  f"({type(key).__name__})")
        return key
    if len(data) == 32:
        return ed25519.Ed25519PublicKey.from_public_bytes(data)
    raise SigningKeyError(f"policy signing key {path}: neither PEM nor a raw 32-byte "
                          f"ed25519 public key ({len(data)} bytes)")


def load_private_key(path: str) -> Any:
    """The ed25519 private key in ``path`` (PEM PKCS#8 or raw 32-byte seed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    data = _read_small(path, "private key")
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as err:
            raise SigningKeyError(f"private key {path}: not an unencrypted PEM private "
                                  f"key: {err}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise SigningKeyError(f"private key {path}: not an ed25519 key "
                                  f"({type(key).__name__})")
        return key
    if len(data) == 32:
        return ed25519.Ed25519PrivateKey.from_private_bytes(data)
    raise SigningKeyError(f"private key {path}: neither PEM nor a raw 32-byte ed25519 "
                          f"seed ({len(data)} bytes)")


def sign(private_key: Any, policy: bytes) -> bytes:
    """The base64 text (with a newline) of the signature of ``policy``."""
    return base64.b64encode(private_key.sign(policy)) + b"\n"


def k8s_signed_bytes(obj: dict[str, Any]) -> bytes:
    """What the signature of a TracingPolicy resource covers: its canonical JSON. The
    name and namespace are in it, so a signed spec cannot be replayed under another
    name or in another namespace."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    ident = {"name": meta.get("name") or ""}
    if meta.get("namespace"):
        ident["namespace"] = meta["namespace"]
    doc = {"apiVersion": obj.get("apiVersion") or "", "kind": obj.get("kind") or "",
           "metadata": ident, "spec": obj.get("spec")}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8", "surrogateescape")


def decode_signature(data: bytes | str) -> bytes:
    """A signature from its raw 64 bytes or base64 text; ValueError otherwise."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    if len(data) == 64:
        return data
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 and not 64 raw bytes") from None
    if len(raw) != 64:
        raise ValueError(f"{len(raw)} bytes once decoded; an ed25519 signature has 64")
    return raw


def signature_path(policy_path: str | os.PathLike[str]) -> str:
    return os.fspath(policy_path) + SIGNATURE_SUFFIX


def read_signature_file(policy_path: str | os.PathLike[str]) -> bytes | None:
    """The contents of ``POLICY.sig``, or None when there is none."""
    try:
        with open(signature_path(policy_path), "rb") as f:
            return f.read(4096)
    except FileNotFoundError:
        return None


class PolicyVerifier:
    """Checks policies against the one trusted public key."""

    def __init__(self, public_key: Any, key_path: str = "") -> None:
        self.key = public_key
        self.key_path = key_path

    @classmethod
    def from_file(cls, path: str) -> PolicyVerifier:
        return cls(load_public_key(path), path)

    def check(self, policy: bytes, signature: bytes | str | None, source: str) -> None:
        """Return when ``signature`` is a valid signature of ``policy``; otherwise raise
        PolicySignatureError naming ``source`` and what is wrong."""
        from cryptography.exceptions import InvalidSignature
        where = source
        source = "policy sent over gRPC" if source == "grpc" else source
        if signature is None or signature in (b"", ""):
            raise PolicySignatureError(
                f"{source}: policy refused: it is not signed and this agent loads only "
                f"signed policies (--policy-signing-key); sign it with `vigil tracingpolicy "
                f"sign` and {_where(where)}")
        try:
            raw = decode_signature(signature)
        except ValueError as err:
            raise PolicySignatureError(f"{source}: policy refused: its signature is "
                                       f"malformed ({err})") from None
        try:
            self.key.verify(raw, policy)
        except InvalidSignature:
            raise PolicySignatureError(
                f"{source}: policy refused: the signature does not match (the policy was "
                "changed after signing, or signed with another key than "
                f"{self.key_path or 'the agent trusts'})") from None


def _where(source: str) -> str:
    if source == "grpc":
        return "send the signature with it (vigil tracingpolicy add --signature FILE)"
    if source.startswith("k8s "):
        return (f"annotate the object with {K8S_ANNOTATION} (kubectl get -o yaml | vigil "
                "tracingpolicy sign --k8s --key KEY -)")
    return f"put the signature in {source}{SIGNATURE_SUFFIX}"


__all__ = ["K8S_ANNOTATION", "METADATA_KEY", "SIGNATURE_SUFFIX", "PolicySignatureError", "PolicyVerifier",
           "SigningKeyError", "decode_signature", "k8s_signed_bytes", "load_private_key", "load_public_key",
           "read_signature_file", "sign", "signature_path"]
