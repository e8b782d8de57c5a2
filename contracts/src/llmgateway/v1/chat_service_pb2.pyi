import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Cache(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_UNSPECIFIED: _ClassVar[Cache]
    CACHE_EPHEMERAL: _ClassVar[Cache]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]
    ROLE_TOOL: _ClassVar[Role]

class ToolChoiceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_CHOICE_MODE_UNSPECIFIED: _ClassVar[ToolChoiceMode]
    TOOL_CHOICE_MODE_AUTO: _ClassVar[ToolChoiceMode]
    TOOL_CHOICE_MODE_NONE: _ClassVar[ToolChoiceMode]
    TOOL_CHOICE_MODE_REQUIRED: _ClassVar[ToolChoiceMode]
    TOOL_CHOICE_MODE_TOOL: _ClassVar[ToolChoiceMode]

class ResponseFormatType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESPONSE_FORMAT_TYPE_UNSPECIFIED: _ClassVar[ResponseFormatType]
    RESPONSE_FORMAT_TYPE_TEXT: _ClassVar[ResponseFormatType]
    RESPONSE_FORMAT_TYPE_JSON_OBJECT: _ClassVar[ResponseFormatType]
    RESPONSE_FORMAT_TYPE_JSON_SCHEMA: _ClassVar[ResponseFormatType]

