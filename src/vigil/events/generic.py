"""Policy-hook arguments -> Tetragon ``KprobeArgument`` dicts. Pure.

``vigil.stream.policy_events`` decodes a VG_MSG_GENERIC_* record (hook, action, return value,
each argument's bytes); the hook's ``ArgSpec`` list (from the policy compiler) says how
to render each argument here (Tetragon's KprobeArgument variants).
"""

from __future__ import annotations

import base64
import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vigil.abi import _generated as abi
from vigil.capabilities import CAP_NAMES


# Tetragon's KprobeAction names, by vg_action value.
ACTION_NAMES = {
    0: "KPROBE_ACTION_UNKNOWN", 1: "KPROBE_ACTION_POST", 3: "KPROBE_ACTION_SIGKILL",
    5: "KPROBE_ACTION_OVERRIDE", 7: "KPROBE_ACTION_GETURL", 8: "KPROBE_ACTION_DNSLOOKUP",
    9: "KPROBE_ACTION_NOPOST", 10: "KPROBE_ACTION_SIGNAL", 11: "KPROBE_ACTION_TRACKSOCK",
    12: "KPROBE_ACTION_UNTRACKSOCK", 13: "KPROBE_ACTION_NOTIFYENFORCER",
    14: "KPROBE_ACTION_CLEANUPENFORCERNOTIFICATION", 15: "KPROBE_ACTION_SET",
}
_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6"}


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """How to render one captured argument: ``out`` is the KprobeArgument variant."""

    out: str           # int | uint | long | size | string | bytes | file | sockaddr | capability | syscall64 | nop | ...
    label: str = ""


def _int(raw: bytes) -> int:
    """The first 8 bytes as a signed 64-bit value; fewer bytes are zero-extended."""
    if len(raw) >= 8:
        return int.from_bytes(raw[:8], "little", signed=True)
    return int.from_bytes(raw, "little")


Renderer = Callable[[bytes, int], dict[str, Any]]


def render_arg(spec: ArgSpec, raw: bytes, orig_len: int = 0) -> dict[str, Any]:
    """One KprobeArgument dict (protojson shape), with ``label`` if the policy set one."""
    return arg_renderer(spec)(raw, orig_len)


@functools.lru_cache(maxsize=1024)
def arg_renderer(spec: ArgSpec) -> Renderer:
    """``render_arg`` for one ``spec``, chosen once: (raw bytes, original length) -> a new
    KprobeArgument dict. Policy hooks keep one per argument."""
    render = _RENDER.get(spec.out) or _object_renderer(spec.out)
    if not spec.label:
        return render
    label = spec.label

    def labelled(raw: bytes, orig_len: int) -> dict[str, Any]:
        arg = render(raw, orig_len)
        arg["label"] = label
        return arg
    return labelled


def _capability(raw: bytes, _orig: int) -> dict[str, Any]:
    v = _int(raw)
    name = CAP_NAMES[v] if 0 <= v < len(CAP_NAMES) else str(v)
    return {"capability_arg": {"value": v, "name": name}}


def _bytes(raw: bytes, orig_len: int) -> dict[str, Any]:
    b64 = base64.b64encode(raw).decode()
    if orig_len > len(raw):
        return {"truncated_bytes_arg": {"bytes_arg": b64, "orig_size": str(orig_len)}}
    return {"bytes_arg": b64} if raw else {}


# Decoded strings by their bytes: policy events repeat the same few paths and names, and
# a lookup is cheaper than decoding again. Only short ones are kept; the table is emptied
# when full.
_STRING_CACHE_MAX = 4096
_STRING_CACHE_BYTES = 256
_strings: dict[bytes, str] = {}
_paths: dict[bytes, str] = {}


def _string(raw: bytes, _orig: int) -> dict[str, Any]:
    """A tracepoint or kprobe string (tracepoint strings may carry their NUL and padding)."""
    s = _strings.get(raw)
    if s is None:
        s = raw.partition(b"\0")[0].decode("utf-8", "replace")
        if len(raw) <= _STRING_CACHE_BYTES:
            if len(_strings) >= _STRING_CACHE_MAX:
                _strings.clear()
            _strings[raw] = s
    return {"string_arg": s}


def _file(raw: bytes, _orig: int) -> dict[str, Any]:
    """A path resolved in the kernel; empty is the root."""
    s = _paths.get(raw)
    if s is None:
        s = raw.decode("utf-8", "replace") or "/"
        if len(raw) <= _STRING_CACHE_BYTES:
            if len(_paths) >= _STRING_CACHE_MAX:
                _paths.clear()
            _paths[raw] = s
    return {"file_arg": {"path": s}}


