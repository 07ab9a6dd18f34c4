"""Signed policies: keys, signatures, and refusal before parsing (no root, no BPF)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from vigil.cli import cli
from vigil.daemon.policies import PolicyManager
from vigil.policy import signing
from vigil.server.persist import PersistentPolicyStore
from vigil.policy.store_api import PolicyInfo

POLICY = b"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: signed-one
spec: {}
"""


def keypair(tmp: Path, name: str = "k") -> tuple[Path, Path, Path]:
    """(private PEM, public PEM, public raw)."""
    priv = ed25519.Ed25519PrivateKey.generate()
    pem = tmp / f"{name}.pem"
    pem.write_bytes(priv.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub = tmp / f"{name}.pub.pem"
    pub.write_bytes(priv.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = tmp / f"{name}.pub.raw"
    raw.write_bytes(priv.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw))
    return pem, pub, raw


def test_sign_cli_and_verify_pem_and_raw_keys(tmp_path: Path) -> None:
    priv, pub, raw = keypair(tmp_path)
    pol = tmp_path / "p.yaml"
    pol.write_bytes(POLICY)
    r = CliRunner().invoke(cli, ["tracingpolicy", "sign", "--key", str(priv), str(pol)])
    assert r.exit_code == 0, r.output
    sig = (tmp_path / "p.yaml.sig").read_bytes()
    assert len(base64.b64decode(sig)) == 64
    for key in (pub, raw):
        v = signing.PolicyVerifier.from_file(str(key))
        v.check(POLICY, sig, "p.yaml")                      # base64
        v.check(POLICY, base64.b64decode(sig), "p.yaml")    # raw 64 bytes
    with pytest.raises(signing.PolicySignatureError, match="does not match"):
        v.check(POLICY.replace(b"spec: {}", b"spec: {} "), sig, "p.yaml")
    with pytest.raises(signing.PolicySignatureError, match="not signed"):
        v.check(POLICY, None, "p.yaml")
    with pytest.raises(signing.PolicySignatureError, match="malformed"):
        v.check(POLICY, b"bm9wZQ==", "p.yaml")


def test_wrong_key_and_unusable_keys(tmp_path: Path) -> None:
    priv, _pub, _raw = keypair(tmp_path, "a")
    _p2, pub2, _r2 = keypair(tmp_path, "b")
    sig = signing.sign(signing.load_private_key(str(priv)), POLICY)
    with pytest.raises(signing.PolicySignatureError, match="another key"):
        signing.PolicyVerifier.from_file(str(pub2)).check(POLICY, sig, "grpc")
    with pytest.raises(signing.SigningKeyError, match="private key"):
        signing.load_public_key(str(priv))
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    with pytest.raises(signing.SigningKeyError, match="neither PEM nor"):
        signing.load_public_key(str(junk))


class _Base:
    """Stands for the BPF base sensor: a refused policy never reaches it."""
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the sensor was used ({name})")


def test_manager_refuses_before_parsing(tmp_path: Path) -> None:
    priv, pub, _ = keypair(tmp_path)
    mgr = PolicyManager(_Base(), registry=None, view=lambda: (_ for _ in ()).throw(
        AssertionError("compiled")))
    mgr.verifier = signing.PolicyVerifier.from_file(str(pub))
    pol = tmp_path / "p.yaml"
    pol.write_bytes(POLICY)
    with pytest.raises(signing.PolicySignatureError, match=r"p\.yaml: policy refused: it is "
                       r"not signed.*p\.yaml\.sig"):
        mgr.add_file(pol)
    with pytest.raises(signing.PolicySignatureError, match="policy sent over gRPC: policy refused"):
        mgr.add(POLICY.decode(), source="grpc")
    (tmp_path / "p.yaml.sig").write_bytes(base64.b64encode(bytes(64)))
    with pytest.raises(signing.PolicySignatureError, match="does not match"):
        mgr.add_file(pol)
    # a valid signature gets past the check (and on to compilation, stubbed out here)
    (tmp_path / "p.yaml.sig").write_bytes(signing.sign(signing.load_private_key(str(priv)),
                                                       POLICY))
    with pytest.raises(AssertionError, match="compiled"):
        mgr.add_file(pol)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def add(self, yaml_text: str, *, source: str, signature: Any = None) -> PolicyInfo:
        self.calls.append((yaml_text, signature))
        return PolicyInfo(id=1, name="signed-one", namespace="")

    def delete(self, name: str, namespace: str = "") -> None:
        pass


def test_persisted_policy_keeps_its_signature(tmp_path: Path) -> None:
    priv, _pub, _ = keypair(tmp_path)
    sig = signing.sign(signing.load_private_key(str(priv)), POLICY)
    inner = _Recorder()
    store = PersistentPolicyStore(inner, tmp_path / "persist")  # type: ignore[arg-type]
    store.add(POLICY.decode(), source="grpc", signature=base64.b64encode(
        base64.b64decode(sig)).decode())
    assert (tmp_path / "persist" / "signed-one.yaml.sig").read_bytes().strip() == sig.strip()
    inner2 = _Recorder()
    PersistentPolicyStore(inner2, tmp_path / "persist").restore()  # type: ignore[arg-type]
    (text, got), = inner2.calls
    assert text.encode() == POLICY and got.strip() == sig.strip()
    store.delete("signed-one")
    assert not list((tmp_path / "persist").iterdir())


def test_policy_dirs_do_not_read_signatures_as_policies(tmp_path: Path) -> None:
    from vigil.policy.loader import policy_files
    (tmp_path / "a.yaml").write_bytes(POLICY)
    (tmp_path / "a.yaml.sig").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_bytes(POLICY)
    (tmp_path / "sub" / "b.yaml.sig").write_bytes(b"x")
    assert policy_files(tmp_path) == [str(tmp_path / "a.yaml"), str(tmp_path / "sub" / "b.yaml")]
