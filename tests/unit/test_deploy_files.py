"""The shipped systemd unit: systemd accepts it, and its flags are the agent's."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "vigil.service"
INSTALLED = "/opt/vigil/bin/vigil"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_verify_accepts_the_unit(tmp_path: Path) -> None:
    # the unit names the installed agent; here it is this checkout's
    vigil = Path(sys.executable).with_name("vigil")
    unit = tmp_path / "vigil.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(vigil)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    # unknown keys and bad values are warnings with exit status 0: none may appear
    assert r.returncode == 0 and "vigil.service" not in r.stderr + r.stdout, r.stderr


def test_unit_flags_are_accepted_by_the_agent() -> None:
    lines = UNIT.read_text().split("ExecStart=", 1)[1].splitlines()
    cmd = []
    for line in lines:  # the command and its continuation lines
        cmd.append(line.strip().removesuffix("\\"))
        if not line.endswith("\\"):
            break
    args = " ".join(cmd).split()
    assert args[0] == INSTALLED and args[1] == "agent"
    from click.testing import CliRunner

    from vigil.cli.agent import agent
    # --help after the flags: click parses them all (a wrong flag fails) and stops there
    r = CliRunner().invoke(agent, [*args[2:], "--help"])
    assert r.exit_code == 0, r.output
