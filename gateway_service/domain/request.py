"""The normalised chat request and the events an attempt produces (no gRPC, no SDK types)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"


class MidStreamPolicy(enum.Enum):
    FAIL = "fail"
    RESTART = "restart"
    CONTINUE = "continue"


class ResponseFormat(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


class ToolChoiceMode(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    TOOL = "tool"


class ReasoningEffort(enum.Enum):
    NONE = "none"
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    XHIGH = "xhigh"
    MAX = "max"


# Anthropic's smallest thinking budget. A route may fail over to Anthropic, so every request is held to it.
MIN_REASONING_BUDGET = 1024


@dataclass(frozen=True)
class ReasoningOptions:
    """What the caller asked of the model's reasoning; None fields leave the provider's default."""

    effort: ReasoningEffort | None = None
    budget_tokens: int | None = None  # explicit budget; None derives one from effort
    include_text: bool = True  # False: reasoning tokens are spent and counted, the text is not returned

    @property
    def enabled(self) -> bool:
        """True when the caller asked the model to reason (not only for the provider's default)."""
        return self.budget_tokens is not None or self.effort not in (None, ReasoningEffort.NONE)

    @property
    def disabled(self) -> bool:
        return self.effort is ReasoningEffort.NONE


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class Reasoning:
    text: str = ""
    signature: str = ""
    redacted_data: str = ""


@dataclass(frozen=True)
class CacheHint:
    """Cache the conversation up to and including this part (Anthropic `cache_control`); ttl_s 0: the default."""

    ttl_s: int = 0


@dataclass(frozen=True)
class TextPart:
    text: str
    cache: CacheHint | None = None


@dataclass(frozen=True)
class ImagePart:
    """An image: `data` with its media type, or an https `url` the provider fetches (the gateway never does)."""

    data: bytes = b""
    url: str = ""
    media_type: str = ""
    cache: CacheHint | None = None


@dataclass(frozen=True)
class DocumentPart:
    """A document (PDF) as bytes."""

    data: bytes
    media_type: str = "application/pdf"
    name: str = ""
    cache: CacheHint | None = None


Part = TextPart | ImagePart | DocumentPart
VISION, DOCUMENTS = "vision", "documents"  # what a model must be able to take (ModelSpec.capabilities)


@dataclass(frozen=True)
class Message:
    """One message. `content` is its text; `parts`, when set, is its whole content in order (text among
    images and documents, or text with cache hints), and `content` is then the text of its text parts (for
    estimates and providers that take text only where the message is)."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    reasoning: tuple[Reasoning, ...] = ()
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass(frozen=True)
class ChatRequest:
    """What the caller asked for, independent of any provider's format."""

    model: str
    messages: tuple[Message, ...]
    request_id: str
    provider_order: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    max_output_tokens: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoiceMode | None = None
    tool_choice_name: str = ""
    response_format: ResponseFormat = ResponseFormat.TEXT
    json_schema: dict[str, Any] | None = None
    schema_name: str = ""
    user_id: str = ""
    # The authenticated caller (servicekit.auth), "" without callers: budgets keep each caller's users apart.
    caller: str = ""
    mid_stream_policy: MidStreamPolicy = MidStreamPolicy.FAIL
    commit_window_ms: int = 0
    commit_window_tokens: int = 0
    reasoning: ReasoningOptions | None = None  # None: the caller said nothing about reasoning

    @property
    def needs(self) -> frozenset[str]:
        """The capabilities a model needs for this request's parts (VISION for images, DOCUMENTS)."""
        kinds = {type(p) for m in self.messages for p in m.parts}
        return frozenset(need for need, kind in ((VISION, ImagePart), (DOCUMENTS, DocumentPart)) if kind in kinds)


# Events one provider attempt yields, in order: any number of TextDelta / ReasoningDelta /
# ToolCallDelta, at most one UsageReport, then exactly one Finished. An adapter whose
# upstream stream ends without a finish reason raises ProviderError(kind=TRUNCATED).


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str = ""
    signature: str = ""
    redacted_data: str = ""


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    id: str = ""
    name: str = ""
    arguments_json: str = ""


@dataclass(frozen=True)
class UsageReport:
    """Usage as the provider reports it: input and output totals, and the parts of them billed apart.

    cached_input_tokens and cache_write_tokens are parts of input_tokens; reasoning_tokens is part of
    output_tokens (gateway_service.accounting splits them for pricing).
    """

    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    upstream_request_id: str = ""


ProviderEvent = TextDelta | ReasoningDelta | ToolCallDelta | UsageReport | Finished


def carries_output(event: ProviderEvent) -> bool:
    """True for an event with something for the caller in it; False for an empty delta, usage, the end."""
    if isinstance(event, TextDelta):
        return bool(event.text)
    if isinstance(event, ReasoningDelta):
        return bool(event.text or event.signature or event.redacted_data)
    if isinstance(event, ToolCallDelta):
        return bool(event.id or event.name or event.arguments_json)
    return False
