"""Proto requests -> the pipeline's domain types, with validation (no grpc import here).

The other direction, pipeline events -> proto messages, is to_proto.py.

Validation collects every bad field at once and raises InvalidRequest with BadRequest field
violations named by path (`messages[2].role`, `tools[0].name`). Sizes, counts and nesting are held
to the config's RequestBounds (JSON depth checked by bounds.py); a request with too many messages or
tools is refused before any of them is looked at, so a flood of empty messages costs nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from gateway_service.api.bounds import DEFAULT_BOUNDS, json_problem, struct_problem
from gateway_service.config import RequestBounds
from gateway_service.domain import request as domain
from gateway_service.errors import InvalidRequest
from llmgateway.v1 import chat_service_pb2 as pb
from servicekit.auth import current_caller
from servicekit.errors import FieldViolation
from servicekit.ids import ID_RULE, valid_id

MESSAGE_ROLES = {  # chat message roles (servicekit's caller roles are another thing)
    pb.ROLE_SYSTEM: domain.Role.SYSTEM,
    pb.ROLE_USER: domain.Role.USER,
    pb.ROLE_ASSISTANT: domain.Role.ASSISTANT,
    pb.ROLE_TOOL: domain.Role.TOOL,
}
POLICIES = {
    pb.MID_STREAM_POLICY_UNSPECIFIED: domain.MidStreamPolicy.FAIL,
    pb.MID_STREAM_POLICY_FAIL: domain.MidStreamPolicy.FAIL,
    pb.MID_STREAM_POLICY_RESTART: domain.MidStreamPolicy.RESTART,
    pb.MID_STREAM_POLICY_CONTINUE: domain.MidStreamPolicy.CONTINUE,
}
TOOL_CHOICES = {
    pb.TOOL_CHOICE_MODE_UNSPECIFIED: None,
    pb.TOOL_CHOICE_MODE_AUTO: domain.ToolChoiceMode.AUTO,
    pb.TOOL_CHOICE_MODE_NONE: domain.ToolChoiceMode.NONE,
    pb.TOOL_CHOICE_MODE_REQUIRED: domain.ToolChoiceMode.REQUIRED,
    pb.TOOL_CHOICE_MODE_TOOL: domain.ToolChoiceMode.TOOL,
}
FORMATS = {
    pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED: domain.ResponseFormat.TEXT,
    pb.RESPONSE_FORMAT_TYPE_TEXT: domain.ResponseFormat.TEXT,
    pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: domain.ResponseFormat.JSON_OBJECT,
    pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: domain.ResponseFormat.JSON_SCHEMA,
}
EFFORTS = {
    pb.REASONING_EFFORT_UNSPECIFIED: None,
    pb.REASONING_EFFORT_NONE: domain.ReasoningEffort.NONE,
    pb.REASONING_EFFORT_MINIMAL: domain.ReasoningEffort.MINIMAL,
    pb.REASONING_EFFORT_LOW: domain.ReasoningEffort.LOW,
    pb.REASONING_EFFORT_MEDIUM: domain.ReasoningEffort.MEDIUM,
    pb.REASONING_EFFORT_HIGH: domain.ReasoningEffort.HIGH,
    pb.REASONING_EFFORT_XHIGH: domain.ReasoningEffort.XHIGH,
    pb.REASONING_EFFORT_MAX: domain.ReasoningEffort.MAX,
}

AnyChatRequest = pb.StreamChatRequest | pb.ChatRequest
MAX_URL_CHARS = 8192


def chat_request(
    message: AnyChatRequest, request_id: str, bounds: RequestBounds = DEFAULT_BOUNDS
) -> domain.ChatRequest:
    """The domain request, or InvalidRequest naming every bad field."""
    _raise_if_any(_counts(message, bounds))
    violations: list[FieldViolation] = _parts_bytes(message, bounds)
    if not message.model:
        violations.append(FieldViolation("model", "a route alias or provider/model is required"))
    if not message.messages:
        violations.append(FieldViolation("messages", "at least one message is required"))
    _check_ids(message, violations)
    _check_lengths(_short_texts(message), bounds.max_name_chars, violations)
    messages = tuple(_message(m, f"messages[{i}]", violations, bounds) for i, m in enumerate(message.messages))
    tools = tuple(_tool(t, f"tools[{i}]", violations, bounds) for i, t in enumerate(message.tools))
    _check_options(message, {t.name for t in tools}, violations, bounds)
    reasoning = _reasoning(message, violations) if message.HasField("reasoning") else None
    _raise_if_any(violations)
    is_stream = isinstance(message, pb.StreamChatRequest)
    return domain.ChatRequest(
        model=message.model,
        messages=messages,
        request_id=request_id,
        provider_order=tuple(message.provider_order),
        sampling=_sampling(message.sampling),
        max_output_tokens=message.max_output_tokens or None,
        tools=tools,
        tool_choice=TOOL_CHOICES.get(message.tool_choice.mode),
        tool_choice_name=message.tool_choice.tool_name,
        response_format=FORMATS.get(message.response_format.type, domain.ResponseFormat.TEXT),
        json_schema=_struct(message.response_format.json_schema)
        if message.response_format.HasField("json_schema")
        else None,
        schema_name=message.response_format.schema_name,
        user_id=message.user_id,
        caller=current_caller(),
        mid_stream_policy=POLICIES.get(message.mid_stream_policy, domain.MidStreamPolicy.FAIL),
        commit_window_ms=message.commit_window_ms if is_stream else 0,  # type: ignore[union-attr]
        commit_window_tokens=message.commit_window_tokens if is_stream else 0,  # type: ignore[union-attr]
        reasoning=reasoning,
    )


def _raise_if_any(violations: list[FieldViolation]) -> None:
    if violations:
        raise invalid_request(violations)


def invalid_request(violations: list[FieldViolation]) -> InvalidRequest:
    """The refusal naming every one of `violations` (at least one), the first in its message."""
    first = violations[0]
    return InvalidRequest(f"invalid request: {first.field}: {first.description}", field_violations=violations)


def _counts(message: AnyChatRequest, bounds: RequestBounds) -> list[FieldViolation]:
    """Violations of the count limits: checked first, so that no per-item work is done for a flood (a message of
    a million empty parts, tool calls or reasoning blocks took seconds of the event loop to be refused)."""
    counted = [
        ("messages", len(message.messages), bounds.max_messages),
        ("tools", len(message.tools), bounds.max_tools),
        ("sampling.stop_sequences", len(message.sampling.stop_sequences), bounds.max_list_items),
        ("provider_order", len(message.provider_order), bounds.max_list_items),
    ]
    for i, m in enumerate(message.messages[: bounds.max_messages]):
        counted += [
            (f"messages[{i}].parts", len(m.parts), bounds.max_parts),
            (f"messages[{i}].tool_calls", len(m.tool_calls), bounds.max_list_items),
            (f"messages[{i}].reasoning", len(m.reasoning), bounds.max_list_items),
        ]
    return [
        FieldViolation(path, f"at most {limit:,} entries (got {count:,})")
        for path, count, limit in counted
        if count > limit
    ]


def _parts_bytes(message: AnyChatRequest, bounds: RequestBounds) -> list[FieldViolation]:
    """The request's images and documents together against max_parts_bytes."""
    total = sum(
        len(p.image.data) + len(p.document.data) for m in message.messages[: bounds.max_messages] for p in m.parts
    )
    if total <= bounds.max_parts_bytes:
        return []
    return [FieldViolation("messages", f"images and documents of at most {bounds.max_parts_bytes:,} bytes together")]


