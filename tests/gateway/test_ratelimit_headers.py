"""The rate-limit header parsers, on the header samples the providers' own docs show, and on garbage."""

from __future__ import annotations

import datetime

import httpx2
import pytest

from gateway_service.health import Quota, RateLimits, rate_limits, retry_after_s
from gateway_service.health.ratelimit_headers import MAX_RESET_S, go_duration_s, rfc3339_in_s
from llm_simulator.ratelimit import go_duration, rfc3339

NOW = datetime.datetime(2025, 1, 15, 14, 23, 0, tzinfo=datetime.timezone.utc).timestamp()

# OpenAI's rate-limit guide, "Rate limits in headers".
OPENAI = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
# Groq's rate-limit docs (a daily request limit; retry-after only on a 429).
GROQ = {
    "retry-after": "2",
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-limit-tokens": "18000",
    "x-ratelimit-remaining-requests": "14370",
    "x-ratelimit-remaining-tokens": "17997",
    "x-ratelimit-reset-requests": "2m59.56s",
    "x-ratelimit-reset-tokens": "7.66s",
}
# Anthropic's rate-limit docs, "Response headers".
ANTHROPIC = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3201",
    "anthropic-ratelimit-requests-reset": "2025-01-15T14:24:00Z",
    "anthropic-ratelimit-tokens-limit": "400000",
    "anthropic-ratelimit-tokens-remaining": "312000",
    "anthropic-ratelimit-tokens-reset": "2025-01-15T14:23:15Z",
    "anthropic-ratelimit-input-tokens-limit": "400000",
    "anthropic-ratelimit-input-tokens-remaining": "312000",
    "anthropic-ratelimit-input-tokens-reset": "2025-01-15T14:23:15Z",
    "anthropic-ratelimit-output-tokens-limit": "80000",
    "anthropic-ratelimit-output-tokens-remaining": "79000",
    "anthropic-ratelimit-output-tokens-reset": "2025-01-15T14:23:01+00:00",
}


def test_openai() -> None:
    assert rate_limits(httpx2.Headers(OPENAI), NOW) == RateLimits(
        requests=Quota(59, 60, 1.0), tokens=Quota(149984, 150000, 360.0)
    )


def test_groq() -> None:
    stated = rate_limits(httpx2.Headers(GROQ), NOW)
    assert stated is not None
    assert stated.requests == Quota(14370, 14400, pytest.approx(179.56))
    assert stated.tokens == Quota(17997, 18000, pytest.approx(7.66))
    assert stated.retry_after_s == 2.0


def test_anthropic() -> None:
    assert rate_limits(httpx2.Headers(ANTHROPIC), NOW) == RateLimits(
        requests=Quota(3201, 4000, 60.0),
        tokens=Quota(312000, 400000, 15.0),
        input_tokens=Quota(312000, 400000, 15.0),
        output_tokens=Quota(79000, 80000, 1.0),
    )


def test_header_names_are_case_insensitive_through_the_clients_headers() -> None:
    stated = rate_limits(httpx2.Headers({k.upper(): v for k, v in OPENAI.items()}), NOW)
    assert stated is not None and stated.requests == Quota(59, 60, 1.0)


@pytest.mark.parametrize(
    "value,seconds",
    [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("2m59.56s", 179.56),
        ("1h2m3s", 3723.0),
        ("0s", 0.0),
        ("7", 7.0),
        ("500us", 0.0005),
        (" 1s ", 1.0),
    ],
)
def test_go_durations(value: str, seconds: float) -> None:
    assert go_duration_s(value) == pytest.approx(seconds)


GARBAGE_DURATIONS = ["", "soon", "1x", "-1s", "1s2", "s", "m1s", "1e3s", "nan", "inf", "25h", "9" * 100, "1s" * 40]


@pytest.mark.parametrize("value", GARBAGE_DURATIONS)
def test_garbage_durations_are_none(value: str) -> None:
    assert go_duration_s(value) is None


@pytest.mark.parametrize(
    "value", ["tomorrow", "2025-01-15T14:24:00", "2025-13-15T14:24:00Z", "1736951040", "", "2026-01-16T14:24:00Z"]
)
def test_garbage_or_naive_or_far_rfc3339_times_are_none(value: str) -> None:
    assert rfc3339_in_s(value, NOW) is None


def test_a_reset_in_the_past_is_now() -> None:
    assert rfc3339_in_s("2025-01-15T14:22:00Z", NOW) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "1s"},
        {"x-ratelimit-remaining-requests": "-3", "x-ratelimit-reset-requests": "1s"},
        {"x-ratelimit-remaining-requests": "3.5", "x-ratelimit-reset-requests": "1s"},
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"},
        {"x-ratelimit-remaining-requests": "0"},  # no reset: when it recovers is unknown, so it says nothing
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "99999h"},
        {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": "soon"},
        {"anthropic-ratelimit-tokens-remaining": "٣", "anthropic-ratelimit-tokens-reset": "2025-01-15T14:24:00Z"},
        {"retry-after": "whenever"},
        {"retry-after": "-5"},
        {"retry-after": "inf"},
        {"retry-after-ms": "nan"},
        {"content-type": "text/event-stream"},
        {},
    ],
)
def test_garbage_states_nothing(headers: dict[str, str]) -> None:
    assert rate_limits(headers, NOW) is None


def test_one_garbage_limit_drops_only_itself() -> None:
    stated = rate_limits({**OPENAI, "x-ratelimit-remaining-tokens": "lots"}, NOW)
    assert stated == RateLimits(requests=Quota(59, 60, 1.0))
    stated = rate_limits({**OPENAI, "x-ratelimit-limit-requests": "many"}, NOW)
    assert stated is not None and stated.requests == Quota(59, None, 1.0)


@pytest.mark.parametrize(
    "headers,seconds",
    [
        ({"retry-after": "30"}, 30.0),
        ({"retry-after-ms": "20"}, 0.02),
        ({"retry-after-ms": "junk", "retry-after": "4"}, 4.0),
        ({"retry-after": "Wed, 15 Jan 2025 14:23:30 GMT"}, 30.0),  # an HTTP date (RFC 9110, IMF-fixdate)
        ({"retry-after": "Wednesday, 15-Jan-25 14:23:30 GMT"}, 30.0),  # RFC 850, which recipients must read too
        ({"retry-after": "Wed, 15 Jan 2025 25:61:00 GMT"}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(headers, NOW) == seconds


def test_a_retry_after_past_the_cap_is_not_kept() -> None:
    assert rate_limits({"retry-after": str(int(MAX_RESET_S) + 1)}, NOW) is None


@pytest.mark.parametrize("seconds", [0.02, 0.5, 1.5, 59.56, 60.0, 360.0, 3723.0])
def test_the_simulators_durations_read_back(seconds: float) -> None:
    assert go_duration_s(go_duration(seconds)) == pytest.approx(seconds, abs=0.01)


def test_the_simulators_times_read_back() -> None:
    assert rfc3339_in_s(rfc3339(NOW + 59.2), NOW) == 60.0
