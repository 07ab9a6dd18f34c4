"""vigil.bpf.features against the running kernel.

Each probe is compared with an oracle that does not go through Vigil's probe code:
bpftool's own feature probe (program/map types, helpers), the PMUs under
/sys/bus/event_source/devices, tracefs, the kernel's BTF and the kernel config. Where
the oracle only bounds the answer (e.g. fmod_ret on syscalls depends on the version),
the test asserts the implication. On this hardened host (KERNELS.md) the oracles give
exactly: tp_btf, raw_tp, tracepoint, uprobe, uretprobe, cgroup_sock_addr, iter_task,
send_signal, ringbuf, bpf_loop true; kprobe*, fentry/fexit/fmod_ret, lsm, d_path,
override_return false, each with a reason.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vigil.bpf import features as F
from vigil.errors import FeatureNotSupported

pytestmark = pytest.mark.kernel

# root/BTF/objects are checked by tests/conftest.py; the oracles also need bpftool
if shutil.which("bpftool") is None:
    if os.environ.get("VIGIL_TEST_STRICT") == "1":
        raise RuntimeError("strict mode: test_features needs bpftool for its oracles")
    pytest.skip("test_features needs bpftool for its oracles", allow_module_level=True)

REASON = re.compile(r"^(load refused|attach failed): E[A-Z0-9]+ \(.+\)")
PMUS = Path("/sys/bus/event_source/devices")


# --- oracles (independent of vigil.bpf.features' probing) ------------------------------

def _bpftool(*args: str) -> Any:
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout or "null")


@pytest.fixture(scope="module")
def results() -> dict[str, F.ProbeResult]:
    F.mount_fs()
    F.clear_cache()
    return {r.name: r for r in F.probe_all()}


@pytest.fixture(scope="module")
def kfeat() -> dict[str, Any]:
    return _bpftool("feature", "probe", "kernel")


def _prog_type(kfeat: dict[str, Any], name: str) -> bool:
    return bool(kfeat["program_types"][f"have_{name}_prog_type"])


def _helper(kfeat: dict[str, Any], prog_type: str, helper: str) -> bool:
    return helper in kfeat["helpers"][f"{prog_type}_available_helpers"]


def _tracefs(rel: str) -> bool:
    base = F.tracefs_path()
    return base is not None and os.path.exists(os.path.join(base, rel))


def _kprobes() -> bool:
    return (PMUS / "kprobe").is_dir() or _tracefs("kprobe_events")


def _uprobes() -> bool:
    return (PMUS / "uprobe").is_dir() or _tracefs("uprobe_events")


def _btf_has(name: str) -> bool:
    return f"\0{name}\0".encode() in Path("/sys/kernel/btf/vmlinux").read_bytes()


def _kconfig(option: str) -> bool | None:
    """CONFIG_x from /proc/config.gz or /boot/config-*: True/False, None if unknown."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        try:
            text = Path(f"/boot/config-{platform.release()}").read_text()
        except OSError:
            return None
    return re.search(rf"^{option}=[ym]$", text, re.M) is not None


def _cgroup2() -> bool:
    return any(fs == "cgroup2" for _, fs in F._mounts())


