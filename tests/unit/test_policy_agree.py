"""The checker (schema + vigil.policy.checks) and the compiler agree on the whole corpus.

Both run on `check` and on load, but a value the checker lets through and the compiler
then calls malformed (or the reverse) is a bug: the user gets one error at a time, or a
policy refused for a reason the checker calls fine. Here every fixture policy is
validated and, when its schema is valid, compiled for a fixed kernel view (no kprobes,
tracepoint formats from tests/fixtures/tracefs):

* a policy the checker accepts never gets a compiler error marked ``invalid``;
* every ``invalid`` compiler error is at a field the checker also reports;
* the compiler may still refuse a checker-valid policy for what this kernel or version
  cannot do (``invalid`` False), and says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tests.unit.test_policy_refused import fixture_view
from vigil.policy.checks import check_document
from vigil.policy.compiler import CompileError, compile_policy, where_path
from vigil.policy.spec import Policy

POLICIES = Path(__file__).resolve().parents[1] / "fixtures" / "policies"
CORPUS = sorted(POLICIES.glob("*/*.yaml"))


def _data(path: Path) -> object:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError:
        return None
    return docs[0] if len(docs) == 1 else None


def _covers(checker: tuple[object, ...], compiler: tuple[object, ...]) -> bool:
    n = min(len(checker), len(compiler))
    return checker[:n] == compiler[:n] and n >= 3


@pytest.mark.parametrize("path", CORPUS, ids=[f"{p.parent.name}/{p.name}" for p in CORPUS])
def test_checker_and_compiler_agree(path: Path) -> None:
    data = _data(path)
    if not isinstance(data, dict):
        return  # not a policy document: only the YAML stage has a say
    errors = [f.path for f in check_document(data) if f.severity == "error"]
    try:
        policy = Policy.model_validate(data)
    except ValidationError:
        assert path.parent.name == "invalid"
        return
    if path.parent.name == "valid":
        assert errors == []
    try:
        compile_policy(policy, fixture_view())
    except CompileError as err:
        if err.invalid:
            at = where_path(err.where)
            assert any(_covers(e, at) for e in errors), \
                f"the compiler calls {err.where} malformed ({err.message}); the checker did not"
        elif path.parent.name == "refused":
            assert not errors, "refused fixtures are checker-valid"


def test_corpus_covers_each_directory() -> None:
    assert {p.parent.name for p in CORPUS} == {"valid", "invalid", "refused"}
