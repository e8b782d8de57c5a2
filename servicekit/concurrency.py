"""How many calls a server runs at once: overall, per caller, and per kind of long-lived call.

Each call holds one slot from the moment its headers are admitted (servicekit.gate) until its task ends,
so a call whose request message has not arrived yet (a slow client, or one withholding the last byte)
holds a slot too, and the memory its partial message takes is bounded by the slots.

    every authenticated call        max_calls overall, max_calls_per_caller for each caller
    long-lived kinds (`Kinds`)      also max_streams per kind, max_streams_per_caller per kind and caller
    Health Watch, reflection        max_open_streams (no credentials: no caller to count them by)

A call over a limit is refused before its request is read: RESOURCE_EXHAUSTED, ErrorInfo reason
CONCURRENCY_LIMITED with metadata {kind, scope}, RetryInfo; counted in
`grpc_server_concurrency_refused_total{kind, scope, caller}` and logged once per caller and kind a minute.
While the server holds max_calls calls it cannot take another, and readiness says so (NOT_SERVING) until
it is back under 90% of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.rpc import code_pb2
from prometheus_client import Counter

from servicekit.errors import ServiceError
from servicekit.metrics import Registry

log = logging.getLogger(__name__)

CALLS = "calls"  # the kind of every call not named in `Kinds`
OPEN_STREAMS = "open_streams"
Kinds = Mapping[str, str]  # full method name -> its long-lived kind ("chats", "watches", "metric_streams")
RETRY_AFTER_S = 1.0
LOG_EVERY_S = 60.0
READY_AGAIN_AT = 0.9  # of max_calls: readiness does not flap on every call at the limit


@dataclass(frozen=True)
class Limits:
    """Slots of one server; each service sets its defaults, flags override them (servicekit.security)."""

    max_calls: int
    max_calls_per_caller: int
    max_streams: int
    max_streams_per_caller: int
    max_open_streams: int = 32


class ConcurrencyLimited(ServiceError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "CONCURRENCY_LIMITED"


Release = Callable[[], None]


class Slots:
    """The counts of one server's calls in flight; `take` admits a call or says which limit it is over.

    `caller` is "" when the server runs without a callers file: then only the overall limits apply.
    """

    def __init__(
        self,
        limits: Limits,
        kinds: Kinds | None = None,
        *,
        metrics: Registry | None = None,
        on_saturated: Callable[[bool], None] | None = None,
    ) -> None:
        self.limits = limits
        self.kinds = dict(kinds or {})
        self.on_saturated = on_saturated
        self.saturated = False
        self._counts: dict[tuple[str, str], int] = {}  # (kind or "*", caller or "*") -> calls; no zero entries
        self._logged = Throttle(LOG_EVERY_S)
        self._refused = (
            Counter(
                "grpc_server_concurrency_refused",
                "Calls refused because a concurrency limit was reached (servicekit.concurrency).",
                ("kind", "scope", "caller"),
                registry=metrics.registry,
            )
            if metrics is not None
            else None
        )

    def count(self, kind: str = "*", caller: str = "*") -> int:
        return self._counts.get((kind, caller), 0)

    def take(self, method: str, caller: str) -> Release | ConcurrencyLimited:
        """A slot for one call of `method` (released by calling the result), or the refusal to answer with."""
        kind = self.kinds.get(method, CALLS)
        keys = self._keys(kind, caller)
        for key, limit, scope in keys:
            if self.count(*key) >= limit:
                return self._refuse(kind, scope, caller)
        for key, _, _ in keys:
            self._counts[key] = self._counts.get(key, 0) + 1
        self._check_saturation()
        return lambda: self._release([key for key, _, _ in keys])

    def take_open(self) -> Release | ConcurrencyLimited:
        """A slot for a stream anyone may open (Health Watch, reflection)."""
        key = (OPEN_STREAMS, "*")
        if self.count(*key) >= self.limits.max_open_streams:
            return self._refuse(OPEN_STREAMS, "all callers", "")
        self._counts[key] = self.count(*key) + 1
        return lambda: self._release([key])

    def _keys(self, kind: str, caller: str) -> list[tuple[tuple[str, str], int, str]]:
        lim = self.limits
        keys = [(("*", "*"), lim.max_calls, "all callers")]
        if caller:
            keys.append((("*", caller), lim.max_calls_per_caller, "caller"))
        if kind != CALLS:
            keys.append(((kind, "*"), lim.max_streams, "all callers"))
            if caller:
                keys.append(((kind, caller), lim.max_streams_per_caller, "caller"))
        return keys

    def _release(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            left = self._counts[key] - 1
            if left:
                self._counts[key] = left
            else:
                del self._counts[key]
        self._check_saturation()

    def _check_saturation(self) -> None:
        total = self.count()
        if not self.saturated and total >= self.limits.max_calls:
            self._set_saturated(True)
        elif self.saturated and total <= self.limits.max_calls * READY_AGAIN_AT:
            self._set_saturated(False)

    def _set_saturated(self, saturated: bool) -> None:
        self.saturated = saturated
        if saturated:
            log.warning("server full: no slot for another call", extra={"max_calls": self.limits.max_calls})
        if self.on_saturated is not None:
            self.on_saturated(saturated)

    def _refuse(self, kind: str, scope: str, caller: str) -> ConcurrencyLimited:
        if self._refused is not None:
            self._refused.labels(kind, scope, caller or "none").inc()
        if self._logged.first((caller, kind, scope)):
            log.warning(
                "call refused: concurrency limit",
                extra={"caller": caller or "none", "kind": kind, "scope": scope, "once_per_s": LOG_EVERY_S},
            )
        noun = "streams of this kind" if kind != CALLS else "calls"
        who = "this caller's" if scope == "caller" else "the server's"
        return ConcurrencyLimited(
            f"{who} concurrent {noun} are all in use; retry later",
            metadata={"kind": kind, "scope": scope},
            retry_after_s=RETRY_AFTER_S,
        )


class Throttle:
    """Says yes for a key at most once every `every_s` (logs an attacker cannot flood)."""

    MAX_KEYS = 4096

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[object, float] = {}

    def first(self, key: object) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        if len(self._last) >= self.MAX_KEYS:  # keys are bounded (callers, methods), but never trust that
            self._last = {k: t for k, t in self._last.items() if now - t < self.every_s}
        self._last[key] = now
        return True
