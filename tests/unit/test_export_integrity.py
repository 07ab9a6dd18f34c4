"""The keyed hash chain of export files: writer, key ratchet and verifier (no root)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from vigil.cli import cli
from vigil.export import integrity as ig
from vigil.export.jsonl import RotatingFileWriter


def make_key(tmp: Path) -> tuple[Path, tuple[int, bytes]]:
    key = tmp / "key"
    ig.write_key_file(str(key), 0, os.urandom(32), exclusive=True)
    return key, ig.read_key_file(str(key))


def write(tmp: Path, key: Path, n: int, *, max_mb: float = 0.001, compress: bool = False,
          start: int = 0, close: bool = True) -> RotatingFileWriter:
    w = RotatingFileWriter(tmp / "ev.log", max_size_mb=max_mb, max_backups=0,
                           compress=compress, integrity=ig.ChainWriter(ig.KeyRatchet(str(key))))
    for i in range(start, start + n):
        w.write_lines([b'{"n":%d,"pad":"%s"}' % (i, b"x" * 40)])
    if close:
        w.close()
    return w


def verify(tmp: Path, orig: tuple[int, bytes], *paths: Path, **kw: bool) -> ig.Report:
    files = [str(p) for p in paths] or ig.export_set(str(tmp / "ev.log"))
    return ig.verify_paths(ig.Verifier(orig[1], orig[0]), files, **kw)


def backups(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.name.startswith("ev-")
                  and not p.name.endswith(".chain"))


def lines_of(p: Path) -> list[bytes]:
    return p.read_bytes().split(b"\n")[:-1]


def put_lines(p: Path, lines: list[bytes]) -> None:
    p.write_bytes(b"".join(ln + b"\n" for ln in lines))


def test_untouched_rotated_set_verifies(tmp_path: Path) -> None:
    key, orig = make_key(tmp_path)
    write(tmp_path, key, 100)
    assert len(backups(tmp_path)) >= 3
    rep = verify(tmp_path, orig)
    assert rep.ok, [str(p) for p in rep.problems]
    assert sum(r.lines for r in rep.files) == 100
    assert all(r.sealed for r in rep.files)


def test_lines_are_byte_for_byte_what_was_written(tmp_path: Path) -> None:
    key, _ = make_key(tmp_path)
    w = RotatingFileWriter(tmp_path / "ev.log", integrity=ig.ChainWriter(ig.KeyRatchet(str(key))))
    w.write_lines([b'{"a":1}', b'{"b":2}'])
    w.close()
    assert (tmp_path / "ev.log").read_bytes() == b'{"a":1}\n{"b":2}\n'


def test_restart_continues_the_chain_and_ratchets_the_key(tmp_path: Path) -> None:
    key, orig = make_key(tmp_path)
    write(tmp_path, key, 30, max_mb=1)
    e1 = ig.read_key_file(str(key))[0]
    write(tmp_path, key, 30, max_mb=1, start=30)
    e2, k2 = ig.read_key_file(str(key))
    assert e2 > e1 > 0 and k2 != orig[1]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert verify(tmp_path, orig).ok
    # the evolved key cannot verify the first run's segment (forward security)
    with_new = ig.verify_paths(ig.Verifier(k2, e2), [str(tmp_path / "ev.log")])
    assert not with_new.ok and "original key" in str(with_new.problems[0])


@pytest.mark.parametrize("compress", [False, True])
def test_each_tampering_is_named(tmp_path: Path, compress: bool) -> None:
    key, orig = make_key(tmp_path)
    write(tmp_path, key, 120, compress=compress)
    files = backups(tmp_path)
    assert len(files) >= 4
    mid = files[1]
    data = gzip.decompress(mid.read_bytes()) if compress else mid.read_bytes()
    saved = mid.read_bytes()
    name = mid.name

    def mutate(lines: list[bytes]) -> None:
        raw = b"".join(ln + b"\n" for ln in lines)
        mid.write_bytes(gzip.compress(raw) if compress else raw)

    def problems() -> list[str]:
        rep = verify(tmp_path, orig)
        assert not rep.ok
        return [str(p) for p in rep.problems]

    lines = data.split(b"\n")[:-1]
    flipped = lines[:]
    flipped[2] = flipped[2].replace(b'"n":', b'"m":')
    mutate(flipped)
    assert problems()[0].startswith(f"{name}:3: line altered")
    mutate(lines[:3] + lines[4:])
    assert problems()[0].startswith(f"{name}:4: line removed")
    mutate(lines[:1] + [lines[2], lines[1]] + lines[3:])
    assert problems()[0].startswith(f"{name}:2: line reordered")
    mutate(lines[:5] + [b'{"forged":1}'] + lines[5:])
    assert problems()[0].startswith(f"{name}:6: line inserted")
    mutate(lines[:-2])
    assert f"{name}:{len(lines) - 1}: truncated" in problems()[0]
    mid.write_bytes(saved)
    assert verify(tmp_path, orig).ok
    mid.unlink()
    assert any("missing" in p and name.removesuffix(".gz") in p for p in problems())


def test_truncated_inside_a_line_and_gzip_cut_short(tmp_path: Path) -> None:
    key, orig = make_key(tmp_path)
    write(tmp_path, key, 10, max_mb=1)
    log = tmp_path / "ev.log"
    log.write_bytes(log.read_bytes()[:-10])
    (p,) = verify(tmp_path, orig).problems
    assert str(p).startswith("ev.log:10: truncated")
    (tmp_path / "gz").mkdir()
    key2, orig2 = make_key(tmp_path / "gz")
    write(tmp_path / "gz", key2, 120, compress=True)
    gz = backups(tmp_path / "gz")[0]
    gz.write_bytes(gz.read_bytes()[:-30])
    probs = [str(p) for p in verify(tmp_path / "gz", orig2).problems]
    assert probs and probs[0].startswith(gz.name) and "truncated" in probs[0]


def test_deleted_rotated_file_with_its_chain_and_reordered_files(tmp_path: Path) -> None:
    key, orig = make_key(tmp_path)
    write(tmp_path, key, 120)
    files = backups(tmp_path)
    for f in (files[1], Path(str(files[1]) + ".chain")):
        f.unlink()
    probs = [str(p) for p in verify(tmp_path, orig).problems]
    assert probs == [f"{files[1].name}: rotated file missing (named by {files[2].name} as "
                     "its predecessor)"]
    # swap two rotated files (and their chain files)
    a, b = files[2], files[3]
    for suffix in ("", ".chain"):
        os.rename(f"{a}{suffix}", f"{a}{suffix}.tmp")
        os.rename(f"{b}{suffix}", f"{a}{suffix}")
        os.rename(f"{a}{suffix}.tmp", f"{b}{suffix}")
    probs = [str(p) for p in verify(tmp_path, orig, allow_pruned=True).problems]
    assert any("out of order" in p for p in probs), probs


def test_forged_chain_values_and_header_are_detected(tmp_path: Path) -> None:
    key, orig = make_key(tmp_path)
    write(tmp_path, key, 10, max_mb=1)
    chain = tmp_path / "ev.log.chain"
    recs = chain.read_bytes().split(b"\n")
    recs[3] = b"0" * 32
    chain.write_bytes(b"\n".join(recs))
    assert "ev.log:3: line altered" in str(verify(tmp_path, orig).problems[0])
    recs = chain.read_bytes().split(b"\n")
    recs[0] = recs[0].replace(b'"epoch":0', b'"epoch":5')
    chain.write_bytes(b"\n".join(recs))
    assert "header altered or forged" in str(verify(tmp_path, orig).problems[0])


def test_unsealed_file_and_unchained_appended_lines(tmp_path: Path) -> None:
    key, orig = make_key(tmp_path)
    w = write(tmp_path, key, 5, max_mb=1, close=False)
    probs = [str(p) for p in verify(tmp_path, orig).problems]
    assert probs and "not sealed" in probs[0]
    assert verify(tmp_path, orig, allow_unsealed=True).ok
    w.close()
    with open(tmp_path / "ev.log", "ab") as f:
        f.write(b'{"appended":1}\n')
    assert "ev.log:6: lines 6-6 are not chained" in str(verify(tmp_path, orig).problems[0])


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key, _ = make_key(tmp_path)
    key.chmod(0o640)
    with pytest.raises(ig.IntegrityError, match="group/other"):
        ig.KeyRatchet(str(key))
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    short.chmod(0o600)
    with pytest.raises(ig.IntegrityError, match="at least 16"):
        ig.read_key_file(str(short))
    raw = tmp_path / "raw"
    raw.write_bytes(os.urandom(32))
    raw.chmod(0o600)
    assert ig.read_key_file(str(raw))[0] == 0


def test_pruned_backups_take_their_chain_files(tmp_path: Path) -> None:
    key, orig = make_key(tmp_path)
    w = RotatingFileWriter(tmp_path / "ev.log", max_size_mb=0.002, max_backups=2,
                           integrity=ig.ChainWriter(ig.KeyRatchet(str(key))))
    for i in range(150):
        w.write_lines([b'{"n":%d,"pad":"%s"}' % (i, b"x" * 40)])
    w.close()
    names = os.listdir(tmp_path)
    assert len([n for n in names if n.endswith(".chain")]) == 3  # 2 backups + active
    rep = verify(tmp_path, orig)
    assert [str(p) for p in rep.problems][0].endswith("--allow-pruned accepts that)")
    assert verify(tmp_path, orig, allow_pruned=True).ok


def test_cli_verify_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "key"
    assert runner.invoke(cli, ["export", "keygen", str(key)]).exit_code == 0
    r = runner.invoke(cli, ["export", "keygen", str(key)])
    assert r.exit_code == 1 and "not overwriting" in r.output
    orig = tmp_path / "key.orig"  # the verifier's copy, taken before the agent evolves it
    orig.write_bytes(key.read_bytes())
    orig.chmod(0o600)
    d = tmp_path / "d"
    d.mkdir()
    write(d, key, 60)
    r = runner.invoke(cli, ["export", "verify", "--key-file", str(orig), str(d / "ev.log")])
    assert r.exit_code == 0, r.output
    assert "60 lines intact" in r.output
    lines = lines_of(d / "ev.log")
    put_lines(d / "ev.log", lines[:1] + [b"x"] + lines[2:])
    r = runner.invoke(cli, ["export", "verify", "--key-file", str(orig), str(d / "ev.log")])
    assert r.exit_code == 1
    assert "TAMPERED: ev.log:2: line altered" in r.output
    orig.chmod(0o644)
    r = runner.invoke(cli, ["export", "verify", "--key-file", str(orig), str(d / "ev.log")])
    assert r.exit_code == 1 and "group/other" in r.output


def test_history_replaced_with_a_later_key_is_detected(tmp_path: Path) -> None:
    """Someone holding the key of a later epoch (taken from the host) deletes everything
    and writes a new, self-consistent history: it cannot start at epoch 0."""
    key, orig = make_key(tmp_path)
    write(tmp_path, key, 40)
    for p in tmp_path.iterdir():
        if p.name.startswith("ev"):
            p.unlink()
    write(tmp_path, key, 5, max_mb=1)  # the stolen key is the one now in the key file
    probs = [str(p) for p in verify(tmp_path, orig).problems]
    assert len(probs) == 1 and "starts at key epoch" in probs[0], probs
