"""The failover state machine, driven through in-test adapters (domain level, no gRPC, no HTTP)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from gateway_service.accounting import Ledger
from gateway_service.chat.attempt import Attempt
from gateway_service.chat.failover import Failover
from gateway_service.chat.router import Router
from gateway_service.config import GatewayConfig, ModelSpec, ProviderSpec
from gateway_service.config.providers import price_version
from gateway_service.domain.events import (
    AttemptRecord,
    AttemptStarted,
    AttemptUsage,
    Completed,
    FailedOver,
    GatewayEvent,
    OutputDelta,
    SkipReason,
)
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import (
    ChatRequest,
    Finished,
    FinishReason,
    MidStreamPolicy,
    Role,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from gateway_service.errors import (
    AllProvidersFailed,
    AllProvidersRateLimited,
    ContextTooLong,
    DeadlineExhausted,
    GatewayError,
    MidStreamFailure,
    NotConfigured,
    ProviderRejectedRequest,
)
from gateway_service.health import HealthState, MemoryHealth, provider_state
from tests.gateway.pipeline_helpers import Pause, ScriptedAdapter, Step, chat_request, gateway_config, spec, words

M = ModelSpec(name="m", context_window=1000, input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)


@dataclass
class Pipeline:
    config: GatewayConfig
    adapters: dict[str, ScriptedAdapter]
    observed: list[AttemptRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.health = MemoryHealth(self.config.failover)
        self.failover = Failover(
            self.config.failover, self.health, Ledger(), lambda _r, rec, _t: self.observed.append(rec)
        )
        self.router = Router(self.config, self.adapters)

    async def run(self, request: ChatRequest | None = None, deadline_s: float = 5.0) -> list[GatewayEvent]:
        request = request or chat_request()
        run = self.failover.run(request, self.router.candidates(request), deadline_s)
        return [event async for event in run.events()]

    def spec(self, name: str) -> ProviderSpec:
        found = self.config.provider(name)
        assert found is not None
        return found

    async def fail(
        self, request: ChatRequest | None = None, deadline_s: float = 5.0
    ) -> tuple[GatewayError, list[GatewayEvent]]:
        request = request or chat_request()
        run = self.failover.run(request, self.router.candidates(request), deadline_s)
        events: list[GatewayEvent] = []
        with pytest.raises(GatewayError) as caught:
            async for event in run.events():
                events.append(event)
        return caught.value, events


def pipeline(
    scripts: dict[str, Sequence[Sequence[Step]]], models: dict[str, ModelSpec] | None = None, **kw: float
) -> Pipeline:
    models = models or {}
    providers = [spec(name, models.get(name, M)) for name in scripts]
    adapters = {name: ScriptedAdapter(name, s) for name, s in scripts.items()}
    return Pipeline(gateway_config(*providers, **kw), adapters)


def rate_limited(retry_after: float | None = 2.0) -> ProviderError:
    return ProviderError(FailureKind.RATE_LIMITED, "Rate limit exceeded", status_code=429, retry_after_s=retry_after)


def texts(events: Sequence[GatewayEvent]) -> str:
    return "".join(e.piece.text for e in events if isinstance(e, OutputDelta) and isinstance(e.piece, TextDelta))


async def test_rate_limit_fails_over_at_once_and_remembers_the_cooldown() -> None:
    p = pipeline({"a": [[rate_limited()]], "b": [words("Hel", "lo"), words("again")]})
    events = await p.run()
    assert events == [
        AttemptStarted("a", "m", 1),
        FailedOver("a", "m", "b", "m", FailureKind.RATE_LIMITED, "Rate limit exceeded", False, 1),
        AttemptStarted("b", "m", 2),
        OutputDelta(1, TextDelta("Hel")),
        OutputDelta(2, TextDelta("lo")),
        Completed(FinishReason.STOP, "b", "m", 2, "up-1", "req-1", usage=events[-1].usage),  # type: ignore[union-attr]
    ]
    # The next request skips the cooling provider without calling it, and says so on the attempt it starts.
    events = await p.run()
    started = events[0]
    assert isinstance(started, AttemptStarted) and (started.provider, started.attempt) == ("b", 1)
    [skip] = started.skipped
    assert (skip.provider, skip.attempt, skip.outcome) == ("a", 0, FailureKind.RATE_LIMITED)
    assert skip.retry_after_s is not None and 1.0 < skip.retry_after_s <= 2.0
    assert len(p.adapters["a"].calls) == 1
    assert provider_state(p.health, p.spec("a"))[0] is HealthState.COOLING_DOWN


async def test_a_failover_is_logged_with_where_from_where_to_and_why(caplog: pytest.LogCaptureFixture) -> None:
    p = pipeline({"a": [[rate_limited()]], "b": [words("ok")]})
    with caplog.at_level("WARNING", logger="gateway_service.chat.reporting"):
        await p.run()
    [record] = [r for r in caplog.records if r.getMessage() == "attempt failed, failing over"]
    fields = {k: getattr(record, k) for k in ("from", "to", "reason", "error", "attempt")}
    expected = {"from": "a/m", "to": "b/m", "reason": "rate_limited", "error": "Rate limit exceeded", "attempt": 1}
    assert fields == expected


async def test_all_rate_limited_is_resource_exhausted_with_each_attempt_and_soonest_retry() -> None:
    p = pipeline({"a": [[rate_limited(3.0)]], "b": [[rate_limited(1.5)]]})
    gc.collect()  # not during the timed run: a full collection in this test process pauses ~200 ms
    error, events = await p.fail()
    assert isinstance(error, AllProvidersRateLimited)
    assert error.metadata["attempt_1"] == "a/m rate_limited: Rate limit exceeded"
    assert error.metadata["attempt_2"] == "b/m rate_limited: Rate limit exceeded"
    assert error.retry_after_s is not None and 1.4 < error.retry_after_s <= 1.5
    assert [type(e) for e in events] == [AttemptStarted, FailedOver, AttemptStarted]


async def test_all_failed_mixed_reasons_is_unavailable() -> None:
    server = ProviderError(FailureKind.SERVER_ERROR, "502 bad gateway", status_code=502)
    p = pipeline({"a": [[rate_limited()]], "b": [[TextDelta("x"), Pause(0)], [server]], "c": [[server]]})
    p.adapters["b"].scripts = [[server]]
    gc.collect()  # not during the timed run: a full collection in this test process pauses ~200 ms
    error, _ = await p.fail()
    assert type(error) is AllProvidersFailed
    assert error.metadata["attempts"] == "3"
    # b and c failed without being blocked (below the breaker's threshold): they may be tried again at once,
    # so RetryInfo is the short pause rate_limit_cooldown_s, not a's 2 s Retry-After.
    assert error.retry_after_s == 1.0


async def test_invalid_request_does_not_fail_over() -> None:
    p = pipeline(
        {
            "a": [[ProviderError(FailureKind.INVALID_REQUEST, "temperature: must be <= 2", status_code=400)]],
            "b": [words("never")],
        }
    )
    error, _ = await p.fail()
    assert isinstance(error, ProviderRejectedRequest)
    assert "temperature: must be <= 2" in error.message
    assert p.adapters["b"].calls == []


async def test_context_too_long_only_tries_larger_windows() -> None:
    small, same, big = (
        ModelSpec(name="m", context_window=1000),
        ModelSpec(name="m", context_window=1000),
        ModelSpec(name="m", context_window=9000),
    )
    too_long = ProviderError(FailureKind.CONTEXT_TOO_LONG, "maximum context length is 1000 tokens")
    p = pipeline({"a": [[too_long]], "b": [words("no")], "c": [words("fits")]}, {"a": small, "b": same, "c": big})
    events = await p.run()
    assert texts(events) == "fits"
    assert p.adapters["b"].calls == []
    p2 = pipeline({"a": [[too_long]], "b": [words("no")]}, {"a": small, "b": same})
    error, _ = await p2.fail()
    assert isinstance(error, ContextTooLong)
    assert error.metadata["skipped_1"] == "b/m context_too_small: context window 1000 too small"


async def test_content_filter_ends_with_done_and_that_reason() -> None:
    p = pipeline({"a": [[TextDelta("x"), ProviderError(FailureKind.CONTENT_FILTERED, "blocked")]], "b": [words("no")]})
    events = await p.run()
    assert isinstance(events[-1], Completed) and events[-1].finish_reason is FinishReason.CONTENT_FILTER
    p = pipeline({"a": [words("part", reason=FinishReason.CONTENT_FILTER)]})
    events = await p.run()
    assert dataclasses.replace(events[-1], usage=None) == Completed(  # type: ignore[type-var]
        FinishReason.CONTENT_FILTER, "a", "m", 1, "up-1", "req-1"
    )


async def test_auth_failure_fails_over_and_flags_the_provider_misconfigured() -> None:
    p = pipeline(
        {"a": [[ProviderError(FailureKind.AUTH_FAILED, "invalid x-api-key", status_code=401)]], "b": [words("ok")]}
    )
    events = await p.run()
    assert texts(events) == "ok"
    assert provider_state(p.health, p.spec("a"))[0] is HealthState.MISCONFIGURED


async def test_mid_stream_failure_with_policy_fail_is_unavailable_and_says_what_was_delivered() -> None:
    reset = ProviderError(FailureKind.CONNECTION_ERROR, "connection reset")
    p = pipeline({"a": [[TextDelta("one "), TextDelta("two "), reset]], "b": [words("never")]})
    error, events = await p.fail()
    assert isinstance(error, MidStreamFailure)
    assert (error.metadata["delivered_deltas"], error.metadata["policy"]) == ("2", "FAIL")
    assert "mid-stream policy FAIL" in error.message and "incomplete" in error.message
    assert not any(isinstance(e, Completed) for e in events)
    assert p.adapters["b"].calls == []


async def test_restart_tells_the_caller_to_discard_and_starts_over() -> None:
    stall = ProviderError(FailureKind.TIMEOUT, "no chunk for 0.05s (idle timeout)")
    p = pipeline({"a": [[TextDelta("one "), stall]], "b": [words("fresh ", "answer")]})
    events = await p.run(chat_request(mid_stream_policy=MidStreamPolicy.RESTART))
    assert events[1:4] == [
        OutputDelta(1, TextDelta("one ")),
        FailedOver("a", "m", "b", "m", FailureKind.TIMEOUT, "no chunk for 0.05s (idle timeout)", True, 1),
        AttemptStarted("b", "m", 2),
    ]
    assert events[4:6] == [OutputDelta(2, TextDelta("fresh ")), OutputDelta(3, TextDelta("answer"))]
    assert isinstance(events[-1], Completed)


async def test_continue_prefills_the_partial_answer_on_a_model_that_takes_it() -> None:
    prefill = ModelSpec(name="m", context_window=1000, assistant_prefill=True)
    reset = ProviderError(FailureKind.CONNECTION_ERROR, "connection reset")
    p = pipeline({"a": [[TextDelta("The answer "), reset]], "b": [words("no")], "c": [words("is 42.")]}, {"c": prefill})
    events = await p.run(chat_request(mid_stream_policy=MidStreamPolicy.CONTINUE))
    assert texts(events) == "The answer is 42."
    assert p.adapters["b"].calls == []  # cannot take a partial assistant turn
    sent = p.adapters["c"].calls[0].request.messages
    assert sent[-1].role is Role.ASSISTANT and sent[-1].content == "The answer"
    failover = next(e for e in events if isinstance(e, FailedOver))
    assert failover.discard_output is False and failover.to_provider == "c"


async def test_continue_is_refused_after_tool_call_deltas() -> None:
    prefill = ModelSpec(name="m", context_window=1000, assistant_prefill=True)
    reset = ProviderError(FailureKind.CONNECTION_ERROR, "connection reset")
    p = pipeline({"a": [[ToolCallDelta(0, "call_1", "lookup", '{"q'), reset]], "b": [words("no")]}, {"b": prefill})
    error, _ = await p.fail(chat_request(mid_stream_policy=MidStreamPolicy.CONTINUE))
    assert isinstance(error, MidStreamFailure)
    assert "CONTINUE refused after tool-call deltas" in error.message
    assert p.adapters["b"].calls == []


async def test_continue_without_a_capable_candidate_fails_mid_stream() -> None:
    reset = ProviderError(FailureKind.CONNECTION_ERROR, "connection reset")
    p = pipeline({"a": [[TextDelta("x"), reset]], "b": [words("no")]})
    error, _ = await p.fail(chat_request(mid_stream_policy=MidStreamPolicy.CONTINUE))
    assert isinstance(error, MidStreamFailure)
    assert error.metadata["skipped_1"] == "b/m no_prefill: cannot continue a partial assistant answer"


async def test_failure_inside_the_commit_window_fails_over_invisibly() -> None:
    reset = ProviderError(FailureKind.CONNECTION_ERROR, "connection reset")
    p = pipeline({"a": [[TextDelta("lost "), TextDelta("words "), reset]], "b": [words("kept")]})
    events = await p.run(chat_request(commit_window_tokens=3))
    assert texts(events) == "kept"
    assert next(e for e in events if isinstance(e, FailedOver)).discard_output is False
    assert [e.sequence for e in events if isinstance(e, OutputDelta)] == [1]


async def test_commit_window_by_time_releases_held_output_when_it_closes() -> None:
    p = pipeline({"a": [[TextDelta("early"), Pause(0.2), TextDelta(" late"), Finished(FinishReason.STOP)]]})
    run = p.failover.run(chat_request(commit_window_ms=20), p.router.candidates(chat_request()), 5.0)
    events = run.events()
    assert await anext(events) == AttemptStarted("a", "m", 1)
    # Released by the window's end, while the upstream is still silent.
    assert await anext(events) == OutputDelta(1, TextDelta("early"))
    assert p.adapters["a"].calls[0].steps_played == 2
    rest = [e async for e in events]
    assert isinstance(rest[-1], Completed)


async def test_first_token_budget_is_a_share_of_the_deadline() -> None:
    p = pipeline({"a": [[Pause(10), TextDelta("late")]], "b": [words("fast")]}, min_attempt_budget_s=0.01)
    events = await p.run(deadline_s=0.2)
    failover = next(e for e in events if isinstance(e, FailedOver))
    assert failover.reason is FailureKind.TIMEOUT
    assert texts(events) == "fast"
    assert p.adapters["a"].calls[0].closed.is_set()
    assert p.observed[0].duration_s < 0.15  # about half of 0.2 s, leaving the rest for b


async def test_stream_without_finish_reason_is_truncated_not_success() -> None:
    p = pipeline({"a": [[TextDelta("half")]], "b": [words("whole")]})
    events = await p.run(chat_request(commit_window_tokens=5))
    assert next(e for e in events if isinstance(e, FailedOver)).reason is FailureKind.TRUNCATED
    error, _ = await pipeline({"a": [[TextDelta("half")]]}).fail()
    assert isinstance(error, MidStreamFailure)


async def test_caller_going_away_closes_upstream_and_reports_usage_so_far() -> None:
    p = pipeline({"a": [[TextDelta("abcdefgh"), Pause(10), *words("never")]]})
    run = p.failover.run(chat_request(), p.router.candidates(chat_request()), 5.0)
    events = run.events()
    assert await anext(events) == AttemptStarted("a", "m", 1)
    assert await anext(events) == OutputDelta(1, TextDelta("abcdefgh"))
    await events.aclose()
    assert p.adapters["a"].calls[0].closed.is_set()
    record = p.observed[-1]
    assert record.message == "cancelled" and record.usage is not None
    assert record.usage.output_tokens == 2 and record.usage.estimated


@pytest.mark.parametrize("ending", ["caller goes away", "provider fails", "finishes"])
async def test_an_attempt_is_closed_exactly_once(ending: str, monkeypatch: pytest.MonkeyPatch) -> None:
    closes: list[Attempt] = []
    close = Attempt.close

    async def counted(self: Attempt) -> None:
        closes.append(self)
        await close(self)

    monkeypatch.setattr(Attempt, "close", counted)
    script: list[Step] = {
        "caller goes away": [TextDelta("abc"), Pause(10)],
        "provider fails": [ProviderError(FailureKind.SERVER_ERROR, "boom")],
        "finishes": words("done"),
    }[ending]
    p = pipeline({"a": [script]})
    run = p.failover.run(chat_request(), p.router.candidates(chat_request()), 5.0)
    events = run.events()
    with contextlib.suppress(GatewayError):
        await anext(events)
        await anext(events)
        if ending != "caller goes away":
            async for _ in events:
                pass
    await events.aclose()
    assert len(closes) == 1


async def test_usage_is_reported_with_cost() -> None:
    p = pipeline({"a": [[TextDelta("x"), UsageReport(1000, 500), Finished(FinishReason.STOP)]]})
    events = await p.run()
    usage = next(e for e in events if isinstance(e, AttemptUsage))
    assert usage == AttemptUsage("a", "m", 1, 1000, 500, Decimal("0.002"), price_version=price_version(M))
    assert p.failover.ledger.totals("a").output_tokens == 500
    assert p.failover.ledger.totals("a").cost_usd == Decimal("0.002")


async def test_done_carries_what_every_attempt_cost_and_an_error_the_cost_so_far() -> None:
    """1000/500 tokens reported by the failed attempt, and an estimate for the answer that carried no usage."""
    failed = [UsageReport(1000, 500), ProviderError(FailureKind.SERVER_ERROR, "boom", status_code=500)]
    p = pipeline({"a": [[TextDelta("x"), *failed]], "b": [[TextDelta("12345678"), Finished(FinishReason.STOP)]]})
    events = await p.run(chat_request(mid_stream_policy=MidStreamPolicy.RESTART))
    done = events[-1]
    assert isinstance(done, Completed) and done.usage is not None
    # a: 1000 x $1 + 500 x $2 per Mtok; b estimated: the request's characters / 4 in, 8 characters / 4 = 2 out.
    prompt_tokens = done.usage.input_tokens - 1000
    assert done.usage.output_tokens == 502 and done.usage.estimated
    assert done.usage.cost_usd == Decimal("0.002") + (prompt_tokens * 1 + 2 * 2) / Decimal(1_000_000)
    p = pipeline({"a": [[TextDelta("x"), *failed]], "b": [[rate_limited()]]})
    error, _ = await p.fail(chat_request(mid_stream_policy=MidStreamPolicy.RESTART))
    assert error.metadata["cost_usd"] == "0.002000000000"


async def test_no_keys_is_failed_precondition_naming_the_variable() -> None:
    providers = [spec("a", M, key=None), spec("b", M, key=None)]
    p = Pipeline(gateway_config(*providers), {})
    error, events = await p.fail()
    assert isinstance(error, NotConfigured)
    assert "A_API_KEY" in error.message and "B_API_KEY" in error.message
    assert events == []


async def test_unconfigured_candidates_are_skipped() -> None:
    providers = [spec("a", M, key=None), spec("b", M)]
    p = Pipeline(gateway_config(*providers), {"b": ScriptedAdapter("b", [words("ok")])})
    skip = AttemptRecord(0, "a", "m", SkipReason.NOT_CONFIGURED, "set A_API_KEY")
    assert (await p.run())[0] == AttemptStarted("b", "m", 1, (skip,))


async def test_no_attempt_starts_with_less_than_the_minimum_budget() -> None:
    p = pipeline({"a": [words("never")]}, min_attempt_budget_s=0.5)
    error, _ = await p.fail(deadline_s=0.1)
    assert isinstance(error, DeadlineExhausted)
    assert p.adapters["a"].calls == []
    assert error.metadata["skipped_1"].startswith("a/m " + SkipReason.DEADLINE.value)


async def test_breaker_opens_after_consecutive_failures() -> None:
    server = ProviderError(FailureKind.SERVER_ERROR, "500")
    p = pipeline({"a": [[server], [server]], "b": [words("1"), words("2"), words("3")]}, breaker_failures=2)
    for _ in range(3):
        await p.run()
    assert len(p.adapters["a"].calls) == 2
    assert provider_state(p.health, p.spec("a"))[0] is HealthState.UNHEALTHY


async def test_restart_without_a_candidate_left_fails_mid_stream() -> None:
    reset = ProviderError(FailureKind.CONNECTION_ERROR, "connection reset")
    p = pipeline({"a": [[TextDelta("x"), reset]]})
    error, events = await p.fail(chat_request(mid_stream_policy=MidStreamPolicy.RESTART))
    assert isinstance(error, MidStreamFailure) and "no candidate left to restart" in error.message
    assert not any(isinstance(e, FailedOver) for e in events)
