"""`vigil tracingpolicy check`: validation and per-hook mechanism, without root."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from vigil.abi._generated import LAYOUTS
from vigil.cli.policycheck import check

POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: write-watch
spec:
  kprobes:
  - call: sys_write
    syscall: true
    args:
    - index: 0
      type: fd
    selectors:
    - matchActions:
      - action: Sigkill
  - call: fd_install
    syscall: false
    args:
    - index: 0
      type: int
"""


def _features(tmp_path: Path, **feats: bool) -> str:
    f = tmp_path / "features.json"
    f.write_text(json.dumps(feats))
    return str(f)


def test_kernel_without_kprobes_cannot_load_the_function_hook_exit_4(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY)
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", _features(tmp_path, kprobes=False)])
    assert r.exit_code == 4
    assert r.stdout.splitlines()[:3] == [
        f"{pol}: valid, but this kernel cannot load TracingPolicy 'write-watch':",
        f"  {pol}:15:11: error: spec.kprobes[1].call: fd_install: kprobes are not available "
        "on this kernel (CONFIG_KPROBES is off)",
        "  it would load with: kprobes: kernel-function hooks (kprobes, kretprobes)"]


def test_named_profile_full_loads_what_the_hardened_profile_cannot(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY)
    assert CliRunner().invoke(check, [str(pol), "--kernel-features", "none"]).exit_code == 4
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", "full"])
    assert r.exit_code == 0, r.output
    assert "spec.kprobes[1]: fentry fd_install" in r.stdout


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY)
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", "debian-9"])
    assert r.exit_code == 2
    assert "no such profile or file" in r.output


def test_valid_policy_lists_mechanism_and_guarantee(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY.split("  - call: fd_install")[0])
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", _features(tmp_path),
                                   "-o", "json"])
    assert r.exit_code == 0, r.output
    [res] = json.loads(r.stdout)["policies"]
    assert res["mode"] == "enforce"
    [hook] = res["hooks"]
    assert hook["mechanism"].startswith("tracepoint syscalls/sys_enter_write")
    assert "the current syscall may complete" in hook["enforcement"]


def test_invalid_policy_exits_3_with_located_diagnostics(tmp_path: Path) -> None:
    pol = tmp_path / "bad.yaml"
    pol.write_text(POLICY.replace("action: Sigkill", "action: Sigkil"))
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", _features(tmp_path)])
    assert r.exit_code == 3
    assert r.stdout == (f"{pol}:14:17: error: spec.kprobes[0].selectors[0].matchActions[0]."
                        'action: invalid action "Sigkil" (did you mean "Sigkill"?)\n')


def test_namespaced_policy_is_accepted_as_pod_scoped(tmp_path: Path) -> None:
    pol = tmp_path / "ns.yaml"
    pol.write_text(POLICY.split("  - call: fd_install")[0]
                   .replace("kind: TracingPolicy", "kind: TracingPolicyNamespaced")
                   .replace("  name: write-watch", "  name: write-watch\n  namespace: default"))
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", _features(tmp_path)])
    assert r.exit_code == 0, r.stdout
    assert r.stdout.startswith(f"{pol}: ok: TracingPolicy 'write-watch'")



def test_node_selector_is_accepted_and_said(tmp_path: Path) -> None:
    """spec.nodeSelector compiles; check says where the policy loads (the node's labels
    are known only to the agent)."""
    pol = tmp_path / "gpu.yaml"
    pol.write_text(POLICY.split("  - call: fd_install")[0].replace("spec:\n", """spec:
  nodeSelector:
    matchLabels: {pool: gpu}
    matchExpressions:
    - {key: canary, operator: DoesNotExist}
"""))
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", _features(tmp_path)])
    assert r.exit_code == 0, r.stdout
    assert r.stdout.splitlines()[:2] == [
        f"{pol}: ok: TracingPolicy 'write-watch' (mode enforce)",
        "  loads only on nodes whose labels match spec.nodeSelector (pool=gpu, !canary); "
        "on other nodes it is listed as skipped"]
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", _features(tmp_path),
                                   "-o", "json"])
    assert json.loads(r.stdout)["policies"][0]["node_selector"] == "pool=gpu, !canary"

