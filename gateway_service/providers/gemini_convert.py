"""ChatRequest -> google-genai contents and config, and stream responses -> ProviderEvents."""

from __future__ import annotations

import base64
import json
from typing import Any

from google.genai import types as genai_types

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
    ReasoningEffort,
    ReasoningOptions,
    ResponseFormat,
    Role,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoiceMode,
    UsageReport,
)
from gateway_service.providers.reasoning import budget_tokens, effort

# Our effort -> ThinkingLevel. Gemini's levels stop at XHIGH, the nearest to MAX.
LEVELS = {
    ReasoningEffort.MINIMAL: genai_types.ThinkingLevel.MINIMAL,
    ReasoningEffort.LOW: genai_types.ThinkingLevel.LOW,
    ReasoningEffort.MEDIUM: genai_types.ThinkingLevel.MEDIUM,
    ReasoningEffort.HIGH: genai_types.ThinkingLevel.HIGH,
    ReasoningEffort.XHIGH: genai_types.ThinkingLevel.XHIGH,
    ReasoningEffort.MAX: genai_types.ThinkingLevel.XHIGH,
}
_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}


def build_contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Gemini alternates user and model turns; tool results are user function_response parts."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role is Role.SYSTEM:
            continue
        role = "model" if m.role is Role.ASSISTANT else "user"
        parts = _model_parts(m) if m.role is Role.ASSISTANT else _user_parts(m, names)
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def _user_parts(m: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    if m.role is not Role.TOOL:
        return [_part(p) for p in m.parts] if m.parts else [{"text": m.content}]
    name = m.name or names.get(m.tool_call_id, "")
    response = {"name": name, "response": {"result": _json_or_text(m.content)}}
    if m.tool_call_id and not m.tool_call_id.startswith("call_"):
        response["id"] = m.tool_call_id
    return [{"function_response": response}]


def _part(part: Part) -> dict[str, Any]:
    """Gemini's parts: text, `inline_data` (bytes and their MIME type: images, PDFs) or `file_data` (an image URL).
    Gemini caches prompt prefixes on its own (implicit caching), so a cache hint changes nothing here."""
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart) and part.url:
        file_data = {"file_uri": part.url}
        if part.media_type:
            file_data["mime_type"] = part.media_type
        return {"file_data": file_data}
    return {"inline_data": {"mime_type": part.media_type, "data": part.data}}


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _model_parts(m: Message) -> list[dict[str, Any]]:
    # The thought signature must go back on the part it came with: the first function call, else the text.
    signature = next((base64.b64decode(r.signature) for r in m.reasoning if r.signature), None)
    parts: list[dict[str, Any]] = []
    if m.content:
        parts.append({"text": m.content})
    for call in m.tool_calls:
        parts.append({"function_call": {"name": call.name, "args": json.loads(call.arguments_json or "{}")}})
    if signature is not None and parts:
        target = next((p for p in parts if "function_call" in p), parts[0])
        target["thought_signature"] = signature
    return parts or [{"text": ""}]


def build_config(request: ChatRequest, effort_based: bool = False) -> dict[str, Any]:
    """GenerateContentConfig as a dict; automatic function calling off, the caller runs the tools. `effort_based`
    for a model configured `reasoning: effort` (thinking_level instead of thinking_budget)."""
    s = request.sampling
    config: dict[str, Any] = {"automatic_function_calling": {"disable": True}}
    system = "\n\n".join(m.content for m in request.messages if m.role is Role.SYSTEM)
    if system:
        config["system_instruction"] = system
    for key, value in (
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("top_k", s.top_k),
        ("seed", s.seed),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
        ("max_output_tokens", request.max_output_tokens),
    ):
        if value is not None:
            config[key] = value
    if s.stop_sequences:
        config["stop_sequences"] = list(s.stop_sequences)
    if request.tools:
        # Typed, because the SDK converts field names (parametersJsonSchema) only on its own models.
        declarations = [
            genai_types.FunctionDeclaration(name=t.name, description=t.description, parameters_json_schema=t.parameters)
            for t in request.tools
        ]
        config["tools"] = [genai_types.Tool(function_declarations=declarations)]
    if request.tool_choice is not None:
        config["tool_config"] = {"function_calling_config": _calling_config(request)}
    if request.response_format is not ResponseFormat.TEXT:
        config["response_mime_type"] = "application/json"
        if request.response_format is ResponseFormat.JSON_SCHEMA and request.json_schema:
            config["response_json_schema"] = request.json_schema
    if request.reasoning is not None and effort_based:
        config["thinking_config"] = _level_config(request.reasoning)
    elif request.reasoning is not None:
        config["thinking_config"] = _thinking_config(request.reasoning, request.max_output_tokens)
    return config


