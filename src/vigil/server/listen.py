"""Where the gRPC server listens, and how safely.

* Unix socket (default ``unix:///var/run/vigil/vigil.sock``): bound inside a
  fresh 0700 directory next to the final path; it is then chmod 0660, chowned to
  root:<--server-socket-group> and renamed into place, so the socket is never reachable
  with looser permissions (as Tetragon's ListenWithRename). A stale socket left by a
  crashed agent is removed; a live one (another agent answers) is an error.
* TCP: only with TLS (``--server-tls-cert-file``/``--server-tls-key-file``; client CA
  files make it mTLS: a client certificate signed by one of them is required). TLS 1.2+
  with ALPN ``h2``, as gRPC requires. Plain
  TCP is refused unless ``--server-allow-insecure-tcp``, and even then only on a
  loopback address, with a warning: anyone on the host could then read every event
  and change policies.
* The info file (``/var/run/vigil/vigil-info.json``, 0644) tells clients where the
  server is, as Tetragon's tetragon-info.json does: ``{"server_address": ...}``.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.errors import ConfigError
from vigil.server.config import DEFAULT_TCP_PORT, ServerConfig

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
_SUN_PATH_MAX = 107


@dataclass(frozen=True)
class Address:
    """A parsed ``--server-address``: ``unix`` with ``path``, or ``tcp`` with host/port."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def target(self) -> str:
        """The grpc target / bind string."""
        if self.kind == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        if self.kind == "unix":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(addr: str) -> Address:
    """``unix:///abs/path`` | ``unix:/abs/path`` | ``host:port`` | ``[v6]:port`` | ``host``."""
    addr = addr.strip()
    if addr.startswith("unix:"):
        path = addr[len("unix:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise ConfigError("server-address", f"{addr!r}: a unix socket path must be "
                              "absolute (unix:///var/run/vigil/vigil.sock)")
        return Address("unix", path=os.path.normpath(path))
    if not addr:
        raise ConfigError("server-address", "empty address")
    host, port = addr, DEFAULT_TCP_PORT
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise ConfigError("server-address", f"{addr!r}: unbalanced [")
        host, rest = addr[1:end], addr[end + 1:]
        if rest:
            port = _port(addr, rest.removeprefix(":"))
    elif addr.count(":") == 1:
        host, p = addr.split(":")
        port = _port(addr, p)
    elif ":" in addr:
        raise ConfigError("server-address", f"{addr!r}: write IPv6 hosts as [addr]:port")
    return Address("tcp", host=host or "0.0.0.0", port=port)


def _port(addr: str, p: str) -> int:
    try:
        port = int(p)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError("server-address", f"{addr!r}: invalid port {p!r}")
    return port


def parse_addresses(value: str) -> tuple[str, ...]:
    """Comma-separated ``--server-address`` values; "" disables the server."""
    return tuple(a.strip() for a in value.split(",") if a.strip())


def resolve_group(group: str) -> int:
    """A group name or number -> gid ("" = the agent's own group)."""
    if not group:
        return os.getegid()
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError as err:
        raise ConfigError("server-socket-group", f"no such group {group!r}") from err


# --------------------------------------------------------------------------- unix socket

class AddressInUse(ConfigError):
    """Another process (another agent?) already serves this address."""


def _check_existing(path: Path) -> None:
    """Remove a stale socket at ``path``; refuse a live one or a non-socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError("server-address", f"{path} exists and is not a socket; "
                          "remove it or choose another --server-address")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            log.info("removing stale socket %s", path)
            path.unlink(missing_ok=True)
            return
    raise AddressInUse("server-address", f"{path}: another process is already serving "
                       "there (is another vigil agent running?)")


# Pending connections the kernel holds before the server accepts them: above
# max_connections, so a burst of clients is refused by the server (counted), not with
# EAGAIN by the kernel.
_BACKLOG = 1024


class UnixListener:
    """A listening unix socket made with the rename dance; ``close()`` removes it."""

    def __init__(self, addr: Address, gid: int) -> None:
        self.addr = addr
        self.gid = gid
        self.path = Path(addr.path)
        self._tmpdir: str | None = None
        self._ino: int | None = None  # the socket we put at path (never remove another's)

    tls_context: ssl.SSLContext | None = None  # a unix socket never uses TLS

    def open(self) -> tuple[socket.socket, str]:
        """(the listening socket, the address to advertise)."""
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        _check_existing(self.path)
        self._tmpdir = tempfile.mkdtemp(prefix=".vigil-", dir=parent)  # 0700
        tmp = os.path.join(self._tmpdir, "s")
        if len(tmp.encode()) > _SUN_PATH_MAX:
            raise ConfigError("server-address", f"{self.path}: path too long for a unix "
                              f"socket (the agent needs {len(tmp)} of {_SUN_PATH_MAX} bytes)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(tmp)
            os.chmod(tmp, SOCKET_MODE)
            os.chown(tmp, os.geteuid(), self.gid)
            self._ino = os.lstat(tmp).st_ino
            os.rename(tmp, self.path)
            os.rmdir(self._tmpdir)
            self._tmpdir = None
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise ConfigError("server-address",
                              f"cannot listen on {self.addr.target}: {err.strerror}") from err
        return sock, self.addr.target

    def close(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            st = self.path.lstat()
            if self._ino is not None and stat.S_ISSOCK(st.st_mode) and st.st_ino == self._ino:
                self.path.unlink()
        self._ino = None


# --------------------------------------------------------------------------- tcp

def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(what, f"cannot read {path}: {err.strerror}") from err


def server_tls(cfg: ServerConfig) -> ssl.SSLContext:
    """The TLS context (ALPN h2, TLS >= 1.2); client CA files turn on mandatory client
    certificates (mTLS)."""
    if not (cfg.tls_cert_file and cfg.tls_key_file):
        raise ConfigError("server-tls-cert-file", "TLS needs both --server-tls-cert-file "
                          "and --server-tls-key-file")
    _read(cfg.tls_key_file, "server-tls-key-file")
    _read(cfg.tls_cert_file, "server-tls-cert-file")
    cas = b"".join(_read(f, "server-tls-client-ca-files") for f in cfg.tls_client_ca_files)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    try:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError("server-tls-cert-file", f"cannot use {cfg.tls_cert_file} with "
                          f"{cfg.tls_key_file}: {err}") from err
    if cas:
        try:
            ctx.load_verify_locations(cadata=cas.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as err:
            raise ConfigError("server-tls-client-ca-files",
                              f"cannot read the client CA certificates: {err}") from err
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class TcpListener:
    def __init__(self, addr: Address, cfg: ServerConfig) -> None:
        self.addr = addr
        self.cfg = cfg

        self.tls_context: ssl.SSLContext | None = None

    def open(self) -> tuple[socket.socket, str]:
        """(the listening socket, the address to advertise: the real port if 0)."""
        if self.cfg.tls:
            self.tls_context = server_tls(self.cfg)
        else:
            self._check_insecure()
        try:
            infos = socket.getaddrinfo(self.addr.host, self.addr.port,
                                       type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as err:
            raise ConfigError("server-address",
                              f"{self.addr.target}: {err.strerror}") from err
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise AddressInUse("server-address", f"cannot listen on {self.addr.target} "
                               f"({err.strerror})") from err
        port = sock.getsockname()[1]
        host = f"[{self.addr.host}]" if ":" in self.addr.host else self.addr.host
        return sock, f"{host}:{port}"

    def _check_insecure(self) -> None:
        if not self.cfg.allow_insecure_tcp:
            raise ConfigError("server-address", f"{self.addr.target}: refusing plain TCP: "
                              "set --server-tls-cert-file and --server-tls-key-file (and "
                              "--server-tls-client-ca-files for mTLS), use a unix socket, "
                              "or force it on loopback with --server-allow-insecure-tcp")
        if not self.addr.loopback:
            raise ConfigError("server-address", f"{self.addr.target}: plain TCP is only "
                              "allowed on a loopback address (127.0.0.1, ::1, localhost)")
        log.warning("gRPC API on %s WITHOUT TLS (--server-allow-insecure-tcp): any local "
                    "user can read all events and change tracing policies",
                    self.addr.target)

    def close(self) -> None:
        pass


def validate(cfg: ServerConfig) -> None:
    """Refuse a bad configuration before the agent loads anything (ConfigError)."""
    for addr in cfg.addresses:
        a = parse_address(addr)
        if a.kind == "unix":
            resolve_group(cfg.socket_group)
        elif cfg.tls:
            server_tls(cfg)  # files readable and matching, both given
        elif not cfg.allow_insecure_tcp:
            TcpListener(a, cfg)._check_insecure()
        elif not a.loopback:
            raise ConfigError("server-address", f"{a.target}: plain TCP is only allowed on "
                              "a loopback address (127.0.0.1, ::1, localhost)")
    if cfg.tls_client_ca_files and not cfg.tls:
        raise ConfigError("server-tls-client-ca-files", "mTLS needs --server-tls-cert-file "
                          "and --server-tls-key-file too")


def make_listener(addr: str, cfg: ServerConfig) -> UnixListener | TcpListener:
    a = parse_address(addr)
    if a.kind == "unix":
        return UnixListener(a, resolve_group(cfg.socket_group))
    return TcpListener(a, cfg)


# --------------------------------------------------------------------------- info file

def write_info_file(path: str, addresses: list[str], extra: dict[str, Any]) -> None:
    """Atomically write the info file clients read to find the server (0644)."""
    if not path or not addresses:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    info = {"server_address": addresses[0], "server_addresses": addresses, **extra}
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".info-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_info_file(path: str, pid: int) -> None:
    """Remove the info file if it is still ours (another agent may have replaced it)."""
    try:
        with open(path) as f:
            if json.load(f).get("pid") != pid:
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass
