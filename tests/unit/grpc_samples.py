"""Tetragon-shaped sample events of every type, for the gRPC filter/encoder/CLI tests.

Shapes follow Tetragon's JSON export (protojson, snake_case, uint64 as strings); the
process dicts are shared between events as the pipeline shares them.
"""

from __future__ import annotations

import copy
from typing import Any

from vigil.events.encode import cred_change_event
from vigil.process.model import Credentials

Event = dict[str, Any]

NODE = "node-1"

INIT: dict[str, Any] = {
    "exec_id": "bm9kZS0xOjE6MQ==", "pid": 1, "uid": 0, "cwd": "/", "binary": "/sbin/init",
    "flags": "procFS", "start_time": "2024-01-01T00:00:00Z", "auid": 4294967295,
    "tid": 1, "in_init_tree": False,
}
BASH: dict[str, Any] = {
    "exec_id": "bm9kZS0xOjEwMDA6MTAw", "pid": 100, "uid": 1000, "cwd": "/home/u",
    "binary": "/usr/bin/bash", "arguments": "-l", "flags": "execve clone",
    "start_time": "2024-01-01T00:00:01.500Z", "auid": 1000,
    "parent_exec_id": INIT["exec_id"], "tid": 100, "in_init_tree": False,
}
CURL: dict[str, Any] = {
    "exec_id": "bm9kZS0xOjIwMDA6MjAw", "pid": 200, "uid": 1000, "cwd": "/home/u",
    "binary": "/usr/bin/curl", "arguments": "-s \"https://a b\" cilium.io",
    "flags": "execve clone", "start_time": "2024-01-01T00:00:02.123456789Z", "auid": 1000,
    "parent_exec_id": BASH["exec_id"],
    "cap": {"permitted": ["CAP_CHOWN", "DAC_OVERRIDE", "CAP_SYS_ADMIN"],
            "effective": ["CAP_SYS_ADMIN"]},
    "ns": {"uts": {"inum": 4026531838, "is_host": True}, "pid": {"inum": 4026531836}},
    "tid": 200,
    "process_credentials": {"uid": 1000, "gid": 1000, "euid": 1000, "egid": 1000,
                            "suid": 1000, "sgid": 1000, "fsuid": 1000, "fsgid": 1000,
                            "securebits": ["SecBitNoRoot"]},
    "in_init_tree": False,
}
POD_PROC: dict[str, Any] = {
    "exec_id": "bm9kZS0xOjMwMDA6MzAw", "pid": 300, "uid": 0, "cwd": "/",
    "binary": "/usr/bin/nginx", "arguments": "-g \"daemon off;\"", "flags": "execve",
    "start_time": "2024-01-01T00:00:03Z", "auid": 4294967295,
    "pod": {"namespace": "web", "name": "nginx-7d9f-abcde", "uid": "u-1",
            "container": {"id": "containerd://0123456789abcdef0123456789abcdef",
                          "name": "nginx", "image": {"id": "sha256:aa", "name": "nginx:1"},
                          "start_time": "2024-01-01T00:00:02Z", "pid": 1,
                          "maybe_exec_probe": True},
            "pod_labels": {"app": "nginx", "tier": "front"}, "workload": "nginx",
            "workload_kind": "Deployment"},
    "docker": "0123456789abcdef0123456789abcde", "parent_exec_id": INIT["exec_id"],
    "tid": 300, "in_init_tree": True,
}
# A fork child that has not exec'd, as Tetragon shows one (flags "execve", refcnt 1).
FORKED: dict[str, Any] = {
    **{k: v for k, v in BASH.items() if k not in ("tid", "in_init_tree")},
    "exec_id": "bm9kZS0xOjE1MDA6MTUw", "pid": 150, "flags": "execve",
    "start_time": "2024-01-01T00:00:01.700Z", "parent_exec_id": BASH["exec_id"],
    "refcnt": 1, "tid": 150, "in_init_tree": False,
}
# The process of a policy event: the calling thread and the cache's reference count.
CURL_IN_POLICY: dict[str, Any] = {
    **{k: v for k, v in CURL.items() if k not in ("tid", "process_credentials", "in_init_tree",
                                                   "cap", "ns")},
    "refcnt": 2, "cap": CURL["cap"], "ns": CURL["ns"], "tid": 201,
    "process_credentials": CURL["process_credentials"], "in_init_tree": False,
}


def _env(key: str, body: dict[str, Any], t: str = "2024-01-01T00:00:05.000001Z") -> Event:
    return {key: body, "node_name": NODE, "time": t}


