"""Bounds on what reading a policy may cost (vigil.policy.loader): size, nodes, nesting and
alias expansion. Each bad document is one located ``policy.limit`` error, and refusing it
allocates little: the memory assertions use tracemalloc's peak, never a clock."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vigil.errors import PolicyError
from vigil.policy.loader import (MAX_DEPTH, MAX_NODES, MAX_POLICY_BYTES, load_policy,
                                 load_policy_dir, load_policy_file, node_budget,
                                 read_policy_text)

HEADER = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: t
"""
PEAK_LIMIT = 50 << 20  # bytes refusing a document may cost (most cost far less)


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """A policy whose anchors each list ``width`` aliases of the previous one: a few lines
    that stand for width**levels strings. Anchor ``a`` is on line 7."""
    lines = [HEADER.rstrip("\n"), "spec:", "  bomb:",
             "    a: &a [" + ",".join(['"lol"'] * width) + "]"]
    for prev, name in zip("abcdefghijklmnopqrstuvwxyz", "bcdefghijklmnopqrstuvwxyz"):
        if len(lines) - 3 > levels - 1:
            break
        lines.append(f"    {name}: &{name} [" + ",".join([f"*{prev}"] * width) + "]")
    return "\n".join(lines) + "\n"


def refusal(call: Callable[[], Any]) -> tuple[list[str], list[str], int]:
    """The diagnostics (formatted) and codes of the PolicyError ``call`` raises, and the
    peak of memory allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(PolicyError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    diags = info.value.diagnostics
    return [str(d) for d in diags], [d.code for d in diags], peak


# --- alias expansion --------------------------------------------------------------------


def test_billion_laughs_is_refused_before_it_is_built() -> None:
    out, codes, peak = refusal(lambda: load_policy(billion_laughs(), "bomb.yaml"))
    assert out == ["bomb.yaml:11:8: error: excessive YAML aliasing: aliases expand this "
                   "value to 66430 nodes; a policy written in 40 nodes may expand to at "
                   "most 10000"]
    assert codes == ["policy.limit"]
    assert peak < PEAK_LIMIT, f"refusing the bomb allocated {peak >> 20} MB"


@pytest.mark.parametrize("levels,width", [(30, 2), (12, 9), (60, 3)])
def test_other_alias_bombs(levels: int, width: int) -> None:
    out, codes, peak = refusal(lambda: load_policy(billion_laughs(levels, width), "b.yaml"))
    assert codes == ["policy.limit"] and "excessive YAML aliasing" in out[0], out
    assert peak < PEAK_LIMIT


def test_mapping_bomb_through_merge_keys() -> None:
    lines = [HEADER + "spec:", "  a0: &a0 {k0: x, k1: x, k2: x, k3: x, k4: x, k5: x}"]
    for i in range(1, 12):
        lines.append(f"  a{i}: &a{i} {{" + ", ".join(f"m{j}: {{<<: *a{i - 1}, z: 1}}"
                                                    for j in range(6)) + "}")
    out, codes, peak = refusal(lambda: load_policy("\n".join(lines) + "\n", "m.yaml"))
    assert codes == ["policy.limit"] and "excessive YAML aliasing" in out[0], out
    assert out[0].startswith("m.yaml:10:7: "), out  # a4, the first anchor over the budget
    assert peak < PEAK_LIMIT


def test_node_budget() -> None:
    assert node_budget(40) == 10_000          # small documents may reuse blocks freely
    assert node_budget(3_000) == 30_000       # ten times what is written
    assert node_budget(50_000) == MAX_NODES   # never more than the absolute cap


def test_policies_with_anchors_and_merge_keys_still_load() -> None:
    # one selector block (100 values) shared by 40 hooks, each hook merged from a base:
    # about 5,000 nodes once expanded, from some 300 written
    calls = ("read write close fstat lseek mmap mprotect munmap brk ioctl pread64 pwrite64 "
             "readv writev access pipe dup dup2 getpid socket connect accept sendto recvfrom "
             "bind listen clone fork execve kill uname fcntl flock fsync truncate getcwd "
             "chdir rename mkdir rmdir").split()
    hooks = "\n".join(f"  - <<: *base\n    call: sys_{calls[i]}" for i in range(1, 40))
    text = HEADER + f"""\
