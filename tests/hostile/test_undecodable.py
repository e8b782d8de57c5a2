"""Request bytes that do not decode, on every method of both servers (Health and reflection included), end with
INVALID_ARGUMENT naming the field where one can be named, never UNKNOWN with a Python exception's name."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from llmgateway.v1 import chat_service_pb2 as chat
from schemaservice.v1 import metrics_service_pb2 as metrics
from tests.hostile.servers import MAX_TRAILER_BYTES, Outcome, Served, gateway, raw_call, schema_service

pytestmark = pytest.mark.timeout(60)

GARBAGE = b"\xff\xff\xff\xff\xff"  # a tag varint that never ends: no message type decodes it
PYTHON_WORDS = ("DecodeError", "Traceback", "Exception", "Error parsing", "upb", "OverflowError")


@pytest.fixture(scope="module")
async def gateway_served() -> AsyncIterator[Served]:
    async with gateway() as served:
        yield served


@pytest.fixture
async def schema_served(migrated_db: str) -> AsyncIterator[Served]:
    async with schema_service(migrated_db) as served:
        yield served


def _assert_clean_refusal(outcome: Outcome) -> None:
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (outcome.code, outcome.message)
    assert not any(word in outcome.message for word in PYTHON_WORDS), outcome.message
    info = outcome.detail(error_details_pb2.ErrorInfo)
    assert info is not None and info.reason == "UNDECODABLE_REQUEST"  # type: ignore[attr-defined]
    assert outcome.trailer_bytes <= MAX_TRAILER_BYTES


async def test_garbage_on_every_gateway_method_is_invalid_argument(gateway_served: Served) -> None:
    methods = gateway_served.methods()
    assert {m.name for m in methods} >= {
        "StreamChat",
        "Chat",
        "ListProviders",
        "WatchProviders",
        "Check",
        "Watch",
        "ServerReflectionInfo",
    }
    for method in methods:
        _assert_clean_refusal(await raw_call(gateway_served.channel, method, [GARBAGE]))


async def test_garbage_on_every_schema_service_method_is_invalid_argument(schema_served: Served) -> None:
    methods = schema_served.methods()
    assert {m.name for m in methods} >= {
        "WriteMetrics",
        "StreamMetrics",
        "QueryMetrics",
        "Migrate",
        "GetStatus",
        "Check",
        "ServerReflectionInfo",
    }
    for method in methods:
        _assert_clean_refusal(await raw_call(schema_served.channel, method, [GARBAGE]))


def _method(served: Served, name: str):  # type: ignore[no-untyped-def]
    return next(m for m in served.methods() if m.name == name)


async def test_bad_utf8_in_a_chat_message_names_the_field(gateway_served: Served) -> None:
    messages = [chat.Message(role=chat.ROLE_USER, content="ok"), chat.Message(role=chat.ROLE_USER, content="@@")]
    request = chat.StreamChatRequest(model="default", messages=messages)
    raw = request.SerializeToString().replace(b"@@", b"\xc3\x28")
    for name in ("StreamChat", "Chat"):
        outcome = await raw_call(gateway_served.channel, _method(gateway_served, name), [raw])
        _assert_clean_refusal(outcome)
        assert list(outcome.violations) == ["messages[1].content"]


async def test_bad_utf8_in_health_and_reflection_requests_names_the_field(gateway_served: Served) -> None:
    bad_string = b"\x0a\x02\xff\xfe"  # field 1 (HealthCheckRequest.service, ServerReflectionRequest.host)
    for name in ("Check", "Watch", "ServerReflectionInfo"):
        outcome = await raw_call(gateway_served.channel, _method(gateway_served, name), [bad_string])
        _assert_clean_refusal(outcome)
        assert list(outcome.violations) in (["service"], ["host"])


async def test_a_struct_nested_90_levels_is_refused(gateway_served: Served) -> None:
    deep = struct_pb2.Struct()
    inner = deep
    for _ in range(90):
        inner = inner.fields["a"].struct_value
    request = chat.StreamChatRequest(model="default", messages=[chat.Message(role=chat.ROLE_USER, content="hi")])
    request.tools.add(name="t").parameters.CopyFrom(deep)
    method = _method(gateway_served, "StreamChat")
    outcome = await raw_call(gateway_served.channel, method, [request.SerializeToString()])
    _assert_clean_refusal(outcome)


async def test_bad_utf8_in_a_metric_label_names_the_field_in_both_write_forms(schema_served: Served) -> None:
    batch = metrics.WriteMetricsRequest(request_id="r1", metrics=[metrics.Metric(name="n", labels={"k": "@@"})])
    raw = batch.SerializeToString().replace(b"@@", b"\xff\xfe")
    outcome = await raw_call(schema_served.channel, _method(schema_served, "WriteMetrics"), [raw])
    # Labels are read as raw map entries (metrics/wire.py), so the batch validation names them itself.
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid map<string, string> (strings must be UTF-8)" == outcome.violations["metrics[0].labels"]
    bad_name = metrics.WriteMetricsRequest(request_id="r2", metrics=[metrics.Metric(name="@@")])
    raw = bad_name.SerializeToString().replace(b"@@", b"\xff\xfe")
    outcome = await raw_call(schema_served.channel, _method(schema_served, "StreamMetrics"), [raw])
    _assert_clean_refusal(outcome)
    assert list(outcome.violations) == ["metrics[0].name"]
