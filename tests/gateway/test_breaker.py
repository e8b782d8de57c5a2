"""The breaker and the stall watch on their own, with the time given explicitly (no clock, no loop)."""

from __future__ import annotations

from dataclasses import replace

from gateway_service.config import FailoverSettings
from gateway_service.health.breaker import Breaker, Phase
from gateway_service.health.settings import breaker_settings, stall_settings
from gateway_service.health.stalls import StallWatch

DEFAULTS = FailoverSettings()  # the config owns the defaults; a test changes only what it is about


def breaker(**kw: float) -> Breaker:
    return Breaker(replace(breaker_settings(DEFAULTS), **kw))


def fail(b: Breaker, now: float, count: int = 1) -> None:
    for _ in range(count):
        b.failed(b.admit(now, 1.0), now)


def succeed(b: Breaker, now: float, count: int = 1) -> None:
    for _ in range(count):
        b.succeeded(b.admit(now, 1.0), now)


def test_consecutive_failures_open_it_for_the_first_open_time() -> None:
    b = breaker(consecutive=3, first_open_s=2.0)
    fail(b, 0.0, 2)
    assert b.phase(0.0) is Phase.CLOSED
    fail(b, 0.1)
    assert b.phase(0.1) is Phase.OPEN and b.open_until == 2.1
    assert b.phase(2.1) is Phase.HALF_OPEN


def test_an_error_rate_over_the_window_opens_it_only_with_enough_requests() -> None:
    b = breaker(consecutive=100, window_s=10.0, min_requests=10, error_rate=0.5)
    for t in range(4):  # fail, ok, fail, ok...: 50 %, but only 8 results
        fail(b, t)
        succeed(b, t + 0.5)
    assert b.phase(4.0) is Phase.CLOSED and b.error_rate(4.0) == 0.5
    succeed(b, 4.0)
    assert b.phase(4.0) is Phase.CLOSED  # 4 of 9
    fail(b, 4.5)
    assert b.phase(4.5) is Phase.OPEN  # the 10th result: 5 of 10 failed


def test_results_older_than_the_window_are_forgotten() -> None:
    b = breaker(consecutive=100, window_s=10.0, min_requests=4, error_rate=0.5)
    fail(b, 0.0, 2)
    succeed(b, 0.0)  # resets the streak, not the window
    succeed(b, 11.0, 2)
    assert b.error_rate(11.0) == 0.0  # the failures at t=0 left the window
    fail(b, 11.0)
    assert b.phase(11.0) is Phase.CLOSED  # 1 of 3


def test_one_probe_after_the_wait_and_its_success_closes() -> None:
    b = breaker(consecutive=1, first_open_s=2.0)
    fail(b, 0.0)
    probe = b.admit(2.0, patience_s=0.5)
    other = b.admit(2.1, patience_s=0.5)
    assert probe.probe and not other.probe
    assert b.probe_until == 2.5
    assert b.succeeded(probe, 2.2)
    assert b.phase(2.2) is Phase.CLOSED and b.failed_probes == 0


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() -> None:
    b = breaker(consecutive=1, first_open_s=2.0, max_open_s=5.0)
    fail(b, 0.0)
    waits = []
    now = 0.0
    for _ in range(3):
        now = b.open_until or now
        probe = b.admit(now, 1.0)
        assert probe.probe
        assert b.failed(probe, now)
        waits.append((b.open_until or 0.0) - now)
    assert waits == [4.0, 5.0, 5.0]
    probe = b.admit(b.open_until or 0.0, 1.0)
    b.succeeded(probe, 20.0)
    fail(b, 21.0)
    assert b.open_until == 23.0  # a success reset the growth


def test_a_cancelled_probe_frees_the_slot() -> None:
    b = breaker(consecutive=1, first_open_s=1.0)
    fail(b, 0.0)
    probe = b.admit(1.0, 5.0)
    b.cancelled(probe)
    assert b.admit(1.1, 5.0).probe


def test_a_request_started_before_the_breaker_opened_cannot_close_it() -> None:
    b = breaker(consecutive=2, first_open_s=2.0)
    old_stream = b.admit(0.0, 1.0)
    fail(b, 1.0, 2)
    assert b.phase(1.0) is Phase.OPEN
    assert not b.succeeded(old_stream, 1.1)
    assert b.phase(1.1) is Phase.OPEN


def test_the_burst_that_opened_it_cannot_reopen_it_or_make_it_longer() -> None:
    b = breaker(consecutive=2, first_open_s=2.0)
    burst = [b.admit(0.0, 1.0) for _ in range(20)]
    for admission in burst:
        b.failed(admission, 0.1)
    assert b.open_until == 2.1 and b.failed_probes == 0


def test_a_last_resort_try_while_open_closes_on_success_and_changes_nothing_on_failure() -> None:
    b = breaker(consecutive=1, first_open_s=2.0)
    fail(b, 0.0)
    fail(b, 0.5)  # admitted while open: not the probe
    assert b.open_until == 2.0 and b.failed_probes == 0
    succeed(b, 0.6)
    assert b.phase(0.6) is Phase.CLOSED


def watch(**kw: float) -> StallWatch:
    return StallWatch(replace(stall_settings(DEFAULTS), **kw))


def test_an_attempt_far_past_the_usual_first_token_makes_the_provider_suspect() -> None:
    w = watch(factor=4.0, floor_s=0.5, min_samples=3)
    for n in range(5):
        w.started(n, float(n), 2.0)
        w.first_token(n, 0.2)
    w.started(99, 10.0, 2.0)
    assert w.suspect(10.7) is None  # 0.7 s: past the floor, not past 4 x 0.2 s
    suspect = w.suspect(10.9)
    assert suspect is not None and suspect.usual_s == 0.2 and suspect.until == 12.0
    w.first_token(99, 0.95)
    assert w.suspect(11.0) is None


def test_the_floor_and_too_few_samples_keep_it_from_suspecting() -> None:
    w = watch(factor=4.0, floor_s=1.0, min_samples=3)
    w.started(1, 0.0, 30.0)
    assert w.suspect(5.0) is None  # no first token seen yet: nothing to compare with
    for n in range(2, 6):
        w.started(n, 0.0, 30.0)
        w.first_token(n, 0.01)
    assert w.suspect(0.9) is None  # 4 x 0.01 s, but the floor is 1 s
    assert w.suspect(1.1) is not None
    w.ended(1)
    assert w.suspect(1.2) is None
