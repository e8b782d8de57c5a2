"""Anthropic Messages wire format (POST /v1/messages), as documented by Anthropic.

Stream: message_start, then per content block content_block_start /
content_block_delta (thinking_delta + signature_delta, text_delta,
input_json_delta) / content_block_stop, a ping, message_delta with stop_reason
and output usage, message_stop. Errors mid-stream arrive as `event: error` after
the HTTP 200.

`thinking` is checked as Anthropic documents it: `enabled` with budget_tokens at least 1024
and below max_tokens, or `adaptive` with no budget_tokens (the model decides, guided by
`output_config.effort`: low, medium, high, xhigh or max); either way no temperature other
than 1, no top_k, top_p not below 0.95, no forced tool choice, no assistant prefill, and a
tool loop's last assistant turn starting with its thinking block. `display` is summarized or
omitted; omitted sends thinking blocks with only their signature; the thinking tokens are in
message_delta's `usage.output_tokens_details`.
"""

from __future__ import annotations

import json
from typing import Any

from llm_simulator.faults import Fault
from llm_simulator.plan import Plan, Prompt, split_json
from llm_simulator.wire import Frame, retry_headers, signature, sse

REQUEST_ID_HEADER = "request-id"
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def parse(body: dict[str, Any], path_model: str = "", path_stream: bool | None = None) -> Prompt:
    messages = [("system", _text(body["system"]))] if body.get("system") else []
    for m in body.get("messages", []):
        blocks = m.get("content")
        if isinstance(blocks, list) and any(b.get("type") == "tool_result" for b in blocks):
            results = [_text(b.get("content")) for b in blocks if b.get("type") == "tool_result"]
            messages.append(("tool", "".join(results)))
        else:
            messages.append((str(m.get("role")), _text(blocks)))
    stop = body.get("stop_sequences") or []
    thinking = body.get("thinking") or {}
    return Prompt(
        api="anthropic",
        model=str(body.get("model", "")),
        stream=bool(body.get("stream")),
        messages=messages,
        tool_names=[t["name"] for t in body.get("tools") or []],
        max_tokens=body.get("max_tokens"),
        stop=list(stop),
        include_usage=True,
        thinking={"enabled": True, "adaptive": True, "disabled": False}.get(thinking.get("type", "")),
        show_reasoning=thinking.get("display") != "omitted",
        rejection=_effort_rejection(body) or _thinking_rejection(body, thinking),
    )


def _effort_rejection(body: dict[str, Any]) -> str:
    effort = (body.get("output_config") or {}).get("effort")
    if effort is None or effort in _EFFORTS:
        return ""
    return "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"


def _thinking_rejection(body: dict[str, Any], thinking: dict[str, Any]) -> str:
    """The 400 message Anthropic answers a thinking request with, or "" when it is acceptable."""
    kind = thinking.get("type")
    if kind not in ("enabled", "adaptive"):
        return ""
    if thinking.get("display") not in (None, "summarized", "omitted"):
        return f"thinking.{kind}.display: Input should be 'summarized' or 'omitted'"
    bad = _budget_rejection(body, thinking) if kind == "enabled" else _adaptive_rejection(thinking)
    return bad or _while_thinking_rejection(body)


def _budget_rejection(body: dict[str, Any], thinking: dict[str, Any]) -> str:
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    if budget >= body.get("max_tokens", 0):
        return "`max_tokens` must be greater than `thinking.budget_tokens`"
    return ""


def _adaptive_rejection(thinking: dict[str, Any]) -> str:
    extra = sorted(set(thinking) - {"type", "display"})
    return f"thinking.adaptive.{extra[0]}: Extra inputs are not permitted" if extra else ""


def _while_thinking_rejection(body: dict[str, Any]) -> str:
    """What Anthropic refuses while thinking, with a budget or adaptive."""
    problems = (
        (body.get("temperature", 1) != 1, "`temperature` may only be set to 1 when thinking is enabled."),
        ("top_k" in body, "`top_k` may not be set when thinking is enabled."),
        (
            body.get("top_p", 1) < 0.95,
            "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled.",
        ),
        (
            (body.get("tool_choice") or {}).get("type") in ("any", "tool"),
            "Thinking may not be enabled when tool_choice forces tool use.",
        ),
    )
    messages = body.get("messages") or []
    bad = next((message for wrong, message in problems if wrong), "")
    if bad:
        return bad
    if messages and messages[-1].get("role") == "assistant":
        return "Prefilling the assistant message is not supported when thinking is enabled."
    return _tool_loop_rejection(messages)


