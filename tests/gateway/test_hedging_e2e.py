"""Hedging end to end: the served gateway, the openai SDK over real HTTP, the simulator stalling one upstream.

A route with `hedge_after_ms` starts the next candidate beside an attempt that has produced nothing by then;
the first to produce output answers and the other's upstream connection is closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from llm_simulator import SimulatorHandle, start_simulator
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Harness, Upstream, serving, stream, text_of, user
from tests.gateway.test_routing_e2e import routed_config, targets, upstream
from tests.gateway.usage_helpers import FAST_USAGE, ledger_rows, usage_gateway, within
from tests.schemaserver import RestartableSchemaServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    """A simulator per test: each test counts the requests it made."""
    handle = await start_simulator()
    yield handle
    await handle.close()


def hedged(sim: SimulatorHandle, *upstreams: Upstream, after_ms: int = 200) -> Any:
    route = {"targets": targets(*(u.name for u in upstreams)), "hedge_after_ms": after_ms}
    return routed_config(sim, list(upstreams), route)


def started(events: list[pb.StreamChatResponse]) -> list[pb.Started]:
    return [e.started for e in events if e.WhichOneof("event") == "started"]


def costs(events: list[pb.StreamChatResponse]) -> dict[int, pb.Usage]:
    """Each attempt's usage event by attempt number."""
    return {e.usage.attempt: e.usage for e in events if e.WhichOneof("event") == "usage"}


async def ask(h: Harness, text: str, **options: Any) -> list[pb.StreamChatResponse]:
    return await stream(h, pb.StreamChatRequest(model="default", messages=user(text), **options), timeout=10)


async def observed(sim: SimulatorHandle, model: str) -> list[Any]:
    """The simulator's requests for `model`, each finished."""
    seen = [o for o in sim.simulator.observations if o.model == model]
    for observation in seen:
        await observation.done.wait()
    return seen


async def test_a_stalled_upstream_is_hedged_and_the_hedge_answers(sim: SimulatorHandle) -> None:
    async with serving(sim, hedged(sim, upstream("a"), upstream("b"))) as h:
        events = await ask(h, "one two three [[fault:stall at=0 model=model-a]]")
    first, second = started(events)
    assert (first.provider, first.attempt, first.hedge) == ("a", 1, False)
    assert (second.provider, second.attempt, second.hedge) == ("b", 2, True)
    done = events[-1].done
    assert (done.provider, done.hedge_won, done.attempts) == ("b", True, 2)
    assert "failover" not in [e.WhichOneof("event") for e in events]  # a was cancelled, not timed out
    assert text_of(events).endswith("You said: one two three")
    # The answer's usage as the provider reported it; the cancelled one is estimated, which goes to the
    # ledger, not to the caller (test_a_hedged_request_is_two_ledger_rows).
    (answer,) = costs(events).values()
    assert answer.attempt == 2 and answer.output_tokens > 0
    (stalled,) = await observed(sim, "model-a")
    assert stalled.client_disconnected and stalled.outcome == "client_disconnected"
    (answered,) = await observed(sim, "model-b")
    assert answered.outcome == "completed"


async def test_an_upstream_that_answers_before_the_delay_is_not_hedged(sim: SimulatorHandle) -> None:
    async with serving(sim, hedged(sim, upstream("a"), upstream("b"), after_ms=2000)) as h:
        events = await ask(h, "one two three")
    assert [(s.provider, s.hedge) for s in started(events)] == [("a", False)]
    assert events[-1].done.hedge_won is False
    assert await observed(sim, "model-b") == []


