"""ChatRequest -> Anthropic Messages parameters, and stream events -> ProviderEvents."""

from __future__ import annotations

import json
from typing import Any

from gateway_service.domain.failures import FailureKind, ProviderError, Unsupported
from gateway_service.domain.request import (
    CacheHint,
    ChatRequest,
    Finished,
    FinishReason,
    ImagePart,
    Message,
    Part,
    ProviderEvent,
    ReasoningDelta,
    ReasoningEffort,
    ResponseFormat,
    Role,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoiceMode,
    UsageReport,
)
from gateway_service.providers.parts import b64
from gateway_service.providers.reasoning import BUDGETS, budget_tokens, effort

# Anthropic requires max_tokens; this is what a request without one gets.
DEFAULT_MAX_TOKENS = 4096
# Our effort -> output_config.effort. Anthropic has no minimal: its lowest level, low, is the nearest.
EFFORTS = {
    ReasoningEffort.MINIMAL: "low",
    ReasoningEffort.LOW: "low",
    ReasoningEffort.MEDIUM: "medium",
    ReasoningEffort.HIGH: "high",
    ReasoningEffort.XHIGH: "xhigh",
    ReasoningEffort.MAX: "max",
}

_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}


def build_params(request: ChatRequest, model: str, *, effort_based: bool = False) -> dict[str, Any]:
    """Keyword arguments for `messages.create(stream=True)`; `effort_based` for a model configured
    `reasoning: effort` (adaptive thinking and `output_config.effort` instead of a budget)."""
    system = _system(request.messages)
    thinking = _thinking(request, effort_based)
    params: dict[str, Any] = {
        "model": model,
        "messages": _messages(request.messages),
        "max_tokens": _max_tokens(request, thinking),
        "stream": True,
    }
    if system:
        params["system"] = system
    if thinking is not None:
        params["thinking"] = thinking
    sampling = _sampling(request, thinking_on=bool(thinking and thinking["type"] != "disabled"))
    if sampling:
        # This SDK version no longer lists the sampling parameters (newer models reject some of them), so
        # they go through extra_body and the API decides per model.
        params["extra_body"] = sampling
    if request.sampling.stop_sequences:
        params["stop_sequences"] = list(request.sampling.stop_sequences)
    if request.tools:
        params["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
        ]
    if request.tool_choice is not None:
        params["tool_choice"] = _tool_choice(request)
    output_config = _output_config(request, thinking)
    if output_config:
        params["output_config"] = output_config
    if request.user_id:
        params["metadata"] = {"user_id": request.user_id}
    return params


def _thinking(request: ChatRequest, effort_based: bool) -> dict[str, Any] | None:
    """Anthropic's `thinking`, with a budget or adaptive; raises ValueError for what Anthropic refuses while thinking
    either way (sent as INVALID_ARGUMENT before any request leaves)."""
    options = request.reasoning
    if options is None or not (options.enabled or options.disabled):
        return None
    if options.disabled:
        return {"type": "disabled"}
    if request.tool_choice in (ToolChoiceMode.REQUIRED, ToolChoiceMode.TOOL):
        raise Unsupported("tool_choice", "Anthropic cannot think when the tool choice forces tool use; use AUTO/NONE")
    if request.messages and request.messages[-1].role is Role.ASSISTANT:
        index = len(request.messages) - 1
        raise Unsupported(f"messages[{index}]", "Anthropic cannot continue an assistant prefill while thinking")
    # "omitted" still returns each block's signature, so a tool loop can send the blocks back.
    display = "summarized" if options.include_text else "omitted"
    if effort_based:
        # Adaptive thinking takes no budget: the model decides how much, guided by output_config.effort.
        return {"type": "adaptive", "display": display}
    budget = budget_tokens(options, request.max_output_tokens)
    return {"type": "enabled", "budget_tokens": budget, "display": display}


