"""``vigil-oci-hook``: an OCI runtime hook that tells the agent about a container before
the container's first process runs.

Configured as a ``createRuntime`` hook (containerd through its base runtime spec, podman
and CRI-O through a hooks.d file), it is run by the OCI runtime (runc) once the container's
namespaces and cgroup exist and before its process executes. It reads the container state
(JSON on stdin: ``id``, ``pid``, ``bundle``, ``annotations``), reads the bundle's
``config.json`` (cgroups path, annotations, root), and calls the agent's ``RuntimeHook``
RPC with a ``CreateContainer`` notice; the runtime waits for the answer, so the agent
records the container before anything in it can exec.

If the agent cannot be reached, the hook logs why and lets the container start (exit 0),
unless ``--fail-closed`` is given (exit 1: the runtime then refuses to start it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_AGENT = "unix:///var/run/vigil/vigil.sock"
MAX_INPUT = 1 << 20          # bytes of state or config.json read
EXIT_OK, EXIT_FAIL = 0, 1


def _log(log_file: str, msg: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} vigil-oci-hook: {msg}\n"
    if log_file:
        try:
            with open(log_file, "a") as f:
                f.write(line)
            return
        except OSError:
            pass
    sys.stderr.write(line)


def read_state(raw: bytes) -> dict[str, Any]:
    """The OCI state the runtime passes on stdin; ValueError naming what is wrong."""
    if len(raw) > MAX_INPUT:
        raise ValueError(f"state: {len(raw)} bytes > {MAX_INPUT}")
    state = json.loads(raw)
    if not isinstance(state, dict) or not isinstance(state.get("id"), str):
        raise ValueError("state: no container id")
    return state


def read_config(bundle: str) -> dict[str, Any]:
    path = Path(bundle, "config.json")
    with open(path, "rb") as f:
        raw = f.read(MAX_INPUT + 1)
    if len(raw) > MAX_INPUT:
        raise ValueError(f"{path}: more than {MAX_INPUT} bytes")
    cfg = json.loads(raw)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: not a JSON object")
    return cfg


def create_container_request(state: dict[str, Any], config: dict[str, Any]) -> Any:
    """The ``tetragon.RuntimeHookRequest`` describing this container."""
    from vigil.api.tetragon import tetragon_pb2
    ann = {**(config.get("annotations") or {}), **(state.get("annotations") or {})}
    ann = {str(k): str(v) for k, v in ann.items()}
    linux = config.get("linux") or {}
    root = (config.get("root") or {}).get("path", "")
    if root and not os.path.isabs(root):
        root = os.path.join(state.get("bundle", ""), root)
    cc = tetragon_pb2.CreateContainer(
        cgroupsPath=str(linux.get("cgroupsPath", "")),
        rootDir=root,
        annotations=ann,
        containerID=state["id"],
    )
    for m in config.get("mounts") or []:
        cc.mounts.add(destination=str(m.get("destination", "")), type=str(m.get("type", "")),
                      source=str(m.get("source", "")),
                      options=[str(o) for o in m.get("options") or []])
    return tetragon_pb2.RuntimeHookRequest(createContainer=cc)


def call_agent(address: str, request: Any, timeout: float) -> None:
    import grpc

    from vigil.api.tetragon import tetragon_pb2
    with grpc.insecure_channel(address) as channel:
        rpc = channel.unary_unary(
            "/tetragon.FineGuidanceSensors/RuntimeHook",
            request_serializer=tetragon_pb2.RuntimeHookRequest.SerializeToString,
            response_deserializer=tetragon_pb2.RuntimeHookResponse.FromString)
        rpc(request, timeout=timeout, wait_for_ready=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vigil-oci-hook", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent-address", default=DEFAULT_AGENT,
                    help=f"the agent's gRPC address (default {DEFAULT_AGENT})")
    ap.add_argument("--timeout", type=float, default=5.0,
                    help="seconds to wait for the agent (default 5)")
    ap.add_argument("--fail-closed", action="store_true",
                    help="refuse to start the container when the agent cannot be told")
    ap.add_argument("--log-file", default="", help="append messages here (default stderr)")
    ap.add_argument("stage", nargs="?", default="createRuntime",
                    help="the hook stage, as the hook configuration passes it (informative)")
    args = ap.parse_args(argv)
    fail = EXIT_FAIL if args.fail_closed else EXIT_OK
    try:
        state = read_state(sys.stdin.buffer.read(MAX_INPUT + 1))
        config = read_config(str(state.get("bundle", ".")))
        request = create_container_request(state, config)
    except (OSError, ValueError) as err:
        _log(args.log_file, f"cannot read the container: {err}")
        return fail
    try:
        call_agent(args.agent_address, request, args.timeout)
    except Exception as err:  # noqa: BLE001 - grpc.RpcError and friends
        details = getattr(err, "details", None)
        detail = (details() if callable(details) else "") or str(err)
        _log(args.log_file, f"container {state['id'][:12]}: agent at {args.agent_address} "
                            f"not told: {detail}")
        return fail
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
