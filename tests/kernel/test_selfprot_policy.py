"""The built-in self-protection policy in the real kernel, through the real
PolicyManager: signals to the protected pids are events, others are not, and
``PolicyManager.replace`` swaps the protected pids in place (same policy id, the old
programs detached, nothing left after delete)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.agentproc import links_of
from tests.kernel.test_policies import Env
from vigil.selfprot import POLICY_NAME, render_policy


@pytest.fixture
def sleepers() -> Iterator[tuple[int, int]]:
    ps = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    yield ps[0].pid, ps[1].pid
    for p in ps:
        p.kill()
        p.wait()


def kill_targets(env: Env, *pids: int) -> list[int]:
    def send() -> None:
        for pid in pids:
            subprocess.run(["/bin/kill", "-0", str(pid)], check=True)
    return [b["args"][0]["int_arg"] for e in env.run(send)
            if (b := e.get("process_tracepoint")) and b["event"] == "sys_enter_kill"
            and b["policy_name"] == POLICY_NAME]


def test_replace_swaps_the_protected_pids(env: Env, sleepers: tuple[int, int]) -> None:
    a, b = sleepers
    before = links_of(os.getpid())
    info = env.manager.add(render_policy([a]), source="builtin")
    try:
        attached = links_of(os.getpid()) - before
        assert attached
        assert kill_targets(env, a, b) == [a]
        new = env.manager.replace(render_policy([b]), source="builtin")
        assert new.id == info.id and new.domain == "static"
        now = links_of(os.getpid()) - before
        assert len(now) == len(attached) and not now & attached, "old programs detached"
        assert kill_targets(env, a, b) == [b]
        (listed,) = [p for p in env.manager.list() if p.name == POLICY_NAME]
        assert listed.stats.post >= 2  # the counts of the replaced version are kept
    finally:
        env.manager.delete(POLICY_NAME)
    assert links_of(os.getpid()) == before
    assert kill_targets(env, a, b) == []


def test_the_protected_process_own_calls_are_not_reported(env: Env) -> None:
    me = os.getpid()
    with env.policy(render_policy([me])):
        def self_signal() -> Any:
            os.kill(me, 0)
            os.kill(me, signal.SIGWINCH)  # ignored by default
        assert [e for e in env.run(self_signal)
                if (e.get("process_tracepoint") or {}).get("policy_name") == POLICY_NAME] == []
