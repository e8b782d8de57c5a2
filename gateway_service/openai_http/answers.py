"""Pipeline events -> OpenAI Chat Completions answers: `chat.completion.chunk` objects, or one `chat.completion`.

A stream is the chunks OpenAI sends: the first carries `role: assistant`, then content, `reasoning_content`
(the name DeepSeek, vLLM and OpenRouter use) or `tool_calls` deltas, one chunk with `finish_reason`, and with
`stream_options.include_usage` a last chunk with empty `choices` and the `usage` of every attempt together.
`model` is the model that answered; the gateway's own facts ride in headers (`x-request-id`,
`x-gateway-provider`) so the objects stay what OpenAI's clients parse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gateway_service.chat.aggregate import Answer
from gateway_service.domain.events import AttemptUsage, Completed
from gateway_service.domain.request import FinishReason, ReasoningDelta, TextDelta, ToolCallDelta

FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.TOOL_CALLS: "tool_calls",
    FinishReason.CONTENT_FILTER: "content_filter",
}


def usage(total: AttemptUsage | None) -> dict[str, Any] | None:
    """OpenAI's usage object for what the whole call cost (every attempt's tokens)."""
    if total is None:
        return None
    return {
        "prompt_tokens": total.input_tokens,
        "completion_tokens": total.output_tokens,
        "total_tokens": total.input_tokens + total.output_tokens,
        "prompt_tokens_details": {"cached_tokens": total.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": total.reasoning_tokens},
    }


@dataclass
class Chunks:
    """The chunks of one streamed answer, as JSON-ready dicts."""

    completion_id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    _role_sent: bool = False

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

    def piece(self, piece: TextDelta | ReasoningDelta | ToolCallDelta) -> dict[str, Any] | None:
        if isinstance(piece, TextDelta):
            return self._delta({"content": piece.text})
        if isinstance(piece, ReasoningDelta):
            return self._delta({"reasoning_content": piece.text}) if piece.text else None
        call: dict[str, Any] = {"index": piece.index, "function": {"arguments": piece.arguments_json}}
        if piece.id:
            call["id"] = piece.id
            call["type"] = "function"
        if piece.name:
            call["function"]["name"] = piece.name
        return self._delta({"tool_calls": [call]})

    def finish(self, done: Completed) -> dict[str, Any]:
        self.model = done.model
        return self._delta({}, FINISH[done.finish_reason])

    def usage(self, done: Completed) -> dict[str, Any]:
        return self._chunk([], usage=usage(done.usage))


def completion(completion_id: str, answer: Answer) -> dict[str, Any]:
    """The non-streaming answer: one `chat.completion` object."""
    done = answer.completed
    assert done is not None  # a run ends with Completed or raises
    message = answer.message()
    body: dict[str, Any] = {"role": "assistant", "content": message.content or None, "refusal": None}
    if message.tool_calls:
        body["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in message.tool_calls
        ]
    reasoning = "".join(r.text for r in message.reasoning)
    if reasoning:
        body["reasoning_content"] = reasoning
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": done.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": body, "logprobs": None, "finish_reason": FINISH[done.finish_reason]}],
        "usage": usage(done.usage),
    }
