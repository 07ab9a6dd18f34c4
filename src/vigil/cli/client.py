"""Talking to the agent's gRPC API from the CLI: address, TLS, actionable errors.

Address, in order: ``--server-address`` (or ``$VIGIL_SERVER_ADDRESS``), the
``server_address`` of the agent's info file (``/var/run/vigil/vigil-info.json``), else
``unix:///var/run/vigil/vigil.sock``. TLS options apply to TCP addresses: a CA makes the
channel TLS, a client certificate and key make it mTLS.

Errors are turned into sentences a person can act on: the agent is not running, the
socket refuses this user, the server wants TLS (or a client certificate), the
certificate does not verify... instead of grpc's raw status text.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from vigil.server.config import DEFAULT_ADDRESS, DEFAULT_INFO_FILE

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ClientOptions:
    server_address: str = ""
    info_file: str = DEFAULT_INFO_FILE
    timeout: float = 30.0  # tetra's default
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_cert_files: tuple[str, ...] = ()
    tls_server_name: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_cert_files or self.tls_cert_file or self.tls_key_file)


def client_options(f: F) -> F:
    """Add the common connection flags; the command receives ``client: ClientOptions``."""
    opts = [
        click.option("--server-address", envvar="VIGIL_SERVER_ADDRESS", default="",
                     metavar="ADDR", help="Agent API address (unix:///path or host:port). "
                     "Default: from the agent's info file, else " + DEFAULT_ADDRESS + "."),
        click.option("--server-info-file", envvar="VIGIL_SERVER_INFO_FILE",
                     default=DEFAULT_INFO_FILE, show_default=True, metavar="PATH",
                     help="Info file the agent writes with its address."),
        click.option("--timeout", default=30.0, show_default=True, metavar="SECONDS",
                     help="Connection and request timeout."),
        click.option("--tls-ca-cert-files", multiple=True, metavar="PATH",
                     help="CA certificate(s) to verify the agent's TLS certificate "
                     "(TCP addresses; makes the connection TLS)."),
        click.option("--tls-cert-file", default="", metavar="PATH",
                     help="Client certificate for mTLS."),
        click.option("--tls-key-file", default="", metavar="PATH",
                     help="Client private key for mTLS."),
        click.option("--tls-server-name", default="", metavar="NAME",
                     help="Name to verify in the agent's certificate (default: the host)."),
    ]

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["client"] = ClientOptions(
            server_address=kwargs.pop("server_address"),
            info_file=kwargs.pop("server_info_file"),
            timeout=kwargs.pop("timeout"),
            tls_cert_file=kwargs.pop("tls_cert_file"),
            tls_key_file=kwargs.pop("tls_key_file"),
            tls_ca_cert_files=tuple(c.strip() for v in kwargs.pop("tls_ca_cert_files")
                                    for c in v.split(",") if c.strip()),
            tls_server_name=kwargs.pop("tls_server_name"),
        )
        return f(*args, **kwargs)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper  # type: ignore[return-value]  # click's decorators return Command


def resolve_address(opts: ClientOptions) -> tuple[str, str]:
    """(address, where it came from)."""
    if opts.server_address:
        return opts.server_address, "--server-address"
    try:
        with open(opts.info_file) as f:
            addr = json.load(f).get("server_address", "")
        if addr:
            return str(addr), opts.info_file
    except (OSError, ValueError, AttributeError):
        pass
    return DEFAULT_ADDRESS, "default"


class AgentUnreachable(click.ClickException):
    """Exit 1 with a sentence saying what to do."""


class RequestRejected(AgentUnreachable):
    """Exit 3: the agent found the request invalid (INVALID_ARGUMENT), e.g. a policy
    with errors -- the same status as ``vigil tracingpolicy check`` and the agent use
    for an invalid policy."""

    exit_code = 3


# --------------------------------------------------------------------------- unix precheck

def _describe_socket(path: str) -> str:
    try:
        import grp
        import pwd
        st = os.stat(path)
        owner = pwd.getpwuid(st.st_uid).pw_name
        group = grp.getgrgid(st.st_gid).gr_name
        return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}:{group}"
    except (OSError, KeyError):
        return "mode unknown"


def check_unix_socket(path: str, source: str) -> None:
    """Connect once without grpc, to say precisely why the agent cannot be reached."""
    where = f"unix://{path}" + (f" (from {source})" if source != "--server-address" else "")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect(path)
            return
        except FileNotFoundError:
            raise AgentUnreachable(
                f"cannot reach the Vigil agent at {where}: no such socket. Is the agent "
                "running? Start it with `sudo vigil agent`, or point --server-address "
                "at its socket.") from None
        except PermissionError:
            raise AgentUnreachable(
                f"permission denied on {path} ({_describe_socket(path)}): the agent's "
                f"socket is only for its owner and group. Run this command as root "
                f"(sudo), or start the agent with --server-socket-group GROUP and add "
                f"this user (uid {os.geteuid()}) to that group.") from None
        except ConnectionRefusedError:
            raise AgentUnreachable(
                f"cannot reach the Vigil agent at {where}: the socket exists but nothing "
                "is listening (stale socket; the agent is not running). Start it with "
                "`sudo vigil agent`.") from None
        except OSError as err:
            if err.errno in (errno.ENOTSOCK, errno.ENOTDIR):
                raise AgentUnreachable(f"{path} is not a socket ({err.strerror}).") from None
            raise AgentUnreachable(f"cannot connect to {where}: {err.strerror}") from None


# --------------------------------------------------------------------------- channel

def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise click.BadParameter(f"cannot read {path}: {err.strerror}",
                                 param_hint=flag) from None


class Client:
    """A connected stub plus the context needed to explain its errors."""

    def __init__(self, opts: ClientOptions) -> None:
        # grpc's C core logs handshake failures to stderr; the CLI explains them itself
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc

        from vigil.api.tetragon import eventlogservice_pb2_grpc, sensors_pb2_grpc
        from vigil.server.listen import parse_address
        from vigil.errors import ConfigError

        self.opts = opts
        self.address, self.source = resolve_address(opts)
        try:
            addr = parse_address(self.address)
        except ConfigError as err:
            raise click.BadParameter(str(err), param_hint="--server-address") from None
        self.kind = addr.kind
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 64 << 20)]
        if addr.kind == "unix":
            if opts.tls:
                raise click.UsageError("TLS options apply to TCP addresses; the unix "
                                       f"socket {addr.path} is plain (0660 permissions).")
            check_unix_socket(addr.path, self.source)
            self.channel = grpc.insecure_channel(addr.target, options=options)
        elif opts.tls:
            ca = b"".join(_read(p, "--tls-ca-cert-files") for p in opts.tls_ca_cert_files)
            if ca and b"-----BEGIN CERTIFICATE-----" not in ca:
                raise click.BadParameter("no PEM certificate in " + ", ".join(
                    opts.tls_ca_cert_files), param_hint="--tls-ca-cert-files")
            key = _read(opts.tls_key_file, "--tls-key-file") if opts.tls_key_file else None
            cert = _read(opts.tls_cert_file, "--tls-cert-file") if opts.tls_cert_file else None
            if bool(key) != bool(cert):
                raise click.UsageError("mTLS needs both --tls-cert-file and --tls-key-file")
            if opts.tls_server_name:
                options.append(("grpc.ssl_target_name_override", opts.tls_server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=ca or None,
                                                 private_key=key, certificate_chain=cert)
            self.channel = grpc.secure_channel(addr.target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(addr.target, options=options)
        self.stub = sensors_pb2_grpc.FineGuidanceSensorsStub(self.channel)
        self.eventlog = eventlogservice_pb2_grpc.EventLogServiceStub(self.channel)

    def call(self, method: str, request: Any, *, stub: Any = None,
             metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        """A unary RPC, with grpc errors turned into ClickExceptions."""
        return self.call_with_trailers(method, request, stub=stub, metadata=metadata)[0]

    def call_with_trailers(self, method: str, request: Any, *, stub: Any = None,
                           metadata: tuple[tuple[str, str], ...] = ()
                           ) -> tuple[Any, dict[str, str]]:
        """A unary RPC and its trailing metadata (``stub``: default FineGuidanceSensors;
        ``metadata``: request headers, e.g. a policy signature)."""
        import grpc
        try:
            resp, call = getattr(stub or self.stub, method).with_call(
                request, timeout=self.opts.timeout, metadata=metadata or None)
            return resp, {k: v for k, v in (call.trailing_metadata() or ())
                          if isinstance(v, str)}
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise RequestRejected(self.explain(err, method)) from None
            raise AgentUnreachable(self.explain(err, method)) from None

    def explain(self, err: Any, method: str) -> str:
        return explain(err.code(), err.details() or "", method, self)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def explain(code: Any, details: str, method: str, client: Client) -> str:
    """A gRPC failure as an actionable sentence."""
    import grpc
    where = client.address
    low = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        return _explain_unavailable(low, details, where, client)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"the agent at {where} does not implement {method}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (f"{method} timed out after {client.opts.timeout:g}s talking to {where} "
                "(is the address right? raise --timeout if the agent is busy)")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return f"the agent at {where} refused {method}: {details}"
    return f"{method} failed: {details or code.name} ({code.name})"


def _explain_unavailable(low: str, details: str, where: str, client: Client) -> str:
    tls = client.opts.tls
    if "certificate required" in low or ("handshake" in low and "alert" in low and tls
                                          and not client.opts.tls_cert_file):
        return (f"TLS handshake with {where} failed: the agent requires a client "
                "certificate (mTLS). Pass --tls-cert-file and --tls-key-file signed by a "
                "CA the agent trusts.")
    closed = "socket closed" in low or "reset by peer" in low or "eof" in low
    if tls and closed and not client.opts.tls_cert_file:
        return (f"the agent at {where} closed the connection during the TLS handshake: it "
                "most likely requires a client certificate (mTLS). Pass --tls-cert-file "
                "and --tls-key-file signed by a CA the agent trusts.")
    if tls and closed:
        return (f"the agent at {where} closed the connection during the TLS handshake: it "
                "did not accept our client certificate (is it signed by a CA in the "
                "agent's --server-tls-client-ca-files?).")
    if "certificate verify failed" in low or "certificate_verify_failed" in low:
        return (f"TLS: the agent's certificate at {where} does not verify against "
                "--tls-ca-cert-files (wrong CA, or the name does not match: see "
                f"--tls-server-name). grpc said: {details}")
    if tls and ("wrong_version_number" in low or "wrong version number" in low
                or "ssl" in low or "handshake" in low or "tls" in low):
        return (f"TLS handshake with {where} failed: the agent does not speak TLS there "
                f"(or rejected our certificate). Drop the --tls-* options for a plain "
                f"listener, or check the certificates. grpc said: {details}")
    if "connection refused" in low or "no such file" in low or (
            "failed to connect" in low and not closed):
        return (f"cannot reach the Vigil agent at {where} (from {client.source}): "
                "connection refused. Is the agent running, and listening there?")
    if not tls and client.kind == "tcp" and (closed or "http2" in low):
        return (f"the agent at {where} closed the connection during setup: it most "
                "likely requires TLS. Pass --tls-ca-cert-files (and --tls-cert-file/"
                f"--tls-key-file for mTLS). grpc said: {details}")
    return f"cannot reach the Vigil agent at {where}: {details}"
