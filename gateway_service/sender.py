"""A bounded, batching sender that waits out a schema-service outage (metrics now, the usage ledger next).

The rules, in order:
- `put` never blocks or awaits: items join a bounded queue, or are dropped (reason `buffer_full`) when
  the queue, with the batch in flight, already holds `buffer_size`.
- Items leave in batches of at most `batch_size`. A batch's request_id is chosen once, with its items:
  every retry carries the same id and the same items, so the server's idempotency stores it once.
- One batch is in flight at a time. A failed one is retried after an exponential backoff with jitter
  (between half and all of `retry_initial_s * 2**n`, capped at `retry_max_s`, at random, so replicas
  that lost the server together do not come back together), never sooner than the server's RetryInfo
  asks, until `retry_for_s` after its first attempt; then it is dropped (reason `expired`). Items
  behind it wait in the queue (and fill it, at worst).
- A failure that no retry can fix (`SendError.retryable` false: a malformed batch) drops the batch at
  once (reason `rejected`). A refused credential (UNAUTHENTICATED, PERMISSION_DENIED) is retried: a
  rotated token or certificate is read again, and its batches go through once it is right.
- `close(grace_s)` stops the loop and sends what is left within the grace; the rest is dropped (reason
  `shutdown`), unless the caller keeps it elsewhere (`keep_left`: the usage spool replays it at the next start).
- `on_drop` hears of every batch given up after it was queued (`rejected`, `expired`), with its items.
- Logs say what happened: the status code and the server's message for a failed attempt (the first of an
  outage, then at most one line per `LOG_INTERVAL_S` with the count since), a line when batches go through
  again, and for drops the reason and how many (at most one line per reason per `LOG_INTERVAL_S`).

Nothing here knows gRPC: the caller's `Deliver` raises `SendError` with the code's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
Deliver = Callable[[str, Sequence[T]], Awaitable[None]]  # (request_id, items); raises SendError or any error

LOG_INTERVAL_S = 10.0
MIN_FLUSH_INTERVAL_S = 0.01
DROP_REASONS = ("buffer_full", "spool_full", "rejected", "expired", "shutdown")


class SendError(Exception):
    """A batch not delivered: the status code's name, the server's message, and whether to try again."""

    def __init__(self, code: str, cause: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {cause}")
        self.code, self.cause, self.retryable, self.retry_after_s = code, cause, retryable, retry_after_s


@dataclass(frozen=True)
class SenderSettings:
    buffer_size: int
    batch_size: int
    flush_interval_s: float
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    retry_for_s: float = 600.0


@dataclass
class _Batch(Generic[T]):
    items: tuple[T, ...]
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    first_try: float | None = None
    attempts: int = 0


class _Limited:
    """One log line now, then at most one per interval, each saying how many happened since the last."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s, self.last, self.unlogged = interval_s, -interval_s, 0

    def due(self, count: int = 1) -> int:
        """How many to report now (0: stay quiet this time)."""
        self.unlogged += count
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return 0
        self.last, due, self.unlogged = now, self.unlogged, 0
        return due