def _check_ids(message: AnyChatRequest, violations: list[FieldViolation]) -> None:
    for name in ("request_id", "user_id"):
        value = getattr(message, name)
        if value and not valid_id(value):
            violations.append(FieldViolation(name, f"{ID_RULE}, or empty"))


def _short_texts(message: AnyChatRequest) -> Iterable[tuple[str, str]]:
    """Every name-like string of the request (not message text), by path."""
    yield "model", message.model
    yield "response_format.schema_name", message.response_format.schema_name
    yield "tool_choice.tool_name", message.tool_choice.tool_name
    yield from ((f"provider_order[{i}]", p) for i, p in enumerate(message.provider_order))
    yield from ((f"sampling.stop_sequences[{i}]", s) for i, s in enumerate(message.sampling.stop_sequences))


def _check_lengths(texts: Iterable[tuple[str, str]], limit: int, violations: list[FieldViolation]) -> None:
    too_long = f"at most {limit:,} characters"
    violations.extend(FieldViolation(path, too_long) for path, text in texts if len(text) > limit)


def _message(message: pb.Message, path: str, violations: list[FieldViolation], bounds: RequestBounds) -> domain.Message:
    role = MESSAGE_ROLES.get(message.role)
    if role is None:
        violations.append(FieldViolation(f"{path}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"))
        role = domain.Role.USER
    if role is domain.Role.TOOL and not message.tool_call_id:
        violations.append(FieldViolation(f"{path}.tool_call_id", "a tool message must name the call it answers"))
    if message.tool_calls and role is not domain.Role.ASSISTANT:
        violations.append(FieldViolation(f"{path}.tool_calls", "only assistant messages carry tool calls"))
    parts = _parts(message, role, path, violations, bounds) if message.parts else ()
    if role in (domain.Role.SYSTEM, domain.Role.USER) and not message.content and not parts:
        violations.append(FieldViolation(f"{path}.content", "must not be empty"))
    _check_message_sizes(message, path, violations, bounds)
    calls = []
    for j, call in enumerate(message.tool_calls[: bounds.max_list_items]):
        if not call.id or not call.name:
            violations.append(FieldViolation(f"{path}.tool_calls[{j}]", "id and name are required"))
        arguments = call.arguments_json or "{}"
        problem = json_problem(arguments, bounds.max_json_depth) if len(arguments) <= bounds.max_text_chars else None
        if problem is not None:
            violations.append(FieldViolation(f"{path}.tool_calls[{j}].arguments_json", problem))
        calls.append(domain.ToolCall(call.id, call.name, arguments))
    reasoning = tuple(domain.Reasoning(r.text, r.signature, r.redacted_data) for r in message.reasoning)
    content = "".join(p.text for p in parts if isinstance(p, domain.TextPart)) if parts else message.content
    return domain.Message(role, content, tuple(calls), message.tool_call_id, message.name, reasoning, parts)


IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
DOCUMENT_TYPES = frozenset({"application/pdf"})
CACHE_TTLS_S = (0, 300, 3600)  # the provider's default, Anthropic's 5 minutes and 1 hour


def _parts(
    message: pb.Message, role: domain.Role, path: str, violations: list[FieldViolation], bounds: RequestBounds
) -> tuple[domain.Part, ...]:
    """The message's parts, each checked: its kind for the role, media type, URL, size and cache hint."""
    if message.content:
        violations.append(FieldViolation(f"{path}.content", "must be empty when parts are given"))
    if len(message.parts) > bounds.max_parts:
        violations.append(FieldViolation(f"{path}.parts", f"at most {bounds.max_parts:,} entries"))
        return ()
    parts: list[domain.Part] = []
    for j, part in enumerate(message.parts):
        where = f"{path}.parts[{j}]"
        kind = part.WhichOneof("kind")
        cache = _cache(part, where, violations)
        if kind == "text":
            if not part.text:  # Anthropic refuses an empty text block: a 400 from the provider, not failover
                violations.append(FieldViolation(f"{where}.text", "must not be empty"))
            _check_lengths([(f"{where}.text", part.text)], bounds.max_text_chars, violations)
            parts.append(domain.TextPart(part.text, cache))
            continue
        if kind is None:
            violations.append(FieldViolation(where, "set one of text, image, document"))
            continue
        if role is not domain.Role.USER:
            violations.append(FieldViolation(where, f"{kind} parts go in user messages only"))
            continue
        media: domain.Part
        if kind == "image":
            media = _image(part.image, f"{where}.image", violations, bounds)
        else:
            media = _document(part.document, f"{where}.document", violations, bounds)
        parts.append(dataclasses.replace(media, cache=cache))
    return tuple(parts)