async def test_no_hedge_once_output_was_sent(sim: SimulatorHandle) -> None:
    # a sends two words, then stalls until its idle timeout: far past the hedge delay, but output was sent,
    # so b only comes in by failover (RESTART), never as a hedge.
    a = Upstream("a", "openai", "model-a", patient=True, timeouts={"idle_timeout_s": 1.5})
    async with serving(sim, hedged(sim, a, upstream("b"), after_ms=500)) as h:
        events = await ask(
            h, "one two three four [[fault:stall at=2 model=model-a]]", mid_stream_policy=pb.MID_STREAM_POLICY_RESTART
        )
    assert [(s.provider, s.hedge) for s in started(events)] == [("a", False), ("b", False)]
    failover = next(e.failover for e in events if e.WhichOneof("event") == "failover")
    assert failover.discard_output and failover.reason == pb.FAILURE_REASON_TIMEOUT
    assert events[-1].done.provider == "b" and events[-1].done.hedge_won is False


async def test_at_most_one_hedge_and_the_hedge_goes_on_when_the_first_fails(sim: SimulatorHandle) -> None:
    # a and b both stall: b is the one hedge; a's first-token timeout leaves b as the attempt, and b's
    # own timeout hands the request to c by ordinary failover.
    quick = {"first_token_timeout_s": 0.8}
    a = Upstream("a", "openai", "model-a", patient=True, timeouts=quick)
    b = Upstream("b", "openai", "model-b", patient=True, timeouts=quick)
    async with serving(sim, hedged(sim, a, b, upstream("c"))) as h:
        events = await ask(h, "hello there [[fault:stall at=0 model=model-a]] [[fault:stall at=0 model=model-b]]")
    assert [(s.provider, s.attempt, s.hedge) for s in started(events)] == [
        ("a", 1, False),
        ("b", 2, True),
        ("c", 3, False),
    ]
    failover = next(e.failover for e in events if e.WhichOneof("event") == "failover")
    assert (failover.from_provider, failover.to_provider) == ("b", "c")
    done = events[-1].done
    assert (done.provider, done.attempts, done.hedge_won) == ("c", 3, False)
    assert len(await observed(sim, "model-b")) == 1 and len(await observed(sim, "model-c")) == 1


async def test_a_hedged_request_is_two_ledger_rows(sim: SimulatorHandle, migrated_db: str) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    try:
        cfg = hedged(sim, upstream("a"), upstream("b"))
        cfg = cfg.model_copy(update={"usage": FAST_USAGE, "schema_service": schema.address})
        async with usage_gateway(sim, schema.address, cfg=cfg) as gateway:
            request = pb.StreamChatRequest(
                model="default", messages=user("hi [[fault:stall at=0 model=model-a]]"), request_id="hedged-1"
            )
            events = [e async for e in gateway.chat.StreamChat(request, timeout=10)]
            await within(20, gateway.delivered(2))
    finally:
        await schema.stop()
    assert events[-1].done.hedge_won
    rows = await ledger_rows(migrated_db)
    assert [(r["attempt"], r["provider"], r["outcome"], r["hedge"], r["failover"]) for r in rows] == [
        (1, "a", "cancelled", False, False),
        (2, "b", "succeeded", True, False),
    ]
    cut, answered = rows
    assert cut["estimated"] and cut["input_tokens"] > 0 and cut["cost_usd"] > 0  # the cut one is costed too
    assert not answered["estimated"] and answered["output_tokens"] > 0


async def test_hedge_after_p95_ttft_waits_for_a_measured_target(sim: SimulatorHandle) -> None:
    route = {"targets": targets("a", "b"), "hedge_after": "p95_ttft"}
    a = Upstream("a", "openai", "model-a", patient=True, timeouts={"first_token_timeout_s": 0.8})
    async with serving(sim, routed_config(sim, [a, upstream("b")], route)) as h:
        # Not measured yet: no hedge, the stall costs a's first-token timeout and fails over.
        cold = await ask(h, "one [[fault:stall at=0 model=model-a]]")
        assert [(s.provider, s.hedge) for s in started(cold)] == [("a", False), ("b", False)]
        for _ in range(3):
            await ask(h, "warm up")
        # Measured: a stalls far past its p95 time to first token, so b is started beside it and answers.
        hot = await ask(h, "two [[fault:stall at=0 model=model-a]]")
    assert [(s.provider, s.hedge) for s in started(hot)] == [("a", False), ("b", True)]
    assert hot[-1].done.hedge_won
