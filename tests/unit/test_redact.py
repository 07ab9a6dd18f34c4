"""--redaction-filters: parsing, Tetragon's redaction rules (its own test vectors), and
the pipeline applying them where process records are built (exec, /proc scan, clone
children, parents and ancestors). Pure."""

from __future__ import annotations

import orjson
import pytest

from tests.unit.test_pipeline_process import BOOT_WALL, NODE, clone_rec, exec_rec, exit_rec
from vigil.events import compact
from vigil.stream.pipeline import EventOptions, Pipeline
from vigil.process.cache import ProcessCache
from vigil.process.execid import exec_id
from vigil.process.model import ExecFlag, ProcessInfo
from vigil.events.redact import (
    REDACTED, RedactionError, Redactor, parse_filters, redact_string,
    redactor_from_flag,
)

R = REDACTED
PW = r'{"redact": ["(?:--password|-p)[\\s=]+(\\S+)"]}'


def _re(pattern: str):
    return parse_filters(orjson.dumps({"redact": [pattern]}).decode())[0].redact[0]


def test_engine_is_re2() -> None:
    from vigil.events.redact import _engine
    assert _engine()[0].__name__ == "re2"


@pytest.mark.parametrize(("pattern", "text", "want"), [
    ("(ab)cd", "abcd", R + "cd"),
    ("(ab)cd", "cdef", "cdef"),
    ("(ab)cd", "abef", "abef"),
    (r"(?:--password|-p)\s+(\S+)", "--password fooBarQuxBaz!", "--password " + R),
    (r"(?:--password|-p)\s+(\S+)", "-p fooBarQuxBaz!", "-p " + R),
    ("(foo(bar))qux", "foobarqux", R + "qux"),            # nested: the outer group
    ("(a)|(b)", "ab", R + R),                              # a group that did not take part
    (r"-p=(\S*)", "-p= x", "-p=" + R + " x"),              # an empty group is still marked
    ("x", "xx", "xx"),                                     # no group: nothing to redact
    (r"-p\s+(\S+)", "héllo -p sécret après", "héllo -p " + R + " après"),  # not ASCII
])
def test_redact_string(pattern: str, text: str, want: str) -> None:
    assert redact_string(_re(pattern), text) == want


def test_tetragon_vectors() -> None:
    args = "--verbose=true --password ybx511!ackt544 --username foobar"
    red = Redactor(parse_filters(PW))
    assert red.redact("", args) == f"--verbose=true --password {R} --username foobar"
    only_mysql = Redactor(parse_filters(
        r'{"binary_regex": ["mysql$"], "redact": ["(?:--password|-p)[\\s=]+(\\S+)"]}'))
    assert only_mysql.redact("", args) == args
    assert only_mysql.redact("/bin/mysql", args) == \
        f"--verbose=true --password {R} --username foobar"
    multi = Redactor(parse_filters(
        r'{"redact": ["(?:--password|-p)[\\s=]+(\\S+)", "\\W(TOPSECRET)\\W", "(cheese)cake"]}'))
    assert multi.redact("", args + " cheesecake TOPSECRET innocent") == \
        f"--verbose=true --password {R} --username foobar {R}cake {R} innocent"


def test_parse_newline_separated_and_errors() -> None:
    text = ('{"binary_regex":["(?:^|/)foo$"],"redact":["-p(?:\\\\s+|=)(\\\\S*)"]}\n'
            '\n{"binaryRegex": ["bar"], "redact": ["(x)"], "match": []}\n')
    fs = parse_filters(text)
    assert len(fs) == 2 and fs[0].applies_to("/opt/foo") and not fs[0].applies_to("/foo2")
    assert parse_filters("") == () and redactor_from_flag("  \n") is None
    with pytest.raises(RedactionError, match=r"filter 1: unknown field 'redacts'"):
        parse_filters('{"redact": []}\n{"redacts": ["(x)"]}')
    with pytest.raises(RedactionError, match=r"filter 0.redact\[0\]: invalid regular"):
        parse_filters('{"redact": ["(a"]}')
    with pytest.raises(RedactionError, match=r"filter 0.redact\[0\]: invalid regular"):
        parse_filters(r'{"redact": ["(a)\\1"]}')       # backreference: not RE2
    with pytest.raises(RedactionError, match="invalid JSON"):
        parse_filters('{"redact": ')
    with pytest.raises(RedactionError, match="expected a list"):
        parse_filters('{"redact": "(x)"}')


# --------------------------------------------------------------------------- pipeline

FILTERS = ('{"binary_regex":["(?:^|/)foo$"],"redact":["-p(?:\\\\s+|=)(\\\\S*)",'
           '"--password=(\\\\S+)"]}')


def _pipe(ancestors: bool = True) -> Pipeline:
    p = Pipeline(ProcessCache(), EventOptions(node_name=NODE, ancestors=ancestors,
                                              redactor=redactor_from_flag(FILTERS)),
                 lambda: BOOT_WALL)
    shell = ProcessInfo(exec_id=exec_id(NODE, 10, 50), pid=50, tid=50, ktime=10,
                        start_time_ns=BOOT_WALL + 10, binary="/usr/bin/bash",
                        flags=int(ExecFlag.PROCFS))
    # a /proc scan entry with a secret of its own
    scanned = ProcessInfo(exec_id=exec_id(NODE, 20, 51), pid=51, tid=51, ktime=20,
                          start_time_ns=BOOT_WALL + 20, binary="/usr/local/bin/foo",
                          args=("--password=hunter1",), parent_exec_id=shell.exec_id,
                          ppid=50, flags=int(ExecFlag.PROCFS))
    events = p.bootstrap([shell, scanned])
    assert b"hunter1" not in b"".join(orjson.dumps(e) for e in events)
    return p


def test_exec_parent_clone_and_ancestors_are_redacted() -> None:
    p = _pipe()
    out = p.handle([
        exec_rec(60, 51, 100, b"/opt/foo", [b"foo", b"--password=hunter2", b"-p", b"secret"]),
        clone_rec(61, 60, 200),                     # foo forks: the child copies its args
        exec_rec(61, 60, 300, b"/bin/true", [b"true", b"-p", b"visible"]),
        exit_rec(61, 400), exit_rec(60, 500),
    ])
    blob = b"\n".join(orjson.dumps(e) for e in out)
    assert b"hunter2" not in blob and b"secret" not in blob and b"hunter1" not in blob
    ex = out[0]["process_exec"]
    assert ex["process"]["arguments"] == f"--password={R} -p {R}"
    assert ex["parent"]["arguments"] == f"--password={R}"          # the scanned foo
    true = out[1]["process_exec"]
    assert true["process"]["arguments"] == "-p visible"            # not a foo binary
    assert true["parent"]["arguments"] == f"--password={R} -p {R}"
    assert all("hunter" not in a.get("arguments", "") for a in true["ancestors"])
    assert p.opts.redactor.redacted == 2
    lines = "\n".join(filter(None, (compact.render(e, color=False) for e in out)))
    assert "hunter2" not in lines and "secret" not in lines and R in lines


def test_unmatched_binaries_cost_one_lookup() -> None:
    red = redactor_from_flag(FILTERS)
    assert red is not None
    p = ProcessInfo(exec_id="x", pid=1, tid=1, ktime=1, start_time_ns=1, binary="/bin/ls",
                    args=("-p", "x"))
    red.apply(p)
    assert p.args == ("-p", "x") and p.arguments is None
    assert red.patterns_for("/bin/ls") == ()
