"""USDT probes (``spec.usdts``) in the real kernel: a program built here with <sys/sdt.h>.

The target's probes cover every argument location a note can give (memory at a
register + offset, a register, a constant), a probe guarded by its semaphore (it fires
only while the kernel holds the semaphore's reference count, which attaching takes),
and an int in memory for the ``Set`` action, which needs bpf_probe_write_user: refused
with the kernel's reason where lockdown forbids it, applied where the kernel allows it
(the kernel lane's stock kernels).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_policies import Env
from vigil.bpf import features
from vigil.errors import FeatureNotSupported

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None or not Path("/usr/include/x86_64-linux-gnu/sys/sdt.h").exists() \
            and not Path("/usr/include/sys/sdt.h").exists():
        pytest.fail("the USDT target needs gcc and <sys/sdt.h> (apt systemtap-sdt-dev)")
    out = tmp_path_factory.mktemp("usdt") / "usdt_target"
    subprocess.run(["gcc", "-O0", "-o", str(out), str(ROOT / "tests/progs/usdt_target.c")],
                   check=True, timeout=60)
    return str(out)


def usdt_events(env: Env, argv: list[str]) -> tuple[list[Event], str]:
    """Run the target; its process_usdt events and its output."""
    env.pipe.handle(env.base.ring.drain())
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    time.sleep(0.3)
    evs = [e for e in env.pipe.handle(env.base.ring.drain()) if "process_usdt" in e]
    return [e for e in evs if e["process_usdt"]["process"]["binary"] == argv[0]], proc.stdout


def policy(target: str, name: str, args: str, selectors: str = "") -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-usdt-{name}
spec:
  usdts:
  - path: "{target}"
    provider: vigil
    name: {name}
    message: "usdt {name}"
    args:
{args}
{selectors}
"""


def test_usdt_arguments_from_memory_register_and_constant(env: Env, target: str) -> None:
    args = """    - index: 0
      type: int32
    - index: 1
      type: int64
    - index: 2
      type: string
    - index: 3
      type: int32"""
    sel = """    selectors:
    - matchArgs:
      - index: 0
        operator: NotEqual
        values: ["20"]"""
    with env.policy(policy(target, "args", args, sel)) as info:
        assert "usdt" in info.info
        evs, _ = usdt_events(env, [target, "a", "bc", "d e"])
    bodies = [e["process_usdt"] for e in evs]
    assert [b["args"] for b in bodies] == [
        [{"int_arg": 10}, {"long_arg": "-1000000000000"}, {"string_arg": "a"}, {"int_arg": 42}],
        [{"int_arg": 30}, {"long_arg": "-3000000000000"}, {"string_arg": "d e"},
         {"int_arg": 42}]]
    b = bodies[0]
    assert (b["path"], b["provider"], b["name"]) == (target, "vigil", "args")
    assert b["policy_name"] == "vk-usdt-args" and b["message"] == "usdt args"
    assert b["action"] == "KPROBE_ACTION_POST"
    assert list(b)[-1] == "action"


def test_usdt_semaphore_is_held_while_attached(env: Env, target: str) -> None:
    """The probe behind `if (semaphore)` fires only because attaching raised the count."""
    _, out = usdt_events(env, [target, "x"])
    assert out == "sem=0 v=1\n"
    with env.policy(policy(target, "sem", """    - index: 0
      type: int32""")):
        evs, out = usdt_events(env, [target, "x", "y"])
    assert [e["process_usdt"]["args"] for e in evs] == [[{"int_arg": 10}], [{"int_arg": 20}]]
    assert out == "sem=1 v=1\nsem=1 v=2\n"
    _, out = usdt_events(env, [target, "x"])  # detached: the count is back to 0
    assert out == "sem=0 v=1\n"


SET_SEL = """    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["2"]
      matchActions:
      - action: Set
        argIndex: 0
        argValue: 77"""


def test_usdt_set_writes_the_argument_or_is_refused_with_the_reason(env: Env,
                                                                    target: str) -> None:
    pol = policy(target, "set", """    - index: 0
      type: int32""", SET_SEL)
    res = features.probe("probe_write_user")
    if not res.ok:
        with pytest.raises(FeatureNotSupported, match=r"spec.usdts\[0\].selectors\[0\]"
                           r".matchActions\[0\].action: action Set writes the probe's "
                           r"argument in user memory with bpf_probe_write_user: this kernel "
                           r"refuses it \(load refused"):
            env.manager.add(pol, source="test")
        assert features.lockdown() not in (None, "none")
        return
    with env.policy(pol):
        evs, out = usdt_events(env, [target, "a", "b", "c"])
    assert out == "sem=0 v=1\nsem=0 v=77\nsem=0 v=3\n"
    bodies = [e["process_usdt"] for e in evs]
    assert [(b["args"], b["action"]) for b in bodies] == [
        ([{"int_arg": 2}], "KPROBE_ACTION_SET")]
