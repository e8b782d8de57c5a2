"""Recent statistics per target (health/windows.py) on a fake clock: 1, 5 and 60-minute windows, in flight."""

from __future__ import annotations

from gateway_service.domain.failures import FailureKind
from gateway_service.health import Target
from gateway_service.health.windows import Recent

T = Target("openai", "gpt-4o-mini", "key1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counts(recent: Recent) -> list[tuple[int, int]]:
    return [(w.requests, w.failures) for w in recent.stats(T).windows]


def test_results_leave_each_window_as_it_passes() -> None:
    clock = Clock()
    recent = Recent(clock)
    for _ in range(3):
        recent.started(T)
        recent.failed(T, FailureKind.SERVER_ERROR)
    clock.now += 240  # 4 minutes later
    recent.started(T)
    recent.succeeded(T, 0.2, 1.2, output_tokens=50)
    assert counts(recent) == [(1, 0), (4, 3), (4, 3)]
    assert recent.stats(T).windows[1].errors == {FailureKind.SERVER_ERROR: 3}
    assert recent.stats(T).windows[1].success_rate == 0.25
    clock.now += 120  # the failures are 6 minutes old
    assert counts(recent) == [(0, 0), (1, 0), (4, 3)]
    assert recent.stats(T).windows[0].success_rate == 0.0  # no attempts: 0, with requests 0 saying why
    clock.now += 3600
    assert counts(recent) == [(0, 0), (0, 0), (0, 0)]


def test_in_flight_counts_attempts_admitted_and_not_ended() -> None:
    recent = Recent(Clock())
    recent.started(T)
    recent.started(T)
    assert recent.stats(T).in_flight == 2
    recent.cancelled(T)  # the caller went away: no verdict, not counted
    assert recent.stats(T).in_flight == 1 and counts(recent)[0] == (0, 0)
    recent.failed(T, FailureKind.TIMEOUT)
    stats = recent.stats(T)
    assert stats.in_flight == 0 and stats.last_failed and stats.windows[0].errors == {FailureKind.TIMEOUT: 1}


def test_ttft_percentiles_and_tokens_per_second_over_recent_successes() -> None:
    recent = Recent(Clock(), samples=3)
    for ttft in (0.9, 0.1, 0.2, 0.3):  # the oldest falls out of the three kept
        recent.started(T)
        recent.succeeded(T, ttft, ttft + 2.0, output_tokens=100)
    stats = recent.stats(T)
    assert stats.ttft_p50_ms == 200.0
    assert 290 <= stats.ttft_p95_ms <= 300
    assert stats.output_tokens_per_s == 50.0  # 300 tokens over 6 seconds of flow
    assert not stats.last_failed


def test_a_target_never_tried_has_empty_statistics() -> None:
    stats = Recent(Clock()).stats(T)
    assert (stats.in_flight, stats.ttft_p50_ms, stats.output_tokens_per_s) == (0, 0.0, 0.0)
    assert [w.window_s for w in stats.windows] == [60, 300, 3600]