class ReasoningEffort(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASONING_EFFORT_UNSPECIFIED: _ClassVar[ReasoningEffort]
    REASONING_EFFORT_NONE: _ClassVar[ReasoningEffort]
    REASONING_EFFORT_MINIMAL: _ClassVar[ReasoningEffort]
    REASONING_EFFORT_LOW: _ClassVar[ReasoningEffort]
    REASONING_EFFORT_MEDIUM: _ClassVar[ReasoningEffort]
    REASONING_EFFORT_HIGH: _ClassVar[ReasoningEffort]
    REASONING_EFFORT_XHIGH: _ClassVar[ReasoningEffort]
    REASONING_EFFORT_MAX: _ClassVar[ReasoningEffort]

class MidStreamPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MID_STREAM_POLICY_UNSPECIFIED: _ClassVar[MidStreamPolicy]
    MID_STREAM_POLICY_FAIL: _ClassVar[MidStreamPolicy]
    MID_STREAM_POLICY_RESTART: _ClassVar[MidStreamPolicy]
    MID_STREAM_POLICY_CONTINUE: _ClassVar[MidStreamPolicy]

class RoutingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTING_POLICY_UNSPECIFIED: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_PRIORITY: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_WEIGHTED: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_LOWEST_LATENCY: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_LOWEST_COST: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_LEAST_BUSY: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_CALLER_ORDER: _ClassVar[RoutingPolicy]

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_RATE_LIMITED: _ClassVar[FailureReason]
    FAILURE_REASON_OVERLOADED: _ClassVar[FailureReason]
    FAILURE_REASON_SERVER_ERROR: _ClassVar[FailureReason]
    FAILURE_REASON_CONNECTION_ERROR: _ClassVar[FailureReason]
    FAILURE_REASON_TIMEOUT: _ClassVar[FailureReason]
    FAILURE_REASON_AUTH_FAILED: _ClassVar[FailureReason]
    FAILURE_REASON_QUOTA_EXHAUSTED: _ClassVar[FailureReason]
    FAILURE_REASON_INVALID_REQUEST: _ClassVar[FailureReason]
    FAILURE_REASON_CONTEXT_TOO_LONG: _ClassVar[FailureReason]
    FAILURE_REASON_MALFORMED_RESPONSE: _ClassVar[FailureReason]
    FAILURE_REASON_TRUNCATED: _ClassVar[FailureReason]
    FAILURE_REASON_NOT_CONFIGURED: _ClassVar[FailureReason]
    FAILURE_REASON_UNHEALTHY: _ClassVar[FailureReason]
    FAILURE_REASON_BUDGET_EXHAUSTED: _ClassVar[FailureReason]
    FAILURE_REASON_PREFILL_UNSUPPORTED: _ClassVar[FailureReason]
    FAILURE_REASON_DEADLINE_TOO_SHORT: _ClassVar[FailureReason]
    FAILURE_REASON_PREDICTED_RATE_LIMIT: _ClassVar[FailureReason]
    FAILURE_REASON_UNSUPPORTED_CONTENT: _ClassVar[FailureReason]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_TOOL_CALLS: _ClassVar[FinishReason]
    FINISH_REASON_CONTENT_FILTER: _ClassVar[FinishReason]
CACHE_UNSPECIFIED: Cache
CACHE_EPHEMERAL: Cache
ROLE_UNSPECIFIED: Role
ROLE_SYSTEM: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
ROLE_TOOL: Role
TOOL_CHOICE_MODE_UNSPECIFIED: ToolChoiceMode
TOOL_CHOICE_MODE_AUTO: ToolChoiceMode
TOOL_CHOICE_MODE_NONE: ToolChoiceMode
TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode
TOOL_CHOICE_MODE_TOOL: ToolChoiceMode
RESPONSE_FORMAT_TYPE_UNSPECIFIED: ResponseFormatType
RESPONSE_FORMAT_TYPE_TEXT: ResponseFormatType
RESPONSE_FORMAT_TYPE_JSON_OBJECT: ResponseFormatType
RESPONSE_FORMAT_TYPE_JSON_SCHEMA: ResponseFormatType
REASONING_EFFORT_UNSPECIFIED: ReasoningEffort
REASONING_EFFORT_NONE: ReasoningEffort
REASONING_EFFORT_MINIMAL: ReasoningEffort
REASONING_EFFORT_LOW: ReasoningEffort
REASONING_EFFORT_MEDIUM: ReasoningEffort
REASONING_EFFORT_HIGH: ReasoningEffort
REASONING_EFFORT_XHIGH: ReasoningEffort
REASONING_EFFORT_MAX: ReasoningEffort
MID_STREAM_POLICY_UNSPECIFIED: MidStreamPolicy
MID_STREAM_POLICY_FAIL: MidStreamPolicy
MID_STREAM_POLICY_RESTART: MidStreamPolicy
MID_STREAM_POLICY_CONTINUE: MidStreamPolicy
ROUTING_POLICY_UNSPECIFIED: RoutingPolicy
ROUTING_POLICY_PRIORITY: RoutingPolicy
ROUTING_POLICY_WEIGHTED: RoutingPolicy
ROUTING_POLICY_LOWEST_LATENCY: RoutingPolicy
ROUTING_POLICY_LOWEST_COST: RoutingPolicy
ROUTING_POLICY_LEAST_BUSY: RoutingPolicy
ROUTING_POLICY_CALLER_ORDER: RoutingPolicy
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_RATE_LIMITED: FailureReason
FAILURE_REASON_OVERLOADED: FailureReason
FAILURE_REASON_SERVER_ERROR: FailureReason
FAILURE_REASON_CONNECTION_ERROR: FailureReason
FAILURE_REASON_TIMEOUT: FailureReason
FAILURE_REASON_AUTH_FAILED: FailureReason
FAILURE_REASON_QUOTA_EXHAUSTED: FailureReason
FAILURE_REASON_INVALID_REQUEST: FailureReason
FAILURE_REASON_CONTEXT_TOO_LONG: FailureReason
FAILURE_REASON_MALFORMED_RESPONSE: FailureReason
FAILURE_REASON_TRUNCATED: FailureReason
FAILURE_REASON_NOT_CONFIGURED: FailureReason
FAILURE_REASON_UNHEALTHY: FailureReason
FAILURE_REASON_BUDGET_EXHAUSTED: FailureReason
FAILURE_REASON_PREFILL_UNSUPPORTED: FailureReason
FAILURE_REASON_DEADLINE_TOO_SHORT: FailureReason
FAILURE_REASON_PREDICTED_RATE_LIMIT: FailureReason
FAILURE_REASON_UNSUPPORTED_CONTENT: FailureReason
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_TOOL_CALLS: FinishReason
FINISH_REASON_CONTENT_FILTER: FinishReason

class StreamChatRequest(_message.Message):
    __slots__ = ("model", "messages", "provider_order", "sampling", "max_output_tokens", "tools", "tool_choice", "response_format", "request_id", "user_id", "mid_stream_policy", "commit_window_ms", "commit_window_tokens", "reasoning")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ORDER_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MID_STREAM_POLICY_FIELD_NUMBER: _ClassVar[int]
    COMMIT_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_WINDOW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    provider_order: _containers.RepeatedScalarFieldContainer[str]
    sampling: SamplingOptions
    max_output_tokens: int
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    tool_choice: ToolChoice
    response_format: ResponseFormat
    request_id: str
    user_id: str
    mid_stream_policy: MidStreamPolicy
    commit_window_ms: int
    commit_window_tokens: int
    reasoning: ReasoningOptions
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., provider_order: _Optional[_Iterable[str]] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., max_output_tokens: _Optional[int] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., tool_choice: _Optional[_Union[ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., mid_stream_policy: _Optional[_Union[MidStreamPolicy, str]] = ..., commit_window_ms: _Optional[int] = ..., commit_window_tokens: _Optional[int] = ..., reasoning: _Optional[_Union[ReasoningOptions, _Mapping]] = ...) -> None: ...

class StreamChatResponse(_message.Message):
    __slots__ = ("started", "delta", "failover", "usage", "done")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    started: Started
    delta: Delta
    failover: Failover
    usage: Usage
    done: Done
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., delta: _Optional[_Union[Delta, _Mapping]] = ..., failover: _Optional[_Union[Failover, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("model", "messages", "provider_order", "sampling", "max_output_tokens", "tools", "tool_choice", "response_format", "request_id", "user_id", "mid_stream_policy", "reasoning")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ORDER_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MID_STREAM_POLICY_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    provider_order: _containers.RepeatedScalarFieldContainer[str]
    sampling: SamplingOptions
    max_output_tokens: int
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    tool_choice: ToolChoice
    response_format: ResponseFormat
    request_id: str
    user_id: str
    mid_stream_policy: MidStreamPolicy
    reasoning: ReasoningOptions
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., provider_order: _Optional[_Iterable[str]] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., max_output_tokens: _Optional[int] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., tool_choice: _Optional[_Union[ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., mid_stream_policy: _Optional[_Union[MidStreamPolicy, str]] = ..., reasoning: _Optional[_Union[ReasoningOptions, _Mapping]] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("message", "finish_reason", "provider", "model", "usage", "attempts", "request_id", "upstream_request_id", "skipped")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    message: Message
    finish_reason: FinishReason
    provider: str
    model: str
    usage: Usage
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    request_id: str
    upstream_request_id: str
    skipped: _containers.RepeatedCompositeFieldContainer[Skipped]
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., request_id: _Optional[str] = ..., upstream_request_id: _Optional[str] = ..., skipped: _Optional[_Iterable[_Union[Skipped, _Mapping]]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "content", "tool_calls", "tool_call_id", "name", "reasoning", "parts")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    role: Role
    content: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    tool_call_id: str
    name: str
    reasoning: _containers.RepeatedCompositeFieldContainer[Reasoning]
    parts: _containers.RepeatedCompositeFieldContainer[Part]
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., content: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., tool_call_id: _Optional[str] = ..., name: _Optional[str] = ..., reasoning: _Optional[_Iterable[_Union[Reasoning, _Mapping]]] = ..., parts: _Optional[_Iterable[_Union[Part, _Mapping]]] = ...) -> None: ...

class Part(_message.Message):
    __slots__ = ("text", "image", "document", "cache", "cache_ttl_s")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    CACHE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: Image
    document: Document
    cache: Cache
    cache_ttl_s: int
    def __init__(self, text: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., document: _Optional[_Union[Document, _Mapping]] = ..., cache: _Optional[_Union[Cache, str]] = ..., cache_ttl_s: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data", "url", "media_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    url: str
    media_type: str
    def __init__(self, data: _Optional[bytes] = ..., url: _Optional[str] = ..., media_type: _Optional[str] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("data", "media_type", "name")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    media_type: str
    name: str
    def __init__(self, data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Reasoning(_message.Message):
    __slots__ = ("text", "signature", "redacted_data")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REDACTED_DATA_FIELD_NUMBER: _ClassVar[int]
    text: str
    signature: str
    redacted_data: str
    def __init__(self, text: _Optional[str] = ..., signature: _Optional[str] = ..., redacted_data: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "name", "arguments_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments_json: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ToolChoice(_message.Message):
    __slots__ = ("mode", "tool_name")
    MODE_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    mode: ToolChoiceMode
    tool_name: str
    def __init__(self, mode: _Optional[_Union[ToolChoiceMode, str]] = ..., tool_name: _Optional[str] = ...) -> None: ...

class SamplingOptions(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "stop_sequences", "seed", "presence_penalty", "frequency_penalty")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    STOP_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    stop_sequences: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    presence_penalty: float
    frequency_penalty: float
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., stop_sequences: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ...) -> None: ...

class ResponseFormat(_message.Message):
    __slots__ = ("type", "json_schema", "schema_name")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_NAME_FIELD_NUMBER: _ClassVar[int]
    type: ResponseFormatType
    json_schema: _struct_pb2.Struct
    schema_name: str
    def __init__(self, type: _Optional[_Union[ResponseFormatType, str]] = ..., json_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., schema_name: _Optional[str] = ...) -> None: ...

class ReasoningOptions(_message.Message):
    __slots__ = ("effort", "budget_tokens", "include_reasoning")
    EFFORT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REASONING_FIELD_NUMBER: _ClassVar[int]
    effort: ReasoningEffort
    budget_tokens: int
    include_reasoning: bool
    def __init__(self, effort: _Optional[_Union[ReasoningEffort, str]] = ..., budget_tokens: _Optional[int] = ..., include_reasoning: _Optional[bool] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("provider", "model", "attempt", "skipped", "policy", "score", "hedge")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    attempt: int
    skipped: _containers.RepeatedCompositeFieldContainer[Skipped]
    policy: RoutingPolicy
    score: float
    hedge: bool
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., attempt: _Optional[int] = ..., skipped: _Optional[_Iterable[_Union[Skipped, _Mapping]]] = ..., policy: _Optional[_Union[RoutingPolicy, str]] = ..., score: _Optional[float] = ..., hedge: _Optional[bool] = ...) -> None: ...

class Skipped(_message.Message):
    __slots__ = ("provider", "model", "reason", "message", "retry_after")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    reason: FailureReason
    message: str
    retry_after: _duration_pb2.Duration
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., reason: _Optional[_Union[FailureReason, str]] = ..., message: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Delta(_message.Message):
    __slots__ = ("sequence", "text", "reasoning_text", "reasoning_signature", "tool_call")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REASONING_TEXT_FIELD_NUMBER: _ClassVar[int]
    REASONING_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    text: str
    reasoning_text: str
    reasoning_signature: str
    tool_call: ToolCallDelta
    def __init__(self, sequence: _Optional[int] = ..., text: _Optional[str] = ..., reasoning_text: _Optional[str] = ..., reasoning_signature: _Optional[str] = ..., tool_call: _Optional[_Union[ToolCallDelta, _Mapping]] = ...) -> None: ...

class ToolCallDelta(_message.Message):
    __slots__ = ("index", "id", "name", "arguments_json")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    name: str
    arguments_json: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class Failover(_message.Message):
    __slots__ = ("from_provider", "from_model", "to_provider", "to_model", "reason", "message", "discard_output", "attempt")
    FROM_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FROM_MODEL_FIELD_NUMBER: _ClassVar[int]
    TO_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TO_MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DISCARD_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    from_provider: str
    from_model: str
    to_provider: str
    to_model: str
    reason: FailureReason
    message: str
    discard_output: bool
    attempt: int
    def __init__(self, from_provider: _Optional[str] = ..., from_model: _Optional[str] = ..., to_provider: _Optional[str] = ..., to_model: _Optional[str] = ..., reason: _Optional[_Union[FailureReason, str]] = ..., message: _Optional[str] = ..., discard_output: _Optional[bool] = ..., attempt: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cost_usd", "provider", "model", "attempt", "reasoning_tokens", "cached_input_tokens", "cache_write_tokens", "cost", "estimated")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    provider: str
    model: str
    attempt: int
    reasoning_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost: str
    estimated: bool
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., attempt: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., cost: _Optional[str] = ..., estimated: _Optional[bool] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("finish_reason", "provider", "model", "attempts", "upstream_request_id", "request_id", "usage", "hedge_won")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    HEDGE_WON_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    provider: str
    model: str
    attempts: int
    upstream_request_id: str
    request_id: str
    usage: Usage
    hedge_won: bool
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., attempts: _Optional[int] = ..., upstream_request_id: _Optional[str] = ..., request_id: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., hedge_won: _Optional[bool] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("attempt", "provider", "model", "failure_reason", "message", "duration", "usage")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    provider: str
    model: str
    failure_reason: FailureReason
    message: str
    duration: _duration_pb2.Duration
    usage: Usage
    def __init__(self, attempt: _Optional[int] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., failure_reason: _Optional[_Union[FailureReason, str]] = ..., message: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...
