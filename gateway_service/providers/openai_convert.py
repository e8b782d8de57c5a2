"""ChatRequest -> OpenAI Chat Completions parameters, and chunks -> ProviderEvents."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletionChunk

from gateway_service.domain.failures import FailureKind, ProviderError
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
from gateway_service.providers.reasoning import effort_level

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def build_params(request: ChatRequest, model: str, *, compatible: bool, stream_options: bool = True) -> dict[str, Any]:
    """Keyword arguments for `chat.completions.create`, streaming with usage (asked for with `stream_options`
    unless a compatible server refuses the field)."""
    params: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages], "stream": True}
    if stream_options or not compatible:
        params["stream_options"] = {"include_usage": True}
    params.update(_sampling(request, compatible))
    if request.max_output_tokens:
        # OpenAI deprecated max_tokens; most compatible servers only know max_tokens.
        params["max_tokens" if compatible else "max_completion_tokens"] = request.max_output_tokens
    if request.tools:
        params["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools
        ]
    if request.tool_choice is not None:
        params["tool_choice"] = _tool_choice(request)
    if request.response_format is not ResponseFormat.TEXT:
        params["response_format"] = _response_format(request)
    if request.user_id:
        params["user"] = request.user_id
    effort = effort_level(request.reasoning) if request.reasoning is not None else None
    if effort is not None:
        # Compatible servers that reason (vLLM, Groq, OpenRouter) take the same field; reasoning text, which
        # OpenAI itself never streams, is kept from a caller who asked not to see it by `reasoning.shown`.
        params["reasoning_effort"] = effort
    return params


def _sampling(request: ChatRequest, compatible: bool) -> dict[str, Any]:
    s = request.sampling
    out: dict[str, Any] = {}
    for key, value in (
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("seed", s.seed),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ):
        if value is not None:
            out[key] = value
    if s.stop_sequences:
        out["stop"] = list(s.stop_sequences)
    if s.top_k is not None and compatible:
        # Not part of OpenAI's API, but vLLM, Together and Ollama's compatibility layers accept it.
        out["extra_body"] = {"top_k": s.top_k}
    return out


def _message(m: Message) -> dict[str, Any]:
    if m.role is Role.TOOL:
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role is Role.ASSISTANT:
        out: dict[str, Any] = {"role": "assistant", "content": m.content or None}
        if m.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                for c in m.tool_calls
            ]
        return out
    out = {"role": m.role.value, "content": [_part(p) for p in m.parts] if m.parts else m.content}
    if m.name:
        out["name"] = m.name
    return out


def _part(part: Part) -> dict[str, Any]:
    """OpenAI's content parts (`text`, `image_url` with a URL or a data: URL, `file` with file_data); OpenAI
    caches prompt prefixes on its own, so a cache hint changes nothing here."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.url or data_url(part.media_type, part.data)}}
    file: dict[str, Any] = {"file_data": data_url(part.media_type, part.data)}
    file["filename"] = part.name or "document.pdf"
    return {"type": "file", "file": file}


def _tool_choice(request: ChatRequest) -> Any:
    if request.tool_choice is ToolChoiceMode.TOOL:
        return {"type": "function", "function": {"name": request.tool_choice_name}}
    assert request.tool_choice is not None
    return request.tool_choice.value


def _response_format(request: ChatRequest) -> dict[str, Any]:
    if request.response_format is ResponseFormat.JSON_SCHEMA:
        schema = {"name": request.schema_name or "response", "schema": request.json_schema or {}}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": "json_object"}


class ChunkTranslator:
    """State of one OpenAI stream: the finish reason waits for the usage chunk that follows it."""

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id
        self._finish: FinishReason | None = None
        self._usage: UsageReport | None = None

    def feed(self, chunk: object) -> list[ProviderEvent]:
        """`chunk`: the decoded JSON the adapter gets (building a ChatCompletionChunk costs ~65 us a
        chunk, for three fields read), or a ChatCompletionChunk. Anything not shaped like a chunk
        raises (AttributeError, TypeError...), which the adapter maps to MALFORMED_RESPONSE."""
        data: Any = chunk.model_dump() if isinstance(chunk, ChatCompletionChunk) else chunk
        if not self._request_id:
            self._request_id = data.get("id") or ""
        events: list[ProviderEvent] = []
        for choice in (data.get("choices") or [])[:1]:
            delta = choice.get("delta")
            if delta is not None:
                events.extend(_delta_events(delta))
            finish = choice.get("finish_reason")
            if finish:
                self._finish = _FINISH.get(finish, FinishReason.STOP)
        usage = data.get("usage")
        if usage is not None:
            # OpenAI sends usage once, in a chunk of its own; some compatible servers repeat it
            # (cumulatively) on many chunks. Either way the last one counts, reported at the end.
            self._usage = _usage(usage)
        return events

    @property
    def complete(self) -> bool:
        return self._finish is not None

    def finish(self) -> list[ProviderEvent]:
        if self._finish is None:
            raise ProviderError(
                FailureKind.TRUNCATED, "stream ended without a finish reason", upstream_request_id=self._request_id
            )
        usage: list[ProviderEvent] = [self._usage] if self._usage is not None else []
        return [*usage, Finished(self._finish, self._request_id)]


def _delta_events(delta: Any) -> list[ProviderEvent]:
    events: list[ProviderEvent] = []
    # DeepSeek, vLLM and OpenRouter stream reasoning in a non-standard field.
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        events.append(ReasoningDelta(text=reasoning))
    content = delta.get("content")
    if content:
        events.append(TextDelta(content))
    for call in delta.get("tool_calls") or ():
        fn = call.get("function")
        events.append(
            ToolCallDelta(
                index=call.get("index"),
                id=call.get("id") or "",
                name=(fn.get("name") or "") if fn else "",
                arguments_json=(fn.get("arguments") or "") if fn else "",
            )
        )
    return events


def _usage(usage: Any) -> UsageReport:
    details = usage.get("completion_tokens_details")
    prompt_details = usage.get("prompt_tokens_details")
    return UsageReport(
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        reasoning_tokens=(details.get("reasoning_tokens") or 0) if details else 0,
        cached_input_tokens=(prompt_details.get("cached_tokens") or 0) if prompt_details else 0,
    )
