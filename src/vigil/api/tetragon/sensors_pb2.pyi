from google.protobuf import wrappers_pb2 as _wrappers_pb2
from vigil.api.tetragon import events_pb2 as _events_pb2
from vigil.api.tetragon import tetragon_pb2 as _tetragon_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TracingPolicyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TP_STATE_UNKNOWN: _ClassVar[TracingPolicyState]
    TP_STATE_ENABLED: _ClassVar[TracingPolicyState]
    TP_STATE_DISABLED: _ClassVar[TracingPolicyState]
    TP_STATE_LOAD_ERROR: _ClassVar[TracingPolicyState]
    TP_STATE_ERROR: _ClassVar[TracingPolicyState]
    TP_STATE_LOADING: _ClassVar[TracingPolicyState]
    TP_STATE_UNLOADING: _ClassVar[TracingPolicyState]
    TP_STATE_SKIPPED: _ClassVar[TracingPolicyState]
    TP_STATE_PARTIALLY_ENABLED: _ClassVar[TracingPolicyState]

class TracingPolicyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TP_MODE_UNKNOWN: _ClassVar[TracingPolicyMode]
    TP_MODE_ENFORCE: _ClassVar[TracingPolicyMode]
    TP_MODE_MONITOR: _ClassVar[TracingPolicyMode]
    TP_MODE_MONITOR_ONLY: _ClassVar[TracingPolicyMode]
TP_STATE_UNKNOWN: TracingPolicyState
TP_STATE_ENABLED: TracingPolicyState
TP_STATE_DISABLED: TracingPolicyState
TP_STATE_LOAD_ERROR: TracingPolicyState
TP_STATE_ERROR: TracingPolicyState
TP_STATE_LOADING: TracingPolicyState
TP_STATE_UNLOADING: TracingPolicyState
TP_STATE_SKIPPED: TracingPolicyState
TP_STATE_PARTIALLY_ENABLED: TracingPolicyState
TP_MODE_UNKNOWN: TracingPolicyMode
TP_MODE_ENFORCE: TracingPolicyMode
TP_MODE_MONITOR: TracingPolicyMode
TP_MODE_MONITOR_ONLY: TracingPolicyMode

class ListSensorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SensorStatus(_message.Message):
    __slots__ = ("name", "enabled", "collection")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    enabled: bool
    collection: str
    def __init__(self, name: _Optional[str] = ..., enabled: _Optional[bool] = ..., collection: _Optional[str] = ...) -> None: ...

class ListSensorsResponse(_message.Message):
    __slots__ = ("sensors",)
    SENSORS_FIELD_NUMBER: _ClassVar[int]
    sensors: _containers.RepeatedCompositeFieldContainer[SensorStatus]
    def __init__(self, sensors: _Optional[_Iterable[_Union[SensorStatus, _Mapping]]] = ...) -> None: ...

class ListTracingPoliciesRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class TracingPolicyActionCounters(_message.Message):
    __slots__ = ("post", "signal", "monitor_signal", "override", "monitor_override", "notify_enforcer", "monitor_notify_enforcer", "set", "monitor_set", "nopost")
    POST_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    MONITOR_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    MONITOR_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_ENFORCER_FIELD_NUMBER: _ClassVar[int]
    MONITOR_NOTIFY_ENFORCER_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    MONITOR_SET_FIELD_NUMBER: _ClassVar[int]
    NOPOST_FIELD_NUMBER: _ClassVar[int]
    post: int
    signal: int
    monitor_signal: int
    override: int
    monitor_override: int
    notify_enforcer: int
    monitor_notify_enforcer: int
    set: int
    monitor_set: int
    nopost: int
    def __init__(self, post: _Optional[int] = ..., signal: _Optional[int] = ..., monitor_signal: _Optional[int] = ..., override: _Optional[int] = ..., monitor_override: _Optional[int] = ..., notify_enforcer: _Optional[int] = ..., monitor_notify_enforcer: _Optional[int] = ..., set: _Optional[int] = ..., monitor_set: _Optional[int] = ..., nopost: _Optional[int] = ...) -> None: ...

