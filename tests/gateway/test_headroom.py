"""Headroom's rules (health/headroom.py) on a fake clock: taken at its word until the reset, then recovered."""

from __future__ import annotations

import asyncio

from gateway_service.domain.headers import HeadersSink, response_headers
from gateway_service.health import Headroom, Need, Target

T = Target("openai", "gpt-4o-mini", "key1")
OTHER_KEY = Target("openai", "gpt-4o-mini", "key2")
OTHER_MODEL = Target("openai", "gpt-4o", "key1")
SMALL = Need(input_tokens=10, output_tokens=0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def openai_headers(requests_left: int, reset: str = "30s", tokens_left: int = 10_000) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": str(requests_left),
        "x-ratelimit-reset-requests": reset,
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": str(tokens_left),
        "x-ratelimit-reset-tokens": "6s",
    }


def test_nothing_known_is_no_shortage() -> None:
    assert Headroom(Clock()).shortage(T, SMALL) is None


def test_no_requests_left_is_a_hard_shortage_until_the_reset_then_recovered() -> None:
    clock = Clock()
    headroom = Headroom(clock)
    headroom.observe(T, openai_headers(0, "30s"))
    short = headroom.shortage(T, SMALL)
    assert short is not None and short.hard and short.until == 130.0
    assert "0 of 3 requests left, 1 needed" in short.what
    clock.now = 129.9
    assert headroom.shortage(T, SMALL) is not None
    clock.now = 130.0
    assert headroom.shortage(T, SMALL) is None  # whole again: forgotten until the next response
    assert headroom.windows(T) == {}


def test_headroom_is_per_provider_model_and_key() -> None:
    headroom = Headroom(Clock())
    headroom.observe(T, openai_headers(0))
    assert headroom.shortage(T, SMALL) is not None
    assert headroom.shortage(OTHER_KEY, SMALL) is None
    assert headroom.shortage(OTHER_MODEL, SMALL) is None


def test_attempts_in_flight_take_their_share_before_their_responses() -> None:
    headroom = Headroom(Clock())
    headroom.observe(T, openai_headers(2))
    headroom.spend(T, SMALL)
    assert headroom.shortage(T, SMALL) is None
    headroom.spend(T, SMALL)
    short = headroom.shortage(T, SMALL)
    assert short is not None and short.hard
    headroom.observe(T, openai_headers(1))  # a response says what is really left: its word wins
    assert headroom.shortage(T, SMALL) is None


def test_fewer_tokens_than_the_estimate_is_a_soft_shortage_until_the_tokens_reset() -> None:
    headroom = Headroom(Clock())
    headroom.observe(T, openai_headers(3, tokens_left=500))
    big = Need(input_tokens=300, output_tokens=400)
    short = headroom.shortage(T, big)
    assert short is not None and not short.hard and short.until == 106.0
    assert "500 of 10000 tokens left, 700 needed" in short.what
    assert headroom.shortage(T, Need(300, 200)) is None


def test_a_retry_after_leaves_no_request_until_it_ends() -> None:
    clock = Clock()
    headroom = Headroom(clock)
    headroom.observe(T, {**openai_headers(2, "1s"), "retry-after": "20"})
    short = headroom.shortage(T, SMALL)
    assert short is not None and short.hard and short.until == 120.0


def test_garbage_changes_nothing() -> None:
    headroom = Headroom(Clock())
    headroom.observe(T, openai_headers(2))
    before = headroom.windows(T)
    headroom.observe(T, {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "soon"})
    headroom.observe(T, {"retry-after": "whenever", "anthropic-ratelimit-requests-remaining": "-1"})
    assert headroom.windows(T) == before


async def test_listen_hands_the_headers_to_tasks_created_within_only() -> None:
    headroom = Headroom(Clock())

    async def respond() -> None:
        sink = response_headers.get()
        assert sink is not None
        sink(openai_headers(0))

    with headroom.listen(T, SMALL, 10.0):
        task = asyncio.ensure_future(respond())
    assert response_headers.get() is None  # reset once the task is made: later requests tell nobody
    await task
    assert headroom.shortage(T, SMALL) is not None


def test_turned_off_it_listens_to_nothing() -> None:
    headroom = Headroom(Clock(), enabled=False)
    with headroom.listen(T, SMALL, 10.0):
        assert response_headers.get() is None


def sink_of(headroom: Headroom, target: Target, patience_s: float = 10.0) -> HeadersSink:
    """The sink an attempt for `target` hands its responses' headers to."""
    with headroom.listen(target, SMALL, patience_s):
        sink = response_headers.get()
    assert sink is not None
    return sink


def test_a_response_to_an_earlier_request_does_not_give_back_the_share_of_those_still_unanswered() -> None:
    """The upstream answered A before B reached it: "1 left" counts A but not B, which already took its share."""
    clock = Clock()
    headroom = Headroom(clock)
    headroom.observe(T, openai_headers(2))
    a, b = sink_of(headroom, T), sink_of(headroom, T)
    assert headroom.windows(T)["requests"].remaining == 0
    a(openai_headers(1))
    assert headroom.windows(T)["requests"].remaining == 0  # 1 stated, less B's unanswered request
    assert headroom.shortage(T, SMALL) is not None
    b(openai_headers(0))
    assert headroom.windows(T)["requests"].remaining == 0
    c = sink_of(headroom, T, patience_s=5.0)
    clock.now += 5.0  # C never heard back within its patience: it no longer counts
    headroom.observe(T, openai_headers(2))
    assert headroom.windows(T)["requests"].remaining == 2
    c(openai_headers(1))  # a late answer after all: taken at its word
    assert headroom.windows(T)["requests"].remaining == 1