def _tool_loop_rejection(messages: list[dict[str, Any]]) -> str:
    """A tool result answers the assistant turn before it, which must start with its thinking block."""
    if len(messages) < 2 or not _blocks_of(messages[-1], "tool_result"):
        return ""
    blocks = messages[-2].get("content")
    first = blocks[0].get("type") if isinstance(blocks, list) and blocks else "text"
    if first in ("thinking", "redacted_thinking"):
        return ""
    return (
        f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        f"`{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block."
    )


def _blocks_of(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    blocks = message.get("content")
    return [b for b in blocks if b.get("type") == kind] if isinstance(blocks, list) else []


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return str(content or "")


_ERRORS: dict[str, tuple[int, str, str]] = {
    "429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    "quota": (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API."),
    "context": (400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"),
    "invalid": (400, "invalid_request_error", "temperature: range: 0..1"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
}
_STATUS_TYPES = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
    503: "overloaded_error",
}


def error(fault: Fault, prompt: Prompt, api_key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = retry_headers(fault)
    if fault.kind in _ERRORS:
        status, etype, message = _ERRORS[fault.kind]
        status = fault.status if fault.kind == "overloaded" and fault.status else status
        message = prompt.rejection if fault.kind == "invalid" and prompt.rejection else message
    elif fault.kind == "auth":
        status = fault.status
        etype, message = _STATUS_TYPES[status], f"invalid x-api-key {api_key}"
    else:
        status = fault.status
        etype, message = _STATUS_TYPES.get(status, "api_error"), "Internal server error"
    return status, {"type": "error", "error": {"type": etype, "message": message}}, headers


def stream_error(fault: Fault) -> bytes:
    etype = fault.error_type or "overloaded_error"
    return sse({"type": "error", "error": {"type": etype, "message": "Overloaded"}}, "error")


def malformed() -> bytes:
    return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta\n\n'


def frames(plan: Plan, prompt: Prompt, request_id: str) -> list[Frame]:
    message: dict[str, Any] = {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": prompt.model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(plan.input_tokens, 1),
    }
    out = [Frame(sse({"type": "message_start", "message": message}, "message_start"), "pre")]
    index = 0
    for data in plan.redacted:
        out += _block(index, {"type": "redacted_thinking", "data": data}, [])
        index += 1
    if plan.reasoning:
        shown = plan.reasoning if prompt.show_reasoning else []
        out += _block(
            index,
            {"type": "thinking", "thinking": "", "signature": ""},
            [{"type": "thinking_delta", "thinking": w} for w in shown]
            + [{"type": "signature_delta", "signature": signature("".join(plan.reasoning))}],
        )
        index += 1
    if plan.text:
        out += _block(index, {"type": "text", "text": ""}, [{"type": "text_delta", "text": w} for w in plan.text])
        index += 1
    for call in plan.calls:
        start = {"type": "tool_use", "id": f"toolu_{call.id}", "name": call.name, "input": {}}
        out += _block(
            index, start, [{"type": "input_json_delta", "partial_json": p} for p in split_json(call.arguments_json)]
        )
        index += 1
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": _STOP[plan.finish], "stop_sequence": None},
        "usage": {"output_tokens": plan.output_tokens, **_thinking_usage(plan)},
    }
    out.append(Frame(sse(delta, "message_delta"), "final"))
    out.append(Frame(sse({"type": "message_stop"}, "message_stop"), "final"))
    return out


def _block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[Frame]:
    frames = [
        Frame(
            sse({"type": "content_block_start", "index": index, "content_block": start}, "content_block_start"), "pre"
        )
    ]
    if index == 0:
        frames.append(Frame(sse({"type": "ping"}, "ping"), "pre"))
    frames += [
        Frame(sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta"), "content")
        for d in deltas
    ]
    frames.append(Frame(sse({"type": "content_block_stop", "index": index}, "content_block_stop"), "pre"))
    return frames


def _thinking_usage(plan: Plan) -> dict[str, Any]:
    return {"output_tokens_details": {"thinking_tokens": len(plan.reasoning)}} if plan.reasoning else {}


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def complete(plan: Plan, prompt: Prompt, request_id: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if plan.reasoning:
        text = "".join(plan.reasoning)
        content.append(
            {"type": "thinking", "thinking": text if prompt.show_reasoning else "", "signature": signature(text)}
        )
    if plan.text:
        content.append({"type": "text", "text": "".join(plan.text)})
    content += [
        {"type": "tool_use", "id": f"toolu_{c.id}", "name": c.name, "input": json.loads(c.arguments_json)}
        for c in plan.calls
    ]
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": prompt.model,
        "stop_reason": _STOP[plan.finish],
        "stop_sequence": None,
        "usage": {**_usage(plan.input_tokens, plan.output_tokens), **_thinking_usage(plan)},
    }