def _cache(part: pb.Part, where: str, violations: list[FieldViolation]) -> domain.CacheHint | None:
    if part.cache == pb.CACHE_UNSPECIFIED:
        if part.cache_ttl_s:
            violations.append(FieldViolation(f"{where}.cache_ttl_s", "needs cache: CACHE_EPHEMERAL"))
        return None
    if part.cache != pb.CACHE_EPHEMERAL:
        violations.append(FieldViolation(f"{where}.cache", "unknown cache hint"))
        return None
    if part.cache_ttl_s not in CACHE_TTLS_S:
        violations.append(FieldViolation(f"{where}.cache_ttl_s", "must be 0 (the default), 300 or 3600"))
    return domain.CacheHint(part.cache_ttl_s)


def _image(image: pb.Image, where: str, violations: list[FieldViolation], bounds: RequestBounds) -> domain.ImagePart:
    source = image.WhichOneof("source")
    if source == "url":
        if not image.url.startswith("https://") or len(image.url) > MAX_URL_CHARS:
            violations.append(FieldViolation(f"{where}.url", f"an https:// URL of at most {MAX_URL_CHARS} characters"))
        if image.media_type and image.media_type not in IMAGE_TYPES:
            violations.append(FieldViolation(f"{where}.media_type", f"one of {', '.join(sorted(IMAGE_TYPES))}"))
        return domain.ImagePart(url=image.url, media_type=image.media_type)
    if source is None or not image.data:
        violations.append(FieldViolation(where, "set data (with media_type) or url"))
    elif len(image.data) > bounds.max_part_bytes:
        violations.append(FieldViolation(f"{where}.data", f"at most {bounds.max_part_bytes:,} bytes"))
    if image.media_type not in IMAGE_TYPES:
        violations.append(FieldViolation(f"{where}.media_type", f"one of {', '.join(sorted(IMAGE_TYPES))}"))
    return domain.ImagePart(data=image.data, media_type=image.media_type)


def _document(
    document: pb.Document, where: str, violations: list[FieldViolation], bounds: RequestBounds
) -> domain.DocumentPart:
    if not document.data:
        violations.append(FieldViolation(f"{where}.data", "must not be empty"))
    elif len(document.data) > bounds.max_part_bytes:
        violations.append(FieldViolation(f"{where}.data", f"at most {bounds.max_part_bytes:,} bytes"))
    if document.media_type not in DOCUMENT_TYPES:
        violations.append(FieldViolation(f"{where}.media_type", "must be application/pdf"))
    _check_lengths([(f"{where}.name", document.name)], bounds.max_name_chars, violations)
    return domain.DocumentPart(document.data, document.media_type, document.name)


def _check_message_sizes(
    message: pb.Message, path: str, violations: list[FieldViolation], bounds: RequestBounds
) -> None:
    lists = (("tool_calls", len(message.tool_calls)), ("reasoning", len(message.reasoning)))
    violations.extend(
        FieldViolation(f"{path}.{name}", f"at most {bounds.max_list_items} entries")
        for name, count in lists
        if count > bounds.max_list_items
    )
    _check_lengths(
        [(f"{path}.name", message.name), (f"{path}.tool_call_id", message.tool_call_id)]
        + [
            (f"{path}.tool_calls[{j}].{f}", getattr(c, f))
            for j, c in enumerate(message.tool_calls[:64])
            for f in ("id", "name")
        ],
        bounds.max_name_chars,
        violations,
    )
    texts = [(f"{path}.content", message.content)]
    texts += [(f"{path}.tool_calls[{j}].arguments_json", c.arguments_json) for j, c in enumerate(message.tool_calls)]
    for j, r in enumerate(message.reasoning[: bounds.max_list_items]):
        texts += [(f"{path}.reasoning[{j}].{f}", getattr(r, f)) for f in ("text", "signature", "redacted_data")]
    _check_lengths(texts, bounds.max_text_chars, violations)


def _tool(tool: pb.Tool, path: str, violations: list[FieldViolation], bounds: RequestBounds) -> domain.Tool:
    if not tool.name:
        violations.append(FieldViolation(f"{path}.name", "a tool needs a name"))
    _check_lengths([(f"{path}.name", tool.name)], bounds.max_name_chars, violations)
    _check_lengths([(f"{path}.description", tool.description)], bounds.max_text_chars, violations)
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    if tool.HasField("parameters"):
        problem = struct_problem(tool.parameters, bounds.max_json_depth)
        if problem is None:
            parameters = _struct(tool.parameters)
        else:
            violations.append(FieldViolation(f"{path}.parameters", problem))
    return domain.Tool(tool.name, tool.description, parameters)