HOST_NS_POLICY = POLICY.split("  - call: fd_install")[0].replace("""    selectors:
    - matchActions:
      - action: Sigkill
""", """    selectors:
    - matchNamespaces:
      - namespace: Net
        operator: NotIn
        values: [host_ns]
      - namespace: Mnt
        operator: In
        values: ["4026531840", host_ns]
""")


def test_host_ns_is_left_for_load_time_with_a_warning(tmp_path: Path) -> None:
    """A profile describes another kernel, whose host namespaces cannot be known here."""
    pol = tmp_path / "hostns.yaml"
    pol.write_text(HOST_NS_POLICY)
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", _features(tmp_path)])
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.stdout.splitlines() if ln.startswith("  ") and "host_ns" in ln]
    assert warnings == [
        f"  {pol}:16:18: warning: spec.kprobes[0].selectors[0].matchNamespaces[0]."
        "values[0]: host_ns is resolved when the policy is loaded",
        f"  {pol}:19:32: warning: spec.kprobes[0].selectors[0].matchNamespaces[1]."
        "values[1]: host_ns is resolved when the policy is loaded"]
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", _features(tmp_path),
                                   "-o", "json"])
    assert r.exit_code == 0
    [res] = json.loads(r.stdout)["policies"]
    # (plus one for the tracepoint when tracefs cannot be read)
    assert res["verdict"] == "ok" and sum("host_ns" in w for w in res["warnings"]) == 2


def test_host_ns_without_root_is_a_warning(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 65534)
    pol = tmp_path / "hostns.yaml"
    pol.write_text(HOST_NS_POLICY)
    r = CliRunner().invoke(check, [str(pol)])
    assert r.exit_code == 0, r.output
    assert r.stdout.count("host_ns is resolved when the policy is loaded") == 2


def test_host_ns_unknown_where_it_loads_is_refused() -> None:
    """The agent's view: host namespaces that cannot be learned refuse the policy, saying why."""
    from vigil.policy.compiler import CompileError, KernelView, compile_policy
    from vigil.policy.loader import load_policy
    policy = load_policy(HOST_NS_POLICY, source="p.yaml")
    view = KernelView(host_ns_unknown="the host's namespaces are unknown: no BPF here")
    try:
        compile_policy(policy, view)
    except CompileError as err:
        assert err.where == "spec.kprobes[0].selectors[0].matchNamespaces[0].values"
        assert err.message == "the host's namespaces are unknown: no BPF here"
    else:
        raise AssertionError("compiled without the host's namespaces")
    plan = compile_policy(policy, KernelView(host_ns={"net": 7, "mnt": 9}))
    assert plan.warnings == ()
    [hook] = plan.hooks
    layout = {f[0]: f[1:] for f in LAYOUTS["vg_hook_cfg"][1]}

    def ns_vals(k: int) -> tuple[int, ...]:
        off, _size, count = layout[f"sel[0].ns[{k}].vals"]
        return struct.unpack_from(f"<{count}I", hook.config, off)
    assert ns_vals(0) == (7, 0, 0, 0) and ns_vals(1) == (4026531840, 9, 0, 0)


