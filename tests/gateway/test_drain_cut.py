"""When the drain grace runs out, streams still running end like any other mid-stream failure (MID_STREAM_FAILURE,
delivered_deltas), not with gRPC's bare "Cancelling all calls"; new calls are refused before that."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from llm_simulator import SimulatorHandle, start_simulator
from llmgateway.v1 import chat_service_pb2 as pb
from servicekit.server import shutdown
from tests.gateway.e2e_helpers import Upstream, details, gateway, user

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimulatorHandle]:
    handle = await start_simulator(chunk_delay_s=0.05)
    yield handle
    await handle.close()


WORDS = " ".join(f"w{i}" for i in range(400))  # 20 s of words: far longer than the grace


async def test_a_stream_cut_at_the_end_of_the_grace_ends_with_mid_stream_failure_details(sim: SimulatorHandle) -> None:
    async with gateway(sim, [Upstream("p", "openai", "slow", patient=True)]) as h:
        call = h.chat.StreamChat(pb.StreamChatRequest(model="default", messages=user(f"[[reply:{WORDS}]]")), timeout=30)
        chat = h.chat.Chat(pb.ChatRequest(model="default", messages=user(f"[[reply:{WORDS}]]")), timeout=30)
        events = [await call.read() for _ in range(3)]
        assert [e.WhichOneof("event") for e in events] == ["started", "delta", "delta"]
        stopping = asyncio.create_task(shutdown(h.running.server, h.running.lifecycle, grace_s=0.3))
        await h.running.lifecycle.drain.stopping.wait()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.chat.Chat(pb.ChatRequest(model="default", messages=user("hi")), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert details(refused.value, []).info.reason == "SERVER_SHUTTING_DOWN"
        try:
            while (event := await call.read()) is not grpc.aio.EOF:
                events.append(event)
        except grpc.aio.AioRpcError as error:
            failed = details(error, events)
        else:
            raise AssertionError("the stream ended OK")
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await chat
        await stopping
    delivered = sum(1 for e in events if e.HasField("delta"))
    assert failed.code is grpc.StatusCode.UNAVAILABLE
    assert failed.info.reason == "MID_STREAM_FAILURE"
    assert failed.info.metadata["delivered_deltas"] == str(delivered) and delivered >= 2
    assert (failed.info.metadata["provider"], failed.info.metadata["model"]) == ("p", "slow")
    assert failed.retry is not None
    assert unary.value.code() is grpc.StatusCode.UNAVAILABLE
    assert details(unary.value, []).info.reason == "SERVER_SHUTTING_DOWN"
