"""Override on uprobes in the real kernel: the probed function does not run and its
caller gets ``argError``. The entry program writes the registers (the return value, then
ip and sp as the function's ``ret`` would leave them), which only kernels whose uprobe
programs may write their context allow (feature probe ``uprobe_regs``: sid's 7.2; the
hardened host, bookworm's 6.1 and 6.12 refuse it, and the policy is refused with that
reason).

The target (tests/progs/uprobe_override_target.c) prints, for each argument n, what
``vigil_check(n)`` returned (n * 2 when it runs) and how many calls ran it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lane import expected
from tests.kernel.test_policies import Env
from vigil.bpf import features
from vigil.errors import FeatureNotSupported

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("uprobe-override") / "uprobe_override_target"
    subprocess.run(["gcc", "-O1", "-o", str(out),
                    str(ROOT / "tests/progs/uprobe_override_target.c")], check=True)
    return str(out)


def policy(target: str, name: str, mode: str = "enforce") -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-uprobe-override-{name}
spec:
  options:
  - name: policy-mode
    value: {mode}
  uprobes:
  - path: "{target}"
    symbols: ["vigil_check"]
    args:
    - index: 0
      type: int64
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["7"]
      matchActions:
      - action: Override
        argError: -13
"""


def run(env: Env, argv: list[str]) -> tuple[list[Event], str]:
    env.pipe.handle(env.base.ring.drain())
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    time.sleep(0.3)
    evs = [e["process_uprobe"] for e in env.pipe.handle(env.base.ring.drain())
           if "process_uprobe" in e]
    return [b for b in evs if b["process"]["binary"] == argv[0]], proc.stdout


def _allowed() -> bool:
    res = features.probe("uprobe_regs")
    if not res.ok and "uprobe_regs" in expected():
        pytest.fail(f"this kernel should allow uprobe_regs (VIGIL_EXPECT_FEATURES): "
                    f"{res.reason}")
    return res.ok


def test_override_skips_the_function_and_returns_arg_error(env: Env, target: str) -> None:
    """The call with 7 returns -13 without running; the calls around it run."""
    if not _allowed():
        reason = features.probe("uprobe_regs").reason
        with pytest.raises(FeatureNotSupported, match=r"matchActions\[0\].action: Override "
                           r"on a uprobe .* needs a kernel whose uprobe programs may write "
                           r"the registers .* this kernel refuses it \("
                           + reason.split(":")[0]):
            env.manager.add(policy(target, "enforce"), source="test")
        return
    with env.policy(policy(target, "enforce")) as info:
        assert "uprobe" in info.info
        bodies, out = run(env, [target, "1", "7", "42", "7"])
    assert out == "1=2 runs=1\n7=-13 runs=1\n42=84 runs=2\n7=-13 runs=2\n"
    assert [b["action"] for b in bodies] == ["KPROBE_ACTION_OVERRIDE"] * 2
    assert all(b["symbol"] == "vigil_check" and b["args"][0] == {"long_arg": "7"}
               for b in bodies)
    _, out = run(env, [target, "7"])  # the policy is gone: the function runs again
    assert out == "7=14 runs=1\n"


def test_override_in_monitor_mode_only_reports(env: Env, target: str) -> None:
    if not _allowed():
        pytest.skip(f"this kernel refuses uprobe_regs: {features.probe('uprobe_regs').reason}")
    with env.policy(policy(target, "monitor", mode="monitor")):
        bodies, out = run(env, [target, "7"])
    assert out == "7=14 runs=1\n"
    assert [b["action"] for b in bodies] == ["KPROBE_ACTION_OVERRIDE"]
