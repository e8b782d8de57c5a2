"""ChatRequest -> Cohere v2 chat parameters, and v2 stream events -> ProviderEvents.

A v2 stream is `message-start` (the generation id), then per block `content-start` / `content-delta` /
`content-end` (text, or `thinking` for reasoning models), `tool-plan-delta` (the model's plan before it
calls tools), per call `tool-call-start` (id, name) / `tool-call-delta` (argument pieces) / `tool-call-end`,
`citation-*`, and last `message-end` with the finish reason and the usage. A `message-end` whose finish
reason is ERROR or TIMEOUT is the upstream failing mid-stream, not an answer.

Usage: `billed_units` (what Cohere charges for, without the prompt template it adds) when present, else
`tokens`; `cached_tokens` (prompt tokens that hit Cohere's cache) as the cached part of the input.
"""

from __future__ import annotations

import json
from typing import Any

import cohere

from gateway_service.domain.failures import FailureKind, ProviderError, Unsupported
from gateway_service.domain.request import (
    ChatRequest,
    Finished,
    FinishReason,
    ImagePart,
    Message,
    Part,
    ProviderEvent,
    ReasoningDelta,
    ResponseFormat,
    Role,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoiceMode,
    UsageReport,
)
from gateway_service.providers.parts import data_url
from gateway_service.providers.reasoning import budget_tokens

_FINISH = {
    "COMPLETE": FinishReason.STOP,
    "STOP_SEQUENCE": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "TOOL_CALL": FinishReason.TOOL_CALLS,
    "ERROR_TOXIC": FinishReason.CONTENT_FILTER,  # v1's name, should v2 ever send it
}
# Finish reasons that are the upstream failing, not an answer.
_FAILED = {"ERROR": FailureKind.SERVER_ERROR, "TIMEOUT": FailureKind.TIMEOUT}
# Cohere takes REQUIRED and NONE; AUTO is its default (the field left out).
_TOOL_CHOICE = {ToolChoiceMode.REQUIRED: "REQUIRED", ToolChoiceMode.NONE: "NONE"}


def build_params(request: ChatRequest, model: str) -> dict[str, Any]:
    """Keyword arguments for `v2.chat_stream`; ValueError (Unsupported) for what v2 cannot express."""
    params: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
    params.update(_sampling(request))
    if request.max_output_tokens:
        params["max_tokens"] = request.max_output_tokens
    if request.tools:
        params["tools"] = [
            cohere.ToolV2(
                function=cohere.ToolV2Function(name=t.name, description=t.description, parameters=t.parameters)
            )
            for t in request.tools
        ]
    if request.tool_choice is ToolChoiceMode.TOOL:
        raise Unsupported("tool_choice", "Cohere cannot be made to call one named tool; use AUTO, REQUIRED or NONE")
    if request.tool_choice in _TOOL_CHOICE:
        params["tool_choice"] = _TOOL_CHOICE[request.tool_choice]
    if request.response_format is not ResponseFormat.TEXT:
        schema = request.json_schema if request.response_format is ResponseFormat.JSON_SCHEMA else None
        # Unset rather than null without a schema: any JSON object.
        fields: dict[str, Any] = {"json_schema": schema} if schema is not None else {}
        params["response_format"] = cohere.JsonObjectResponseFormatV2(**fields)
    options = request.reasoning
    if options is not None and options.disabled:
        params["thinking"] = cohere.Thinking(type="disabled")
    elif options is not None and options.enabled:
        params["thinking"] = cohere.Thinking(
            type="enabled", token_budget=budget_tokens(options, request.max_output_tokens)
        )
    return params


def _sampling(request: ChatRequest) -> dict[str, Any]:
    s = request.sampling
    values = (
        ("temperature", s.temperature),
        ("p", s.top_p),
        ("k", s.top_k),
        ("seed", s.seed),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    )
    out: dict[str, Any] = {key: value for key, value in values if value is not None}
    if s.stop_sequences:
        out["stop_sequences"] = list(s.stop_sequences)
    return out