_RENDER: dict[str, Renderer] = {
    "int": lambda raw, _o: {"int_arg": ((_int(raw) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)},
    "uint": lambda raw, _o: {"uint_arg": _int(raw) & 0xFFFFFFFF},
    "long": lambda raw, _o: {"long_arg": str(_int(raw))},
    "size": lambda raw, _o: {"size_arg": str(_int(raw) & 0xFFFFFFFFFFFFFFFF)},
    "capability": _capability,
    "syscall64": lambda raw, _o: {"syscall_id": {"id": _int(raw) & 0xFFFFFFFF, "abi": "x64"}},
    "string": _string,
    "file": _file,
    "sockaddr": lambda raw, _o: {"sockaddr_arg": _sockaddr(raw)},
    "sockaddr_un": lambda raw, _o: {"sockaddrun_arg": _sockaddr_un(raw)},
}


def _object_renderer(out: str) -> Renderer:
    """Kernel objects (``_OBJECT_RENDER``), else raw bytes."""
    obj = _OBJECT_RENDER.get(out)
    if obj is None:
        return _bytes
    return lambda raw, _o: obj(raw) if raw else {}


def _sockaddr(raw: bytes) -> dict[str, Any]:
    if len(raw) < 20:
        return {}
    family, port = struct.unpack_from("<HH", raw)
    out: dict[str, Any] = {"family": _FAMILIES.get(family, str(family))}
    if family not in (2, 10):  # no address or port outside the inet families
        return out
    if family == 2:
        out["addr"] = ".".join(str(b) for b in raw[4:8])
    else:
        import ipaddress
        out["addr"] = str(ipaddress.IPv6Address(raw[4:20]))
    if port:
        out["port"] = port
    return out


def _sockaddr_un(raw: bytes) -> dict[str, Any]:
    """u16 family, then the path (an abstract name already as '@' + name)."""
    if len(raw) < 2:
        return {}
    (family,) = struct.unpack_from("<H", raw)
    out: dict[str, Any] = {"family": _FAMILIES.get(family, str(family))}
    if len(raw) > 2:
        out["path"] = raw[2:].decode("utf-8", "replace")
    return out


# ---- kernel objects (kprobe / fentry / lsm hooks; records from abi.h) -------------------

_SOCK_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM",
               5: "SOCK_SEQPACKET", 6: "SOCK_DCCP", 10: "SOCK_PACKET"}
_PROTOCOLS = {0: "IPPROTO_IP", 1: "IPPROTO_ICMP", 6: "IPPROTO_TCP", 17: "IPPROTO_UDP",
              41: "IPPROTO_IPV6", 58: "IPPROTO_ICMPV6", 132: "IPPROTO_SCTP", 255: "IPPROTO_RAW"}
_TCP_STATES = {1: "TCP_ESTABLISHED", 2: "TCP_SYN_SENT", 3: "TCP_SYN_RECV", 4: "TCP_FIN_WAIT1",
               5: "TCP_FIN_WAIT2", 6: "TCP_TIME_WAIT", 7: "TCP_CLOSE", 8: "TCP_CLOSE_WAIT",
               9: "TCP_LAST_ACK", 10: "TCP_LISTEN", 11: "TCP_CLOSING", 12: "TCP_NEW_SYN_RECV"}
_PROG_TYPES = ("BPF_PROG_TYPE_UNSPEC", "BPF_PROG_TYPE_SOCKET_FILTER", "BPF_PROG_TYPE_KPROBE",
               "BPF_PROG_TYPE_SCHED_CLS", "BPF_PROG_TYPE_SCHED_ACT", "BPF_PROG_TYPE_TRACEPOINT",
               "BPF_PROG_TYPE_XDP", "BPF_PROG_TYPE_PERF_EVENT", "BPF_PROG_TYPE_CGROUP_SKB",
               "BPF_PROG_TYPE_CGROUP_SOCK", "BPF_PROG_TYPE_LWT_IN", "BPF_PROG_TYPE_LWT_OUT",
               "BPF_PROG_TYPE_LWT_XMIT", "BPF_PROG_TYPE_SOCK_OPS", "BPF_PROG_TYPE_SK_SKB",
               "BPF_PROG_TYPE_CGROUP_DEVICE", "BPF_PROG_TYPE_SK_MSG",
               "BPF_PROG_TYPE_RAW_TRACEPOINT", "BPF_PROG_TYPE_CGROUP_SOCK_ADDR",
               "BPF_PROG_TYPE_LWT_SEG6LOCAL", "BPF_PROG_TYPE_LIRC_MODE2",
               "BPF_PROG_TYPE_SK_REUSEPORT", "BPF_PROG_TYPE_FLOW_DISSECTOR",
               "BPF_PROG_TYPE_CGROUP_SYSCTL", "BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE",
               "BPF_PROG_TYPE_CGROUP_SOCKOPT", "BPF_PROG_TYPE_TRACING",
               "BPF_PROG_TYPE_STRUCT_OPS", "BPF_PROG_TYPE_EXT", "BPF_PROG_TYPE_LSM",
               "BPF_PROG_TYPE_SK_LOOKUP", "BPF_PROG_TYPE_SYSCALL", "BPF_PROG_TYPE_NETFILTER")
