"""Settings of the gRPC server (pure data: the CLI imports this without grpc)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ADDRESS = "unix:///var/run/vigil/vigil.sock"
DEFAULT_INFO_FILE = "/var/run/vigil/vigil-info.json"
DEFAULT_PERSIST_DIR = "/var/run/vigil/grpc-policies"
DEFAULT_TCP_PORT = 54321


@dataclass(frozen=True)
class ServerConfig:
    """``vigil agent --server-*`` options.

    ``addresses``: where to listen (``unix:///abs/path`` or ``host:port``); empty
    disables the API. TCP needs TLS (cert + key; client CAs turn on mTLS) unless
    ``allow_insecure_tcp``, and then only on a loopback address.
    """

    addresses: tuple[str, ...] = (DEFAULT_ADDRESS,)
    socket_group: str = ""                 # group name or gid of the socket; "" = root
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_files: tuple[str, ...] = ()
    allow_insecure_tcp: bool = False
    persist_policies: bool = False
    persist_dir: str = DEFAULT_PERSIST_DIR
    info_file: str = DEFAULT_INFO_FILE
    queue_events: int = 32768              # per GetEvents client; overflow dropped, counted
    max_subscribers: int = 64              # concurrent GetEvents streams
    max_recv_bytes: int = 10 << 20         # largest request (a policy YAML)
    max_connections: int = 256             # concurrent client connections; more refused
    handshake_timeout: float = 10.0        # a connection must send its HTTP/2 preface by then
    keepalive_time: float = 120.0          # PING a connection idle this long...
    keepalive_timeout: float = 20.0        # ...and close it if unanswered after this
    # False when the addresses are the built-in default: then an address another agent
    # already serves leaves this agent without an API (logged) instead of failing it.
    explicit: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.addresses)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file or self.tls_key_file)
