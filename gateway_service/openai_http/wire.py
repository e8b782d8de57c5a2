"""OpenAI Chat Completions requests -> the gateway's chat request, through the same validation as gRPC.

The body is parsed and shaped by pydantic (JSON by pydantic-core, never by hand): wrong types, unknown
roles or part types are refused naming the parameter (`messages[2].content[0].type`). What passes is
written as the gRPC `StreamChatRequest` it means and goes through api/from_proto.py, so both faces keep
the same bounds and the same rules (RequestBounds, tool names, reasoning budgets); a violation found
there is reported under the OpenAI parameter's name (`max_output_tokens` -> `max_completion_tokens`).

Accepted and ignored, as the OpenAI API documents them as hints: `parallel_tool_calls`, `store`,
`metadata`, `service_tier`, `logit_bias` when empty. Content parts become the gateway's message parts:
`text`; `image_url` with an https URL (passed on, never fetched) or a `data:` URL (its bytes); `file` with
`file_data` as a `data:` URL of a PDF. Refused with 400 naming the parameter, rather than silently
answered differently: `n` other than 1, a non-empty `logit_bias`, `logprobs`/`top_logprobs`, `audio`,
`modalities` other than text, `prediction`, `web_search_options`, `input_audio` parts and `file_id` (the
gateway keeps no files).
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any, Literal

from google.protobuf import struct_pb2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway_service.api import from_proto
from gateway_service.config import RequestBounds
from gateway_service.domain.request import ChatRequest
from gateway_service.errors import InvalidRequest
from llmgateway.v1 import chat_service_pb2 as pb
from servicekit.errors import FieldViolation

# Numbers as the gRPC request holds them: a JSON number past them is a 400 naming it, not a protobuf ValueError.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Double = Annotated[float, Field(allow_inf_nan=False)]


class _Loose(BaseModel):
    """A part of the body: fields OpenAI may add later are ignored, the ones read are typed strictly."""

    model_config = ConfigDict(extra="ignore", strict=True)


class CacheControl(_Loose):
    """Anthropic's prompt-cache mark on a part, as LiteLLM and OpenRouter take it in OpenAI-format bodies."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextPart(_Loose):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class ImageUrl(_Loose):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(_Loose):
    type: Literal["image_url"]
    image_url: ImageUrl
    cache_control: CacheControl | None = None


class FileData(_Loose):
    file_data: str | None = None  # a data: URL of the file's bytes
    filename: str = ""
    file_id: str | None = None  # a file uploaded to OpenAI: the gateway has no files


class FilePart(_Loose):
    type: Literal["file"]
    file: FileData
    cache_control: CacheControl | None = None


class OtherPart(_Loose):
    type: Literal["input_audio", "refusal"]


Part = Annotated[TextPart | ImageUrlPart | FilePart | OtherPart, Field(discriminator="type")]


class FunctionCall(_Loose):
    name: str
    arguments: str = ""


class ToolCallIn(_Loose):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class MessageIn(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str = ""
    tool_calls: list[ToolCallIn] = []
    tool_call_id: str = ""


class FunctionDef(_Loose):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


class ToolIn(_Loose):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Loose):
    name: str


class NamedToolChoice(_Loose):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Loose):
    name: str = ""
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_Loose):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatCompletionRequest(_Loose):
    """The Chat Completions body as the gateway reads it (https://platform.openai.com/docs/api-reference/chat)."""

    model: str
    messages: list[MessageIn]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: Int32 | None = None
    max_tokens: Int32 | None = None  # the older name; max_completion_tokens wins
    temperature: Double | None = None
    top_p: Double | None = None
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    presence_penalty: Double | None = None
    frequency_penalty: Double | None = None
    tools: list[ToolIn] = []
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormatIn | None = None
    user: str = ""
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    logit_bias: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