def _check_options(
    message: AnyChatRequest, tool_names: set[str], violations: list[FieldViolation], bounds: RequestBounds
) -> None:
    sampling = message.sampling
    if sampling.HasField("temperature") and not 0.0 <= sampling.temperature <= 2.0:
        violations.append(FieldViolation("sampling.temperature", "must be between 0 and 2"))
    if sampling.HasField("top_p") and not 0.0 < sampling.top_p <= 1.0:
        violations.append(FieldViolation("sampling.top_p", "must be in (0, 1]"))
    if sampling.HasField("top_k") and sampling.top_k < 1:
        violations.append(FieldViolation("sampling.top_k", "must be at least 1"))
    if message.max_output_tokens < 0:
        violations.append(FieldViolation("max_output_tokens", "must not be negative"))
    if message.mid_stream_policy not in POLICIES:
        violations.append(FieldViolation("mid_stream_policy", "unknown policy"))
    if message.tool_choice.mode == pb.TOOL_CHOICE_MODE_TOOL and message.tool_choice.tool_name not in tool_names:
        violations.append(FieldViolation("tool_choice.tool_name", "must name one of the request's tools"))
    if message.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA and not message.response_format.HasField(
        "json_schema"
    ):
        violations.append(
            FieldViolation("response_format.json_schema", "required for RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
        )
    if message.response_format.HasField("json_schema"):
        # Checked whatever the format type: the schema is mapped (and may be sent) even with TEXT.
        problem = struct_problem(message.response_format.json_schema, bounds.max_json_depth)
        if problem is not None:
            violations.append(FieldViolation("response_format.json_schema", problem))


def _reasoning(message: AnyChatRequest, violations: list[FieldViolation]) -> domain.ReasoningOptions:
    given = message.reasoning
    if given.effort not in EFFORTS:
        violations.append(FieldViolation("reasoning.effort", "unknown effort"))
    options = domain.ReasoningOptions(
        effort=EFFORTS.get(given.effort),
        budget_tokens=given.budget_tokens or None,
        include_text=given.include_reasoning if given.HasField("include_reasoning") else True,
    )
    for path, problem in _reasoning_problems(options, given.budget_tokens, message):
        violations.append(FieldViolation(path, problem))
    return options


def _reasoning_problems(
    options: domain.ReasoningOptions, budget: int, message: AnyChatRequest
) -> list[tuple[str, str]]:
    # max_output_tokens bounds reasoning and answer together, as every provider counts it.
    least = domain.MIN_REASONING_BUDGET
    limit = message.max_output_tokens
    problems = []
    if budget < 0 or 0 < budget < least:
        problems.append(("reasoning.budget_tokens", f"must be 0 (derive from effort) or at least {least}"))
    if budget and options.disabled:
        problems.append(("reasoning.budget_tokens", "must be 0 when effort is REASONING_EFFORT_NONE"))
    if budget and 0 < limit <= budget:
        problems.append(("reasoning.budget_tokens", "must be below max_output_tokens, which includes reasoning"))
    if options.enabled and not budget and 0 < limit <= least:
        problems.append(("max_output_tokens", f"must exceed {least} when reasoning is requested"))
    if options.enabled and message.mid_stream_policy == pb.MID_STREAM_POLICY_CONTINUE:
        # The continuation is an assistant prefill, which Anthropic refuses while thinking.
        problems.append(("mid_stream_policy", "CONTINUE cannot be combined with reasoning; use RESTART or FAIL"))
    return problems


def _sampling(sampling: pb.SamplingOptions) -> domain.Sampling:
    return domain.Sampling(
        temperature=sampling.temperature if sampling.HasField("temperature") else None,
        top_p=sampling.top_p if sampling.HasField("top_p") else None,
        top_k=sampling.top_k if sampling.HasField("top_k") else None,
        stop_sequences=tuple(sampling.stop_sequences),
        seed=sampling.seed if sampling.HasField("seed") else None,
        presence_penalty=sampling.presence_penalty if sampling.HasField("presence_penalty") else None,
        frequency_penalty=sampling.frequency_penalty if sampling.HasField("frequency_penalty") else None,
    )


def _struct(struct: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(struct)
    return result
