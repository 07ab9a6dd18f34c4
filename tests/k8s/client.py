"""Test helpers: a kubeconfig for the stand-in API server, informers waited on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import yaml


def kubeconfig(path: Path, url: str, token: str, ca: str = "") -> Path:
    cluster = {"server": url} | ({"certificate-authority": ca} if ca else {})
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": cluster}],
        "users": [{"name": "vigil", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "vigil"}}],
    }))
    return path


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or cond}")


def pod(name: str, *, ns: str = "default", node: str = "node-a", labels: dict | None = None,
        containers: list[tuple[str, str, str]] = (), uid: str = "", **meta: Any) -> dict:
    """A pod object; containers: (name, image, containerID)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}",
                         "labels": dict(labels or {}), **meta},
            "spec": {"nodeName": node,
                     "containers": [{"name": c, "image": i} for c, i, _ in containers]},
            "status": {"containerStatuses": [{"name": c, "image": i, "containerID": cid}
                                             for c, i, cid in containers]}}


def self_signed(dirpath: Path, name: str = "standin") -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file): it is its own CA."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = dirpath / f"{name}.crt", dirpath / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(crt), str(pem)


def node(name: str = "node-a", labels: dict | None = None, **status: Any) -> dict:
    """A Node object (cluster-scoped); ``status`` fields as given."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels or {})},
            "status": dict(status)}