# name -> (oracle, exact): exact=True asserts ok == oracle, else asserts ok implies oracle
Oracle = Callable[[dict[str, Any]], bool]
ORACLES: dict[str, tuple[Oracle, bool]] = {
    "tp_btf": (lambda k: F.btf_available() and _prog_type(k, "raw_tracepoint"), True),
    "raw_tp": (lambda k: _prog_type(k, "raw_tracepoint"), True),
    "tracepoint": (lambda k: _tracefs("events/syscalls/sys_enter_getpid"), True),
    "kprobe": (lambda k: _kprobes(), True),
    "kretprobe": (lambda k: _kprobes(), True),
    "kprobe_multi": (lambda k: _kprobes(), False),  # also needs >= 5.18 + fprobe
    "fentry": (lambda k: _prog_type(k, "tracing"), True),
    "fexit": (lambda k: _prog_type(k, "tracing"), True),
    "fentry_security": (lambda k: _prog_type(k, "tracing"), True),
    "fmod_ret_security": (lambda k: _prog_type(k, "tracing"), True),
    "fmod_ret_syscall": (lambda k: _prog_type(k, "tracing"), False),  # version-dependent
    "lsm": (lambda k: _prog_type(k, "lsm") and bool(F.bpf_lsm_enabled()), True),
    "uprobe": (lambda k: _uprobes(), True),
    "uretprobe": (lambda k: _uprobes(), True),
    "cgroup_sock_addr": (lambda k: _prog_type(k, "cgroup_sock_addr") and _cgroup2(), True),
    "iter_task": (lambda k: F.btf_available() and _btf_has("bpf_iter__task"), True),
    "send_signal": (lambda k: _helper(k, "raw_tracepoint", "bpf_send_signal"), True),
    # bpftool lists bpf_override_return even where loads are refused: use the config
    "override_return": (lambda k: _kprobes() and _kconfig("CONFIG_BPF_KPROBE_OVERRIDE")
                        is not False, False),
    "d_path": (lambda k: _prog_type(k, "tracing"), False),
    # kernel lockdown (integrity or confidentiality) refuses writing user memory
    "probe_write_user": (lambda k: F.lockdown() in (None, "none"), True),
    # uprobe programs writing their registers: newer kernels only (no oracle but uprobes)
    "uprobe_regs": (lambda k: _uprobes(), False),
    "ringbuf": (lambda k: bool(k["map_types"]["have_ringbuf_map_type"]), True),
    "bpf_loop": (lambda k: _helper(k, "raw_tracepoint", "bpf_loop"), True),
    "ktime_boot": (lambda k: _helper(k, "raw_tracepoint", "bpf_ktime_get_boot_ns"), True),
}


def test_every_feature_has_an_oracle() -> None:
    assert set(ORACLES) == set(F.FEATURES)


@pytest.mark.parametrize("name", F.FEATURES)
def test_probe_agrees_with_kernel(name: str, results: dict[str, F.ProbeResult],
                                  kfeat: dict[str, Any]) -> None:
    oracle, exact = ORACLES[name]
    expected = oracle(kfeat)
    res = results[name]
    if exact:
        assert res.ok == expected, res
    elif not expected:
        assert not res.ok, res
    if res.ok:
        assert res.reason == ""
    else:
        assert res.reason, res


def test_this_host_per_kernels_md(results: dict[str, F.ProbeResult],
                                  kfeat: dict[str, Any]) -> None:
    """The hardened host's profile (no kprobes, no trampolines): the table in KERNELS.md."""
    if (PMUS / "kprobe").is_dir() or _prog_type(kfeat, "tracing"):
        pytest.skip("not the hardened host profile (kprobes or trampolines present)")
    for name in ("tp_btf", "raw_tp", "tracepoint", "uprobe", "uretprobe", "cgroup_sock_addr",
                 "iter_task", "send_signal", "ringbuf", "bpf_loop", "ktime_boot"):
        assert results[name].ok, results[name]
    refused = {
        "fentry": "load refused: EPERM", "fexit": "load refused: EPERM",
        "fentry_security": "load refused: EPERM", "fmod_ret_security": "load refused: EPERM",
        "fmod_ret_syscall": "load refused: EPERM", "lsm": "load refused: EPERM",
        "d_path": "load refused: EPERM", "override_return": "load refused: EINVAL",
        "probe_write_user": "load refused: EINVAL", "uprobe_regs": "load refused: EACCES",
        "kprobe": "attach failed: ", "kretprobe": "attach failed: ",
        "kprobe_multi": "attach failed: ",
    }
    for name, prefix in refused.items():
        res = results[name]
        assert not res.ok and res.reason.startswith(prefix), res
        assert REASON.match(res.reason), res


def test_reasons_are_well_formed(results: dict[str, F.ProbeResult]) -> None:
    for res in results.values():
        if not res.ok and not res.reason.startswith("BPF LSM not active"):
            assert REASON.match(res.reason), res


def test_kprobes_available_matches_pmu() -> None:
    assert F.kprobes_available() == _kprobes()


def test_facts() -> None:
    assert F.privileges() is None  # root
    assert F.btf_available() == os.path.exists("/sys/kernel/btf/vmlinux")
    assert F.lockdown() in ("none", "integrity", "confidentiality")
    lsms = Path("/sys/kernel/security/lsm").read_text().split(",")
    assert F.bpf_lsm_enabled() == ("bpf" in lsms)
    assert F.mount_fs() == []  # the fixture mounted everything already


