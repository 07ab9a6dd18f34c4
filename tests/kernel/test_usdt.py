"""USDT probes (``spec.usdts``) in the real kernel: a program built here with <sys/sdt.h>.

The target's probes cover every argument location a note can give (memory at a
register + offset, a register, a constant), a probe guarded by its semaphore (it fires
only while the kernel holds the semaphore's reference count, which attaching takes),
and an int in memory for the ``Set`` action, which needs bpf_probe_write_user: refused
with the kernel's reason where lockdown forbids it, applied where the kernel allows it
(the kernel lane's stock kernels).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lane import expected
from tests.kernel.test_policies import Env
from vigil.bpf import features
from vigil.errors import FeatureNotSupported, PolicyError

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


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
        assert "probe_write_user" not in expected(), \
            f"kernel {os.uname().release} should allow bpf_probe_write_user: {res.reason}"
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


def _kfunc(name: str) -> bool:
    from vigil.policy.kbtf import has_kfunc
    return has_kfunc(name)


@pytest.mark.parametrize("op,values,expect,kfuncs", [
    ("SubString", ["ell", "nowhere"], ["hello", "yellow"], ("bpf_strnstr",)),
    ("SubStringIgnCase", ["ELL"], ["hello", "yellow"], ("bpf_strnstr", "bpf_strncasestr")),
])
def test_usdt_substring_on_a_string_argument(env: Env, target: str, op: str,
                                            values: list[str], expect: list[str],
                                            kfuncs: tuple[str, ...]) -> None:
    """SubString on a USDT string argument (the usdt object built with the kernel-function
    calls); where the kernel lacks a function, refused whole with the reason."""
    args = """    - index: 2
      type: string"""
    vals = ", ".join(f'"{v}"' for v in values)
    sel = f"""    selectors:
    - matchArgs:
      - index: 2
        operator: {op}
        values: [{vals}]"""
    pol = policy(target, "args", args, sel)
    missing = [f for f in kfuncs if not _kfunc(f)]
    if missing:
        from tests.kernel.test_policies import _my_links
        before = _my_links()
        with pytest.raises(FeatureNotSupported, match=r"spec.usdts\[0\].selectors\[0\]"
                           r".matchArgs\[0\].operator: " + op + " needs the kernel function"
                           + ("s" if len(missing) > 1 else "") + " " + " and ".join(missing)):
            env.manager.add(pol, source="test")
        assert _my_links() == before
        return
    with env.policy(pol) as info:
        assert "usdt" in info.info
        evs, _ = usdt_events(env, [target, "hello", "world", "yellow"])
    assert [e["process_usdt"]["args"] for e in evs] == [[{"string_arg": s}] for s in expect]


# ---- uprobes at addresses, with a reference counter, on a verified binary -----------------

def _notes(binary: str) -> dict[str, tuple[int, int]]:
    """USDT probe name -> (site address, semaphore address), from readelf -n."""
    out = subprocess.run(["readelf", "-nW", binary], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    found: dict[str, tuple[int, int]] = {}
    name = ""
    for ln in out.splitlines():
        ln = ln.strip()
        if ln.startswith("Name:"):
            name = ln.split()[1]
        elif ln.startswith("Location:"):
            f = ln.replace(",", "").split()
            found[name] = (int(f[1], 16), int(f[5], 16))
    return found


def _file_offset(binary: str, vaddr: int) -> int:
    """A virtual address mapped to its file offset through the LOAD segments."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    for ln in out.splitlines():
        f = ln.split()
        if f and f[0] == "LOAD":
            off, va, filesz = int(f[1], 16), int(f[2], 16), int(f[4], 16)
            if va <= vaddr < va + filesz:
                return vaddr - va + off
    raise AssertionError(f"{hex(vaddr)} is in no LOAD segment of {binary}")


def uprobe_policy(target: str, name: str, extra: str) -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-uprobe-{name}
spec:
  uprobes:
  - path: "{target}"
{extra}
"""


def uprobe_events(env: Env, argv: list[str]) -> tuple[list[Event], str]:
    env.pipe.handle(env.base.ring.drain())
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    time.sleep(0.3)
    evs = [e["process_uprobe"] for e in env.pipe.handle(env.base.ring.drain())
           if "process_uprobe" in e]
    return [b for b in evs if b["process"]["binary"] == argv[0]], proc.stdout


def test_uprobe_addrs_with_ref_ctr_offsets(env: Env, target: str) -> None:
    """A uprobe at the sem probe's site, holding its semaphore like a USDT attach does."""
    site, sem = _notes(target)["sem"]
    addr, ref = _file_offset(target, site), _file_offset(target, sem)
    pol = uprobe_policy(target, "addrs", f"""    addrs: [{addr}]
    refCtrOffsets: [{ref}]""")
    with env.policy(pol) as info:
        assert f"semaphore at file offset {hex(ref)}" in info.info
        bodies, out = uprobe_events(env, [target, "x", "y"])
    assert out == "sem=1 v=1\nsem=1 v=2\n"
    assert len(bodies) == 2
    assert all(b["offset"] == str(addr) and b["ref_ctr_offset"] == str(ref) for b in bodies)
    assert list(bodies[0])[-3:] == ["offset", "ref_ctr_offset", "action"]


