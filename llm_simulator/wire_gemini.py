"""Gemini API wire format: POST /{version}/models/{model}:streamGenerateContent?alt=sse and :generateContent.

Stream (alt=sse): `data: {GenerateContentResponse}` chunks, each with candidates
and usageMetadata; the last carries `finishReason`. There is no [DONE]: the body
just ends. Errors are `{"error": {"code", "message", "status", "details"}}`; the
retry delay of a 429 is in details (`google.rpc.RetryInfo.retryDelay`), not a header.

`generationConfig.thinkingConfig`: thinkingBudget 0 turns thinking off, -1 or 1..32768 turn it
on (anything else is a 400); thinkingLevel (MINIMAL, LOW, MEDIUM, HIGH, XHIGH, any case) turns it
on instead of a budget, never together with one (a 400), MINIMAL being "no thinking for most
queries": the simulated model then reasons only for a `[[think:...]]` marker. Thought parts
(`thought: true`) are sent only with includeThoughts, and usageMetadata.thoughtsTokenCount counts
the thinking either way. Without a thinkingConfig a `[[think:...]]` marker's thoughts are sent.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from llm_simulator.faults import Fault
from llm_simulator.plan import Plan, Prompt
from llm_simulator.wire import Frame, signature, sse

REQUEST_ID_HEADER = "x-goog-request-id"
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
_MAX_BUDGET = 32768
_LEVELS = ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH")
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def parse(body: dict[str, Any], path_model: str = "", path_stream: bool | None = None) -> Prompt:
    messages = []
    if body.get("systemInstruction"):
        messages.append(("system", _text(body["systemInstruction"].get("parts", []))))
    for content in body.get("contents", []):
        parts = content.get("parts", [])
        if any("functionResponse" in p for p in parts):
            results = [_result(p["functionResponse"]) for p in parts if "functionResponse" in p]
            messages.append(("tool", " ".join(results)))
        else:
            messages.append(("assistant" if content.get("role") == "model" else "user", _text(parts)))
    config = body.get("generationConfig") or {}
    thinking = config.get("thinkingConfig")
    declarations = [d["name"] for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    return Prompt(
        api="gemini",
        model=path_model,
        stream=bool(path_stream),
        messages=messages,
        tool_names=declarations,
        max_tokens=config.get("maxOutputTokens"),
        stop=list(config.get("stopSequences") or []),
        json_mode=config.get("responseMimeType") == "application/json",
        include_usage=True,
        **(_thinking(thinking) if thinking is not None else {}),
    )


def _thinking(config: dict[str, Any]) -> dict[str, Any]:
    # The API's JSON mapping takes proto field names as well as lowerCamelCase; google-genai sends the former here.
    budget = config.get("thinkingBudget", config.get("thinking_budget"))
    level = config.get("thinkingLevel", config.get("thinking_level"))
    fields: dict[str, Any] = {"show_reasoning": bool(config.get("includeThoughts", config.get("include_thoughts")))}
    if level is not None:
        fields.update(_level(level, budget))
    elif budget is not None:
        fields["thinking"] = budget != 0
        if not isinstance(budget, int) or not -1 <= budget <= _MAX_BUDGET:
            fields["rejection"] = (
                f"Invalid value at 'generation_config.thinking_config.thinking_budget': the budget "
                f"must be -1 (dynamic) or between 0 and {_MAX_BUDGET}."
            )
    return fields


def _level(level: Any, budget: Any) -> dict[str, Any]:
    if budget is not None:
        return {"rejection": "thinking_budget and thinking_level are not supported together; set only one."}
    name = level.upper() if isinstance(level, str) else ""
    if name not in _LEVELS:
        return {
            "rejection": f"Invalid value at 'generation_config.thinking_config.thinking_level' "
            f"(type.googleapis.com/google.ai.generativelanguage.v1beta.ThinkingLevel), {level!r}"
        }
    return {"thinking": True if name not in ("MINIMAL", "THINKING_LEVEL_UNSPECIFIED") else None}


def _result(function_response: dict[str, Any]) -> str:
    response = function_response.get("response") or {}
    value = response.get("result", response) if isinstance(response, dict) else response
    return value if isinstance(value, str) else json.dumps(value)


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(str(p.get("text", "")) for p in parts if not p.get("thought"))


def error(fault: Fault, prompt: Prompt, api_key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    status, message, details = _fields(fault, prompt, api_key)
    body = {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN"), "details": details}}
    return status, body, {}


def _fields(fault: Fault, prompt: Prompt, api_key: str) -> tuple[int, str, list[dict[str, Any]]]:
    if fault.kind in ("429", "quota"):
        delay = fault.retry_after if fault.retry_after is not None else (fault.retry_after_ms or 0) / 1000
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    }
                ],
            }
        ]
        if fault.kind == "429" and (fault.retry_after is not None or fault.retry_after_ms is not None):
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay:g}s"})
        if fault.kind == "quota":
            return 429, "Your prepayment credits are depleted. Please go to AI Studio to manage your billing.", details
        return 429, "You exceeded your current quota, please check your plan and billing details.", details
    if fault.kind == "context":
        return 400, "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", []
    if fault.kind == "auth" and fault.status == 401:
        # The real API answers a bad key with 400 INVALID_ARGUMENT and reason API_KEY_INVALID.
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        return 400, f"API key not valid. Please pass a valid API key. ({api_key})", [info]
    if fault.kind == "auth":
        return 403, "Method doesn't allow unregistered callers.", []
    if fault.kind == "invalid":
        return 400, prompt.rejection or "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"x\"", []
    if fault.kind == "overloaded":
        return 503, "The model is overloaded. Please try again later.", []
    return fault.status, "An internal error has occurred.", []


def stream_error(fault: Fault) -> bytes:
    return sse(
        {"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}
    )


def malformed() -> bytes:
    return b'data: {"candidates": [{"content": {"parts": [{"text": "oo\n\n'


def frames(plan: Plan, prompt: Prompt, request_id: str) -> list[Frame]:
    out: list[Frame] = []
    for word in plan.reasoning if prompt.show_reasoning else []:
        out.append(Frame(sse(_chunk(prompt, plan, request_id, [{"text": word, "thought": True}])), "content"))
    for word in plan.text:
        out.append(Frame(sse(_chunk(prompt, plan, request_id, [{"text": word}])), "content"))
    calls = _call_parts(plan)
    if calls:
        out.append(Frame(sse(_chunk(prompt, plan, request_id, calls)), "content"))
    last = _chunk(prompt, plan, request_id, [{"text": ""}], finish=_FINISH[plan.finish])
    out.append(Frame(sse(last), "final"))
    return out


def _call_parts(plan: Plan) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for n, call in enumerate(plan.calls):
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": json.loads(call.arguments_json)}}
        if n == 0 and plan.reasoning:
            # Thinking models attach the signature to the first function call part.
            part["thoughtSignature"] = base64.b64encode(signature("".join(plan.reasoning)).encode()).decode()
        parts.append(part)
    return parts


def _chunk(
    prompt: Prompt, plan: Plan, request_id: str, parts: list[dict[str, Any]], finish: str | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    usage = {"promptTokenCount": plan.input_tokens, "totalTokenCount": plan.input_tokens + plan.output_tokens}
    if finish:
        usage["candidatesTokenCount"] = plan.output_tokens - len(plan.reasoning)
        if plan.reasoning:
            usage["thoughtsTokenCount"] = len(plan.reasoning)
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": prompt.model, "responseId": request_id}


def complete(plan: Plan, prompt: Prompt, request_id: str) -> dict[str, Any]:
    shown = plan.reasoning and prompt.show_reasoning
    parts: list[dict[str, Any]] = [{"text": "".join(plan.reasoning), "thought": True}] if shown else []
    parts += [{"text": "".join(plan.text)}] if plan.text else []
    parts += _call_parts(plan)
    return _chunk(prompt, plan, request_id, parts, finish=_FINISH[plan.finish])