def test_require_and_cache(results: dict[str, F.ProbeResult]) -> None:
    assert F.probe("raw_tp") is F.probe("raw_tp")
    F.require("raw_tp")
    refused = [r for r in results.values() if not r.ok]
    if not refused:
        pytest.skip("this kernel allows every feature")
    with pytest.raises(FeatureNotSupported) as exc:
        F.require(refused[0].name)
    assert exc.value.feature == refused[0].name
    assert exc.value.reason == refused[0].reason
    with pytest.raises(ValueError):
        F.probe("no_such_feature")


# --- nothing left behind ------------------------------------------------------------------

def _probe_state() -> tuple[set[int], set[int], set[int], list[str]]:
    """(vg_p_* prog ids, links to them, probe ring map ids, leftover probe cgroups)."""
    progs = {p["id"]: p.get("name", "") for p in _bpftool("prog", "list") or []}
    ours = {i for i, n in progs.items() if n.startswith("vg_p_")}
    links = {lk["id"] for lk in _bpftool("link", "list") or [] if lk.get("prog_id") in ours}
    maps = {m["id"] for m in _bpftool("map", "list") or [] if m.get("name") == "vg_probe_rb"}
    cg = [t for t, fs in F._mounts() if fs == "cgroup2"]
    dirs = [d.name for root in cg for d in Path(root).iterdir() if d.name.startswith("vigil-probe")]
    return ours, links, maps, dirs


def test_probe_all_leaves_nothing_behind() -> None:
    before_links = {lk["id"] for lk in _bpftool("link", "list") or []}
    before_progs = {p["id"] for p in _bpftool("prog", "list") or []}
    pins = sorted(os.listdir("/sys/fs/bpf"))
    F.clear_cache()
    F.probe_all()
    state = _probe_state()
    for _ in range(50):  # programs and maps are freed after an RCU grace period
        if not any(state):
            break
        time.sleep(0.02)
        state = _probe_state()
    assert state == (set(), set(), set(), [])
    new_links = {lk["id"] for lk in _bpftool("link", "list") or []} - before_links
    new_progs = {p["id"]: p.get("name") for p in _bpftool("prog", "list") or []
                 if p["id"] not in before_progs}
    assert not any(str(n).startswith("vg_p_") for n in new_progs.values()), new_progs
    assert all(lk not in before_links for lk in new_links)  # only others' new links
    assert sorted(os.listdir("/sys/fs/bpf")) == pins


def test_probe_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vigil.libbpf")
    F.clear_cache()
    F.probe_all()
    assert not [r for r in caplog.records if r.name == "vigil.libbpf"]
    assert logging.getLogger("vigil.libbpf").level == logging.DEBUG  # level restored


# --- the command ---------------------------------------------------------------------------

def test_cli_text(results: dict[str, F.ProbeResult]) -> None:
    from vigil.cli.probe import KFUNCS, probe

    out = CliRunner().invoke(probe, [])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert [ln.split(":", 1)[0] for ln in lines] == [*F.FEATURES, *(k[0] for k in KFUNCS)]
    for ln, name in zip(lines, F.FEATURES):
        res = results[name]
        if res.ok:
            assert ln == f"{name}: true"
        else:
            assert ln == f"{name}: false ({res.reason})"


def test_cli_json(results: dict[str, F.ProbeResult]) -> None:
    from vigil.cli.probe import kfunc_results, probe

    out = CliRunner().invoke(probe, ["-o", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert {p["name"]: p["ok"] for p in doc["probes"]} == {
        **{n: r.ok for n, r in results.items()}, **{r.name: r.ok for r in kfunc_results()}}
    assert doc["kernel"]["btf"] is F.btf_available()


def test_kfunc_probes_agree_with_bpftool_btf_dump() -> None:
    """``vigil probe``'s kfunc lines (a scan of the raw BTF) against bpftool's dump of the
    kernel's BTF: a FUNC record of that name or none."""
    from vigil.cli.probe import KFUNCS, kfunc_results
    dump = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
                          check=True, capture_output=True, text=True).stdout
    got = {r.name: r for r in kfunc_results()}
    for name, func, feature in KFUNCS:
        want = f"FUNC '{func}' " in dump
        assert got[name].ok is want, (name, got[name])
        assert got[name].ok or feature in got[name].reason
