"""Tetragon's field numbers, pinned: a field renumbered (or renamed) in proto/tetragon
changes the wire format every Tetragon client (tetra, Hubble exporters, SIEM
integrations) decodes, so each number a client depends on is listed here once, as
Tetragon's api/v1/tetragon/*.proto has it, and checked against the generated
descriptors."""

from __future__ import annotations

import pytest

from vigil.api.tetragon import (eventlogservice_pb2, events_pb2, sensors_pb2,
                                tetragon_pb2)

# (message, field, number). Nested messages are written Outer.Inner.
FIELDS: list[tuple[str, str, int]] = [
    # -- events: the process
    *[("Process", f, n) for f, n in [
        ("exec_id", 1), ("pid", 2), ("uid", 3), ("cwd", 4), ("binary", 5), ("arguments", 6),
        ("flags", 7), ("start_time", 8), ("auid", 9), ("pod", 10), ("docker", 11),
        ("parent_exec_id", 12), ("refcnt", 13), ("cap", 14), ("ns", 15), ("tid", 16),
        ("process_credentials", 17), ("binary_properties", 18), ("user", 19),
        ("in_init_tree", 20), ("environment_variables", 21)]],
    *[("Pod", f, n) for f, n in [
        ("namespace", 1), ("name", 2), ("uid", 3), ("container", 4), ("pod_labels", 5),
        ("workload", 6), ("workload_kind", 7), ("pod_annotations", 8)]],
    *[("Container", f, n) for f, n in [
        ("id", 1), ("name", 2), ("image", 3), ("start_time", 4), ("pid", 5),
        ("maybe_exec_probe", 13), ("security_context", 14)]],
    ("Image", "id", 1), ("Image", "name", 2),
    *[("Capabilities", f, n) for f, n in [("permitted", 1), ("effective", 2),
                                          ("inheritable", 3)]],
    ("Namespace", "inum", 1), ("Namespace", "is_host", 2),
    *[("Namespaces", f, n) for n, f in enumerate(
        ["uts", "ipc", "mnt", "pid", "pid_for_children", "net", "time", "time_for_children",
         "cgroup", "user"], start=1)],
    # -- events: the event messages
    ("ProcessExec", "process", 1), ("ProcessExec", "parent", 2),
    ("ProcessExec", "ancestors", 3),
    *[("ProcessExit", f, n) for f, n in [("process", 1), ("parent", 2), ("signal", 3),
                                         ("status", 4), ("time", 5), ("ancestors", 6)]],
    *[("ProcessKprobe", f, n) for f, n in [
        ("process", 1), ("parent", 2), ("function_name", 3), ("args", 4), ("return", 5),
        ("action", 6), ("kernel_stack_trace", 7), ("policy_name", 8), ("return_action", 9),
        ("message", 10), ("tags", 11), ("user_stack_trace", 12), ("ancestors", 13),
        ("data", 14)]],
    *[("ProcessTracepoint", f, n) for f, n in [
        ("process", 1), ("parent", 2), ("subsys", 4), ("event", 5), ("args", 6),
        ("policy_name", 7), ("action", 8), ("message", 9), ("tags", 10), ("ancestors", 11)]],
    *[("ProcessLoader", f, n) for f, n in [("process", 1), ("path", 2), ("buildid", 3),
                                           ("parent", 4), ("ancestors", 5)]],
    ("ProcessLsm", "policy_name", 5),
    *[("KprobeArgument", f, n) for f, n in [
        ("string_arg", 1), ("int_arg", 2), ("skb_arg", 3), ("size_arg", 4), ("bytes_arg", 5),
        ("path_arg", 6), ("file_arg", 7), ("truncated_bytes_arg", 8), ("sock_arg", 9),
        ("cred_arg", 10), ("long_arg", 11), ("bpf_attr_arg", 12), ("perf_event_arg", 13),
        ("bpf_map_arg", 14), ("uint_arg", 15), ("user_namespace_arg", 16),
        ("capability_arg", 17), ("label", 18), ("process_credentials_arg", 19),
        ("user_ns_arg", 20), ("module_arg", 21), ("kernel_cap_t_arg", 22),
        ("cap_inheritable_arg", 23), ("cap_permitted_arg", 24), ("cap_effective_arg", 25),
        ("linux_binprm_arg", 26), ("net_dev_arg", 27), ("bpf_cmd_arg", 28),
        ("syscall_id", 29), ("sockaddr_arg", 30), ("bpf_prog_arg", 31), ("error_arg", 32),
        ("sockaddrun_arg", 33)]],
    *[("KprobeSock", f, n) for n, f in enumerate(
        ["family", "type", "protocol", "mark", "priority", "saddr", "daddr", "sport",
         "dport"], start=1)],
    ("KprobePath", "mount", 1), ("KprobePath", "path", 2), ("KprobePath", "flags", 3),
    ("KprobeFile", "mount", 1), ("KprobeFile", "path", 2), ("KprobeFile", "flags", 3),
    ("KprobeTruncatedBytes", "bytes_arg", 1), ("KprobeTruncatedBytes", "orig_size", 2),
    ("HealthStatus", "event", 1), ("HealthStatus", "status", 2),
    ("HealthStatus", "details", 3),
    ("GetHealthStatusResponse", "health_status", 1),
    # -- events: the stream envelope (oneof numbers equal the EventType values)
    *[("GetEventsResponse", f, n) for f, n in [
        ("process_exec", 1), ("process_exit", 5), ("process_kprobe", 9),
        ("process_tracepoint", 10), ("process_loader", 11), ("process_uprobe", 12),
        ("process_throttle", 27), ("process_lsm", 28), ("process_usdt", 29),
        ("test", 40000), ("rate_limit_info", 40001), ("node_name", 1000), ("time", 1001),
        ("aggregation_info", 1002), ("cluster_name", 1003), ("node_labels", 1004)]],
    # -- filters
    *[("GetEventsRequest", f, n) for f, n in [("allow_list", 1), ("deny_list", 2),
                                              ("aggregation_options", 3),
                                              ("field_filters", 4)]],
    *[("Filter", f, n) for f, n in [
        ("binary_regex", 1), ("namespace", 2), ("health_check", 3), ("pid", 4),
        ("pid_set", 5), ("event_set", 6), ("pod_regex", 7), ("arguments_regex", 8),
        ("labels", 9), ("policy_names", 10), ("capabilities", 11),
        ("parent_binary_regex", 12), ("cel_expression", 13), ("parent_arguments_regex", 14),
        ("container_id", 15), ("in_init_tree", 16), ("ancestor_binary_regex", 17),
        ("container_name_regex", 18), ("namespace_regex", 19)]],
    ("CapFilter", "permitted", 1), ("CapFilter", "effective", 2),
    ("CapFilter", "inheritable", 3),
    ("CapFilterSet", "any", 1), ("CapFilterSet", "all", 2), ("CapFilterSet", "exactly", 3),
    ("CapFilterSet", "none", 4),
    ("FieldFilter", "event_set", 1), ("FieldFilter", "fields", 2),
    ("FieldFilter", "action", 3), ("FieldFilter", "invert_event_set", 4),
    ("AggregationOptions", "window_size", 1), ("AggregationOptions", "channel_buffer_size", 2),
    # -- sensors: policies
    ("SensorStatus", "name", 1), ("SensorStatus", "enabled", 2),
    ("SensorStatus", "collection", 3), ("ListSensorsResponse", "sensors", 1),
    *[("TracingPolicyActionCounters", f, n) for n, f in enumerate(
        ["post", "signal", "monitor_signal", "override", "monitor_override",
         "notify_enforcer", "monitor_notify_enforcer", "set", "monitor_set", "nopost"],
        start=1)],
    *[("TracingPolicySelectorActionCounters", f, n) for f, n in [
        ("hook", 1), ("hook_index", 2), ("selector_index", 3), ("action_counters", 4),
        ("selector_label", 5)]],
    ("TracingPolicyStats", "action_counters", 1),
    ("TracingPolicyStats", "selector_action_counters", 2),
    *[("TracingPolicyStatus", f, n) for f, n in [
        ("id", 1), ("name", 2), ("namespace", 3), ("info", 4), ("sensors", 5), ("enabled", 6),
        ("filter_id", 7), ("error", 8), ("state", 9), ("kernel_memory_bytes", 10),
        ("mode", 11), ("stats", 12), ("domain", 13), ("hook_statuses", 14)]],
    *[("HookStatus", f, n) for f, n in [("section", 1), ("state", 2),
                                        ("hook_description", 3), ("hook_idx", 4)]],
    ("ListTracingPoliciesRequest", "domain", 1),
    ("ListTracingPoliciesResponse", "policies", 1),
    ("AddTracingPolicyRequest", "yaml", 1), ("AddTracingPolicyRequest", "domain", 2),
    *[(m, f, n) for m in ("DeleteTracingPolicyRequest", "EnableTracingPolicyRequest",
                          "DisableTracingPolicyRequest")
      for f, n in [("name", 1), ("namespace", 2), ("domain", 3)]],
    *[("ConfigureTracingPolicyRequest", f, n) for f, n in [
        ("name", 1), ("namespace", 2), ("enable", 3), ("mode", 4), ("domain", 5)]],
    ("ListDomainsResponse", "domains", 1),
    ("GetVersionResponse", "version", 1),
    # -- sensors: info and debug
    *[("GetInfoResponse", f, n) for f, n in [("version", 1), ("name", 2), ("probes", 3),
                                             ("conf", 4), ("build", 5)]],
    ("GetInfoResponse.Probe", "Name", 1), ("GetInfoResponse.Probe", "Enabled", 2),
    ("GetInfoResponse.ConfVal", "key", 1), ("GetInfoResponse.ConfVal", "value", 2),
    *[("GetInfoResponse.BuildInfo", f, n) for f, n in [("go_version", 1), ("commit", 2),
                                                       ("time", 3), ("modified", 4)]],
    ("DumpProcessCacheReqArgs", "skip_zero_refcnt", 1),
    ("DumpProcessCacheReqArgs", "exclude_execve_map_processes", 2),
    *[("ProcessInternal", f, n) for f, n in [("process", 1), ("color", 2), ("refcnt", 3),
                                             ("refcnt_ops", 4)]],
    ("DumpProcessCacheResArgs", "processes", 1),
    ("GetDebugRequest", "flag", 1), ("GetDebugRequest", "dump", 2),
    ("GetDebugResponse", "flag", 1), ("GetDebugResponse", "level", 2),
    ("GetDebugResponse", "processes", 3),
    ("SetDebugRequest", "flag", 1), ("SetDebugRequest", "level", 2),
    ("SetDebugResponse", "flag", 1), ("SetDebugResponse", "level", 2),
    # -- runtime hook
    ("RuntimeHookRequest", "createContainer", 1),
    *[("CreateContainer", f, n) for n, f in enumerate(
        ["cgroupsPath", "rootDir", "annotations", "containerName", "containerID", "podName",
         "podUID", "podNamespace", "containerImage", "mounts"], start=1)],
    # -- event log service
    *[(m, f, n) for m in ("SetEventLogParamsRequest", "GetEventLogParamsResponse")
      for f, n in [("max_size", 1), ("rotation_interval", 2), ("max_backups", 3)]],
]

