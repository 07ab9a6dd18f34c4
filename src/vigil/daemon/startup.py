"""The agent's start-up as named steps with declared dependencies.

``Agent.start()`` runs ``STEPS`` in order; a test harness that needs only part of an
agent (a loaded base sensor and the policy engine, say) asks for those steps by name and
gets them with everything they depend on, in the same order, run by the same code.
``plan`` refuses a table whose steps come before what they need, so the order written
here is checked, not just followed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vigil.daemon.agent import Agent

log = logging.getLogger("vigil.agent")

# procFS exec events published at once by the /proc scan, before waiting for exporters
BOOTSTRAP_STEP = 512
BOOTSTRAP_WAIT_S = 5.0


@dataclass(frozen=True)
class Step:
    """One start-up step: ``run`` does it; ``needs`` names the steps that must be done
    first."""

    name: str
    run: Callable[[Agent], None]
    needs: tuple[str, ...] = ()


def plan(steps: Sequence[Step], wanted: Collection[str] | None = None) -> list[Step]:
    """The steps to run, in table order: all of them, or ``wanted`` and what they need.
    ValueError for an unknown name, a duplicate, or a step listed before a need."""
    by_name: dict[str, Step] = {}
    for s in steps:
        if s.name in by_name:
            raise ValueError(f"start-up step {s.name!r} is listed twice")
        for n in s.needs:
            if n not in by_name:
                raise ValueError(f"start-up step {s.name!r} needs {n!r}, which is not "
                                 "listed before it")
        by_name[s.name] = s
    if wanted is None:
        return list(steps)
    todo: set[str] = set()
    stack = list(wanted)
    while stack:
        name = stack.pop()
        if name not in by_name:
            raise ValueError(f"no start-up step {name!r} (steps: {', '.join(by_name)})")
        if name not in todo:
            todo.add(name)
            stack.extend(by_name[name].needs)
    return [s for s in steps if s.name in todo]


# -- the steps ------------------------------------------------------------------------

def _privileges(agent: Agent) -> None:
    from vigil.daemon.agent import check_privileges
    check_privileges()


def _btf(agent: Agent) -> None:
    from vigil.daemon.agent import check_btf
    check_btf()


def _signing_key(agent: Agent) -> None:
    """A bad key stops start-up before any BPF loads."""
    if agent.cfg.policy_signing_key:
        from vigil.policy.signing import PolicyVerifier
        agent.verifier = PolicyVerifier.from_file(agent.cfg.policy_signing_key)


def _mounts(agent: Agent) -> None:
    from vigil.bpf import mounts
    agent.mounts = mounts.ensure()  # tracefs, bpffs, cgroup2, securityfs


def _base_sensor(agent: Agent) -> None:
    from vigil.sensors.base import BaseSensor, BaseSensorConfig  # imports libbpf
    cfg = agent.cfg
    agent.sensor = BaseSensor(BaseSensorConfig(
        ring_bytes=cfg.rb_size_total, ring_bytes_per_cpu=cfg.rb_size,
        max_args=cfg.max_args, cgroup_rate=cfg.cgroup_rate,
        track_creds=cfg.process_cred_changes != "off"))
    agent.sensor.load()


def _policy_engine(agent: Agent) -> None:
    agent._start_policy_engine()
    agent.policies.verifier = agent.verifier
    if getattr(agent.cfg, "k8s", None) is not None:  # node labels come from the API later
        agent.policies.set_node_labels(None, f"node {agent.node_name}")


def _metrics(agent: Agent) -> None:
    if agent.cfg.metrics is not None:
        from vigil.metrics import start_metrics  # imports prometheus_client
        agent.metrics = start_metrics(agent, agent.cfg.metrics)


def _procfs_scan(agent: Agent) -> None:
    """The processes already running: procFS exec events, the cache, ``vg_procs``."""
    from vigil.process import procfs
    procs = procfs.scan(agent.cfg.procfs, agent.node_name, agent._boot_wall)
    # in steps, each exported before the next is built: a node with 10k processes then
    # never holds 10k events (and their JSON) at once; a slow subscriber delays start-up
    # by BOOTSTRAP_WAIT_S at most, after which the rest is handed over without waiting
    deadline = time.monotonic() + BOOTSTRAP_WAIT_S
    for i in range(0, len(procs), BOOTSTRAP_STEP):
        agent.hub.publish(agent.pipeline.bootstrap(procs[i:i + BOOTSTRAP_STEP]))
        agent.hub.wait_drained(max(0.0, deadline - time.monotonic()))
    agent.sensor.seed_procs((p.pid, p.binary, (p.creds.cap_effective, p.creds.cap_inheritable,
                                                p.creds.cap_permitted), astuple(p.ns))
                            for p in procs if p.binary and p.pid and not p.kthread)


def _containers(agent: Agent) -> None:
    from vigil.containers.attach import attach
    agent.containers = attach(agent)


def _kubernetes(agent: Agent) -> None:
    if getattr(agent.cfg, "k8s", None) is None:
        return  # not imported either: the client side is ~1 MB of the agent's memory
    from vigil.k8s.agent import start as start_k8s
    agent.k8s = start_k8s(agent)


def _gc(agent: Agent) -> None:
    from vigil.stream.pipeline import tune_gc
    tune_gc()


def _reader(agent: Agent) -> None:
    agent._reader = threading.Thread(target=agent._read_loop, name="vigil-reader",
                                     daemon=True)
    agent._reader.start()


STEPS: tuple[Step, ...] = (
    Step("privileges", _privileges),
    Step("btf", _btf),
    Step("signing-key", _signing_key),
    Step("mounts", _mounts, ("privileges",)),
    Step("base-sensor", _base_sensor, ("privileges", "btf", "mounts")),
    Step("policy-engine", _policy_engine, ("base-sensor", "signing-key")),
    Step("exporters", lambda a: a._start_exporters()),
    Step("grpc-server", lambda a: a._start_server(), ("policy-engine", "exporters")),
    # RuntimeHook notices in, process.pod out (before the /proc scan: its processes get pods)
    Step("containers", _containers, ("grpc-server",)),
    Step("metrics", _metrics, ("base-sensor", "exporters")),
    Step("procfs-scan", _procfs_scan, ("base-sensor",)),
    Step("startup-policies", lambda a: a._load_startup_policies(),
         ("policy-engine", "procfs-scan")),
    # pods of this node, TracingPolicy resources, pod scoping (--enable-k8s-api)
    Step("kubernetes", _kubernetes, ("policy-engine", "startup-policies", "containers")),
    Step("self-protection", lambda a: a._start_self_protection(), ("policy-engine",)),
    Step("kept-links", lambda a: a._replace_kept_links(),
         ("base-sensor", "startup-policies", "self-protection")),
    Step("gc-thresholds", _gc),
    Step("reader", _reader, ("base-sensor", "procfs-scan")),
    # once the reader runs: the first check passes
    Step("health-server", lambda a: a._start_health_server(), ("reader",)),
)

__all__ = ["STEPS", "Step", "plan"]
