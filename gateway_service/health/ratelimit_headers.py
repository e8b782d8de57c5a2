"""What a provider's response headers say of its rate limits: the parsers, one per header family.

    OpenAI, Groq (and most OpenAI-compatible servers):
        x-ratelimit-limit-requests: 60          x-ratelimit-limit-tokens: 150000
        x-ratelimit-remaining-requests: 59      x-ratelimit-remaining-tokens: 149984
        x-ratelimit-reset-requests: 1s          x-ratelimit-reset-tokens: 6m0s
      the resets are Go durations (`6m0s`, `2m59.56s`, `1.5s`, `20ms`): the time until the limit is whole again.
    Anthropic:
        anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}
      the resets are RFC 3339 times (`2025-01-15T14:24:00Z`): when the limit is whole again.
    Any of them, mostly on a 429 or 503:
        retry-after-ms: 1500       retry-after: 30  or an HTTP date (RFC 9110), read by email.utils
    Gemini sends no such headers; its 429 carries google.rpc.RetryInfo in the body, which the adapter reads
    into the error's retry_after_s (providers/gemini.py), a cooldown like any Retry-After (blocks.py).

A limit is kept only when the response gave both how much is left and a reset within `MAX_RESET_S`; a value
that is missing, malformed, negative or absurd drops that limit and nothing else, so garbage changes nothing.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

MAX_RESET_S = 86_400.0  # a reset further away than a day is not believed (a daily quota is the longest known)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_MAX_VALUE_CHARS = 64  # no real value is longer; a longer one is not parsed at all
_OURS = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after")


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit as a response stated it: what is left, of how much, and in how many seconds it is whole."""

    remaining: int
    limit: int | None
    reset_s: float


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Every limit one response stated; None where it said nothing usable."""

    requests: Quota | None = None
    tokens: Quota | None = None  # input and output together (OpenAI, Groq; Anthropic's older combined limit)
    input_tokens: Quota | None = None
    output_tokens: Quota | None = None
    retry_after_s: float | None = None

    @property
    def quotas(self) -> dict[str, Quota]:
        named = {
            "requests": self.requests,
            "tokens": self.tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }
        return {name: quota for name, quota in named.items() if quota is not None}


def rate_limits(headers: Mapping[str, str], now: float | None = None) -> RateLimits | None:
    """The limits `headers` state (`now`: wall-clock seconds, for Anthropic's times), or None for none."""
    # One pass over the response's headers: the clients' Headers look each name up by a scan of them all,
    # and this runs on every response, before its first token.
    headers = {key: value for key, value in ((k.lower(), v) for k, v in headers.items()) if key.startswith(_OURS)}
    if not headers:
        return None
    now = time.time() if now is None else now
    if "anthropic-ratelimit-requests-remaining" in headers or "anthropic-ratelimit-tokens-remaining" in headers:
        found = _anthropic(headers, now)
    elif "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers:
        found = _openai(headers)
    else:
        found = RateLimits()
    retry = retry_after_s(headers, now)
    if retry is not None and retry <= MAX_RESET_S:
        found = RateLimits(found.requests, found.tokens, found.input_tokens, found.output_tokens, retry)
    return found if found.quotas or found.retry_after_s is not None else None


def _openai(headers: Mapping[str, str]) -> RateLimits:
    def quota(kind: str) -> Quota | None:
        reset = go_duration_s(headers.get(f"x-ratelimit-reset-{kind}"))
        return _quota(headers.get(f"x-ratelimit-remaining-{kind}"), headers.get(f"x-ratelimit-limit-{kind}"), reset)

    return RateLimits(requests=quota("requests"), tokens=quota("tokens"))


def _anthropic(headers: Mapping[str, str], now: float) -> RateLimits:
    def quota(kind: str) -> Quota | None:
        prefix = f"anthropic-ratelimit-{kind}"
        reset = rfc3339_in_s(headers.get(f"{prefix}-reset"), now)
        return _quota(headers.get(f"{prefix}-remaining"), headers.get(f"{prefix}-limit"), reset)

    return RateLimits(quota("requests"), quota("tokens"), quota("input-tokens"), quota("output-tokens"))


def _quota(remaining: str | None, limit: str | None, reset_s: float | None) -> Quota | None:
    left = count(remaining)
    if left is None or reset_s is None:
        return None
    return Quota(left, count(limit), reset_s)


def count(value: str | None) -> int | None:
    """A non-negative decimal count (`59`), else None."""
    if value is None or len(value) > _MAX_VALUE_CHARS:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None


def go_duration_s(value: str | None) -> float | None:
    """Seconds in a Go duration (`6m0s`, `1.5s`, `20ms`, `1h2m3s`; a bare number is seconds), else None."""
    if value is None or len(value) > _MAX_VALUE_CHARS:
        return None
    value = value.strip()
    seconds = _number(value)
    if seconds is None:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            return None
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    return seconds if seconds <= MAX_RESET_S else None


def rfc3339_in_s(value: str | None, now: float) -> float | None:
    """Seconds from `now` (wall clock) until an RFC 3339 time with an offset (`2025-01-15T14:24:00Z`), at
    least 0, else None."""
    if value is None or len(value) > _MAX_VALUE_CHARS:
        return None
    try:
        when = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    seconds = max(0.0, when.timestamp() - now)
    return seconds if seconds <= MAX_RESET_S else None


def retry_after_s(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), at least 0."""
    if not headers:
        return None
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = headers.get("retry-after")
    if not value or len(value) > _MAX_VALUE_CHARS:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": a UTC time from a sender that did not say so
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, parsed.timestamp() - (time.time() if now is None else now))


def _number(value: str | None) -> float | None:
    """A finite, non-negative decimal number of seconds (`30`, `1.5`), else None."""
    if value is None or len(value) > _MAX_VALUE_CHARS:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
