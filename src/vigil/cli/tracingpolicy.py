"""``vigil tracingpolicy`` (alias ``tp``): manage the agent's policies over the API.

add/delete/enable/disable/list/set-mode/domains, as ``tetra tracingpolicy``. Mutating commands act on the
``grpc`` domain unless ``--domain`` says otherwise. (``check``, offline validation, is
added to this group by the policy engine.)
"""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from vigil.cli.client import Client, ClientOptions, RequestRejected, client_options

_namespace = click.option("-n", "--namespace", default="", metavar="NS",
                          help="Namespace of a TracingPolicyNamespaced.")
_domain = click.option("--domain", default="grpc", show_default=True,
                       help="Policy domain (grpc: added over the API; static: from files).")


@click.group("tracingpolicy")
def tracingpolicy() -> None:
    """Manage tracing policies on the running agent."""


def _policy_name(text: str) -> str:
    import yaml
    try:
        doc = yaml.safe_load(text)
        return str(doc["metadata"]["name"])
    except (yaml.YAMLError, LookupError, TypeError):  # the agent reports what is wrong
        return ""


@tracingpolicy.command("add")
@click.argument("file", type=click.File("rb"))
@click.option("--signature", "signature_file", default=None, metavar="FILE",
              help="Detached signature of FILE (for an agent run with "
                   "--policy-signing-key). Default: FILE.sig when it exists.")
@client_options
def add(file: Any, signature_file: str | None, client: ClientOptions) -> None:
    """Load the TracingPolicy in FILE ('-' for stdin) into the agent."""
    from vigil.api.tetragon import sensors_pb2
    from vigil.errors import PolicyError
    from vigil.policy.loader import MAX_POLICY_BYTES, check_policy_size
    raw = file.read(MAX_POLICY_BYTES + 1)  # a larger file is refused anyway
    # bytes as on disk (no newline translation): a signature covers exactly these
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestRejected(f"{file.name}: not UTF-8 text: {err.reason} at byte "
                              f"{err.start}") from None
    try:
        check_policy_size(text, file.name, complete=len(raw) <= MAX_POLICY_BYTES)
    except PolicyError as err:  # the agent would refuse it: do not send it
        raise RequestRejected("\n".join(str(d) for d in err.diagnostics)) from None
    metadata = _signature_metadata(signature_file, file.name)
    with Client(client) as c:
        c.call("AddTracingPolicy", sensors_pb2.AddTracingPolicyRequest(yaml=text),
               metadata=metadata)
    name = _policy_name(text)
    click.echo(f"tracing policy {name!r} added" if name else "tracing policy added")


def _signature_metadata(signature_file: str | None, policy_name: str
                        ) -> tuple[tuple[str, str], ...]:
    """The ``vigil-policy-signature`` header (base64) from ``--signature`` or, when not
    given, from ``POLICY.sig`` next to a policy file; none without a signature."""
    import base64
    import os

    from vigil.policy.signing import METADATA_KEY, decode_signature, signature_path
    if signature_file is None:
        if policy_name in ("-", "<stdin>") or not os.path.isfile(signature_path(policy_name)):
            return ()
        signature_file = signature_path(policy_name)
    try:
        with open(signature_file, "rb") as f:
            raw = decode_signature(f.read(4096))
    except OSError as err:
        raise click.BadParameter(f"cannot read {signature_file}: {err.strerror}",
                                 param_hint="--signature") from None
    except ValueError as err:
        raise click.BadParameter(f"{signature_file}: not a signature: {err}",
                                 param_hint="--signature") from None
    return ((METADATA_KEY, base64.b64encode(raw).decode()),)


@tracingpolicy.command("sign")
@click.option("--key", "key_file", required=True, metavar="PRIVATE",
              help="ed25519 private key: PEM (openssl genpkey -algorithm ed25519) or the "
                   "raw 32-byte seed.")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Where to write the signature (base64). Default: POLICY.sig; with "
                   "--k8s and POLICY '-', standard output.")
@click.option("--k8s", is_flag=True,
              help="POLICY is a TracingPolicy resource as the cluster stores it (kubectl "
                   "get -o yaml): sign its canonical JSON, for the "
                   "vigil.dev/policy-signature annotation.")
