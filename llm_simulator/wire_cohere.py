"""Cohere v2 chat wire format (POST /v2/chat), as the v2 API reference and the `cohere` SDK's types describe it.

Stream (`"stream": true`): SSE events named by `event:` and, again, by the JSON's `type`: message-start (the
generation id), content-start / content-delta / content-end per block (`thinking` first when the model
reasons, then `text`), tool-plan-delta then tool-call-start / tool-call-delta / tool-call-end per call,
and message-end with `finish_reason` (COMPLETE, STOP_SEQUENCE, MAX_TOKENS, TOOL_CALL, ERROR, TIMEOUT)
and `usage` (`billed_units` and `tokens`, input and output). The body then ends; there is no [DONE].
A failure after the 200 is a message-end with finish_reason ERROR and `delta.error`. Error statuses
carry `{"id": ..., "message": ...}`.

v2 has no content-filter finish reason: a `[[fault:filter]]` answer is cut short and ends COMPLETE.
"""

from __future__ import annotations

import json
from typing import Any

from llm_simulator.faults import Fault
from llm_simulator.plan import Plan, Prompt, split_json
from llm_simulator.wire import Frame, retry_headers

REQUEST_ID_HEADER = "x-request-id"
_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL", "content_filter": "COMPLETE"}


def parse(body: dict[str, Any], path_model: str = "", path_stream: bool | None = None) -> Prompt:
    messages = [(str(m.get("role")), _content(m.get("content"))) for m in body.get("messages", [])]
    thinking = body.get("thinking") or {}
    budget = thinking.get("token_budget")
    rejection = ""
    if budget is not None and (not isinstance(budget, int) or budget < 1):
        rejection = "invalid request: thinking.token_budget must be a positive integer"
    return Prompt(
        api="cohere",
        model=str(body.get("model", "")),
        stream=bool(body.get("stream")),
        messages=messages,
        tool_names=[t["function"]["name"] for t in body.get("tools") or []],
        max_tokens=body.get("max_tokens"),
        stop=list(body.get("stop_sequences") or []),
        json_mode=(body.get("response_format") or {}).get("type") == "json_object",
        include_usage=True,
        thinking=None if not thinking else thinking.get("type") != "disabled",
        rejection=rejection,
    )


def _content(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def error(fault: Fault, prompt: Prompt, api_key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = retry_headers(fault)
    status, message = _error_fields(fault, prompt)
    return status, {"id": f"err-{status}-sim", "message": message}, headers


def _error_fields(fault: Fault, prompt: Prompt) -> tuple[int, str]:
    if fault.kind == "429":
        return 429, "You are past the per minute request limit, please wait and try again later."
    if fault.kind == "quota":
        return 429, "You are using a Trial key, which is limited to 1000 API calls / month."
    if fault.kind == "context":
        return 400, "too many tokens: total number of tokens in the prompt cannot exceed 128000 - received 130412."
    if fault.kind == "auth" and fault.status == 401:
        return 401, "invalid api token"
    if fault.kind == "auth":
        return 403, "You do not have access to this model."
    if fault.kind == "invalid":
        return 400, prompt.rejection or "invalid request: temperature must be between 0 and 1"
    if fault.kind == "overloaded":
        return fault.status or 503, "The service is currently overloaded, please try again later."
    if fault.status == 404:
        return 404, f"model '{prompt.model}' not found, make sure the correct model ID was used"
    return fault.status, "internal server error, this has been reported to our developers"


def _event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def stream_error(fault: Fault) -> bytes:
    delta = {"error": "internal server error", "finish_reason": "ERROR", "usage": None}
    return _event({"type": "message-end", "delta": delta})


def malformed() -> bytes:
    return b'event: content-delta\ndata: {"type": "content-delta", "index": 0, "delta": {"message": {"conte\n\n'


def frames(plan: Plan, prompt: Prompt, request_id: str) -> list[Frame]:
    start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    out = [Frame(_event({"type": "message-start", "id": request_id, "delta": {"message": start}}), "pre")]
    if plan.calls:
        # Before calling tools the model states its plan (tool-plan-delta), where it would otherwise think.
        for word in plan.reasoning if prompt.show_reasoning else []:
            out.append(Frame(_event({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": word}}}), "content"))
    elif plan.reasoning and prompt.show_reasoning:
        out += _block(0, "thinking", plan.reasoning)
    if plan.text:
        out += _block(1 if plan.reasoning and not plan.calls else 0, "text", plan.text)
    for n, call in enumerate(plan.calls):
        first = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        opening: dict[str, Any] = {"type": "tool-call-start", "index": n, "delta": {"message": {"tool_calls": first}}}
        out.append(Frame(_event(opening), "content"))
        for piece in split_json(call.arguments_json):
            pieces = {"message": {"tool_calls": {"function": {"arguments": piece}}}}
            out.append(Frame(_event({"type": "tool-call-delta", "index": n, "delta": pieces}), "content"))
        out.append(Frame(_event({"type": "tool-call-end", "index": n}), "pre"))
    end = {"finish_reason": _FINISH[plan.finish], "usage": usage(plan)}
    out.append(Frame(_event({"type": "message-end", "delta": end}), "final"))
    return out


def _block(index: int, kind: str, words: list[str]) -> list[Frame]:
    start = {"type": "content-start", "index": index, "delta": {"message": {"content": {"type": kind, kind: ""}}}}
    out = [Frame(_event(start), "pre")]
    for word in words:
        delta = {"message": {"content": {kind: word}}}
        out.append(Frame(_event({"type": "content-delta", "index": index, "delta": delta}), "content"))
    out.append(Frame(_event({"type": "content-end", "index": index}), "pre"))
    return out


def usage(plan: Plan) -> dict[str, Any]:
    # Cohere bills the prompt without the template it wraps it in: the raw input count is a little larger.
    billed = {"input_tokens": plan.input_tokens, "output_tokens": plan.output_tokens}
    raw = {"input_tokens": plan.input_tokens + 7, "output_tokens": plan.output_tokens}
    return {"billed_units": billed, "tokens": raw}


def complete(plan: Plan, prompt: Prompt, request_id: str) -> dict[str, Any]:
    """The non-streaming response."""
    content: list[dict[str, Any]] = []
    if plan.reasoning:
        content.append({"type": "thinking", "thinking": "".join(plan.reasoning)})
    if plan.text:
        content.append({"type": "text", "text": "".join(plan.text)})
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if plan.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in plan.calls
        ]
    return {"id": request_id, "finish_reason": _FINISH[plan.finish], "message": message, "usage": usage(plan)}