def test_uprobe_binary_digests(env: Env, target: str) -> None:
    import hashlib
    digest = hashlib.sha256(Path(target).read_bytes()).hexdigest()
    good = uprobe_policy(target, "digest", f"""    symbols: ["main"]
    binaryDigests: ["sha256:{'0' * 64}", "sha256:{digest}"]""")
    with env.policy(good) as info:
        assert "verified against binaryDigests" in info.info
        bodies, _ = uprobe_events(env, [target, "x"])
    assert len(bodies) == 1 and bodies[0]["symbol"] == "main"
    bad = uprobe_policy(target, "digest-bad", f"""    symbols: ["main"]
    binaryDigests: ["sha256:{'0' * 64}"]""")
    from tests.kernel.test_policies import _my_links
    before = _my_links()
    with pytest.raises(PolicyError, match=rf"{target} does not match binaryDigests \(it is "
                       rf"sha256:{digest}\); the uprobe is not attached"):
        env.manager.add(bad, source="test")
    assert _my_links() == before
    assert "vk-uprobe-digest-bad" not in [p.name for p in env.manager.list()]
    skipped = bad.replace("binaryDigests:", "ignore:\n      digestVerificationFailure: true\n"
                          "    binaryDigests:")
    with env.policy(skipped):
        bodies, _ = uprobe_events(env, [target, "x"])
    assert bodies == []


def test_uprobe_resolve_through_the_binarys_btf(env: Env,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """btfPath: the binary's own BTF (gcc -gbtf, the .BTF section dumped) types the
    argument; resolve follows its pointers in the process's memory."""
    d = tmp_path_factory.mktemp("btf")
    binary, btf = str(d / "btf_target"), str(d / "btf_target.btf")
    subprocess.run(["gcc", "-gbtf", "-O0", "-o", binary, str(ROOT / "tests/progs/btf_target.c")],
                   check=True, timeout=60)
    subprocess.run(["objcopy", f"--dump-section=.BTF={btf}", binary, str(d / "scratch")],
                   check=True, timeout=30)
    pol = uprobe_policy("btf", "btf", f"""    btfPath: "{btf}"
    symbols: ["vigil_resolve_target"]
    args:
    - index: 0
      type: int
      resolve: a
    - index: 0
      type: long
      resolve: in.y
    - index: 0
      type: string
      resolve: in.name""").replace('path: "btf"', f'path: "{binary}"')
    with env.policy(pol):
        bodies, _ = uprobe_events(env, [binary, "x", "y"])
    assert [b["args"] for b in bodies] == [
        [{"int_arg": 3}, {"long_arg": "-11000000000"}, {"string_arg": binary}]]
    missing = pol.replace("resolve: in.y", "resolve: in.z")
    with pytest.raises(PolicyError, match=r"spec.uprobes\[0\].args\[1\].resolve: struct "
                       r"vigil_inner has no member z"):
        env.manager.add(missing, source="test")


def test_usdt_resolve_through_the_binarys_btf(env: Env,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """btfPath on usdts: the probe's argument points to a struct of btfType in the
    binary's BTF; resolve follows its pointers in the process's memory (as on uprobes)."""
    d = tmp_path_factory.mktemp("usdtbtf")
    binary, btf = str(d / "btf_target"), str(d / "btf_target.btf")
    subprocess.run(["gcc", "-gbtf", "-O0", "-o", binary, str(ROOT / "tests/progs/btf_target.c")],
                   check=True, timeout=60)
    subprocess.run(["objcopy", f"--dump-section=.BTF={btf}", binary, str(d / "scratch")],
                   check=True, timeout=30)
    args = """    - index: 0
      type: int
      btfType: vigil_outer
      resolve: a
    - index: 0
      type: long
      btfType: vigil_outer
      resolve: in.y
    - index: 0
      type: string
      btfType: vigil_outer
      resolve: in.name"""
    pol = policy(binary, "resolve", args).replace(
        "    message:", f'    btfPath: "{btf}"\n    message:')
    with env.policy(pol):
        evs, _ = usdt_events(env, [binary, "x", "y"])
    assert [e["process_usdt"]["args"] for e in evs] == [
        [{"int_arg": 3}, {"long_arg": "-11000000000"}, {"string_arg": binary}]]
    missing = pol.replace("resolve: in.y", "resolve: in.z")
    with pytest.raises(PolicyError, match=r"spec.usdts\[0\].args\[1\].resolve: struct "
                       r"vigil_inner has no member z"):
        env.manager.add(missing, source="test")
    untyped = pol.replace("      btfType: vigil_outer\n      resolve: a", "      resolve: a")
    with pytest.raises(PolicyError) as err:  # the checker's, located
        env.manager.add(untyped, source="test")
    assert [(d.path, d.message.split(" (")[0]) for d in err.value.diagnostics] == [
        ("spec.usdts[0].args[0].btfType", "resolve on a usdt argument needs btfType")]