_MAP_TYPES = ("BPF_MAP_TYPE_UNSPEC", "BPF_MAP_TYPE_HASH", "BPF_MAP_TYPE_ARRAY",
              "BPF_MAP_TYPE_PROG_ARRAY", "BPF_MAP_TYPE_PERF_EVENT_ARRAY",
              "BPF_MAP_TYPE_PERCPU_HASH", "BPF_MAP_TYPE_PERCPU_ARRAY", "BPF_MAP_TYPE_STACK_TRACE",
              "BPF_MAP_TYPE_CGROUP_ARRAY", "BPF_MAP_TYPE_LRU_HASH", "BPF_MAP_TYPE_LRU_PERCPU_HASH",
              "BPF_MAP_TYPE_LPM_TRIE", "BPF_MAP_TYPE_ARRAY_OF_MAPS", "BPF_MAP_TYPE_HASH_OF_MAPS",
              "BPF_MAP_TYPE_DEVMAP", "BPF_MAP_TYPE_SOCKMAP", "BPF_MAP_TYPE_CPUMAP",
              "BPF_MAP_TYPE_XSKMAP", "BPF_MAP_TYPE_SOCKHASH", "BPF_MAP_TYPE_CGROUP_STORAGE",
              "BPF_MAP_TYPE_REUSEPORT_SOCKARRAY", "BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE",
              "BPF_MAP_TYPE_QUEUE", "BPF_MAP_TYPE_STACK", "BPF_MAP_TYPE_SK_STORAGE",
              "BPF_MAP_TYPE_DEVMAP_HASH", "BPF_MAP_TYPE_STRUCT_OPS", "BPF_MAP_TYPE_RINGBUF",
              "BPF_MAP_TYPE_INODE_STORAGE", "BPF_MAP_TYPE_TASK_STORAGE",
              "BPF_MAP_TYPE_BLOOM_FILTER", "BPF_MAP_TYPE_USER_RINGBUF",
              "BPF_MAP_TYPE_CGRP_STORAGE", "BPF_MAP_TYPE_ARENA")
_TAINTS = ((1, "TAINT_PROPRIETARY_MODULE"), (2, "TAINT_FORCED_MODULE"),
           (4, "TAINT_FORCED_UNLOAD_MODULE"), (1024, "TAINT_STAGED_MODULE"),
           (4096, "TAINT_OUT_OF_TREE_MODULE"), (8192, "TAINT_UNSIGNED_MODULE"),
           (32768, "TAINT_KERNEL_LIVE_PATCH_MODULE"), (262144, "TAINT_TEST_MODULE"))


def _unpack(st: struct.Struct, idx: dict[str, int], raw: bytes) -> Any:
    vals = st.unpack_from(raw.ljust(st.size, b"\0"))
    return lambda name: vals[idx[name]]


def _addr(family: int, raw: bytes) -> str:
    import ipaddress
    if family == 2:
        return ".".join(str(b) for b in raw[:4])
    if family == 10:
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    return ""


def _name(v: bytes) -> str:
    return v.split(b"\0", 1)[0].decode(errors="replace")


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (0, "", None, [])}


def _sock(raw: bytes) -> dict[str, Any]:
    g = _unpack(abi.VG_SOCK_REC, abi.VG_SOCK_REC_INDEX, raw)
    fam = g("family")
    return {"sock_arg": _drop_empty({
        "family": _FAMILIES.get(fam, str(fam)), "type": _SOCK_TYPES.get(g("type"), str(g("type"))),
        "protocol": _PROTOCOLS.get(g("protocol"), str(g("protocol"))), "mark": g("mark"),
        "priority": g("priority"), "saddr": _addr(fam, g("saddr")), "daddr": _addr(fam, g("daddr")),
        "sport": g("sport"), "dport": g("dport"), "cookie": str(g("cookie")) if g("cookie") else "",
        "state": _TCP_STATES.get(g("state"), "")})}


def _skb(raw: bytes) -> dict[str, Any]:
    g = _unpack(abi.VG_SKB_REC, abi.VG_SKB_REC_INDEX, raw)
    fam = g("family")
    return {"skb_arg": _drop_empty({
        "hash": g("hash"), "len": g("len"), "priority": g("priority"), "mark": g("mark"),
        "saddr": _addr(fam, g("saddr")), "daddr": _addr(fam, g("daddr")), "sport": g("sport"),
        "dport": g("dport"), "proto": g("protocol"),
        "protocol": _PROTOCOLS.get(g("protocol"), "") if fam else "",
        "family": _FAMILIES.get(fam, "") if fam else ""})}