def _message(m: Message) -> Any:
    if m.role is Role.SYSTEM:
        return cohere.SystemChatMessageV2(content=m.content)
    if m.role is Role.USER:
        return cohere.UserChatMessageV2(content=[_content(p) for p in m.parts] if m.parts else m.content)
    if m.role is Role.TOOL:
        return cohere.ToolChatMessageV2(tool_call_id=m.tool_call_id, content=m.content)
    calls = [
        cohere.ToolCallV2(
            id=c.id, function=cohere.ToolCallV2Function(name=c.name, arguments=_arguments(c.arguments_json))
        )
        for c in m.tool_calls
    ]
    if not calls:
        return cohere.AssistantChatMessageV2(content=m.content)
    # The plan Cohere streamed before its calls (tool-plan-delta, reported as reasoning) goes back with them; a
    # field left unset is left out of the body (None would be sent as null).
    fields: dict[str, Any] = {"tool_calls": calls}
    plan = "".join(r.text for r in m.reasoning)
    if plan:
        fields["tool_plan"] = plan
    if m.content:
        fields["content"] = m.content
    return cohere.AssistantChatMessageV2(**fields)


def _content(part: Part) -> Any:
    """Cohere's user content: text, or an image as `image_url` (a URL or a data: URL). Cohere's chat takes no PDF
    documents: a model configured with `documents` is refused here, naming the part, before anything is sent."""
    if isinstance(part, TextPart):
        return cohere.TextContent(text=part.text)
    if isinstance(part, ImagePart):
        return cohere.ImageUrlContent(image_url=cohere.ImageUrl(url=part.url or data_url(part.media_type, part.data)))
    raise Unsupported("messages.parts", "Cohere's chat API takes no PDF documents")


def _arguments(arguments_json: str) -> str:
    json.loads(arguments_json or "{}")  # ValueError for bad JSON: the caller's error, before any request leaves
    return arguments_json or "{}"


class EventTranslator:
    """State of one v2 stream: tool calls by index, the finish reason and usage from `message-end`."""

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id
        self._finish: FinishReason | None = None
        self._usage: UsageReport | None = None
        self._started = False

    def feed(self, event: Any) -> list[ProviderEvent]:
        kind = event.type
        if kind == "message-start":
            return self._on_start(event)
        if kind == "content-delta":
            content = event.delta.message.content
            if content.thinking:
                return [ReasoningDelta(text=content.thinking)]
            return [TextDelta(content.text)] if content.text else []
        if kind == "tool-plan-delta":
            plan = event.delta.message.tool_plan
            return [ReasoningDelta(text=plan)] if plan else []
        if kind == "tool-call-start":
            call = event.delta.message.tool_calls
            function = call.function
            arguments = (function.arguments or "") if function else ""
            name = (function.name or "") if function else ""
            return [ToolCallDelta(index=event.index, id=call.id, name=name, arguments_json=arguments)]
        if kind == "tool-call-delta":
            function = event.delta.message.tool_calls.function
            piece = function.arguments if function else None
            return [ToolCallDelta(index=event.index, arguments_json=piece)] if piece else []
        if kind == "message-end":
            self._on_end(event.delta)
        return []  # content-start/-end, tool-call-end, citations, debug: nothing the caller gets

    def _on_start(self, event: Any) -> list[ProviderEvent]:
        # The SDK hands an event whose data was not JSON over as a bare message-start carrying the raw
        # `data` (pydantic's model_extra): the stream is malformed, not beginning again.
        if self._started or "data" in (event.model_extra or {}):
            raise ProviderError(
                FailureKind.MALFORMED_RESPONSE, "an event that is not JSON", upstream_request_id=self._request_id
            )
        self._started = True
        self._request_id = self._request_id or event.id or ""
        return []

    def _on_end(self, delta: Any) -> None:
        reason = str(delta.finish_reason or "")
        if reason in _FAILED:
            message = f"message-end {reason}: {delta.error or 'the generation failed'}"
            raise ProviderError(_FAILED[reason], message, upstream_request_id=self._request_id)
        self._finish = _FINISH.get(reason, FinishReason.STOP)
        if delta.usage is not None:
            self._usage = usage_report(delta.usage)

    @property
    def complete(self) -> bool:
        return self._finish is not None

    def finish(self) -> list[ProviderEvent]:
        if self._finish is None:
            raise ProviderError(
                FailureKind.TRUNCATED, "stream ended without message-end", upstream_request_id=self._request_id
            )
        usage: list[ProviderEvent] = [self._usage] if self._usage is not None else []
        return [*usage, Finished(self._finish, self._request_id)]


def usage_report(usage: Any) -> UsageReport:
    """Billed units when Cohere sends them (they are what it charges), else the raw token counts."""
    counts = usage.billed_units if usage.billed_units is not None else usage.tokens
    input_tokens = int((counts.input_tokens if counts else None) or 0)
    output_tokens = int((counts.output_tokens if counts else None) or 0)
    cached = min(int(usage.cached_tokens or 0), input_tokens)
    return UsageReport(input_tokens, output_tokens, cached_input_tokens=cached)