def _level_config(options: ReasoningOptions) -> genai_types.ThinkingConfig:
    if options.disabled:
        # Models that take a level may not turn thinking off at all; MINIMAL is the least they offer.
        return genai_types.ThinkingConfig(thinking_level=genai_types.ThinkingLevel.MINIMAL)
    level = LEVELS[effort(options)] if options.enabled else None
    return genai_types.ThinkingConfig(thinking_level=level, include_thoughts=options.include_text)


def _thinking_config(options: ReasoningOptions, max_output_tokens: int | None) -> genai_types.ThinkingConfig:
    if options.disabled:
        return genai_types.ThinkingConfig(thinking_budget=0)
    # Thought text comes only with include_thoughts; thoughtsTokenCount is reported either way.
    budget = budget_tokens(options, max_output_tokens) if options.enabled else None
    return genai_types.ThinkingConfig(thinking_budget=budget, include_thoughts=options.include_text)


_CALLING_MODES = {ToolChoiceMode.AUTO: "AUTO", ToolChoiceMode.NONE: "NONE", ToolChoiceMode.REQUIRED: "ANY"}


def _calling_config(request: ChatRequest) -> dict[str, Any]:
    if request.tool_choice is ToolChoiceMode.TOOL:
        return {"mode": "ANY", "allowed_function_names": [request.tool_choice_name]}
    return {"mode": _CALLING_MODES.get(request.tool_choice or ToolChoiceMode.AUTO, "AUTO")}


class ResponseTranslator:
    """State of one Gemini stream: calls so far, last usage, finish reason."""

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id
        self._calls = 0
        self._usage: UsageReport | None = None
        self._finish: FinishReason | None = None

    def feed(self, response: Any) -> list[ProviderEvent]:
        self._request_id = self._request_id or (response.response_id or "")
        if response.usage_metadata is not None:
            self._usage = _usage(response.usage_metadata)
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            self._finish = FinishReason.CONTENT_FILTER
        events: list[ProviderEvent] = []
        for candidate in (response.candidates or [])[:1]:
            for part in (candidate.content.parts if candidate.content else None) or []:
                events.extend(self._part(part))
            reason = candidate.finish_reason
            if reason:
                self._finish = self._finish_reason(str(getattr(reason, "value", reason)))
        return events

    def _part(self, part: Any) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        if part.thought and part.text:
            events.append(ReasoningDelta(text=part.text))
        elif part.text:
            events.append(TextDelta(part.text))
        if part.function_call is not None:
            call = part.function_call
            call_id = call.id or f"call_{self._calls}_{call.name}"
            events.append(ToolCallDelta(self._calls, call_id, call.name or "", json.dumps(call.args or {})))
            self._calls += 1
        if part.thought_signature:
            events.append(ReasoningDelta(signature=base64.b64encode(part.thought_signature).decode()))
        return events

    def _finish_reason(self, reason: str) -> FinishReason:
        if reason == "MAX_TOKENS":
            return FinishReason.LENGTH
        if reason in _FILTERED:
            return FinishReason.CONTENT_FILTER
        if reason in ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"):
            raise ProviderError(
                FailureKind.MALFORMED_RESPONSE, f"model finished with {reason}", upstream_request_id=self._request_id
            )
        return FinishReason.TOOL_CALLS if self._calls else FinishReason.STOP

    @property
    def complete(self) -> bool:
        return self._finish is not None

    def finish(self) -> list[ProviderEvent]:
        if self._finish is None:
            raise ProviderError(
                FailureKind.TRUNCATED, "stream ended without a finishReason", upstream_request_id=self._request_id
            )
        usage: list[ProviderEvent] = [self._usage] if self._usage is not None else []
        return [*usage, Finished(self._finish, self._request_id)]


def _usage(meta: Any) -> UsageReport:
    thoughts = meta.thoughts_token_count or 0
    return UsageReport(
        input_tokens=meta.prompt_token_count or 0,
        output_tokens=(meta.candidates_token_count or 0) + thoughts,
        reasoning_tokens=thoughts,
        cached_input_tokens=meta.cached_content_token_count or 0,
    )
