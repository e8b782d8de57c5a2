"""Reflection on both protocols: grpc.reflection.v1alpha (grpcurl up to 1.8.7) and grpc.reflection.v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from llmgateway.v1 import chat_service_pb2
from servicekit.reflection import V1_SERVICE, add_reflection

pytestmark = pytest.mark.timeout(20)
CHAT = chat_service_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    add_reflection(server, (CHAT, HEALTH))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)


def v1_messages() -> tuple[Any, Any]:
    """A v1 client's own message classes, from the grpc.reflection.v1 descriptor."""
    pool = descriptor_pool.Default()
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest"))
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
    )
    return request, response


async def ask(channel: grpc.aio.Channel, protocol: str, **request: str) -> Any:
    request_cls, response_cls = (
        v1_messages()
        if protocol == "v1"
        else (reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse)
    )
    method = channel.stream_stream(
        f"/grpc.reflection.{protocol}.ServerReflection/ServerReflectionInfo",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    return [response async for response in method(iter([request_cls(**request)]))][0]


@pytest.mark.parametrize("protocol", ["v1", "v1alpha"])
async def test_both_protocols_list_the_services(channel: grpc.aio.Channel, protocol: str) -> None:
    response = await ask(channel, protocol, list_services="")
    listed = {service.name for service in response.list_services_response.service}
    assert listed == {CHAT, HEALTH, V1_SERVICE, "grpc.reflection.v1alpha.ServerReflection"}


@pytest.mark.parametrize("protocol", ["v1", "v1alpha"])
async def test_both_protocols_serve_the_contracts_comments(channel: grpc.aio.Channel, protocol: str) -> None:
    response = await ask(channel, protocol, file_containing_symbol=CHAT)
    raw_files = response.file_descriptor_response.file_descriptor_proto
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in raw_files]
    chat = next(f for f in files if any(s.name == "ChatService" for s in f.service))
    comments = [loc.leading_comments for loc in chat.source_code_info.location if loc.leading_comments]
    assert any("StreamChat" in comment for comment in comments)


async def test_v1_describes_itself(channel: grpc.aio.Channel) -> None:
    response = await ask(channel, "v1", file_containing_symbol=V1_SERVICE)
    (raw,) = response.file_descriptor_response.file_descriptor_proto
    file = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert (file.package, file.service[0].method[0].input_type) == (
        "grpc.reflection.v1",
        ".grpc.reflection.v1.ServerReflectionRequest",
    )