class BufferedSender(Generic[T]):
    """Queues items and delivers them in batches through `deliver`; `name` is what the log lines call them."""

    def __init__(
        self,
        name: str,
        settings: SenderSettings,
        deliver: Deliver[T],
        *,
        before_flush: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        on_drop: Callable[[str, Sequence[T]], None] | None = None,
    ) -> None:
        self.name, self.settings, self._deliver = name, settings, deliver
        self._before_flush = before_flush or (lambda: None)
        self._on_drop = on_drop or (lambda reason, items: None)
        self._rng = rng or random.Random()
        self._log = logging.getLogger(f"gateway_service.sender.{name}")
        self._queue: deque[T] = deque()
        self._pending: _Batch[T] | None = None
        self._lock = asyncio.Lock()  # one deliverer at a time: the loop, a flush, or the final flush
        self._wake, self._closing, self._settled = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._settled.set()
        self._progress = asyncio.Event()  # set (and replaced) after each attempt's outcome
        self.sent = 0
        self.dropped: Counter[str] = Counter()  # by reason (DROP_REASONS)
        self.failures: Counter[str] = Counter()  # failed attempts by status code
        self._drop_logs = {reason: _Limited() for reason in DROP_REASONS}
        self._failure_log = _Limited()
        self._outage: float | None = None  # when the first failed attempt of the current outage was

    @property
    def waiting(self) -> int:
        """Items not yet acknowledged: queued and in flight."""
        return len(self._queue) + (len(self._pending.items) if self._pending else 0)

    @property
    def room(self) -> int:
        return max(self.settings.buffer_size - self.waiting, 0)

    def put(self, items: Sequence[T]) -> bool:
        """Queue all of `items` or, without room for all, drop them (counted); never blocks."""
        if self._closing.is_set() or self.room < len(items):
            self._drop("shutdown" if self._closing.is_set() else "buffer_full", len(items))
            return False
        self._queue.extend(items)
        self._settled.clear()
        if len(self._queue) >= self.settings.batch_size:
            self._wake.set()
        return True

    async def settled(self) -> None:
        """Returns once nothing waits: every item so far delivered or dropped."""
        await self._settled.wait()

    async def until(self, holds: Callable[[], bool]) -> None:
        """Returns once `holds()` is true, looked at after each attempt's outcome (tests, operators' tools)."""
        while not holds():
            await self._progress.wait()

    def _tell(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def run(self) -> None:
        """Deliver until cancelled: whenever a batch is full, else every `flush_interval_s`."""
        # A flush_interval_s of 0 means "as soon as possible", not a loop that never rests.
        interval = max(self.settings.flush_interval_s, MIN_FLUSH_INTERVAL_S)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            await self.flush()

    async def flush(self, deadline: float | None = None) -> None:
        """Deliver everything queued now, retrying as the rules say; with a monotonic `deadline`, stop by then."""
        async with self._lock:
            self._before_flush()
            while (batch := self._next_batch()) is not None:
                if not await self._deliver_batch(batch, deadline):
                    return
            if not self._queue:
                self._settled.set()

    async def close(self, grace_s: float, *, keep_left: bool = False) -> int:
        """No more items; what is queued gets `grace_s` to be delivered, the rest is dropped and counted (unless
        the caller keeps it: `keep_left`). Returns how many were left."""
        self._closing.set()
        with contextlib.suppress(TimeoutError):  # a call in flight at the end of the grace is cut short too
            await asyncio.wait_for(self.flush(time.monotonic() + grace_s), grace_s)
        left = self.waiting
        self._queue.clear()
        self._pending = None
        if left and not keep_left:
            self._drop("shutdown", left)
        self._settled.set()
        self._tell()
        return left

    def drop(self, reason: str, count: int, cause: str = "") -> None:
        """Items given up before they were queued (the usage spool's `spool_full`): counted and logged."""
        self._drop(reason, count, SendError(reason, cause, retryable=False) if cause else None)

    def _next_batch(self) -> _Batch[T] | None:
        if self._pending is None and self._queue:
            count = min(len(self._queue), self.settings.batch_size)
            self._pending = _Batch(tuple(self._queue.popleft() for _ in range(count)))
        return self._pending

    async def _deliver_batch(self, batch: _Batch[T], deadline: float | None) -> bool:
        """Try `batch` until it is delivered or dropped (True), or the deadline comes first (False)."""
        while True:
            now = time.monotonic()
            batch.first_try = batch.first_try if batch.first_try is not None else now
            batch.attempts += 1
            try:
                await self._deliver(batch.request_id, batch.items)
            except Exception as exc:  # every failure is answered here: retried, or dropped and counted
                error = exc if isinstance(exc, SendError) else SendError(type(exc).__name__, str(exc), retryable=True)
                delay = self._failed(batch, error)
                self._tell()
                if delay is None:
                    return True
                if deadline is not None and time.monotonic() + delay >= deadline:
                    return False
                await asyncio.sleep(delay)  # the backoff itself; close() cancels the loop rather than wake it
                continue
            self._delivered(batch)
            self._tell()
            return True

    def _delivered(self, batch: _Batch[T]) -> None:
        self._pending = None
        self.sent += len(batch.items)
        if self._outage is not None:
            self._log.info(
                f"{self.name} delivered again",
                extra={"outage_s": round(time.monotonic() - self._outage, 3), "attempts": batch.attempts},
            )
            self._outage, self._failure_log = None, _Limited()

    def _failed(self, batch: _Batch[T], error: SendError) -> float | None:
        """Count and log a failed attempt; the wait before the next one, or None when the batch is dropped."""
        self.failures[error.code] += 1
        assert batch.first_try is not None
        if not error.retryable:
            self._give_up(batch, "rejected", error)
            return None
        if time.monotonic() - batch.first_try >= self.settings.retry_for_s:
            self._give_up(batch, "expired", error)
            return None
        delay = max(self._backoff(batch.attempts), error.retry_after_s or 0.0)
        self._outage = self._outage if self._outage is not None else time.monotonic()
        if failures := self._failure_log.due():
            refused = error.code in ("UNAUTHENTICATED", "PERMISSION_DENIED")
            self._log.warning(
                f"{self.name} {'refused by' if refused else 'not delivered to'} the schema service; retrying",
                extra={
                    "code": error.code,
                    "cause": error.cause[:500],
                    "failures": failures,
                    "attempt": batch.attempts,
                    "retry_in_s": round(delay, 3),
                    "waiting": self.waiting,
                },
            )
        return delay

    def _give_up(self, batch: _Batch[T], reason: str, error: SendError) -> None:
        self._pending = None
        self._drop(reason, len(batch.items), error)
        self._on_drop(reason, batch.items)

    def _backoff(self, attempts: int) -> float:
        ceiling = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2 ** min(attempts - 1, 30))
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def _drop(self, reason: str, count: int, error: SendError | None = None) -> None:
        self.dropped[reason] += count
        if dropped := self._drop_logs[reason].due(count):
            extra: dict[str, object] = {"reason": reason, "dropped": dropped, "dropped_total": self.dropped.total()}
            if error is not None:
                extra |= {"code": error.code, "cause": error.cause[:500]}
            self._log.warning(f"{self.name} dropped ({reason.replace('_', ' ')})", extra=extra)
