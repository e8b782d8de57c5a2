"""Failover over flapping providers, at the domain level: in-test adapters and a fake clock for health.

Breakers and stall suspicion are advice (a route is never shut out on the gateway's guess), a
provider's Retry-After is not; one probe after an open breaker's wait; results count for the breaker
generation they started in. The chaos test (test_chaos.py) runs the same over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from gateway_service.accounting import Ledger
from gateway_service.chat.failover import ChatRun, Failover
from gateway_service.chat.router import Router
from gateway_service.config import FailoverSettings, ModelSpec
from gateway_service.domain.events import AttemptStarted, Completed, GatewayEvent, SkipReason
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest
from gateway_service.errors import AllProvidersFailed, AllProvidersRateLimited, GatewayError
from gateway_service.health import MemoryHealth, Target
from gateway_service.health.settings import stall_settings
from gateway_service.health.stalls import StallSettings
from tests.gateway.pipeline_helpers import Clock, Gate, ScriptedAdapter, Step, chat_request, gateway_config, spec, words

M = ModelSpec(name="m", context_window=1000)
SERVER_ERROR = ProviderError(FailureKind.SERVER_ERROR, "503 Service Unavailable", status_code=503)


@dataclass
class Flapping:
    adapters: dict[str, ScriptedAdapter]
    failover_settings: dict[str, float]
    stalls: StallSettings = field(default_factory=lambda: stall_settings(FailoverSettings()))
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        config = gateway_config(*(spec(name, M) for name in self.adapters), **self.failover_settings)
        self.health = MemoryHealth(config.failover, self.clock, stalls=self.stalls)
        self.failover = Failover(config.failover, self.health, Ledger())
        self.router = Router(config, self.adapters)

    def start(self, request: ChatRequest | None = None) -> ChatRun:
        request = request or chat_request()
        # Gates hold the upstreams, and health runs on the fake clock; the deadline is loop time, so any short
        # one here measured the machine (at 5 s, a gated probe's 2.5 s share ran out under load before the
        # 49 other calls of the probe test were done). The default (300 s) cannot end a call in a test.
        return self.failover.run(request, self.router.candidates(request), None)

    async def run(self, request: ChatRequest | None = None) -> list[GatewayEvent]:
        return [event async for event in self.start(request).events()]

    async def fail(self, request: ChatRequest | None = None) -> GatewayError:
        with pytest.raises(GatewayError) as caught:
            await self.run(request)
        return caught.value

    def calls(self, name: str) -> int:
        return len(self.adapters[name].calls)


def flapping(
    scripts: dict[str, Sequence[Sequence[Step]]], stalls: StallSettings | None = None, **failover: float
) -> Flapping:
    adapters = {name: ScriptedAdapter(name, s) for name, s in scripts.items()}
    return Flapping(adapters, failover, stalls or stall_settings(FailoverSettings()))


def started(events: Sequence[GatewayEvent]) -> list[AttemptStarted]:
    return [e for e in events if isinstance(e, AttemptStarted)]


def answered_by(events: Sequence[GatewayEvent]) -> str:
    done = events[-1]
    assert isinstance(done, Completed), events
    return done.provider


async def test_with_every_breaker_open_the_call_still_tries_the_one_that_reopens_soonest() -> None:
    f = flapping(
        {"a": [words("a"), [SERVER_ERROR]], "b": [[SERVER_ERROR], [SERVER_ERROR], words("b")]},
        breaker_failures=1,
        breaker_open_s=2.0,
    )
    assert answered_by(await f.run(chat_request(provider_order=("b", "a")))) == "a"  # b opens until t+2
    f.clock.now += 1.0
    error = await f.fail()  # a fails and opens until t+3; b, skipped on advice, is tried last and fails
    assert isinstance(error, AllProvidersFailed) and error.metadata["attempts"] == "2"
    assert error.metadata["skipped_1"].startswith("b/m unhealthy: circuit breaker open for 1.000s")
    f.clock.now += 0.5
    events = await f.run()  # both open: b's block (its first, not lengthened by the last resort) ends first
    assert answered_by(events) == "b"
    [attempt] = started(events)
    unhealthy = SkipReason.UNHEALTHY
    assert [(s.provider, s.outcome) for s in attempt.skipped] == [("a", unhealthy), ("b", unhealthy)]
    assert f.health.blocked(f.router.candidates(chat_request())[1].target) is None  # its success closed it


async def test_a_retry_after_is_a_hard_block_and_retry_info_is_the_shortest_real_wait() -> None:
    def limited(s: float) -> ProviderError:
        return ProviderError(FailureKind.RATE_LIMITED, "Rate limit exceeded", status_code=429, retry_after_s=s)

    f = flapping({"a": [[limited(3.0)], words("a")], "b": [[limited(1.5)], words("b")]})
    await f.fail()
    f.clock.now += 0.5
    error = await f.fail()
    assert (f.calls("a"), f.calls("b")) == (1, 1)  # no request inside a Retry-After, even with nothing else left
    assert isinstance(error, AllProvidersRateLimited) and error.metadata["attempts"] == "0"
    assert error.retry_after_s == pytest.approx(1.0)
    f.clock.now += 1.0
    assert answered_by(await f.run()) == "b"


async def test_a_last_resort_is_never_a_hard_blocked_candidate() -> None:
    limited = ProviderError(FailureKind.RATE_LIMITED, "slow down", status_code=429, retry_after_s=10.0)
    f = flapping({"a": [[limited]], "b": [[SERVER_ERROR], words("b")]}, breaker_failures=1)
    await f.fail()
    events = await f.run()
    assert answered_by(events) == "b" and f.calls("a") == 1


async def test_a_stream_started_before_the_breaker_opened_cannot_close_it() -> None:
    gate = asyncio.Event()
    f = flapping(
        {"a": [[*words("old")[:1], Gate(gate), *words("stream")], [SERVER_ERROR]], "b": [words("b")]},
        breaker_failures=1,
    )
    old = f.start().events()
    while not isinstance(await anext(old), AttemptStarted):
        pass
    await anext(old)  # the first delta: the old stream is under way
    f.clock.now += 0.1
    assert answered_by(await f.run()) == "b"  # a fails: its breaker opens
    gate.set()
    assert answered_by([e async for e in old]) == "a"
    key = f.router.candidates(chat_request())[0].key_id
    block = f.health.blocked(Target("a", "m", key))
    assert block is not None and block.what == "circuit breaker open"


async def _all_but_one_done(tasks: list[asyncio.Task[list[GatewayEvent]]]) -> asyncio.Task[list[GatewayEvent]]:
    pending = set(tasks)
    async with asyncio.timeout(10):
        while len(pending) > 1:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    [probe] = pending
    return probe


@pytest.mark.parametrize("probe_ok", [True, False])
async def test_after_an_open_breaker_s_wait_one_of_50_concurrent_calls_is_the_probe(probe_ok: bool) -> None:
    gate = asyncio.Event()
    probe: list[Step] = [Gate(gate), *(words("a") if probe_ok else [SERVER_ERROR])]
    f = flapping(
        {"a": [[SERVER_ERROR], probe, words("a")], "b": [words("b")] * 60}, breaker_failures=1, breaker_open_s=2.0
    )
    await f.run()
    f.clock.now += 2.5
    tasks = [asyncio.create_task(f.run()) for _ in range(50)]
    probe_task = await _all_but_one_done(tasks)
    assert f.calls("a") == 2 and f.calls("b") == 50
    others = [t.result() for t in tasks if t is not probe_task]
    assert all(answered_by(events) == "b" for events in others)
    skips = {s.message.split(" for ")[0] for events in others for s in started(events)[0].skipped}
    assert skips == {"circuit breaker half-open, its probe running"}
    gate.set()
    if probe_ok:
        assert answered_by(await probe_task) == "a"
        assert answered_by(await f.run()) == "a"  # closed: traffic is back
    else:
        assert answered_by(await probe_task) == "b"
        f.clock.now += 2.5
        assert answered_by(await f.run()) == "b" and f.calls("a") == 2  # reopened for 4 s, not 2


async def test_an_attempt_far_past_the_usual_first_token_turns_new_calls_away_before_its_timeout() -> None:
    gate = asyncio.Event()
    f = flapping(
        {"a": [*[words("a")] * 3, [Gate(gate), *words("late")], words("a")], "b": [words("b")]},
        stalls=replace(stall_settings(FailoverSettings()), floor_s=0.5, min_samples=3),
    )
    for _ in range(3):
        f.clock.now += 0.01
        assert answered_by(await f.run()) == "a"
    stalled = f.start().events()
    assert isinstance(await anext(stalled), AttemptStarted)
    f.clock.now += 0.4
    assert f.health.blocked(f.router.candidates(chat_request())[0].target) is None  # below the floor
    f.clock.now += 0.2
    events = await f.run()
    assert answered_by(events) == "b"
    [skip] = started(events)[0].skipped
    assert skip.outcome is SkipReason.UNHEALTHY
    assert skip.message.startswith("suspected stall (0.600s without a first token")
    gate.set()
    assert answered_by([e async for e in stalled]) == "a"
    assert answered_by(await f.run()) == "a"  # a first token came: no longer suspect


async def test_a_suspected_stall_is_a_last_resort_only_for_a_call_that_has_not_waited_out_a_stall() -> None:
    gate = asyncio.Event()
    timeout = ProviderError(FailureKind.TIMEOUT, "no first token within this attempt's share of the deadline")
    f = flapping(
        {
            "a": [*[words("a")] * 3, [Gate(gate), *words("late")], words("a, as a last resort")],
            "b": [[timeout], [timeout]],
        },
        stalls=replace(stall_settings(FailoverSettings()), min_samples=3),
    )
    for _ in range(3):
        await f.run()
    stalled = f.start().events()
    assert isinstance(await anext(stalled), AttemptStarted)
    f.clock.now += 1.0
    error = await f.fail()  # a skipped (suspected stall), b times out: a would be a second wait
    assert isinstance(error, AllProvidersFailed) and error.metadata["attempts"] == "1"
    assert error.metadata["skipped_1"].startswith("a/m unhealthy: suspected stall (1.000s without a first token")
    # RetryInfo: b (one timeout, its breaker closed) may be tried again at once: the short pause, 1 s, which is
    # sooner than a's stalled attempt giving up (its first-token timeout, 5 s / 2 candidates, from its start).
    assert error.retry_after_s == 1.0
    assert f.calls("a") == 4
    # A call whose b fails fast, not by a timeout, still tries a (the call had no other chance).
    f.adapters["b"].scripts[1] = [SERVER_ERROR]
    assert answered_by(await f.run()) == "a" and f.calls("a") == 5
    gate.set()
    assert answered_by([e async for e in stalled]) == "a"


async def test_a_candidate_tried_earlier_is_the_last_resort_once_its_breaker_has_moved_on() -> None:
    gate = asyncio.Event()
    f = flapping(
        {"a": [[SERVER_ERROR], words("a", "again")], "b": [[Gate(gate), SERVER_ERROR]]},
        breaker_failures=1,
        breaker_open_s=2.0,
    )
    run = f.start().events()
    events = [await anext(run) for _ in range(3)]  # a fails (its breaker opens), b starts and hangs
    assert [(e.provider, e.attempt) for e in started(events)] == [("a", 1), ("b", 2)]
    f.clock.now += 2.5  # a's breaker is half-open
    gate.set()
    events += [e async for e in run]
    assert [(e.provider, e.attempt) for e in started(events)] == [("a", 1), ("b", 2), ("a", 3)]
    assert answered_by(events) == "a"
    assert f.health.blocked(f.router.candidates(chat_request())[0].target) is None  # the probe closed it