class TracingPolicySelectorActionCounters(_message.Message):
    __slots__ = ("hook", "selector_index", "action_counters")
    HOOK_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    ACTION_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    hook: str
    selector_index: _wrappers_pb2.UInt32Value
    action_counters: TracingPolicyActionCounters
    def __init__(self, hook: _Optional[str] = ..., selector_index: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., action_counters: _Optional[_Union[TracingPolicyActionCounters, _Mapping]] = ...) -> None: ...

class TracingPolicyStats(_message.Message):
    __slots__ = ("action_counters", "selector_action_counters")
    ACTION_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_ACTION_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    action_counters: TracingPolicyActionCounters
    selector_action_counters: _containers.RepeatedCompositeFieldContainer[TracingPolicySelectorActionCounters]
    def __init__(self, action_counters: _Optional[_Union[TracingPolicyActionCounters, _Mapping]] = ..., selector_action_counters: _Optional[_Iterable[_Union[TracingPolicySelectorActionCounters, _Mapping]]] = ...) -> None: ...

class TracingPolicyStatus(_message.Message):
    __slots__ = ("id", "name", "namespace", "info", "sensors", "enabled", "filter_id", "error", "state", "kernel_memory_bytes", "mode", "stats", "domain")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    SENSORS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    FILTER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    namespace: str
    info: str
    sensors: _containers.RepeatedScalarFieldContainer[str]
    enabled: bool
    filter_id: int
    error: str
    state: TracingPolicyState
    kernel_memory_bytes: int
    mode: TracingPolicyMode
    stats: TracingPolicyStats
    domain: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., info: _Optional[str] = ..., sensors: _Optional[_Iterable[str]] = ..., enabled: _Optional[bool] = ..., filter_id: _Optional[int] = ..., error: _Optional[str] = ..., state: _Optional[_Union[TracingPolicyState, str]] = ..., kernel_memory_bytes: _Optional[int] = ..., mode: _Optional[_Union[TracingPolicyMode, str]] = ..., stats: _Optional[_Union[TracingPolicyStats, _Mapping]] = ..., domain: _Optional[str] = ...) -> None: ...

class ListTracingPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[TracingPolicyStatus]
    def __init__(self, policies: _Optional[_Iterable[_Union[TracingPolicyStatus, _Mapping]]] = ...) -> None: ...

class AddTracingPolicyRequest(_message.Message):
    __slots__ = ("yaml", "domain")
    YAML_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    domain: str
    def __init__(self, yaml: _Optional[str] = ..., domain: _Optional[str] = ...) -> None: ...

class AddTracingPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteTracingPolicyRequest(_message.Message):
    __slots__ = ("name", "namespace", "domain")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    domain: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., domain: _Optional[str] = ...) -> None: ...

class DeleteTracingPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnableTracingPolicyRequest(_message.Message):
    __slots__ = ("name", "namespace", "domain")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    domain: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., domain: _Optional[str] = ...) -> None: ...

class EnableTracingPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DisableTracingPolicyRequest(_message.Message):
    __slots__ = ("name", "namespace", "domain")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    domain: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., domain: _Optional[str] = ...) -> None: ...

class DisableTracingPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConfigureTracingPolicyRequest(_message.Message):
    __slots__ = ("name", "namespace", "enable", "mode", "domain")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ENABLE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    enable: bool
    mode: TracingPolicyMode
    domain: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., enable: _Optional[bool] = ..., mode: _Optional[_Union[TracingPolicyMode, str]] = ..., domain: _Optional[str] = ...) -> None: ...

class ConfigureTracingPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveSensorRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveSensorResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnableSensorRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class EnableSensorResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DisableSensorRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DisableSensorResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDomainsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDomainsResponse(_message.Message):
    __slots__ = ("domains",)
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, domains: _Optional[_Iterable[str]] = ...) -> None: ...

class GetVersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...