def _output_config(request: ChatRequest, thinking: dict[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if thinking is not None and thinking["type"] == "adaptive" and request.reasoning is not None:
        config["effort"] = EFFORTS[effort(request.reasoning)]
    if request.response_format is not ResponseFormat.TEXT:
        schema = request.json_schema if request.response_format is ResponseFormat.JSON_SCHEMA else None
        config["format"] = {"type": "json_schema", "schema": schema or {"type": "object"}}
    return config


def _max_tokens(request: ChatRequest, thinking: dict[str, Any] | None) -> int:
    if request.max_output_tokens:
        return request.max_output_tokens
    if thinking is None or thinking["type"] == "disabled" or request.reasoning is None:
        return DEFAULT_MAX_TOKENS
    # max_tokens includes the thinking and must exceed a budget: the default answer room comes on top. Adaptive
    # thinking has no budget but may spend as much, so it gets the room its level's budget would.
    if thinking["type"] == "adaptive":
        return DEFAULT_MAX_TOKENS + BUDGETS[effort(request.reasoning)]
    return DEFAULT_MAX_TOKENS + int(thinking["budget_tokens"])


def _sampling(request: ChatRequest, *, thinking_on: bool) -> dict[str, Any]:
    s = request.sampling
    if not thinking_on:
        return {
            k: v for k, v in (("temperature", s.temperature), ("top_p", s.top_p), ("top_k", s.top_k)) if v is not None
        }
    # While thinking Anthropic fixes sampling (temperature 1, no top_k, top_p 0.95..1) and refuses other values:
    # the caller asked for reasoning, which on Anthropic means its sampling, so the rest is left out.
    return {"top_p": max(s.top_p, 0.95)} if s.top_p is not None else {}


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Anthropic alternates user and assistant turns: tool results are user blocks, and adjacent turns merge."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role is Role.SYSTEM:
            continue
        role = "assistant" if m.role is Role.ASSISTANT else "user"
        blocks = _assistant_blocks(m) if m.role is Role.ASSISTANT else _user_blocks(m)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _user_blocks(m: Message) -> list[dict[str, Any]]:
    if m.role is Role.TOOL:
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}]
    if m.parts:
        return [_block(p) for p in m.parts]
    return [{"type": "text", "text": m.content}]


def _block(part: Part) -> dict[str, Any]:
    """Anthropic's content blocks: text, image (base64 or url source), document (a base64 PDF), each with
    `cache_control` when the part carries a cache hint."""
    block: dict[str, Any]
    if isinstance(part, TextPart):
        block = {"type": "text", "text": part.text}
    elif isinstance(part, ImagePart):
        source = (
            {"type": "url", "url": part.url}
            if part.url
            else {"type": "base64", "media_type": part.media_type, "data": b64(part.data)}
        )
        block = {"type": "image", "source": source}
    else:
        source = {"type": "base64", "media_type": part.media_type, "data": b64(part.data)}
        block = {"type": "document", "source": source}
        if part.name:
            block["title"] = part.name
    if part.cache is not None:
        block["cache_control"] = cache_control(part.cache)
    return block


def cache_control(hint: CacheHint) -> dict[str, str]:
    """`{"type": "ephemeral"}`, with `ttl` "5m" or "1h" when the hint names one."""
    control = {"type": "ephemeral"}
    if hint.ttl_s:
        control["ttl"] = "1h" if hint.ttl_s == 3600 else "5m"
    return control


def _system(messages: tuple[Message, ...]) -> str | list[dict[str, Any]]:
    """The system prompt: one string, or text blocks when a part carries a cache hint (a cached system prompt)."""
    system = [m for m in messages if m.role is Role.SYSTEM]
    if not any(p.cache for m in system for p in m.parts):
        return "\n\n".join(m.content for m in system)
    blocks: list[dict[str, Any]] = []
    for m in system:
        blocks.extend([_block(p) for p in m.parts] if m.parts else [{"type": "text", "text": m.content}])
    return blocks