def test_verdicts_of_tetragons_examples_name_what_is_missing() -> None:
    """Unsupported (a Vigil feature, any kernel): exit 3, naming it; a function this
    kernel's BTF lacks: exit 4, naming it (no BPF feature would help)."""
    from tests.tetragon_examples import examples_dir
    examples = examples_dir()
    r = CliRunner().invoke(check, [str(examples / "usdt-set.yaml"), "--kernel-features",
                                   "none", "-o", "json"])
    assert r.exit_code == 4
    [res] = json.loads(r.stdout)["policies"]
    assert res["verdict"] == "unloadable"
    assert res["diagnostics"][0].endswith(
        "usdt-set.yaml:19:19: error: spec.usdts[0].selectors[0].matchActions[0].action: "
        "action Set writes the probe's argument in user memory with bpf_probe_write_user: "
        "this kernel refuses bpf_probe_write_user")
    assert res["needs"] == ["probe_write_user: writing user memory (bpf_probe_write_user: "
                            "Set on usdts; refused under kernel lockdown)"]
    pol = examples / "host-changes" / "monitor-kernel-modules.yaml"
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", "full", "-o", "json"])
    [res] = json.loads(r.stdout)["policies"]
    from vigil.policy.kbtf import kernel_btf
    btf = kernel_btf()
    if btf is not None and btf.func_params("do_init_module") is None:
        assert r.exit_code == 4 and res["verdict"] == "unloadable"
        assert res["needs"] == ["a kernel with function do_init_module (this kernel has none)"]
    else:
        assert r.exit_code == 0 and res["verdict"] == "ok"


def _elf_with(sections: dict[str, bytes]) -> bytes:
    """A minimal 64-bit little-endian ELF file holding ``sections`` (and .shstrtab)."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in sections) + b".shstrtab\0"
    body, headers, at = b"", [b"\0" * 64], 64
    name_at = 1
    for n, data in sections.items():
        headers.append(struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, at + len(body),
                                   len(data), 0, 0, 1, 0))
        body += data
        name_at += len(n) + 1
    headers.append(struct.pack("<IIQQQQIIQQ", name_at, 3, 0, 0, at + len(body), len(names),
                               0, 0, 1, 0))
    body += names
    shoff = at + len(body)
    ehdr = (b"\x7fELF\x02\x01\x01" + b"\0" * 9
            + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64,
                          len(headers), len(headers) - 1))
    return ehdr + body + b"".join(headers)


def test_btf_of_another_kernel_raw_or_in_its_vmlinux(tmp_path: Path, btf: object) -> None:
    """--btf reads the functions and parameters from the file, raw BTF or the .BTF
    section of an ELF vmlinux; a file without BTF is a usage error naming the option."""
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY)
    raw = Path("/sys/kernel/btf/vmlinux").read_bytes()
    (tmp_path / "raw.btf").write_bytes(raw)
    (tmp_path / "vmlinux").write_bytes(_elf_with({".text": b"\xc3", ".BTF": raw}))
    for f in ("raw.btf", "vmlinux"):
        r = CliRunner().invoke(check, [str(pol), "--kernel-features", "full", "--btf",
                                       str(tmp_path / f)])
        assert r.exit_code == 0, r.output
        assert f"BTF from {tmp_path / f}" in r.stderr
    (tmp_path / "nobtf").write_bytes(_elf_with({".text": b"\xc3"}))
    r = CliRunner().invoke(check, [str(pol), "--btf", str(tmp_path / "nobtf")])
    assert r.exit_code == 2
    assert "Invalid value for --btf" in r.output and "no .BTF section" in r.output
    (tmp_path / "text").write_text("not btf\n")
    r = CliRunner().invoke(check, [str(pol), "--btf", str(tmp_path / "text")])
    assert r.exit_code == 2 and "not BTF data" in r.output


def test_btf_without_a_function_refuses_its_hook(tmp_path: Path) -> None:
    """A BTF that lacks the hooked function: unloadable on that kernel, naming it."""
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY)
    strs = b"\0int\0"
    types = struct.pack("<III", 1, 0x01000000, 4) + struct.pack("<I", 32)  # int
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    (tmp_path / "tiny.btf").write_bytes(hdr + types + strs)
    r = CliRunner().invoke(check, [str(pol), "--kernel-features", "full", "--btf",
                                   str(tmp_path / "tiny.btf")])
    assert r.exit_code == 4, r.output
    assert "fd_install: no such function in this kernel" in r.output
