"""Unit tests for vigil.events.compact (tetra getevents -o compact lines)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from vigil.events.compact import go_quote, maybe_quote, render, syscall_name

POD = {"namespace": "kube-system", "name": "tetragon"}
CURL = {"binary": "/usr/bin/curl", "arguments": "cilium.io", "pod": POD}

# Tetragon's documented example events.
THROTTLE = ('{"process_throttle":{"type":"THROTTLE_START","cgroup":"session-429.scope"},'
            '"node_name":"ubuntu-22","time":"2024-07-26T13:07:43.178407128Z"}')
INSMOD_KPROBE = (
    '{"process_kprobe":{"process":{"exec_id":"OjEzMTg4MTQwNDUwODkwOjgyMDIz","pid":82023,"uid":0,'
    '"cwd":"/home/tixxdz/tetragon","binary":"/usr/sbin/insmod",'
    '"arguments":"contrib/tester-progs/kernel_module_hello.ko","flags":"execve clone",'
    '"start_time":"2023-08-30T11:01:22.846516679Z","auid":1000,'
    '"parent_exec_id":"OjEzMTg4MTM4MjY2ODQyOjgyMDIy","refcnt":1,"tid":82023},'
    '"parent":{"exec_id":"OjEzMTg4MTM4MjY2ODQyOjgyMDIy","pid":82022,"binary":"/usr/bin/sudo","tid":0},'
    '"function_name":"security_kernel_read_file",'
    '"args":[{"file_arg":{"path":"/home/tixxdz/tetragon/contrib/tester-progs/kernel_module_hello.ko"}},'
    '{"int_arg":2}],"return":{"int_arg":0},"action":"KPROBE_ACTION_POST"},'
    '"time":"2023-08-30T11:01:22.847554295Z"}'
)


def kprobe(function: str, args: list[Any] | None = None, process: dict | None = None) -> dict:
    body: dict[str, Any] = {"process": process or {"binary": "/usr/bin/curl", "pod": POD},
                            "function_name": function}
    if args is not None:
        body["args"] = args
    return {"process_kprobe": body}


def host_event(key: str, body: dict, node: str = "my-node") -> dict:
    return {key: body, "node_name": node}


# --------------------------------------------------------------------------- exec / exit

def test_exec_host_and_pod() -> None:
    ev = host_event("process_exec", {"process": {"binary": "/usr/bin/curl", "arguments": "cilium.io"}})
    assert render(ev) == "🚀 process my-node /usr/bin/curl cilium.io"
    assert render({"process_exec": {"process": CURL}}) == \
        "🚀 process kube-system/tetragon /usr/bin/curl cilium.io"


def test_exec_without_arguments_keeps_separator() -> None:
    ev = host_event("process_exec", {"process": {"binary": "/bin/true"}})
    assert render(ev) == "🚀 process my-node /bin/true "


def test_exit_status_and_signal() -> None:
    assert render({"process_exit": {"process": CURL, "status": 1}}) == \
        "💥 exit    kube-system/tetragon /usr/bin/curl cilium.io 1"
    assert render({"process_exit": {"process": CURL, "signal": "SIGKILL"}}) == \
        "💥 exit    kube-system/tetragon /usr/bin/curl cilium.io SIGKILL"
    assert render({"process_exit": {"process": CURL, "signal": "SIGKILL", "status": 3}}) == \
        "💥 exit    kube-system/tetragon /usr/bin/curl cilium.io SIGKILL"
    assert render({"process_exit": {"process": CURL}}) == \
        "💥 exit    kube-system/tetragon /usr/bin/curl cilium.io 0"


def test_exec_quotes_arguments_binary_and_node() -> None:
    ev = host_event("process_exec", {"process": {"binary": "/usr/sbin/nginx",
                                                 "arguments": "-g daemon off;"}})
    assert render(ev) == '🚀 process my-node /usr/sbin/nginx "-g daemon off;"'
    ev = host_event("process_exec", {"process": {"binary": "/tmp/my prog",
                                                 "arguments": '-c "echo hi"'}}, node="my node")
    assert render(ev) == '🚀 process "my node" "/tmp/my prog" "-c \\"echo hi\\""'
    ev = host_event("process_exec", {"process": {"binary": "/tmp/evil\x1b[31m", "arguments": "a\nb"}})
    assert render(ev) == '🚀 process my-node "/tmp/evil\\x1b[31m" "a\\nb"'


def test_pod_source_is_not_quoted() -> None:
    proc = {"binary": "/bin/sh", "pod": {"namespace": "my ns", "name": "p"}}
    assert render({"process_exec": {"process": proc}}) == "🚀 process my ns/p /bin/sh "


# --------------------------------------------------------------------------- quoting

@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("plain", "plain"),
        ("", ""),
        ("héllo/日本/😀", "héllo/日本/😀"),
        ("a b", '"a b"'),
        ("tab\there", '"tab\\there"'),
        ("nul\x00", '"nul\\x00"'),
        ("esc\x1b", '"esc\\x1b"'),
        ("del\x7f", '"del\\x7f"'),
        ("bell\a\b\f\r\v", '"bell\\a\\b\\f\\r\\v"'),
        ("nbsp\u00a0", '"nbsp\\u00a0"'),
        ("c1\u0085", '"c1\\u0085"'),
        ("tag\U000e0001", '"tag\\U000e0001"'),
        ('q" \\', '"q\\" \\\\"'),
    ],
)
def test_maybe_quote(raw: str, quoted: str) -> None:
    assert maybe_quote(raw) == quoted


def test_go_quote_always_quotes() -> None:
    assert go_quote("x") == '"x"'
    assert go_quote('"') == '"\\""'


# --------------------------------------------------------------------------- kprobes

def test_kprobe_unknown_function() -> None:
    assert render(kprobe("unhandled_function")) == \
        "❓ syscall kube-system/tetragon /usr/bin/curl unhandled_function"


def test_kprobe_reference_example_without_node_name() -> None:
    ev = orjson.loads(INSMOD_KPROBE)
    assert render(ev) == "❓ syscall  /usr/sbin/insmod security_kernel_read_file"


def test_kprobe_fd_install() -> None:
    assert render(kprobe("fd_install")) == "📬 open    kube-system/tetragon /usr/bin/curl "
    ev = kprobe("fd_install", [{}, {"file_arg": {"path": "/etc/password"}}])
    assert render(ev) == "📬 open    kube-system/tetragon /usr/bin/curl /etc/password"


@pytest.mark.parametrize("function", ["__x64_sys_write", "__arm64_sys_write", "__ia32_sys_write",
                                      "sys_write"])
def test_kprobe_write_prefix_stripping(function: str) -> None:
    assert render(kprobe(function)) == "📝 write   kube-system/tetragon /usr/bin/curl  "
    ev = kprobe(function, [{"file_arg": {"path": "/etc/password"}}, {}, {"size_arg": "1234"}])
    assert render(ev) == "📝 write   kube-system/tetragon /usr/bin/curl /etc/password 1234 bytes"


def test_kprobe_unprefixed_lookalike_is_unknown() -> None:
    assert render(kprobe("__x32_sys_write")) == \
        "❓ syscall kube-system/tetragon /usr/bin/curl __x32_sys_write"


def test_kprobe_read_close_open() -> None:
    ev = kprobe("__x64_sys_read", [{"file_arg": {"path": "/etc/hosts"}}, {}, {"size_arg": "7"}])
    assert render(ev) == "📚 read    kube-system/tetragon /usr/bin/curl /etc/hosts 7 bytes"
    assert render(kprobe("__x64_sys_close")) == "📪 close   kube-system/tetragon /usr/bin/curl "
    ev = kprobe("__x64_sys_close", [{"file_arg": {"path": "/etc/password"}}])
    assert render(ev) == "📪 close   kube-system/tetragon /usr/bin/curl /etc/password"
    ev = kprobe("__x64_sys_openat", [{"int_arg": -100}, {"string_arg": "/etc/my file"}])
    assert render(ev) == '📬️ openat  kube-system/tetragon /usr/bin/curl "/etc/my file"'
    ev = kprobe("sys_open", [{}, {"string_arg": "/etc/shadow"}])
    assert render(ev) == "📬️ open    kube-system/tetragon /usr/bin/curl /etc/shadow"


def test_kprobe_bpf_family() -> None:
    bpftool = {"binary": "/usr/bin/bpftool", "pod": POD}
    assert render(kprobe("bpf_check", process=bpftool)) == \
        "🐝 bpf_load kube-system/tetragon /usr/bin/bpftool "
    ev = kprobe("bpf_check", [{"bpf_attr_arg": {"ProgType": "BPF_PROG_TYPE_KPROBE", "InsnCnt": 2048,
                                                "ProgName": "amazing-program"}}], bpftool)
    assert render(ev) == ("🐝 bpf_load kube-system/tetragon /usr/bin/bpftool "
                          "BPF_PROG_TYPE_KPROBE amazing-program instruction count 2048")
    ev = kprobe("security_perf_event_alloc",
                [{"perf_event_arg": {"KprobeFunc": "commit_creds", "Type": "PERF_TYPE_TRACEPOINT"}}],
                bpftool)
    assert render(ev) == ("🐝 perf_event_alloc kube-system/tetragon /usr/bin/bpftool "
                          "PERF_TYPE_TRACEPOINT commit_creds")
    bpf_map = [{"bpf_map_arg": {"MapType": "BPF_MAP_TYPE_HASH", "KeySize": 8, "ValueSize": 8,
                                "MaxEntries": 1024, "MapName": "amazing-map"}}]
    want = ("🗺 bpf_map_create kube-system/tetragon /usr/bin/bpftool BPF_MAP_TYPE_HASH amazing-map "
            "key size 8 value size 8 max entries 1024")
    assert render(kprobe("security_bpf_map_alloc", bpf_map, bpftool)) == want
    assert render(kprobe("security_bpf_map_create", bpf_map, bpftool)) == want


def test_kprobe_misc_syscalls() -> None:
    sudo = {"binary": "/usr/bin/sudo"}
    ev = host_event("process_kprobe", {"process": sudo, "function_name": "__x64_sys_setuid",
                                       "args": [{"int_arg": 0}]})
    assert render(ev) == "🔑 setuid  my-node /usr/bin/sudo 0"
    ev = host_event("process_kprobe", {"process": {"binary": "/bin/date"},
                                       "function_name": "__x64_sys_clock_settime"})
    assert render(ev) == "⏰ clock_settime my-node /bin/date"
    ev = host_event("process_kprobe", {"process": {"binary": "/bin/mount"},
                                       "function_name": "__x64_sys_mount",
                                       "args": [{"string_arg": "tmpfs"}, {"string_arg": "/mnt"}]})
    assert render(ev) == "💾 mount   my-node /bin/mount tmpfs /mnt"
    ev = host_event("process_kprobe", {"process": {"binary": "/bin/pr"},
                                       "function_name": "__x64_sys_pivot_root",
                                       "args": [{"string_arg": "."}, {"string_arg": "old"}]})
    assert render(ev) == "💾 pivot_root my-node /bin/pr . old"
    ev = host_event("process_kprobe", {"process": {"binary": "/usr/bin/nsenter"},
                                       "function_name": "__x64_sys_setns",
                                       "args": [{"int_arg": 3}, {"int_arg": 0x40000000}]})
    assert render(ev) == "🔧 setns   my-node /usr/bin/nsenter net"
    ev["process_kprobe"]["args"][1] = {"int_arg": 12345}
    assert render(ev) == "🔧 setns   my-node /usr/bin/nsenter "
    ev = host_event("process_kprobe", {"process": {"binary": "/x"}, "function_name": "proc_exec_connector"})
    assert render(ev) == "🔧 proc_exec_connector my-node /x"


def test_kprobe_tcp() -> None:
    sock = {"sock_arg": {"family": "AF_INET", "saddr": "10.0.0.1", "daddr": "1.1.1.1",
                         "sport": 40000, "dport": 443}}
    curl = {"binary": "/usr/bin/curl"}
    ev = host_event("process_kprobe", {"process": curl, "function_name": "tcp_connect", "args": [sock]})
    assert render(ev) == "🔌 connect my-node /usr/bin/curl tcp 10.0.0.1:40000 -> 1.1.1.1:443"
    ev = host_event("process_kprobe", {"process": curl, "function_name": "tcp_close", "args": [sock]})
    assert render(ev) == "🧹 close   my-node /usr/bin/curl tcp 10.0.0.1:40000 -> 1.1.1.1:443"
    ev = host_event("process_kprobe", {"process": curl, "function_name": "tcp_sendmsg",
                                       "args": [sock, {"int_arg": 100}]})
    assert render(ev) == "📤 sendmsg my-node /usr/bin/curl tcp 10.0.0.1:40000 -> 1.1.1.1:443 bytes 100"
    ev = host_event("process_kprobe", {"process": curl, "function_name": "tcp_sendmsg"})
    assert render(ev) == "📤 sendmsg my-node /usr/bin/curl  bytes 0"


def test_kprobe_lsm_style_hooks() -> None:
    cat = {"binary": "/bin/cat"}
    f = {"file_arg": {"path": "/etc/passwd"}}

    def ev(fn: str, args: list[Any] | None = None) -> dict:
        body: dict[str, Any] = {"process": cat, "function_name": fn}
        if args is not None:
            body["args"] = args
        return host_event("process_kprobe", body)

    assert render(ev("security_file_permission", [f, {"int_arg": 4}])) == \
        "📚 read    my-node /bin/cat /etc/passwd"
    assert render(ev("security_file_permission", [f, {"int_arg": 2}])) == \
        "📝 write   my-node /bin/cat /etc/passwd"
    assert render(ev("security_file_permission", [f, {"int_arg": 0x20}])) == \
        "❓ security_file_permission my-node /bin/cat /etc/passwd"
    assert render(ev("security_file_permission", [f])) == \
        "❓ security_file_permission my-node /bin/cat "
    assert render(ev("security_mmap_file", [f, {"uint_arg": 5}, {}])) == \
        "📝 mmap-rx my-node /bin/cat /etc/passwd"
    assert render(ev("security_mmap_file", [f, {"uint_arg": 1}])) == \
        "📝 mmap-r  my-node /bin/cat /etc/passwd"
    assert render(ev("security_mmap_file", [f, {"uint_arg": 7}])) == \
        "📝 mmap-rwx my-node /bin/cat /etc/passwd"
    assert render(ev("security_path_truncate", [{"path_arg": {"path": "/tmp/x"}}])) == \
        "📝 truncate my-node /bin/cat /tmp/x"
    assert render(ev("security_file_truncate", [{"file_arg": {"path": "/tmp/y"}}])) == \
        "📝 truncate my-node /bin/cat /tmp/y"
    assert render(ev("security_path_truncate")) == \
        "❓ security_path_truncate my-node /bin/cat "


# --------------------------------------------------------------------------- tracepoints

def tracepoint(subsys: str, event: str, args: list[Any] | None = None) -> dict:
    body: dict[str, Any] = {"process": {"binary": "/bin/sh"}, "subsys": subsys, "event": event}
    if args is not None:
        body["args"] = args
    return host_event("process_tracepoint", body)


def test_tracepoint_generic() -> None:
    assert render(tracepoint("sched", "sched_process_exec")) == \
        "⁉️ tracepoint my-node /bin/sh sched sched_process_exec"


@pytest.mark.parametrize(
    ("args", "detail"),
    [
        ([{"long_arg": "59"}, {"size_arg": "1"}], "execve"),
        ([{"long_arg": "0"}], "read"),
        ([{"long_arg": "334"}], "rseq"),
        ([{"long_arg": "435"}], "clone3"),
        ([{"syscall_id": {"id": 257, "abi": "x64"}}], "openat"),
        ([{"syscall_id": {"id": 1}}], "write"),
        ([{"syscall_id": {"id": 11, "abi": "i386"}}], "i386/11"),
        ([{"long_arg": "9999"}], "9999"),
        ([{"long_arg": "-1"}], "-1"),
        ([], "unknown"),
        (None, "unknown"),
    ],
)
def test_raw_syscalls_sys_enter(args: list[Any] | None, detail: str) -> None:
    assert render(tracepoint("raw_syscalls", "sys_enter", args)) == \
        f"☎  syscall my-node /bin/sh {detail}"


def test_syscall_table_spot_checks() -> None:
    assert [syscall_name(n) for n in (0, 1, 2, 3, 9, 41, 42, 56, 57, 59, 60, 62, 101, 105, 165,
                                      231, 257, 262, 272, 317, 321, 322, 332)] == [
        "read", "write", "open", "close", "mmap", "socket", "connect", "clone", "fork", "execve",
        "exit", "kill", "ptrace", "setuid", "mount", "exit_group", "openat", "newfstatat",
        "unshare", "seccomp", "bpf", "execveat", "statx",
    ]
    assert syscall_name(437) == "openat2"
    assert syscall_name(400) == "400"


# --------------------------------------------------------------------------- other events

def test_throttle_reference_example() -> None:
    assert render(orjson.loads(THROTTLE)) == "🧬 throttle START session-429.scope"
    stop = {"process_throttle": {"type": "THROTTLE_STOP", "cgroup": "a b"}}
    assert render(stop) == '🧬 throttle STOP  "a b"'
    assert render({"process_throttle": {}}) == "🧬 throttle  "


def test_uprobe_lsm_usdt_loader() -> None:
    bash = {"binary": "/bin/bash"}
    ev = host_event("process_uprobe", {"process": bash, "path": "/bin/bash", "symbol": "readline"})
    assert render(ev) == "🕵️ uprobe  my-node /bin/bash /bin/bash readline"
    ev = host_event("process_lsm", {"process": {"binary": "/usr/bin/cat"}, "function_name": "file_open"})
    assert render(ev) == "🔒 LSM     my-node /usr/bin/cat file_open"
    ev = host_event("process_usdt", {"process": bash, "path": "/usr/lib/libc.so.6",
                                     "provider": "libc", "name": "setjmp"})
    assert render(ev) == "🕵️ usdt    my-node /bin/bash /usr/lib/libc.so.6 libc setjmp"
    buildid = base64.b64encode(b"\x01\x02\xab").decode()
    ev = host_event("process_loader", {"process": bash, "path": "/lib/x.so", "buildid": buildid})
    assert render(ev) == "🧬 loader  my-node /bin/bash 0102ab /lib/x.so"
    ev = host_event("process_loader", {"process": bash, "path": "/lib/x.so"})
    assert render(ev) == "🧬 loader  my-node /bin/bash /lib/x.so"


def test_rate_limit_info_and_test_event() -> None:
    ev = {"rate_limit_info": {"number_of_dropped_process_events": "42"},
          "node_name": "my-node", "time": "2024-07-26T13:07:43Z"}
    assert render(ev) == "🚦 ratelimit my-node 42 events dropped"
    assert render({"test": {"arg0": "1"}}) == "TEST EVENT"


def test_unknown_and_malformed_events_never_raise() -> None:
    assert render({"process_foo": {"process": {"binary": "/x"}}, "node_name": "n"}) == \
        "❓ process_foo n /x"
    assert render({"node_name": "n", "time": "2024-07-26T13:07:43Z", "brand_new": 5}) == \
        "❓ brand_new n"
    assert render({"process_exec": {}}) is None
    assert render({"process_exec": "garbage"}) is None
    assert render({"process_kprobe": {"function_name": "x"}}) is None
    assert render({}) is None
    assert render({"node_name": "n", "time": "x"}) is None
    assert render("not a dict") is None  # type: ignore[arg-type]
    weird = {"process_exec": {"process": {"binary": 5, "arguments": ["a"], "pod": "p"}},
             "node_name": None}
    assert render(weird) == "🚀 process  5 ['a']"
    odd_args = kprobe("__x64_sys_write", [5, None, {"size_arg": "zz"}])
    assert render(odd_args) == "📝 write   kube-system/tetragon /usr/bin/curl  0 bytes"
    assert render(kprobe("tcp_connect", [{"sock_arg": "nope"}])) == \
        "🔌 connect kube-system/tetragon /usr/bin/curl tcp :0 -> :0"


# --------------------------------------------------------------------------- caps trailer

def _root_caps(n: int) -> dict:
    return {"effective": [f"CAP_{i}" for i in range(n)]}


def test_caps_trailer_pads_to_120_bytes() -> None:
    proc = {"binary": "/usr/bin/curl", "arguments": "cilium.io", "cap": _root_caps(41)}
    line = "🚀 process my-node /usr/bin/curl cilium.io"
    got = render(host_event("process_exec", {"process": proc}))
    caps = "🛑 CAP_SYS_ADMIN"
    pad = 120 - len(line.encode())  # 120 - 44 bytes = 76 (emoji is 4 bytes)
    assert pad == 76
    assert got == line + " " + " " * (pad - len(caps)) + caps
    assert len(got) == len(line) + 1 + pad


def test_caps_trailer_quirk_uses_list_length() -> None:
    proc = {"binary": "/bin/x", "cap": _root_caps(21)}  # index 21 absent -> no trailer
    assert render(host_event("process_exec", {"process": proc})) == "🚀 process my-node /bin/x "
    proc = {"binary": "/bin/x", "cap": {"effective": ["CAP_SYS_ADMIN"]}}
    assert render(host_event("process_exec", {"process": proc})) == "🚀 process my-node /bin/x "


def test_caps_trailer_on_long_line_uses_single_space() -> None:
    long_args = "x" * 130
    proc = {"binary": "/bin/x", "arguments": long_args, "cap": _root_caps(22)}
    got = render(host_event("process_exec", {"process": proc}))
    assert got == f"🚀 process my-node /bin/x {long_args} 🛑 CAP_SYS_ADMIN"


# --------------------------------------------------------------------------- color / timestamps

def test_color_exec_exit_throttle() -> None:
    ev = host_event("process_exec", {"process": {"binary": "/usr/bin/curl", "arguments": "cilium.io"}})
    assert render(ev, color=True) == (
        "\x1b[34m🚀 process\x1b[0m \x1b[32mmy-node\x1b[0m "
        "\x1b[35m/usr/bin/curl\x1b[0m \x1b[36mcilium.io\x1b[0m"
    )
    ev = {"process_exit": {"process": CURL, "signal": "SIGKILL"}}
    assert render(ev, color=True) == (
        "\x1b[34m💥 exit   \x1b[0m \x1b[32mkube-system/tetragon\x1b[0m "
        "\x1b[35m/usr/bin/curl\x1b[0m \x1b[36mcilium.io\x1b[0m \x1b[31mSIGKILL\x1b[0m"
    )
    assert render(orjson.loads(THROTTLE), color=True) == \
        "\x1b[31m🧬 throttle\x1b[0m \x1b[31mSTART\x1b[0m session-429.scope"
    stop = {"process_throttle": {"type": "THROTTLE_STOP", "cgroup": "c"}}
    assert render(stop, color=True) == "\x1b[31m🧬 throttle\x1b[0m \x1b[32mSTOP \x1b[0m c"


@pytest.mark.parametrize(
    ("time", "prefix"),
    [
        ("2022-10-18T03:16:22.225264791Z", "2022-10-18T03:16:22.225264791Z"),
        ("2022-10-18T03:16:22Z", "2022-10-18T03:16:22.000000000Z"),
        ("2022-10-18T03:16:22.120Z", "2022-10-18T03:16:22.120000000Z"),
        ("2022-10-18T05:16:22.5+02:00", "2022-10-18T03:16:22.500000000Z"),
        (None, "1970-01-01T00:00:00.000000000Z"),
        ("yesterday", "1970-01-01T00:00:00.000000000Z"),
        ("2022-13-18T05:16:22+02:00", "1970-01-01T00:00:00.000000000Z"),
    ],
)
def test_timestamps_prefix(time: str | None, prefix: str) -> None:
    ev: dict[str, Any] = {"process_exec": {"process": CURL}}
    if time is not None:
        ev["time"] = time
    assert render(ev, timestamps=True) == \
        f"{prefix} 🚀 process kube-system/tetragon /usr/bin/curl cilium.io"


def test_render_vigil_encoded_event() -> None:
    from vigil.events.encode import dumps, exec_event, exit_event

    proc = {"exec_id": "x", "pid": 7, "binary": "/usr/bin/sleep", "arguments": "1 \"a b\"", "tid": 7}
    ev = orjson.loads(dumps(exec_event(proc, None, None, "vigil-node", 0)))
    assert render(ev) == '🚀 process vigil-node /usr/bin/sleep "1 \\"a b\\""'
    ev = orjson.loads(dumps(exit_event(proc, None, None, exit_code=0x80 | 11, exit_time_ns=0,
                                       node_name="vigil-node", time_ns=0)))
    assert render(ev) == '💥 exit    vigil-node /usr/bin/sleep "1 \\"a b\\"" SIGSEGV'
