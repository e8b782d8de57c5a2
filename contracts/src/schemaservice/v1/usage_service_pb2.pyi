import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_OUTCOME_UNSPECIFIED: _ClassVar[UsageOutcome]
    USAGE_OUTCOME_SUCCEEDED: _ClassVar[UsageOutcome]
    USAGE_OUTCOME_FAILED: _ClassVar[UsageOutcome]
    USAGE_OUTCOME_CANCELLED: _ClassVar[UsageOutcome]

class UsageDimension(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_DIMENSION_UNSPECIFIED: _ClassVar[UsageDimension]
    USAGE_DIMENSION_CALLER: _ClassVar[UsageDimension]
    USAGE_DIMENSION_USER: _ClassVar[UsageDimension]
    USAGE_DIMENSION_PROVIDER: _ClassVar[UsageDimension]
    USAGE_DIMENSION_MODEL: _ClassVar[UsageDimension]
    USAGE_DIMENSION_DAY: _ClassVar[UsageDimension]
USAGE_OUTCOME_UNSPECIFIED: UsageOutcome
USAGE_OUTCOME_SUCCEEDED: UsageOutcome
USAGE_OUTCOME_FAILED: UsageOutcome
USAGE_OUTCOME_CANCELLED: UsageOutcome
USAGE_DIMENSION_UNSPECIFIED: UsageDimension
USAGE_DIMENSION_CALLER: UsageDimension
USAGE_DIMENSION_USER: UsageDimension
USAGE_DIMENSION_PROVIDER: UsageDimension
USAGE_DIMENSION_MODEL: UsageDimension
USAGE_DIMENSION_DAY: UsageDimension

class UsageRecord(_message.Message):
    __slots__ = ("request_id", "attempt", "caller", "user_id", "provider", "model", "key_id", "outcome", "failure_reason", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "price_version", "estimated", "time_to_first_token", "duration", "failover", "hedge", "start_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    PRICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    attempt: int
    caller: str
    user_id: str
    provider: str
    model: str
    key_id: str
    outcome: UsageOutcome
    failure_reason: str
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: str
    price_version: str
    estimated: bool
    time_to_first_token: _duration_pb2.Duration
    duration: _duration_pb2.Duration
    failover: bool
    hedge: bool
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., attempt: _Optional[int] = ..., caller: _Optional[str] = ..., user_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., key_id: _Optional[str] = ..., outcome: _Optional[_Union[UsageOutcome, str]] = ..., failure_reason: _Optional[str] = ..., input_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ..., price_version: _Optional[str] = ..., estimated: _Optional[bool] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., failover: _Optional[bool] = ..., hedge: _Optional[bool] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordUsageRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ...) -> None: ...

class RecordUsageResponse(_message.Message):
    __slots__ = ("written_count", "duplicate_count", "summary")
    WRITTEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    written_count: int
    duplicate_count: int
    summary: str
    def __init__(self, written_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., summary: _Optional[str] = ...) -> None: ...

class QueryUsageRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "group_by", "caller", "user_id", "provider", "model", "page_size", "page_token")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    group_by: _containers.RepeatedScalarFieldContainer[UsageDimension]
    caller: str
    user_id: str
    provider: str
    model: str
    page_size: int
    page_token: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_by: _Optional[_Iterable[_Union[UsageDimension, str]]] = ..., caller: _Optional[str] = ..., user_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class UsageGroup(_message.Message):
    __slots__ = ("caller", "user_id", "provider", "model", "day", "attempts", "requests", "failed_attempts", "estimated_attempts", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_usd")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    caller: str
    user_id: str
    provider: str
    model: str
    day: str
    attempts: int
    requests: int
    failed_attempts: int
    estimated_attempts: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: str
    def __init__(self, caller: _Optional[str] = ..., user_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., day: _Optional[str] = ..., attempts: _Optional[int] = ..., requests: _Optional[int] = ..., failed_attempts: _Optional[int] = ..., estimated_attempts: _Optional[int] = ..., input_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ...) -> None: ...

class QueryUsageResponse(_message.Message):
    __slots__ = ("groups", "total", "group_count", "next_page_token", "summary", "reconciliation")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    GROUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    RECONCILIATION_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[UsageGroup]
    total: UsageGroup
    group_count: int
    next_page_token: str
    summary: str
    reconciliation: UsageReconciliation
    def __init__(self, groups: _Optional[_Iterable[_Union[UsageGroup, _Mapping]]] = ..., total: _Optional[_Union[UsageGroup, _Mapping]] = ..., group_count: _Optional[int] = ..., next_page_token: _Optional[str] = ..., summary: _Optional[str] = ..., reconciliation: _Optional[_Union[UsageReconciliation, _Mapping]] = ...) -> None: ...

class UsageReconciliation(_message.Message):
    __slots__ = ("ledger_input_tokens", "ledger_output_tokens", "metered_input_tokens", "metered_output_tokens", "input_drift_tokens", "output_drift_tokens")
    LEDGER_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LEDGER_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METERED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METERED_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_DRIFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DRIFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ledger_input_tokens: int
    ledger_output_tokens: int
    metered_input_tokens: int
    metered_output_tokens: int
    input_drift_tokens: int
    output_drift_tokens: int
    def __init__(self, ledger_input_tokens: _Optional[int] = ..., ledger_output_tokens: _Optional[int] = ..., metered_input_tokens: _Optional[int] = ..., metered_output_tokens: _Optional[int] = ..., input_drift_tokens: _Optional[int] = ..., output_drift_tokens: _Optional[int] = ...) -> None: ...