def _caps(mask: int) -> list[str]:
    return [CAP_NAMES[i] for i in range(len(CAP_NAMES)) if mask >> i & 1]


def _cred(raw: bytes) -> dict[str, Any]:
    g = _unpack(abi.VG_CREDS, abi.VG_CREDS_INDEX, raw)
    ids = {k: g(k) for k in ("uid", "gid", "euid", "egid", "suid", "sgid", "fsuid", "fsgid")}
    caps = _drop_empty({"permitted": _caps(g("cap_permitted")),
                        "effective": _caps(g("cap_effective")),
                        "inheritable": _caps(g("cap_inheritable"))})
    user_ns = {"level": g("user_ns_level"), "uid": g("user_ns_uid"), "gid": g("user_ns_gid"),
               "ns": {"inum": g("user_ns_inum"), "is_host": g("user_ns_level") == 0}}
    return {"process_credentials_arg": {**ids, "caps": caps, "user_ns": user_ns}}


def _bpf(raw: bytes, key: str) -> dict[str, Any]:
    g = _unpack(abi.VG_BPF_REC, abi.VG_BPF_REC_INDEX, raw)
    t = g("type")
    if key == "bpf_map_arg":
        return {key: _drop_empty({
            "MapType": _MAP_TYPES[t] if t < len(_MAP_TYPES) else str(t), "KeySize": g("key_size"),
            "ValueSize": g("value_size"), "MaxEntries": g("max_entries"),
            "MapName": _name(g("name"))})}
    return {key: _drop_empty({"ProgType": _PROG_TYPES[t] if t < len(_PROG_TYPES) else str(t),
                              "InsnCnt": g("insn_cnt"), "ProgName": _name(g("name"))})}


def _module(raw: bytes, load_info: bool) -> dict[str, Any]:
    g = _unpack(abi.VG_MODULE_REC, abi.VG_MODULE_REC_INDEX, raw)
    out: dict[str, Any] = {"name": _name(g("name"))}
    if load_info and g("sig_ok") != 0xFFFFFFFF:
        out["signature_ok"] = bool(g("sig_ok"))
    tainted = [n for bit, n in _TAINTS if g("taints") & bit]
    if tainted:
        out["tainted"] = tainted
    return {"module_arg": out}


def _userns(raw: bytes) -> dict[str, Any]:
    g = _unpack(abi.VG_USERNS_REC, abi.VG_USERNS_REC_INDEX, raw)
    return {"user_ns_arg": {"level": g("level"), "uid": g("uid"), "gid": g("gid"),
                            "ns": {"inum": g("inum"), "is_host": g("level") == 0}}}


_PERF_TYPES = ("PERF_TYPE_HARDWARE", "PERF_TYPE_SOFTWARE", "PERF_TYPE_TRACEPOINT",
               "PERF_TYPE_HW_CACHE", "PERF_TYPE_RAW", "PERF_TYPE_BREAKPOINT")


def _perf_event(raw: bytes) -> dict[str, Any]:
    g = _unpack(abi.VG_PERF_REC, abi.VG_PERF_REC_INDEX, raw)
    t = g("type")
    return {"perf_event_arg": _drop_empty({
        "KprobeFunc": _name(g("kprobe_func")),
        "Type": _PERF_TYPES[t] if t < len(_PERF_TYPES) else str(t),
        "Config": str(g("config")) if g("config") else "",
        "ProbeOffset": str(g("probe_offset")) if g("probe_offset") else ""})}


def _path(raw: bytes, key: str) -> dict[str, Any]:
    return {key: {"path": raw.decode(errors="replace") or "/"}}


_OBJECT_RENDER: dict[str, Any] = {
    "path": lambda r: _path(r, "path_arg"),
    "binprm": lambda r: _path(r, "linux_binprm_arg"),
    "sock": _sock, "skb": _skb, "cred": _cred,
    "kernel_cap_t": lambda r: {"kernel_cap_t_arg": f"{_int(r) % (1 << 64):016x}"},
    "cap_inheritable": lambda r: {"cap_inheritable_arg": f"{_int(r) % (1 << 64):016x}"},
    "cap_permitted": lambda r: {"cap_permitted_arg": f"{_int(r) % (1 << 64):016x}"},
    "cap_effective": lambda r: {"cap_effective_arg": f"{_int(r) % (1 << 64):016x}"},
    "bpf_attr": lambda r: _bpf(r, "bpf_attr_arg"),
    "bpf_prog": lambda r: _bpf(r, "bpf_prog_arg"),
    "bpf_map": lambda r: _bpf(r, "bpf_map_arg"),
    "module": lambda r: _module(r, False),
    "load_info": lambda r: _module(r, True),
    "user_ns": _userns, "perf_event": _perf_event,
}

