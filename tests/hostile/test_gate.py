"""Nothing for the unauthenticated, and no caller can take every slot (issue #18, points 1-3 and 10).

The attacks come from a raw HTTP/2 client (llm_simulator/h2client.py): calls announcing a 16 MiB
message and withholding the rest. Before the gate, such a call was answered only once its whole
message had arrived (never), so each one held its partial message in the server's memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from llm_simulator.h2client import H2Client
from servicekit.concurrency import Limits
from tests.hostile.walls import HOG, OTHER, SIXTEEN_MIB, STREAM_CHAT, WRITE_METRICS, bearer, call, until, walled_server

pytestmark = pytest.mark.timeout(30)

UNAUTHENTICATED = 16
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def details(exc: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo | None]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, exc
    info, retry = error_details_pb2.ErrorInfo(), None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
    return info, retry


@pytest.mark.parametrize(
    "metadata", [(), bearer("not-a-listed-token"), bearer(HOG) + bearer(OTHER)], ids=["none", "unknown", "two"]
)
async def test_a_call_without_valid_credentials_is_refused_before_its_message_arrives(
    tmp_path: Path, metadata: tuple[tuple[str, str], ...]
) -> None:
    async with walled_server(tmp_path) as walled:
        client = await H2Client.connect("127.0.0.1", walled.port)
        try:
            # 64 KiB of a 16 MiB message: the rest never comes, so only the headers can decide.
            streams = [client.drip(WRITE_METRICS, SIXTEEN_MIB, 64 * 1024, metadata) for _ in range(8)]
            assert [await client.status(s) for s in streams] == [UNAUTHENTICATED] * 8
            assert walled.lifecycle.slots is not None and walled.lifecycle.slots.count() == 0
        finally:
            await client.close()


async def test_two_authorization_headers_are_refused_not_picked(tmp_path: Path) -> None:
    async with walled_server(tmp_path) as walled:
        exc = await call(walled.address, WRITE_METRICS, bearer(HOG) + bearer("not-a-listed-token"))
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    assert exc.details() == "more than one authorization header"


async def test_one_caller_cannot_take_every_slot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with walled_server(tmp_path) as walled:
        slots = walled.lifecycle.slots
        assert slots is not None
        client = await H2Client.connect("127.0.0.1", walled.port)
        try:
            held = [client.drip(WRITE_METRICS, SIXTEEN_MIB, 64 * 1024, bearer(HOG)) for _ in range(4)]
            await until(lambda: slots.count(caller="hog") == 4)
            with caplog.at_level(logging.WARNING, logger="servicekit.concurrency"):
                first = await call(walled.address, WRITE_METRICS, bearer(HOG))
                second = await call(walled.address, WRITE_METRICS, bearer(HOG))
            # Another caller still gets through (UNIMPLEMENTED is the base servicer's answer).
            assert (await call(walled.address, WRITE_METRICS, bearer(OTHER))).code() == grpc.StatusCode.UNIMPLEMENTED
            assert all(client.streams[s].status is None for s in held)  # the hog's own calls were not cut
        finally:
            await client.close()
        await until(lambda: slots.count() == 0)  # the closed connection gave its slots back
    for exc in (first, second):
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info, retry = details(exc)
        assert info.reason == "CONCURRENCY_LIMITED"
        assert dict(info.metadata) == {"kind": "calls", "scope": "caller"}
        assert retry is not None and retry.retry_delay.seconds == 1
    assert walled.refused("calls", "caller", "hog") == 2
    assert len([r for r in caplog.records if r.name == "servicekit.concurrency"]) == 1  # once a minute


async def test_long_lived_calls_have_slots_of_their_own_kind(tmp_path: Path) -> None:
    async with walled_server(tmp_path) as walled:
        slots = walled.lifecycle.slots
        assert slots is not None
        client = await H2Client.connect("127.0.0.1", walled.port)
        try:
            for _ in range(2):
                client.drip(STREAM_CHAT, SIXTEEN_MIB, 1024, bearer(HOG))
            await until(lambda: slots.count("chats", "hog") == 2)
            exc = await call(walled.address, STREAM_CHAT, bearer(HOG))
            # The hog's unary calls still have room: only its chats are full.
            assert (await call(walled.address, WRITE_METRICS, bearer(HOG))).code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await client.close()
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(details(exc)[0].metadata) == {"kind": "chats", "scope": "caller"}


async def test_readiness_is_not_serving_while_the_server_has_no_slot_left(tmp_path: Path) -> None:
    limits = Limits(max_calls=4, max_calls_per_caller=4, max_streams=4, max_streams_per_caller=4)
    async with walled_server(tmp_path, limits) as walled, grpc.aio.insecure_channel(walled.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="readiness"))
        assert (await watch.read()).status == SERVING
        client = await H2Client.connect("127.0.0.1", walled.port)
        try:
            for token in (HOG, HOG, OTHER, OTHER):
                client.drip(WRITE_METRICS, SIXTEEN_MIB, 1024, bearer(token))
            assert (await watch.read()).status == NOT_SERVING
            exc = await call(walled.address, WRITE_METRICS, bearer(OTHER))
            assert dict(details(exc)[0].metadata) == {"kind": "calls", "scope": "all callers"}
        finally:
            await client.close()
        assert (await watch.read()).status == SERVING
        watch.cancel()