ROLES = {
    "system": pb.ROLE_SYSTEM,
    "developer": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
CHOICES = {"auto": pb.TOOL_CHOICE_MODE_AUTO, "none": pb.TOOL_CHOICE_MODE_NONE, "required": pb.TOOL_CHOICE_MODE_REQUIRED}
FORMATS = {
    "text": pb.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
EFFORTS = {
    "none": pb.REASONING_EFFORT_NONE,
    "minimal": pb.REASONING_EFFORT_MINIMAL,
    "low": pb.REASONING_EFFORT_LOW,
    "medium": pb.REASONING_EFFORT_MEDIUM,
    "high": pb.REASONING_EFFORT_HIGH,
    "xhigh": pb.REASONING_EFFORT_XHIGH,
}
# The gRPC request's field paths that have another name in the OpenAI body (prefixes, longest first).
OPENAI_NAMES = (
    ("max_output_tokens", "max_completion_tokens"),
    ("sampling.stop_sequences", "stop"),
    ("sampling.", ""),
    ("user_id", "user"),
    ("reasoning.effort", "reasoning_effort"),
    ("response_format.json_schema", "response_format.json_schema.schema"),
    ("response_format.schema_name", "response_format.json_schema.name"),
    ("tool_choice.tool_name", "tool_choice.function.name"),
    ("tools[", "tools["),
)


# Names inside a message (a gRPC image part is an OpenAI image_url part, a document a file part).
PART_NAMES = {
    "].arguments_json": "].function.arguments",
    ".parts[": ".content[",
    ".parts": ".content",  # the list itself (too many parts)
    ".image.url": ".image_url.url",
    ".image.media_type": ".image_url.url",
    ".image.data": ".image_url.url",
    ".image": ".image_url",
    ".document.name": ".file.filename",
    ".document.data": ".file.file_data",
    ".document.media_type": ".file.file_data",
    ".document": ".file",
}
_PART_PATHS = re.compile("|".join(re.escape(k) for k in sorted(PART_NAMES, key=len, reverse=True)))


def parse(body: bytes, request_id: str, bounds: RequestBounds) -> tuple[ChatCompletionRequest, ChatRequest]:
    """The body as read and as the pipeline's request; InvalidRequest naming every bad parameter."""
    try:
        wanted = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise from_proto.invalid_request(_violations(exc.errors(include_url=False))) from None
    decoded: Decoded = {}
    unsupported = _unsupported(wanted, decoded)
    if unsupported:
        raise from_proto.invalid_request(unsupported)
    message = _as_proto(wanted, decoded)
    try:
        chat = from_proto.chat_request(message, request_id, bounds)
    except InvalidRequest as exc:
        raise in_openai_names(exc) from None
    return wanted, chat


def in_openai_names(error: InvalidRequest) -> InvalidRequest:
    """The same refusal with its fields named as the OpenAI body names them (the pipeline names gRPC fields)."""
    violations = [FieldViolation(openai_name(v.field), v.description) for v in error.field_violations]
    renamed = from_proto.invalid_request(violations) if violations else InvalidRequest(error.message)
    renamed.metadata = error.metadata
    if violations and not error.message.startswith("invalid request: "):
        renamed.message = error.message
    return renamed


def openai_name(path: str) -> str:
    """A gRPC request field path as the OpenAI body names it (`tools[0].parameters` -> its function's)."""
    for ours, theirs in OPENAI_NAMES:
        if path.startswith(ours):
            path = theirs + path[len(ours) :]
            break
    if path.startswith("tools["):
        index, _, rest = path.partition("].")
        path = f"{index}].function.{rest}" if rest else path
    return _PART_PATHS.sub(lambda m: PART_NAMES[m.group(0)], path)


def _violations(errors: list[Any]) -> list[FieldViolation]:
    """Pydantic's errors as body parameters, one per parameter and the deepest one where a union tried several
    members (`content` is a string or a list of parts: a bad part is reported, not "should be a string")."""
    found: dict[str, FieldViolation] = {}
    for error in errors:
        violation = _violation(error)
        found.setdefault(violation.field, violation)
    paths = list(found)
    return [v for p, v in found.items() if not any(o.startswith((f"{p}[", f"{p}.")) for o in paths)]


# What pydantic puts in an error's location besides the parameters: the union member or tagged branch it tried.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "NamedToolChoice"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})


def _violation(error: Any) -> FieldViolation:
    if error["type"] == "json_invalid":
        return FieldViolation("body", "is not valid JSON")
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS or any(c in part for c in "[('"):
            continue
        elif part in _PART_TYPES and path.endswith("]") and ".content[" in path:
            continue
        else:
            path += f".{part}" if path else part
    if error["type"] == "model_type" and not path:
        return FieldViolation("body", "must be a JSON object")
    return FieldViolation(path or "body", str(error["msg"]))


# The bytes of each part's `data:` URL, by id() of its part: decoded once, while checked.
Decoded = dict[int, tuple[str, bytes]]


def _unsupported(wanted: ChatCompletionRequest, decoded: Decoded) -> list[FieldViolation]:
    """What the gateway refuses to answer differently than asked; fills `decoded` with the parts' data: URLs."""
    refused = []
    if wanted.n not in (None, 1):
        refused.append(FieldViolation("n", "only n=1 is supported: ask again for another choice"))
    if wanted.logit_bias:
        refused.append(FieldViolation("logit_bias", "token biases are not supported by the gateway"))
    if wanted.logprobs or wanted.top_logprobs:
        refused.append(FieldViolation("logprobs", "log probabilities are not supported by the gateway"))
    for name in ("audio", "prediction", "web_search_options"):
        if getattr(wanted, name) is not None:
            refused.append(FieldViolation(name, "not supported by the gateway"))
    if wanted.modalities is not None and wanted.modalities != ["text"]:
        refused.append(FieldViolation("modalities", 'only ["text"] is supported'))
    for i, message in enumerate(wanted.messages):
        for j, part in enumerate(message.content if isinstance(message.content, list) else ()):
            where = f"messages[{i}].content[{j}]"
            if isinstance(part, OtherPart):
                refused.append(FieldViolation(f"{where}.type", f"{part.type} parts are not supported"))
            elif isinstance(part, FilePart) and part.file.file_data is None:
                refused.append(
                    FieldViolation(
                        f"{where}.file.file_data", "give the file as a data: URL (file_id: the gateway keeps no files)"
                    )
                )
            elif isinstance(part, FilePart) and not _decode(part, part.file.file_data, decoded):
                refused.append(FieldViolation(f"{where}.file.file_data", "must be a data:<media type>;base64, URL"))
            elif (
                isinstance(part, ImageUrlPart)
                and part.image_url.url.startswith("data:")
                and not _decode(part, part.image_url.url, decoded)
            ):
                refused.append(FieldViolation(f"{where}.image_url.url", "a data: URL must be base64"))
    return refused


def _decode(part: object, url: str | None, decoded: Decoded) -> bool:
    """Whether `url` is a base64 data: URL; its media type and bytes kept in `decoded` for `part` when it is."""
    found = _decoded(url) if url is not None else None
    if found is not None:
        decoded[id(part)] = found
    return found is not None


def _decoded(url: str) -> tuple[str, bytes] | None:
    """(media type, bytes) of a base64 `data:` URL (RFC 2397), None for anything else."""
    head, comma, data = url.partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        return None
    try:
        return head[len("data:") : -len(";base64")], base64.b64decode(data, validate=True)
    except ValueError:
        return None


def _as_proto(wanted: ChatCompletionRequest, decoded: Decoded) -> pb.StreamChatRequest:
    message = pb.StreamChatRequest(model=wanted.model, user_id=wanted.user)
    for given in wanted.messages:
        message.messages.append(_message(given, decoded))
    limit = wanted.max_completion_tokens if wanted.max_completion_tokens is not None else wanted.max_tokens
    if limit is not None:
        message.max_output_tokens = limit
    sampling = message.sampling
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed"):
        value = getattr(wanted, name)
        if value is not None:
            setattr(sampling, name, value)
    if wanted.stop is not None:
        sampling.stop_sequences.extend([wanted.stop] if isinstance(wanted.stop, str) else wanted.stop)
    for i, tool in enumerate(wanted.tools):
        proto_tool = message.tools.add(name=tool.function.name, description=tool.function.description)
        if tool.function.parameters is not None:
            proto_tool.parameters.CopyFrom(_struct(tool.function.parameters, f"tools[{i}].function.parameters"))
    if isinstance(wanted.tool_choice, NamedToolChoice):
        message.tool_choice.mode = pb.TOOL_CHOICE_MODE_TOOL
        message.tool_choice.tool_name = wanted.tool_choice.function.name
    elif wanted.tool_choice is not None:
        message.tool_choice.mode = CHOICES[wanted.tool_choice]
    if wanted.response_format is not None:
        message.response_format.type = FORMATS[wanted.response_format.type]
        schema = wanted.response_format.json_schema
        if schema is not None:
            message.response_format.schema_name = schema.name
            if schema.schema_ is not None:
                message.response_format.json_schema.CopyFrom(
                    _struct(schema.schema_, "response_format.json_schema.schema")
                )
    if wanted.reasoning_effort is not None:
        message.reasoning.effort = EFFORTS[wanted.reasoning_effort]
    return message


def _message(given: MessageIn, decoded: Decoded) -> pb.Message:
    content, parts = "", []
    if isinstance(given.content, list) and all(
        isinstance(part, TextPart) and part.cache_control is None for part in given.content
    ):
        content = "".join(part.text for part in given.content if isinstance(part, TextPart))
    elif isinstance(given.content, list):
        parts = [_part(part, decoded) for part in given.content]
    else:
        content = given.content or ""
    return pb.Message(
        role=ROLES[given.role],
        content=content,
        parts=parts,
        name=given.name,
        tool_call_id=given.tool_call_id,
        tool_calls=[
            pb.ToolCall(id=c.id, name=c.function.name, arguments_json=c.function.arguments) for c in given.tool_calls
        ],
    )


def _part(part: TextPart | ImageUrlPart | FilePart | OtherPart, decoded: Decoded) -> pb.Part:
    assert not isinstance(part, OtherPart)  # _unsupported refused them
    made = _content_part(part, decoded.get(id(part)))
    if part.cache_control is not None:
        made.cache = pb.CACHE_EPHEMERAL
        made.cache_ttl_s = {None: 0, "5m": 300, "1h": 3600}[part.cache_control.ttl]
    return made


def _content_part(part: TextPart | ImageUrlPart | FilePart, decoded: tuple[str, bytes] | None) -> pb.Part:
    """The part as proto; `decoded`: its data: URL's media type and bytes (None for text and an https URL)."""
    if isinstance(part, TextPart):
        return pb.Part(text=part.text)
    if isinstance(part, ImageUrlPart):
        if decoded is None:
            return pb.Part(image=pb.Image(url=part.image_url.url))
        return pb.Part(image=pb.Image(data=decoded[1], media_type=decoded[0]))
    assert decoded is not None  # _unsupported refused a file that is not a data: URL
    return pb.Part(document=pb.Document(data=decoded[1], media_type=decoded[0], name=part.file.filename))


def _struct(value: dict[str, Any], field: str) -> struct_pb2.Struct:
    """`value` as a protobuf Struct, whose numbers are doubles: an integer past a double is refused naming `field`."""
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except OverflowError:
        raise from_proto.invalid_request([FieldViolation(field, "holds a number too large for a double")]) from None
    return struct