# enum values clients send or compare
ENUMS: list[tuple[str, str, int]] = [
    ("TracingPolicyMode", "TP_MODE_ENFORCE", 1), ("TracingPolicyMode", "TP_MODE_MONITOR", 2),
    ("TracingPolicyMode", "TP_MODE_MONITOR_ONLY", 3),
    ("TracingPolicyState", "TP_STATE_ENABLED", 1), ("TracingPolicyState", "TP_STATE_DISABLED", 2),
    ("HookState", "STATUS_LOADED", 1), ("HookState", "STATUS_PARTIAL_CALL_NOT_FOUND", 4),
    ("ConfigFlag", "CONFIG_FLAG_LOG_LEVEL", 0), ("ConfigFlag", "CONFIG_FLAG_DUMP_PROCESS_CACHE", 1),
    ("LogLevel", "LOG_LEVEL_PANIC", 0), ("LogLevel", "LOG_LEVEL_WARN", 3),
    ("LogLevel", "LOG_LEVEL_INFO", 4), ("LogLevel", "LOG_LEVEL_TRACE", 6),
    ("EventType", "PROCESS_EXEC", 1), ("EventType", "PROCESS_EXIT", 5),
    ("EventType", "PROCESS_KPROBE", 9), ("EventType", "PROCESS_TRACEPOINT", 10),
    ("EventType", "PROCESS_LSM", 28), ("EventType", "RATE_LIMIT_INFO", 40001),
]

