import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmgateway.v1 import chat_service_pb2 as _chat_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_TYPE_UNSPECIFIED: _ClassVar[ProviderType]
    PROVIDER_TYPE_OPENAI: _ClassVar[ProviderType]
    PROVIDER_TYPE_GEMINI: _ClassVar[ProviderType]
    PROVIDER_TYPE_ANTHROPIC: _ClassVar[ProviderType]
    PROVIDER_TYPE_OPENAI_COMPATIBLE: _ClassVar[ProviderType]
    PROVIDER_TYPE_COHERE: _ClassVar[ProviderType]

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_STATE_UNCONFIGURED: _ClassVar[HealthState]
    HEALTH_STATE_HEALTHY: _ClassVar[HealthState]
    HEALTH_STATE_DEGRADED: _ClassVar[HealthState]
    HEALTH_STATE_COOLING_DOWN: _ClassVar[HealthState]
    HEALTH_STATE_UNHEALTHY: _ClassVar[HealthState]
    HEALTH_STATE_MISCONFIGURED: _ClassVar[HealthState]
PROVIDER_TYPE_UNSPECIFIED: ProviderType
PROVIDER_TYPE_OPENAI: ProviderType
PROVIDER_TYPE_GEMINI: ProviderType
PROVIDER_TYPE_ANTHROPIC: ProviderType
PROVIDER_TYPE_OPENAI_COMPATIBLE: ProviderType
PROVIDER_TYPE_COHERE: ProviderType
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTH_STATE_UNCONFIGURED: HealthState
HEALTH_STATE_HEALTHY: HealthState
HEALTH_STATE_DEGRADED: HealthState
HEALTH_STATE_COOLING_DOWN: HealthState
HEALTH_STATE_UNHEALTHY: HealthState
HEALTH_STATE_MISCONFIGURED: HealthState

class ListProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[Provider]
    def __init__(self, providers: _Optional[_Iterable[_Union[Provider, _Mapping]]] = ...) -> None: ...

class WatchProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchProvidersResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: Provider
    def __init__(self, provider: _Optional[_Union[Provider, _Mapping]] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("name", "type", "configured", "credential_source", "base_url", "health", "cooldown_until", "models", "stats", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ProviderType
    configured: bool
    credential_source: str
    base_url: str
    health: HealthState
    cooldown_until: _timestamp_pb2.Timestamp
    models: _containers.RepeatedCompositeFieldContainer[Model]
    stats: ProviderStats
    last_error: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ProviderType, str]] = ..., configured: _Optional[bool] = ..., credential_source: _Optional[str] = ..., base_url: _Optional[str] = ..., health: _Optional[_Union[HealthState, str]] = ..., cooldown_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., stats: _Optional[_Union[ProviderStats, _Mapping]] = ..., last_error: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "context_window", "input_usd_per_mtok", "output_usd_per_mtok", "health", "cooldown_until", "stats", "headroom")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    INPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    name: str
    context_window: int
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    health: HealthState
    cooldown_until: _timestamp_pb2.Timestamp
    stats: ModelStats
    headroom: _containers.RepeatedCompositeFieldContainer[RateLimitHeadroom]
    def __init__(self, name: _Optional[str] = ..., context_window: _Optional[int] = ..., input_usd_per_mtok: _Optional[float] = ..., output_usd_per_mtok: _Optional[float] = ..., health: _Optional[_Union[HealthState, str]] = ..., cooldown_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stats: _Optional[_Union[ModelStats, _Mapping]] = ..., headroom: _Optional[_Iterable[_Union[RateLimitHeadroom, _Mapping]]] = ...) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("windows", "ttft_p50_ms", "ttft_p95_ms", "output_tokens_per_second", "in_flight")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[WindowStats]
    ttft_p50_ms: float
    ttft_p95_ms: float
    output_tokens_per_second: float
    in_flight: int
    def __init__(self, windows: _Optional[_Iterable[_Union[WindowStats, _Mapping]]] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p95_ms: _Optional[float] = ..., output_tokens_per_second: _Optional[float] = ..., in_flight: _Optional[int] = ...) -> None: ...

class WindowStats(_message.Message):
    __slots__ = ("window", "requests", "failures", "success_rate", "errors")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    window: _duration_pb2.Duration
    requests: int
    failures: int
    success_rate: float
    errors: _containers.RepeatedCompositeFieldContainer[ErrorCount]
    def __init__(self, window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., requests: _Optional[int] = ..., failures: _Optional[int] = ..., success_rate: _Optional[float] = ..., errors: _Optional[_Iterable[_Union[ErrorCount, _Mapping]]] = ...) -> None: ...

class ErrorCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: _chat_service_pb2.FailureReason
    count: int
    def __init__(self, reason: _Optional[_Union[_chat_service_pb2.FailureReason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class RateLimitHeadroom(_message.Message):
    __slots__ = ("limit", "remaining", "limit_value", "resets_at")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    LIMIT_VALUE_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_FIELD_NUMBER: _ClassVar[int]
    limit: str
    remaining: int
    limit_value: int
    resets_at: _timestamp_pb2.Timestamp
    def __init__(self, limit: _Optional[str] = ..., remaining: _Optional[int] = ..., limit_value: _Optional[int] = ..., resets_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProviderStats(_message.Message):
    __slots__ = ("requests", "failures", "error_rate", "ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms", "cost_usd", "input_tokens", "output_tokens", "windows", "in_flight")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    requests: int
    failures: int
    error_rate: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    cost_usd: float
    input_tokens: int
    output_tokens: int
    windows: _containers.RepeatedCompositeFieldContainer[WindowStats]
    in_flight: int
    def __init__(self, requests: _Optional[int] = ..., failures: _Optional[int] = ..., error_rate: _Optional[float] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p95_ms: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., cost_usd: _Optional[float] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[WindowStats, _Mapping]]] = ..., in_flight: _Optional[int] = ...) -> None: ...
