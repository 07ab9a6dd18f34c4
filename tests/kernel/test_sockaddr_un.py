"""``sockaddr_un`` arguments with the real BPF objects: the family and the path of a
unix socket address, an abstract name shown as '@' + name (as Tetragon), filtered with
the string operators on the path and Family on the family.

On a syscall hook (``sys_connect``: the user's address) everywhere; on a kernel function
(``unix_stream_connect``: the kernel's copy of the address), which needs kprobes or BPF
trampolines, in the kernel lane (on the hardened host it skips with the probe's reason).
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid

import pytest

from tests.kernel.test_policies import Env, _body

pytestmark = pytest.mark.kernel


def _policy(name: str, hook: str, index: int, selectors: str) -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  kprobes:
{hook}
    args:
    - index: {index}
      type: sockaddr_un
      label: addr
    selectors:
{selectors}
"""


def _connect(family: int, kind: int, addr: object) -> None:
    with socket.socket(family, kind) as s:
        try:
            s.connect(addr)  # type: ignore[arg-type]
        except OSError:
            pass  # nobody listens: the call is what is observed


def _padded(name: str) -> str:
    """An abstract address as C programs often give it: the whole sun_path, the name
    padded with NULs (the hook does not know the address's length; Tetragon neither)."""
    return "\0" + name + "\0" * (UNIX_PATH_MAX - 1 - len(name))


UNIX_PATH_MAX = 108


def _servers(tag: str) -> tuple[str, str, list[socket.socket]]:
    """A listening path socket and a listening abstract one (connects succeed)."""
    d = tempfile.mkdtemp(prefix="vsun-")
    path, abstract = f"{d}/{tag}.sock", f"vsun-{tag}"
    socks = []
    for addr in (path, _padded(abstract)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(addr)
        s.listen(4)
        socks.append(s)
    return path, abstract, socks


def _close(path: str, socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
    os.unlink(path)
    os.rmdir(os.path.dirname(path))


def _check(env: Env, pol: str, tag: str) -> None:
    path, abstract, socks = _servers(tag)
    try:
        def trigger() -> None:
            _connect(socket.AF_UNIX, socket.SOCK_STREAM, path)
            _connect(socket.AF_UNIX, socket.SOCK_STREAM, _padded(abstract))
            _connect(socket.AF_UNIX, socket.SOCK_STREAM, "/nonexistent/vsun-other")
            _connect(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 9))
        with env.policy(pol.format(dir=os.path.dirname(path), abstract=abstract)):
            evs = env.run(trigger, {os.getpid()})
    finally:
        _close(path, socks)
    assert [_body(e)["args"][-1] for e in evs] == [
        {"sockaddrun_arg": {"family": "AF_UNIX", "path": path}, "label": "addr"},
        {"sockaddrun_arg": {"family": "AF_UNIX", "path": "@" + abstract}, "label": "addr"}]


PREFIX = """    - matchArgs:
      - index: {index}
        operator: Prefix
        values: ["{{dir}}/", "@{{abstract}}"]
      - index: {index}
        operator: Family
        values: ["AF_UNIX"]"""


def test_syscall_sockaddr_un_path_and_abstract_name(env: Env) -> None:
    """sys_connect's user address: a path, an abstract name ('@'), filtered by Prefix on
    the path and Family; another path and an AF_INET address are not reported."""
    hook = """  - call: sys_connect
    syscall: true"""
    pol = _policy("vk-sun-sys", hook, 1, PREFIX.format(index=1))
    _check(env, pol, uuid.uuid4().hex[:8])


def test_syscall_sockaddr_un_family_of_another_address(env: Env) -> None:
    """An AF_INET address read as a sockaddr_un: its family only (no path)."""
    hook = """  - call: sys_connect
    syscall: true"""
    sel = """    - matchArgs:
      - index: 1
        operator: Family
        values: ["AF_INET"]"""
    with env.policy(_policy("vk-sun-fam", hook, 1, sel)):
        evs = env.run(lambda: _connect(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 9)),
                      {os.getpid()})
    assert [_body(e)["args"] for e in evs] == [
        [{"sockaddrun_arg": {"family": "AF_INET"}, "label": "addr"}]]


def test_kernel_function_sockaddr_un(env: Env, kfuncs: None) -> None:
    """unix_stream_connect's struct sockaddr * (the kernel's copy of the address), as a
    sockaddr_un: the same paths and filters on a kernel function."""
    hook = """  - call: unix_stream_connect
    syscall: false"""
    pol = _policy("vk-sun-kfn", hook, 1, PREFIX.format(index=1))
    _check(env, pol, uuid.uuid4().hex[:8])