def _assistant_blocks(m: Message) -> list[dict[str, Any]]:
    # Thinking blocks go back first and unchanged, with their signatures, or a tool loop is refused.
    blocks: list[dict[str, Any]] = []
    for r in m.reasoning:
        if r.redacted_data:
            blocks.append({"type": "redacted_thinking", "data": r.redacted_data})
        else:
            blocks.append({"type": "thinking", "thinking": r.text, "signature": r.signature})
    if m.content:
        blocks.append({"type": "text", "text": m.content})
    for call in m.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": json.loads(call.arguments_json or "{}")}
        )
    return blocks


_CHOICE_TYPES = {ToolChoiceMode.AUTO: "auto", ToolChoiceMode.NONE: "none", ToolChoiceMode.REQUIRED: "any"}


def _tool_choice(request: ChatRequest) -> dict[str, Any]:
    if request.tool_choice is ToolChoiceMode.TOOL:
        return {"type": "tool", "name": request.tool_choice_name}
    return {"type": _CHOICE_TYPES.get(request.tool_choice or ToolChoiceMode.AUTO, "auto")}


class EventTranslator:
    """State of one Anthropic stream: block kinds by index, usage, stop reason, message_stop."""

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id
        self._tool_index: dict[int, int] = {}
        self._input_tokens = 0
        self._cached_tokens = 0
        self._cache_write_tokens = 0
        self._output_tokens = 0
        self._thinking_tokens = 0
        self._stop: FinishReason | None = None

    def feed(self, event: Any) -> list[ProviderEvent]:
        handler = getattr(self, f"_on_{event.type}", None)
        return handler(event) if handler is not None else []

    def _on_message_start(self, event: Any) -> list[ProviderEvent]:
        message = event.message
        self._request_id = self._request_id or message.id
        usage = message.usage
        self._input_tokens = (
            (usage.input_tokens or 0) + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        )
        self._cached_tokens = usage.cache_read_input_tokens or 0
        self._cache_write_tokens = usage.cache_creation_input_tokens or 0
        return []

    def _on_content_block_start(self, event: Any) -> list[ProviderEvent]:
        block = event.content_block
        if block.type == "tool_use":
            self._tool_index[event.index] = len(self._tool_index)
            return [ToolCallDelta(index=self._tool_index[event.index], id=block.id, name=block.name)]
        if block.type == "redacted_thinking":
            return [ReasoningDelta(redacted_data=block.data)]
        if block.type == "text" and block.text:
            return [TextDelta(block.text)]
        return []

    def _on_content_block_delta(self, event: Any) -> list[ProviderEvent]:
        delta = event.delta
        if delta.type == "text_delta":
            return [TextDelta(delta.text)] if delta.text else []
        if delta.type == "thinking_delta":
            return [ReasoningDelta(text=delta.thinking)]
        if delta.type == "signature_delta":
            return [ReasoningDelta(signature=delta.signature)]
        if delta.type == "input_json_delta":
            return [ToolCallDelta(index=self._tool_index[event.index], arguments_json=delta.partial_json)]
        return []

    def _on_message_delta(self, event: Any) -> list[ProviderEvent]:
        if event.delta.stop_reason:
            self._stop = _FINISH.get(event.delta.stop_reason, FinishReason.STOP)
        self._output_tokens = event.usage.output_tokens or self._output_tokens
        details = event.usage.output_tokens_details
        if details is not None:
            self._thinking_tokens = details.thinking_tokens or self._thinking_tokens
        return []

    @property
    def complete(self) -> bool:
        return self._stop is not None

    def finish(self) -> list[ProviderEvent]:
        # The stop reason (in message_delta) is what says the answer is whole; a stream cut after it
        # but before message_stop lost nothing.
        if self._stop is None:
            raise ProviderError(
                FailureKind.TRUNCATED, "stream ended without a stop_reason", upstream_request_id=self._request_id
            )
        usage = UsageReport(
            self._input_tokens,
            self._output_tokens,
            reasoning_tokens=self._thinking_tokens,
            cached_input_tokens=self._cached_tokens,
            cache_write_tokens=self._cache_write_tokens,
        )
        return [usage, Finished(self._stop, self._request_id)]
