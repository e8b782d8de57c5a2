"""Headroom: what each target's provider said it has left, so a request it cannot take is never sent.

Every response of an attempt's upstream requests (a 200's head or a 429's) tells its Target what its
headers state (ratelimit_headers.py): requests and tokens left, and when each limit is whole again. Until
that reset the target is taken at its word; at the reset the window is forgotten (it recovered). Each
attempt that starts takes its share at once (one request, its estimated tokens), so requests in flight
count before their own responses come back; and a response's statement is taken less the share of the
attempts still waiting for theirs, which the upstream may not have counted when it answered. A
`retry-after` on a response leaves no request until it ends.

A candidate whose headroom cannot take the request is skipped before any 429 (chat/rules.py). The skip is
hard when the provider said nothing is left (0 requests or tokens): it is never tried before the reset,
like a Retry-After. It is soft when some tokens are left but fewer than the gateway's estimate: the
estimate is a guess, so such a candidate may still be the last resort.

Headroom is kept per provider + model + key: providers count per key and model (OpenAI, Groq), or per key
and model class (Anthropic), so one key's model may be out of room while another is not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from gateway_service.domain.headers import response_headers
from gateway_service.health.ratelimit_headers import RateLimits, rate_limits
from gateway_service.health.target import Target


@dataclass(frozen=True, slots=True)
class Need:
    """What one attempt takes from its target's limits: one request, its estimated tokens."""

    input_tokens: int
    output_tokens: int  # the request's max_output_tokens; 0 when it set none

    def of(self, limit: str) -> int:
        """What it takes from the limit named `limit`: every request takes at least one of each."""
        if limit == "input_tokens":
            return max(1, self.input_tokens)
        if limit == "output_tokens":
            return max(1, self.output_tokens)
        if limit == "tokens":
            return max(1, self.input_tokens + self.output_tokens)
        return 1


@dataclass
class Window:
    """One limit of one target: what is left (as last stated, less what started since), and until when."""

    remaining: int
    limit: int | None
    until: float  # monotonic seconds: the limit is whole again, and this window forgotten


@dataclass(frozen=True, slots=True)
class Shortage:
    """Why a target cannot take a request now, and when it can (monotonic seconds)."""

    what: str
    until: float
    hard: bool  # the provider said nothing is left (else: fewer tokens than the estimate)


@dataclass(eq=False)
class _Claim:
    """An attempt that took its share and has not heard back yet: the upstream may not have counted it."""

    need: Need
    until: float  # it gives up waiting for a response (its first-token patience): forgotten then


class Headroom:
    """The stated headroom of every target this replica has heard from."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, enabled: bool = True) -> None:
        self.clock = clock
        self.enabled = enabled
        self._windows: dict[Target, dict[str, Window]] = {}
        self._unanswered: dict[Target, set[_Claim]] = {}

    @contextlib.contextmanager
    def listen(self, target: Target, need: Need, patience_s: float) -> Iterator[None]:
        """An attempt for `target` starts: it takes its share now, and the responses of the upstream requests
        started within the block (tasks created) tell `target` what is left."""
        if not self.enabled:
            yield
            return
        self.spend(target, need)
        claim = _Claim(need, self.clock() + patience_s)
        claims = self._unanswered.setdefault(target, set())
        claims.add(claim)

        def heard(headers: Mapping[str, str]) -> None:
            claims.discard(claim)  # the upstream counted this request: its statement includes it
            self.observe(target, headers)

        token = response_headers.set(heard)
        try:
            yield
        finally:
            response_headers.reset(token)

    def observe(self, target: Target, headers: Mapping[str, str]) -> None:
        """A response for `target` came back with `headers`."""
        stated = rate_limits(headers)
        if stated is not None:
            self.stated(target, stated)

    def stated(self, target: Target, stated: RateLimits) -> None:
        """What a response stated; less what attempts still unanswered took, which it may not count yet (a
        response to an earlier request must not give their share back)."""
        now = self.clock()
        pending = self._pending(target, now)
        windows = self._windows.setdefault(target, {})
        for name, quota in stated.quotas.items():
            left = max(0, quota.remaining - sum(claim.need.of(name) for claim in pending))
            windows[name] = Window(left, quota.limit, now + quota.reset_s)
        if stated.retry_after_s is not None:
            until = now + stated.retry_after_s
            requests = windows.get("requests")
            if requests is None or requests.remaining > 0 or requests.until < until:
                windows["requests"] = Window(0, requests.limit if requests else None, until)

    def spend(self, target: Target, need: Need) -> None:
        """An attempt for `target` starts now: it takes its share before its response says what is left."""
        for name, window in self._live(target).items():
            window.remaining = max(0, window.remaining - need.of(name))

    def _pending(self, target: Target, now: float) -> list[_Claim]:
        claims = self._unanswered.get(target)
        if not claims:
            return []
        for claim in [c for c in claims if c.until <= now]:
            claims.discard(claim)  # no response within its patience: the attempt failed or gave up
        return list(claims)

    def shortage(self, target: Target, need: Need) -> Shortage | None:
        """Why `target` cannot take `need` now, or None when it can (or nothing is known)."""
        short = [(name, w) for name, w in self._live(target).items() if need.of(name) > w.remaining]
        if not short:
            return None
        until = max(w.until for _, w in short)
        left = max(0.0, until - self.clock())
        said = ", ".join(_describe(name, w, need.of(name)) for name, w in short)
        hard = any(w.remaining == 0 for _, w in short)
        return Shortage(f"predicted rate limit: {said}; whole again in {left:.3f}s", until, hard)

    def windows(self, target: Target) -> dict[str, Window]:
        """The target's live windows (for ListProviders), by limit name."""
        return dict(self._live(target))

    def _live(self, target: Target) -> dict[str, Window]:
        windows = self._windows.get(target)
        if not windows:
            return {}
        now = self.clock()
        for name in [n for n, w in windows.items() if w.until <= now]:
            del windows[name]  # the limit is whole again: nothing known until the next response
        return windows


def _describe(name: str, window: Window, needed: int) -> str:
    of = f" of {window.limit}" if window.limit is not None else ""
    return f"{window.remaining}{of} {name.replace('_', ' ')} left, {needed} needed"
