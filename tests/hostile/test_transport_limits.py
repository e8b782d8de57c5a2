"""The transport's own limits, as a client meets them: HTTP/2 settings, and streams anyone may open.

Health and reflection need no credentials, so their streams cannot be counted by caller: each port
holds at most `max_open_streams` of them (the plaintext --health-port too, which had no limit at all).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_simulator.h2client import (
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    H2Client,
)
from servicekit.concurrency import Limits
from servicekit.procs import free_port
from servicekit.server import ServerOptions, health_only_server
from tests.hostile.walls import walled_server

pytestmark = pytest.mark.timeout(30)

LIMITS = Limits(max_calls=8, max_calls_per_caller=4, max_streams=8, max_streams_per_caller=2, max_open_streams=2)


async def test_the_server_announces_the_http2_limits_it_was_given(tmp_path: Path) -> None:
    options = ServerOptions()
    async with walled_server(tmp_path) as walled:
        client = await H2Client.connect("127.0.0.1", walled.port)
        await client.close()
    assert client.settings[MAX_CONCURRENT_STREAMS] == options.max_concurrent_streams == 100
    assert client.settings[MAX_HEADER_LIST_SIZE] == options.absolute_max_header_bytes == 16 * 1024
    # gRPC's own, whatever its channel arguments say (ServerOptions says why); the docs state these figures.
    assert client.settings[MAX_FRAME_SIZE] == client.settings[INITIAL_WINDOW_SIZE] == 4 * 1024 * 1024


async def watches_beyond_the_limit(address: str) -> grpc.aio.AioRpcError:
    """Open Watch streams until one is refused; the refusal (the ones held stay open)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        held = []
        for _ in range(LIMITS.max_open_streams):
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="liveness"))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            held.append(watch)
        extra = stub.Watch(health_pb2.HealthCheckRequest(service="liveness"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await extra.read()
        # A Check is a short call, not a held stream: still answered.
        assert (await stub.Check(health_pb2.HealthCheckRequest(service="liveness"))).status == 1
        for watch in held:
            watch.cancel()
    return refused.value


@pytest.mark.parametrize("port", ["main", "health"])
async def test_unauthenticated_watch_streams_are_limited_on_both_ports(tmp_path: Path, port: str) -> None:
    async with walled_server(tmp_path, LIMITS) as walled:
        address = walled.address
        probes = None
        if port == "health":
            address = f"127.0.0.1:{free_port()}"
            probes = health_only_server(walled.lifecycle, "127.0.0.1", int(address.rpartition(":")[2]), LIMITS)
            await probes.start()
        try:
            exc = await watches_beyond_the_limit(address)
        finally:
            if probes is not None:
                await probes.stop(0)
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "concurrent streams" in (exc.details() or "")