spec:
  kprobes:
  - &base
    call: sys_read
    syscall: true
    args: [{{index: 0, type: int}}]
    selectors: &sel
    - matchArgs:
      - index: 0
        operator: InMap
        values: [{", ".join(str(i) for i in range(100))}]
{hooks}
"""
    p = load_policy(text)
    assert len(p.spec.kprobes) == 40 and p.spec.kprobes[39].call == "sys_rmdir"
    assert p.spec.kprobes[39].selectors[0].match_args[0].values[-1] == "99"


def test_recursive_alias_is_still_a_yaml_error() -> None:
    out, codes, _ = refusal(lambda: load_policy(HEADER + "spec: &s {a: *s}\n", "r.yaml"))
    assert codes[0] == "policy.yaml" and "recursive YAML alias" in out[0], out


# --- nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize("text,where", [
    ("[" * 10_000 + "]" * 10_000, "1:65"),
    ("{a: " * 10_000 + "}" * 10_000, "1:257"),
    ("".join("  " * i + "a:\n" for i in range(200)), "65:129"),
    (HEADER + "spec: " + "[" * 5_000 + "]" * 5_000 + "\n", "5:70"),
])
def test_deep_nesting_is_located_not_a_recursion_error(text: str, where: str) -> None:
    out, codes, peak = refusal(lambda: load_policy(text, "d.yaml"))
    assert out == [f"d.yaml:{where}: error: too deeply nested: more than {MAX_DEPTH} levels "
                   "of lists and mappings"]
    assert codes == ["policy.limit"] and peak < PEAK_LIMIT


def test_nesting_at_the_limit_is_allowed() -> None:
    def nested(lists: int) -> str:  # the document is level 1, spec's value level 2
        return HEADER + "spec: {x: " + "[" * lists + "]" * lists + "}\n"
    _, codes, _ = refusal(lambda: load_policy(nested(MAX_DEPTH - 2)))
    assert codes == ["policy.unknown_field"]  # the schema's complaint, not a limit
    _, codes, _ = refusal(lambda: load_policy(nested(MAX_DEPTH - 1)))
    assert codes == ["policy.limit"]


def test_nesting_through_aliases() -> None:
    lines = ["x0: &x0 1"] + [f"x{i}: &x{i} " + "[" * 10 + f"*x{i - 1}" + "]" * 10
                             for i in range(1, 30)]
    out, codes, _ = refusal(lambda: load_policy("\n".join(lines) + "\n", "n.yaml"))
    assert out == ["n.yaml:8:18: error: too deeply nested: with its aliases expanded this "
                   "value nests 61 levels of lists and mappings, 71 in all (at most 64)"]
    assert codes == ["policy.limit"]


# --- size and node count ----------------------------------------------------------------


def test_oversized_text() -> None:
    out, codes, _ = refusal(lambda: load_policy("#" * (MAX_POLICY_BYTES + 1), "s.yaml"))
    assert out == [f"s.yaml:1:1: error: policy too large: {MAX_POLICY_BYTES + 1} bytes "
                   f"(at most {MAX_POLICY_BYTES})"]
    assert codes == ["policy.limit"]


def test_size_counts_utf8_bytes_not_characters() -> None:
    text = HEADER + "spec: {}\n#" + "é" * (MAX_POLICY_BYTES // 2)  # fewer chars than bytes
    assert len(text) < MAX_POLICY_BYTES
    _, codes, _ = refusal(lambda: load_policy(text))
    assert codes == ["policy.limit"]
    # at the limit exactly: read and checked like any other policy
    ok = HEADER + "spec: {}\n"
    assert load_policy(ok + "#" * (MAX_POLICY_BYTES - len(ok))).name == "t"


def test_a_huge_file_is_not_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:
        f.truncate(10 << 30)  # sparse: 10 GiB that take no disk
    out, codes, peak = refusal(lambda: load_policy_file(huge))
    assert out == [f"{huge}:1:1: error: policy too large: {10 << 30} bytes "
                   f"(at most {MAX_POLICY_BYTES})"]
    assert peak < PEAK_LIMIT, f"refusing a 10 GiB file allocated {peak >> 20} MB"
    out, _, peak = refusal(lambda: load_policy_dir(tmp_path))  # --tracing-policy-dir
    assert out[0].startswith(f"{huge}:1:1: error: policy too large") and peak < PEAK_LIMIT
    huge.unlink()  # pytest keeps its last temporary directories


def test_an_endless_file_is_not_read() -> None:
    out, _, peak = refusal(lambda: read_policy_text("/dev/zero"))
    assert out == [f"/dev/zero:1:1: error: policy too large: over the limit of "
                   f"{MAX_POLICY_BYTES} bytes"]
    assert peak < PEAK_LIMIT


MAX_RSS_GROWTH = """
import resource, sys
from vigil.errors import PolicyError
from vigil.policy.loader import load_policy
text = "[" + ",".join(["1"] * int(sys.argv[1])) + "]"
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_policy(text, "f.yaml")
except PolicyError as err:
    print(err.diagnostics[0])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) << 10)