@click.argument("policy", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def sign(key_file: str, output: str | None, k8s: bool, policy: str) -> None:
    """Write the detached signature of POLICY (its exact bytes) for an agent run with
    --policy-signing-key. Any later change to POLICY invalidates it."""
    from vigil.errors import VigilError
    from vigil.policy.signing import load_private_key, sign as sign_bytes, signature_path
    try:
        key = load_private_key(key_file)
    except VigilError as err:
        raise click.ClickException(str(err)) from None
    with click.open_file(policy, "rb") as f:
        data = f.read(MAX_SIGNED_BYTES + 1)
    if len(data) > MAX_SIGNED_BYTES:
        raise click.ClickException(f"{policy}: over {MAX_SIGNED_BYTES} bytes")
    if k8s:
        data = _k8s_signed(policy, data)
        if policy == "-" and output is None:
            click.echo(sign_bytes(key, data).decode().strip())
            return
    elif policy == "-":
        raise click.UsageError("a policy file is signed from its path (or use --k8s)")
    out = output or signature_path(policy)
    with open(out, "wb") as f:
        f.write(sign_bytes(key, data))
    click.echo(f"signature of {policy} written to {out}")


MAX_SIGNED_BYTES = 1 << 20


def _k8s_signed(policy: str, data: bytes) -> bytes:
    """The canonical bytes of the TracingPolicy resource in ``data`` (YAML or JSON)."""
    from vigil.errors import VigilError
    from vigil.policy.loader import load_document
    from vigil.policy.signing import k8s_signed_bytes
    try:
        obj = load_document(data.decode("utf-8", "surrogateescape"), source=policy)
    except VigilError as err:
        raise click.ClickException(str(err)) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict) \
            or not obj["metadata"].get("name"):
        raise click.ClickException(f"{policy}: not a TracingPolicy resource (no metadata.name)")
    return k8s_signed_bytes(obj)


def _named(method: str, request_cls: str, verb: str) -> Any:
    @click.argument("name")
    @_namespace
    @_domain
    @client_options
    def cmd(name: str, namespace: str, domain: str, client: ClientOptions) -> None:
        from vigil.api.tetragon import sensors_pb2
        req = getattr(sensors_pb2, request_cls)(name=name, namespace=namespace, domain=domain)
        with Client(client) as c:
            c.call(method, req)
        click.echo(f"tracing policy {name!r} {verb}")
    cmd.__doc__ = f"{method.removesuffix('TracingPolicy')} the tracing policy NAME."
    return cmd


tracingpolicy.command("delete")(_named("DeleteTracingPolicy", "DeleteTracingPolicyRequest",
                                       "deleted"))
tracingpolicy.command("enable")(_named("EnableTracingPolicy", "EnableTracingPolicyRequest",
                                       "enabled"))
tracingpolicy.command("disable")(_named("DisableTracingPolicy", "DisableTracingPolicyRequest",
                                        "disabled"))


@tracingpolicy.command("set-mode")
@click.argument("name")
@click.argument("mode", type=click.Choice(["enforce", "monitor"]))
@_namespace
@_domain
@client_options
def set_mode(name: str, mode: str, namespace: str, domain: str,
             client: ClientOptions) -> None:
    """Switch the tracing policy NAME to MODE (enforce or monitor), in place."""
    from vigil.api.tetragon import sensors_pb2
    value = sensors_pb2.TP_MODE_ENFORCE if mode == "enforce" else sensors_pb2.TP_MODE_MONITOR
    with Client(client) as c:
        c.call("ConfigureTracingPolicy", sensors_pb2.ConfigureTracingPolicyRequest(
            name=name, namespace=namespace, domain=domain, mode=value))
    click.echo(f"tracing policy {name!r} set to {mode} mode")


@tracingpolicy.command("domains")
@client_options
def domains(client: ClientOptions) -> None:
    """List the policy domains the agent has (one a line)."""
    from vigil.api.tetragon import sensors_pb2
    with Client(client) as c:
        resp = c.call("ListDomains", sensors_pb2.ListDomainsRequest())
    for d in resp.domains:
        click.echo(d)


def _human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def policy_rows(resp: Any) -> list[list[str]]:
    """ListTracingPolicies as tetra's text columns."""
    from vigil.api.tetragon import sensors_pb2
    rows = [["ID", "NAME", "DOMAIN", "STATE", "FILTERID", "NAMESPACE", "SENSORS",
             "KERNELMEMORY", "MODE", "NPOST", "NENFORCE", "NMONITOR"]]
    for p in resp.policies:
        c = p.stats.action_counters
        rows.append([
            str(p.id), p.name, p.domain,
            sensors_pb2.TracingPolicyState.Name(p.state).removeprefix("TP_STATE_").lower(),
            str(p.filter_id), p.namespace or "(global)", ",".join(p.sensors),
            _human_bytes(p.kernel_memory_bytes),
            sensors_pb2.TracingPolicyMode.Name(p.mode).removeprefix("TP_MODE_").lower(),
            str(c.post), str(c.signal + c.override + c.notify_enforcer + c.set),
            str(c.monitor_signal + c.monitor_override + c.monitor_notify_enforcer
                + c.monitor_set)])
    return rows


@tracingpolicy.command("list")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--domain", default="", help="Only this domain (default: all).")
@client_options
def list_(output: str, domain: str, client: ClientOptions) -> None:
    """List the agent's tracing policies."""
    from google.protobuf import json_format

    from vigil.api.tetragon import sensors_pb2
    with Client(client) as c:
        resp = c.call("ListTracingPolicies", sensors_pb2.ListTracingPoliciesRequest(
            domain=domain))
    if output == "json":
        d = json_format.MessageToDict(resp, preserving_proto_field_name=True)
        sys.stdout.buffer.write(orjson.dumps(d, option=orjson.OPT_INDENT_2) + b"\n")
        return
    rows = policy_rows(resp)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _add_check() -> None:
    from vigil.cli.policycheck import check
    tracingpolicy.add_command(check)


_add_check()