def samples() -> dict[str, Event]:
    """One event per type (plus a pod exec), keyed by a short name."""
    return {
        "exec": _env("process_exec", {"process": CURL, "parent": BASH,
                                      "ancestors": [INIT]}),
        "exec_pod": _env("process_exec", {"process": POD_PROC, "parent": INIT}),
        "exec_init": _env("process_exec", {"process": INIT}),
        "exit": _env("process_exit", {"process": CURL, "parent": BASH, "signal": "SIGKILL",
                                      "time": "2024-01-01T00:00:06Z"}),
        "exit_status": _env("process_exit", {"process": BASH, "parent": INIT, "status": 3,
                                             "time": "2024-01-01T00:00:07Z"}),
        "kprobe": _env("process_kprobe", {
            "process": CURL, "parent": BASH, "function_name": "__x64_sys_write",
            "args": [{"file_arg": {"path": "/etc/passwd", "permission": "-rw-r--r--"}},
                     {"bytes_arg": "aGVsbG8="}, {"size_arg": "1234", "label": "count"}],
            "return": {"int_arg": -13}, "action": "KPROBE_ACTION_POST",
            "kernel_stack_trace": [{"address": "18446744072119856613", "offset": "5",
                                    "symbol": "do_sys_write"}],
            "policy_name": "write-watch", "message": "write seen", "tags": ["fs", "t2"],
            "ancestors": [INIT]}),
        "kprobe_sock": _env("process_kprobe", {
            "process": CURL, "parent": BASH, "function_name": "tcp_connect",
            "args": [{"sock_arg": {"family": "AF_INET", "type": "SOCK_STREAM",
                                   "protocol": "IPPROTO_TCP", "saddr": "10.0.0.1",
                                   "daddr": "1.1.1.1", "sport": 40000, "dport": 443,
                                   "cookie": "18446623384113438400",
                                   "state": "TCP_SYN_SENT"}},
                     {"bpf_cmd_arg": "BPF_PROG_LOAD"},
                     {"capability_arg": {"value": 21, "name": "CAP_SYS_ADMIN"}},
                     {"long_arg": "-5"}, {"uint_arg": 7},
                     {"truncated_bytes_arg": {"bytes_arg": "AAEC", "orig_size": "9000"}}],
            "action": "KPROBE_ACTION_SIGKILL", "policy_name": "connect"}),
        "tracepoint": _env("process_tracepoint", {
            "process": BASH, "parent": INIT, "subsys": "raw_syscalls", "event": "sys_enter",
            "args": [{"long_arg": "59"}, {"syscall_id": {"id": 59, "abi": "x64"}}],
            "policy_name": "syscalls", "action": "KPROBE_ACTION_POST"}),
        "uprobe": _env("process_uprobe", {
            "process": BASH, "parent": INIT, "path": "/usr/bin/bash",
            "symbol": "readline", "policy_name": "bash-readline", "offset": "1234",
            "args": [{"string_arg": "ls -la"}], "action": "KPROBE_ACTION_POST"}),
        "lsm": _env("process_lsm", {
            "process": CURL, "parent": BASH, "function_name": "file_open",
            "policy_name": "lsm-open", "args": [{"file_arg": {"path": "/etc/shadow"}}],
            "action": "KPROBE_ACTION_POST", "ima_hash": "sha256:abcd"}),
        "usdt": _env("process_usdt", {
            "process": BASH, "parent": INIT, "path": "/usr/bin/python3",
            "provider": "python", "name": "function__entry", "policy_name": "usdt-py",
            "args": [{"uint_arg": 1}], "action": "KPROBE_ACTION_POST"}),
        "loader": _env("process_loader", {
            "process": CURL, "path": "/usr/lib/libc.so.6", "buildid": "3q2+7w==",
            "parent": BASH}),
        "throttle": _env("process_throttle", {"type": "THROTTLE_START",
                                              "cgroup": "session-429.scope"}),
        "rate_limit": _env("rate_limit_info", {"number_of_dropped_process_events": "42"}),
        "test": _env("test", {"arg0": "1", "arg3": "18446744073709551615"}),
    }


def encoder_samples() -> dict[str, Event]:
    """``samples()`` plus the shapes only the encoder tests need: a fork child's exit
    (refcnt in the process), a return probe's kprobe event (return_action, the process
    with the calling thread and refcnt)."""
    return {
        **samples(),
        "exit_fork": _env("process_exit", {"process": FORKED, "parent": BASH, "status": 3,
                                           "time": "2024-01-01T00:00:06.500Z"}),
        "kprobe_return": _env("process_kprobe", {
            "process": CURL_IN_POLICY, "parent": BASH, "function_name": "__x64_sys_openat",
            "args": [{"int_arg": -100}], "return": {"int_arg": 3},
            "action": "KPROBE_ACTION_POST", "policy_name": "open-watch",
            "return_action": "KPROBE_ACTION_POST", "message": "opened"}),
        # a credential change after exec, as the pipeline writes it
        "kprobe_creds": cred_change_event(
            CURL_IN_POLICY, BASH, call="setgroups",
            old=Credentials(uid=1000, gid=1000, euid=1000, egid=1000, suid=1000, sgid=1000,
                            fsuid=1000, fsgid=1000, securebits=1),
            new=Credentials(securebits=1 | 16, cap_permitted=1 << 21,
                            cap_effective=1 << 21, user_ns_inum=4026531837),
            old_groups=None, groups=(4, 27), node_name=NODE,
            time_ns=1_704_067_205_000_001_000),
    }


def deep(ev: Event) -> Event:
    return copy.deepcopy(ev)