"""


def test_too_many_nodes_is_refused_while_composing() -> None:
    # in a child, measured by its peak RSS: tracemalloc would slow PyYAML down tenfold
    r = subprocess.run([sys.executable, "-c", MAX_RSS_GROWTH, str(MAX_NODES + 10)],
                       capture_output=True, text=True, timeout=300)
    diag, growth = r.stdout.splitlines()
    # node 100,001 is the 100,000th scalar, at column 2 * 100,000
    assert diag == (f"f.yaml:1:{2 * MAX_NODES}: error: too many YAML nodes: more than "
                    f"{MAX_NODES} keys, values, lists and mappings"), r.stderr
    assert int(growth) < PEAK_LIMIT, f"refusing it grew the RSS by {int(growth) >> 20} MB"


def test_documents_after_the_second_are_not_read() -> None:
    # a syntax error in the third document is not reached
    text = HEADER + "spec: {}\n" + "--- [1]\n" * 100_000 + "--- [\n"
    out, _, peak = refusal(lambda: load_policy(text, "m.yaml"))
    assert out == ["m.yaml:6:5: error: more than one YAML document: a policy file holds "
                   "exactly one policy"]
    assert peak < PEAK_LIMIT


def test_persisted_policies_are_read_within_the_limit(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from vigil.server.fakes import StaticPolicyStore
    from vigil.server.persist import PersistentPolicyStore
    (tmp_path / "big.yaml").write_bytes(b"#" * (MAX_POLICY_BYTES + 1))
    with caplog.at_level(logging.ERROR):
        assert PersistentPolicyStore(StaticPolicyStore(), tmp_path).restore() == []
    assert "big.yaml: invalid tracing policy (1 error)" in caplog.text
    assert (tmp_path / "big.yaml").exists()  # left in place, as any invalid one


# --- the command line -------------------------------------------------------------------


def test_check_command_refuses_the_bomb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    r = subprocess.run([sys.executable, "-m", "vigil", "tracingpolicy", "check", str(bomb)],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, VIGIL_LOG_LEVEL="error"))
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout == (f"{bomb}:11:8: error: excessive YAML aliasing: aliases expand this "
                        "value to 66430 nodes; a policy written in 40 nodes may expand to "
                        "at most 10000\n"), r.stdout + r.stderr
    assert "Traceback" not in r.stderr
