"""Rate limits the simulator enforces, and states in each provider's own response headers.

A limit is a spec like a fault's:  `requests=3 window=60 tokens=10000 api=openai model=gpt-4o-mini`
(each of api= and model= narrows it; `garbage=1` states it in malformed header values, still enforcing it;
`quiet=1` enforces it without any header). It counts per wire format, model and API key, in fixed windows
of `window` seconds that start with the first request. Every answer carries what is left, as the provider
would say it:

    openai (and Groq, any openai_compatible):  x-ratelimit-{limit,remaining,reset}-{requests,tokens}
        resets as Go durations ("59.5s", "1m0s", "20ms"), the time until the window is whole again
    anthropic:  anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}
        resets as RFC 3339 times ("2026-12-08T00:01:00Z"), when it is whole again
    gemini:  no headers; a refusal's body carries google.rpc.RetryInfo

A request past a limit is refused with 429 in the provider's own error form, with `retry-after` (OpenAI,
Anthropic) or RetryInfo (Gemini). Tokens count as the real ones do: the prompt (about four characters a
token) and max_tokens, taken when the request arrives.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from llm_simulator.faults import FaultSpecError
from llm_simulator.plan import Prompt

GARBAGE = {"remaining": "lots", "limit": "-1", "reset": "soon"}


@dataclass(frozen=True)
class Limit:
    requests: int | None = None
    tokens: int | None = None
    window_s: float = 60.0
    api: str = ""
    model: str = ""
    garbage: bool = False
    quiet: bool = False

    def applies_to(self, api: str, model: str) -> bool:
        return (not self.api or self.api == api) and (not self.model or self.model == model)


def parse_limit(spec: str) -> Limit:
    """`requests=N tokens=N window=S api=A model=M garbage=1 quiet=1` into a Limit."""
    options = dict(word.partition("=")[::2] for word in spec.split())
    known = {"requests", "tokens", "window", "api", "model", "garbage", "quiet"}
    if not options or set(options) - known:
        raise FaultSpecError(f"bad rate limit {spec!r}: expected {' '.join(sorted(known))} as key=value")
    try:
        limit = Limit(
            requests=int(options["requests"]) if "requests" in options else None,
            tokens=int(options["tokens"]) if "tokens" in options else None,
            window_s=float(options.get("window", "60")),
            api=options.get("api", ""),
            model=options.get("model", ""),
            garbage=options.get("garbage", "0") == "1",
            quiet=options.get("quiet", "0") == "1",
        )
    except ValueError as exc:
        raise FaultSpecError(f"bad rate limit {spec!r}: {exc}") from exc
    if limit.requests is None and limit.tokens is None:
        raise FaultSpecError(f"bad rate limit {spec!r}: give requests= or tokens=")
    return limit


@dataclass
class _Window:
    started: float
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Verdict:
    headers: dict[str, str]
    retry_after_s: float | None = None  # refused: when the window is whole again


class RateLimiter:
    """The limits set on one simulator and what each (limit, api, model, key) used of its window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.limits: list[Limit] = []
        self._windows: dict[tuple[int, str, str, str], _Window] = {}

    def set(self, limits: list[Limit]) -> None:
        self.limits = list(limits)
        self._windows.clear()

    def check(self, prompt: Prompt, api_key: str) -> Verdict:
        """Count this request against every limit that applies; the headers to answer with."""
        headers: dict[str, str] = {}
        refused: float | None = None
        now = self.clock()
        for index, limit in enumerate(self.limits):
            if not limit.applies_to(prompt.api, prompt.model):
                continue
            key = (index, prompt.api, prompt.model, api_key)
            window = self._windows.get(key)
            if window is None or now >= window.started + limit.window_s:
                window = self._windows[key] = _Window(now)
            reset_s = window.started + limit.window_s - now
            tokens = _tokens(prompt)
            over = (limit.requests is not None and window.requests + 1 > limit.requests) or (
                limit.tokens is not None and window.tokens + tokens > limit.tokens
            )
            if over:
                refused = max(refused or 0.0, reset_s)
            else:
                window.requests += 1
                window.tokens += tokens
            if not limit.quiet:
                headers.update(_stated(prompt.api, limit, window, reset_s))
        if refused is not None and prompt.api != "gemini":
            headers["retry-after"] = str(max(1, math.ceil(refused)))
        return Verdict(headers, refused)


def _tokens(prompt: Prompt) -> int:
    chars = sum(len(text) for _, text in prompt.messages)
    return (chars + 3) // 4 + (prompt.max_tokens or 0)


def _stated(api: str, limit: Limit, window: _Window, reset_s: float) -> dict[str, str]:
    counts = {"requests": (limit.requests, window.requests), "tokens": (limit.tokens, window.tokens)}
    headers: dict[str, str] = {}
    for kind, (allowed, used) in counts.items():
        if allowed is None:
            continue
        values = {"limit": str(allowed), "remaining": str(max(0, allowed - used))}
        if api == "anthropic":
            values["reset"] = rfc3339(time.time() + reset_s)
            names = [kind] if kind == "requests" else ["tokens", "input-tokens", "output-tokens"]
            for name in names:
                for field, value in values.items():
                    headers[f"anthropic-ratelimit-{name}-{field}"] = GARBAGE[field] if limit.garbage else value
        elif api != "gemini":
            values["reset"] = go_duration(reset_s)
            for field, value in values.items():
                headers[f"x-ratelimit-{field}-{kind}"] = GARBAGE[field] if limit.garbage else value
    return headers


def go_duration(seconds: float) -> str:
    """A Go duration as OpenAI and Groq write it: `20ms`, `1.5s`, `59.56s`, `1m0s`, `2h3m4s`."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 2):g}s"
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def rfc3339(wall: float) -> str:
    """An RFC 3339 UTC time as Anthropic writes it, rounded up to the second: `2026-12-08T00:01:00Z`."""
    when = datetime.datetime.fromtimestamp(math.ceil(wall), datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
