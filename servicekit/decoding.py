"""Requests whose bytes do not decode are answered INVALID_ARGUMENT, naming the field where one can be named.

gRPC Python deserializes a request before any servicer code runs, and a deserializer that raises ends the
call with UNKNOWN and the exception's text ("DecodeError ... String field had bad UTF-8"). `DecodeGuard`
wraps every method's `request_deserializer` (a public field of the method handler) so that bytes that do
not decode become an `Undecodable` value instead, and wraps the method's behaviour so that such a value
ends the call with `UndecodableRequest` before the servicer sees it. Streamed requests are checked as
they are read. This covers every method of the server, Health and reflection included.

To name the field, the bytes are read again with a twin of the request type in which every `string` is
`bytes` (a private descriptor pool; the wire format of the two is the same), and the first string that is
not UTF-8 is reported by its path (`messages[2].content`). Bytes that fail for another reason (garbage,
nesting deeper than protobuf's decoder takes, about 32 levels of `google.protobuf.Struct`) are refused
without a field.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2

from servicekit.boundary import abort
from servicekit.errors import FieldViolation, ServiceError
from servicekit.handlers import KINDS

Behavior = Callable[..., Any]
_F = descriptor_pb2.FieldDescriptorProto


class UndecodableRequest(ServiceError):
    """The request's bytes are not a valid message of the method's request type."""

    code = code_pb2.INVALID_ARGUMENT
    reason = "UNDECODABLE_REQUEST"


class Undecodable:
    """What the guarded deserializer returns for bytes that do not decode: the error to answer with."""

    __slots__ = ("error",)

    def __init__(self, error: UndecodableRequest) -> None:
        self.error = error


def undecodable(raw: bytes, type_name: str) -> UndecodableRequest:
    """The error for `raw`, which did not decode as `type_name`, naming the bad string field when there is one."""
    path = _bad_utf8_path(raw, type_name)
    if path is not None:
        return UndecodableRequest(
            f"invalid request: {path}: not valid UTF-8",
            metadata={"type": type_name},
            field_violations=[FieldViolation(path, "string fields must be valid UTF-8")],
        )
    return UndecodableRequest(
        f"invalid request: the bytes are not a valid {type_name} (malformed, or nested too deeply)",
        metadata={"type": type_name},
    )


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Wraps every method handler so that undecodable requests end with INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None or handler.request_deserializer is None:
                return handler
            wrapped = self._wrapped[method] = _guard(handler, _request_type(method))
        return wrapped


def _request_type(method: str) -> str:
    """The full name of the request type of `/package.Service/Method` (empty when not in the default pool)."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        return str(descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name).input_type.full_name)
    except (KeyError, AttributeError):
        return ""


def _guard(handler: Any, type_name: str) -> Any:
    deserialize = handler.request_deserializer

    def guarded(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except (DecodeError, RecursionError, ValueError):
            return Undecodable(undecodable(raw, type_name or "request"))

    for kind in KINDS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            wrap = _streamed if kind.startswith("stream") else _unary
            return handler._replace(request_deserializer=guarded, **{kind: wrap(behavior)})
    return handler


def _unary(behavior: Behavior) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        @functools.wraps(behavior)
        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await _refuse(request, context)
            async for response in behavior(request, context):
                yield response

        return streaming

    @functools.wraps(behavior)
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _refuse(request, context)
        return await behavior(request, context)

    return call


def _streamed(behavior: Behavior) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        @functools.wraps(behavior)
        async def streaming(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in behavior(_checked(requests, context), context):
                yield response

        return streaming

    @functools.wraps(behavior)
    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return await behavior(_checked(requests, context), context)

    return call


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        await _refuse(request, context)
        yield request


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Undecodable):
        await abort(context, request.error)


def _bad_utf8_path(raw: bytes, type_name: str) -> str | None:
    """Path of the first string field holding bytes that are not UTF-8, or None (not found or not decodable)."""
    try:
        twin = _twin_class(type_name)
        message = twin.FromString(raw)
    except (KeyError, TypeError, DecodeError, RecursionError):
        return None
    return _find_bad_utf8(message, "")


def _find_bad_utf8(message: Message, prefix: str) -> str | None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        items = list(enumerate(value)) if field.is_repeated else [(None, value)]
        for index, item in items:
            here = path if index is None else f"{path}[{index}]"
            if field.type == field.TYPE_MESSAGE:
                found = _find_bad_utf8(item, f"{here}.")
                if found is not None:
                    return found
            elif (message.DESCRIPTOR.full_name, field.number) in _was_string and not _utf8(item):
                return here
    return None


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_twin_pool = descriptor_pool.DescriptorPool()
_twin_files: set[str] = set()
# (message full name, field number) of the twins' former string fields, told apart from real bytes fields.
_was_string: set[tuple[str, int]] = set()


@functools.cache
def _twin_class(type_name: str) -> type[Message]:
    """The twin of `type_name`: the same messages, with strings as bytes and maps as repeated entries."""
    original = descriptor_pool.Default().FindMessageTypeByName(type_name)
    _add_twin_file(original.file)
    return message_factory.GetMessageClass(_twin_pool.FindMessageTypeByName(type_name))


def _add_twin_file(file: descriptor.FileDescriptor) -> None:
    if file.name in _twin_files:
        return
    for dependency in file.dependencies:
        _add_twin_file(dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    for message in proto.message_type:
        _as_bytes(message, f"{proto.package}.{message.name}" if proto.package else message.name)
    _twin_pool.Add(proto)
    _twin_files.add(file.name)


def _as_bytes(message: descriptor_pb2.DescriptorProto, full_name: str) -> None:
    # A map's key may not be bytes; without map_entry the entries are plain repeated messages on the wire.
    message.options.ClearField("map_entry")
    for field in message.field:
        if field.type == _F.TYPE_STRING:
            field.type = _F.TYPE_BYTES
            _was_string.add((full_name, field.number))
    for nested in message.nested_type:
        _as_bytes(nested, f"{full_name}.{nested.name}")