_MODULES = (tetragon_pb2, events_pb2, sensors_pb2, eventlogservice_pb2)


def _message(name: str):
    outer, _, inner = name.partition(".")
    for mod in _MODULES:
        if outer in mod.DESCRIPTOR.message_types_by_name:
            desc = mod.DESCRIPTOR.message_types_by_name[outer]
            return desc.nested_types_by_name[inner] if inner else desc
    raise AssertionError(f"message tetragon.{name} is not declared")


@pytest.mark.parametrize(("message", "field", "number"), FIELDS,
                         ids=[f"{m}.{f}={n}" for m, f, n in FIELDS])
def test_field_number(message: str, field: str, number: int) -> None:
    desc = _message(message)
    assert field in desc.fields_by_name, f"tetragon.{message} has no field {field}"
    assert desc.fields_by_name[field].number == number


@pytest.mark.parametrize(("enum", "name", "value"), ENUMS,
                         ids=[f"{e}.{n}={v}" for e, n, v in ENUMS])
def test_enum_value(enum: str, name: str, value: int) -> None:
    for mod in _MODULES:
        if enum in mod.DESCRIPTOR.enum_types_by_name:
            assert mod.DESCRIPTOR.enum_types_by_name[enum].values_by_name[name].number == value
            return
    raise AssertionError(f"enum tetragon.{enum} is not declared")


def test_services_and_methods() -> None:
    fgs = sensors_pb2.DESCRIPTOR.services_by_name["FineGuidanceSensors"]
    assert fgs.full_name == "tetragon.FineGuidanceSensors"
    assert {"GetEvents", "GetHealth", "AddTracingPolicy", "DeleteTracingPolicy",
            "ListTracingPolicies", "ConfigureTracingPolicy", "EnableTracingPolicy",
            "DisableTracingPolicy", "ListSensors", "EnableSensor", "DisableSensor",
            "RemoveSensor", "ListDomains", "GetVersion", "GetInfo", "RuntimeHook",
            "GetDebug", "SetDebug"} <= set(fgs.methods_by_name)
    els = eventlogservice_pb2.DESCRIPTOR.services_by_name["EventLogService"]
    assert els.full_name == "tetragon.EventLogService"
    assert set(els.methods_by_name) == {"SetEventLogParams", "GetEventLogParams"}
