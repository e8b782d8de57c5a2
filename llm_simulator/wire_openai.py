"""OpenAI Chat Completions wire format (POST /v1/chat/completions), as documented by OpenAI.

Stream: a role chunk, one chunk per word (or reasoning_content / tool_calls
fragment), a chunk with `finish_reason`, then, when `stream_options.include_usage`
is set, a usage chunk with empty `choices`, then `data: [DONE]`.

Reasoning: models named like OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...) behave
like OpenAI, which never streams reasoning text in Chat Completions and reports only
`completion_tokens_details.reasoning_tokens`; any other model streams it as `reasoning_content`,
as DeepSeek and vLLM do. `reasoning_effort` is checked against the values OpenAI documents.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any
from urllib.parse import quote

from llm_simulator.faults import Fault
from llm_simulator.plan import Plan, Prompt, split_json
from llm_simulator.wire import Frame, retry_headers, sse

REQUEST_ID_HEADER = "x-request-id"
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_OPENAI_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")


def parse(body: dict[str, Any], path_model: str = "", path_stream: bool | None = None) -> Prompt:
    messages = [(str(m.get("role")), _content(m.get("content"))) for m in body.get("messages", [])]
    messages = [("system" if role == "developer" else role, text) for role, text in messages]
    fmt = (body.get("response_format") or {}).get("type", "text")
    stop = body.get("stop") or []
    effort = body.get("reasoning_effort")
    model = str(body.get("model", ""))
    return Prompt(
        api="openai",
        model=model,
        stream=bool(body.get("stream")),
        messages=messages,
        tool_names=[t["function"]["name"] for t in body.get("tools") or []],
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        stop=[stop] if isinstance(stop, str) else list(stop),
        json_mode=fmt in ("json_object", "json_schema"),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        thinking=None if effort is None else effort != "none",
        show_reasoning=not _OPENAI_REASONING_MODEL.match(model),
        rejection=""
        if effort is None or effort in _EFFORTS
        else (f"Invalid value: '{effort}'. Supported values are: {', '.join(repr(e) for e in _EFFORTS)}."),
    )


def _content(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def error(fault: Fault, prompt: Prompt, api_key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = retry_headers(fault)
    status, message, etype, code = _error_fields(fault, prompt, api_key)
    return status, {"error": {"message": message, "type": etype, "param": None, "code": code}}, headers


def echo_key(key: str, form: str) -> str:
    """The key as a hostile upstream might print it (`echo=` of the 401 fault); the gateway must scrub each."""
    forms = {
        "raw": key,
        "urlencoded": quote(key, safe=""),
        "base64": base64.b64encode(key.encode()).decode(),
        "basic": base64.b64encode(f"user:{key}".encode()).decode(),  # inside a larger encoded value
        "masked": f"{key[:7]}{'*' * 24}{key[-4:]}",
        "reversed": key[::-1],
        "spaced": " ".join(key),
        "upper": key.upper(),
        "hex": key.encode().hex(),
    }
    return forms[form]


def _error_fields(fault: Fault, prompt: Prompt, api_key: str) -> tuple[int, str, str, str | None]:
    model = prompt.model
    if fault.kind == "429":
        return (
            429,
            f"Rate limit reached for {model} on requests per min (RPM): Limit 3.",
            "requests",
            ("rate_limit_exceeded"),
        )
    if fault.kind == "quota":
        msg = "You exceeded your current quota, please check your plan and billing details."
        return 429, msg, "insufficient_quota", "insufficient_quota"
    if fault.kind == "context":
        msg = "This model's maximum context length is 128000 tokens. However, your messages resulted in 130412 tokens."
        return 400, msg, "invalid_request_error", "context_length_exceeded"
    if fault.kind == "auth" and fault.status == 401:
        # Like a careless upstream, echo the key: the gateway must scrub it.
        echoed = echo_key(api_key, fault.options.get("echo", "raw"))
        return 401, f"Incorrect API key provided: {echoed}.", "invalid_request_error", "invalid_api_key"
    if fault.kind == "auth":
        return 403, "Project does not have access to this model.", "invalid_request_error", "model_not_found"
    if fault.kind == "invalid" and prompt.rejection:
        return 400, prompt.rejection, "invalid_request_error", "invalid_value"
    if fault.kind == "invalid":
        return 400, "Invalid value for 'temperature': must be between 0 and 2.", "invalid_request_error", None
    if fault.kind == "overloaded":
        return fault.status or 503, "The engine is currently overloaded, please try again later.", "server_error", None
    return fault.status, "The server had an error while processing your request.", "server_error", None


def stream_error(fault: Fault) -> bytes:
    """An error object inside a 200 stream (what the SDK raises as APIError)."""
    etype = fault.error_type or "server_error"
    return sse(
        {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": etype,
                "param": None,
                "code": etype,
            }
        }
    )


def malformed() -> bytes:
    return b'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": "oo\n\n'


def frames(plan: Plan, prompt: Prompt, request_id: str) -> list[Frame]:
    base = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": prompt.model,
        "system_fingerprint": "fp_sim",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**base, "choices": [choice], "usage": None})

    out = [Frame(chunk({"role": "assistant", "content": ""}), "pre")]
    if prompt.show_reasoning:
        out += [Frame(chunk({"reasoning_content": word}), "content") for word in plan.reasoning]
    out += [Frame(chunk({"content": word}), "content") for word in plan.text]
    for index, call in enumerate(plan.calls):
        first = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        out.append(Frame(chunk({"tool_calls": [first]}), "content"))
        for piece in split_json(call.arguments_json):
            out.append(Frame(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}), "content"))
    out.append(Frame(chunk({}, plan.finish), "final"))
    if prompt.include_usage:
        out.append(Frame(sse({**base, "choices": [], "usage": usage(plan)}), "final"))
    out.append(Frame(b"data: [DONE]\n\n", "final"))
    return out


def usage(plan: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": len(plan.reasoning), "audio_tokens": 0},
    }


def complete(plan: Plan, prompt: Prompt, request_id: str) -> dict[str, Any]:
    """The non-streaming response."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.text) or None, "refusal": None}
    if plan.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in plan.calls
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish}
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": prompt.model,
        "choices": [choice],
        "usage": usage(plan),
    }
