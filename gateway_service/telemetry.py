"""Buffered metrics to the schema service, off the request path.

`observe` (called by failover for each finished attempt) only appends to a bounded buffer and
never blocks or awaits; when the buffer is full the metrics are dropped and counted, with at
most one log line a second saying how many. `count` (the rate-limit budgets' fail-opens, skips
and refusals) only adds one to a number per series: each flush turns the numbers into one metric
per series, the count since the last flush (unit `count`; sum them over time for totals), so an
event that happens on every call (fail-open while Redis is down) costs a dict update, not a metric.
A background task sends batches with WriteMetrics (through `send`, which server.py builds on the
generated `schemaservice.v1` stub); a batch that fails is retried with the same request_id, so the
schema service stores it once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from opentelemetry import trace

from gateway_service.config import TelemetrySettings
from gateway_service.domain.events import AttemptRecord
from gateway_service.domain.request import ChatRequest
from schemaservice.v1 import metrics_service_pb2 as mpb

Send = Callable[[mpb.WriteMetricsRequest], Awaitable[None]]
Series = tuple[str, tuple[tuple[str, str], ...]]  # metric name and sorted labels


class Undeliverable(Exception):
    """The schema service refused the batch for good (e.g. INVALID_ARGUMENT): retrying cannot help."""


SEND_ATTEMPTS = 3
MAX_LINKS = 128  # chats a batch's span links to, at most (the newest)

log = logging.getLogger(__name__)


def attempt_metrics(record: AttemptRecord, first_token_s: float | None, now_ns: int) -> list[mpb.Metric]:
    """The metrics of one attempt: duration, time to first token, tokens and cost, labelled."""
    labels = {
        "provider": record.provider,
        "model": record.model,
        "outcome": record.outcome.value if record.outcome else ("cancelled" if record.message == "cancelled" else "ok"),
    }
    values: list[tuple[str, float, str]] = [("llm.attempt.duration", record.duration_s * 1000, "ms")]
    if first_token_s is not None:
        values.append(("llm.attempt.ttft", first_token_s * 1000, "ms"))
    if record.usage is not None:
        values += [
            ("llm.attempt.input_tokens", record.usage.input_tokens, "tokens"),
            ("llm.attempt.output_tokens", record.usage.output_tokens, "tokens"),
            ("llm.attempt.cost", record.usage.cost_usd, "usd"),
        ]
    metrics = []
    for name, value, unit in values:
        metric = mpb.Metric(name=name, value=float(value), unit=unit, labels=labels)
        metric.time.FromNanoseconds(now_ns)
        metrics.append(metric)
    return metrics


def count_metric(series: Series, value: int, now_ns: int) -> mpb.Metric:
    name, labels = series
    metric = mpb.Metric(name=name, value=float(value), unit="count", labels=dict(labels))
    metric.time.FromNanoseconds(now_ns)
    return metric


class Telemetry:
    def __init__(self, settings: TelemetrySettings, send: Send | None, tracer: trace.Tracer | None = None) -> None:
        self.settings = settings
        self.send = send
        # With tracing on, each batch's send is a span linked to the chats whose metrics it carries
        # (a batch serves many traces; a link, not a parent, is how OpenTelemetry says so).
        self.tracer = tracer or trace.NoOpTracer()
        self._tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self._links: deque[trace.SpanContext] = deque(maxlen=MAX_LINKS)
        self.buffer: deque[mpb.Metric] = deque()
        self.dropped = 0
        self.sent = 0
        self._dropped_logged = 0
        self._last_drop_log = 0.0
        self._wake = asyncio.Event()
        self._counts: dict[Series, int] = {}

    @property
    def enabled(self) -> bool:
        return self.send is not None

    def observe(self, request: ChatRequest, record: AttemptRecord, first_token_s: float | None) -> None:
        """Queue an attempt's metrics; drops (counted) rather than wait when the buffer is full."""
        if self.send is None:
            return
        metrics = attempt_metrics(record, first_token_s, time.time_ns())
        room = self.settings.buffer_size - len(self.buffer)
        if room < len(metrics):
            self._drop(len(metrics))
            return
        self.buffer.extend(metrics)
        if self._tracing and (chat := trace.get_current_span().get_span_context()).is_valid:
            self._links.append(chat)
        if len(self.buffer) >= self.settings.batch_size:
            self._wake.set()

    def count(self, name: str, labels: Mapping[str, str]) -> None:
        """One more of a named, labelled event; sent with the next flush. Never blocks or awaits."""
        if self.send is None:
            return
        series = (name, tuple(sorted(labels.items())))
        self._counts[series] = self._counts.get(series, 0) + 1

    def _drain_counts(self) -> None:
        """The counts so far become metrics, as many as the buffer has room for; the others wait, still counting."""
        room = self.settings.buffer_size - len(self.buffer)
        now_ns = time.time_ns()
        for series in list(self._counts)[: max(room, 0)]:
            self.buffer.append(count_metric(series, self._counts.pop(series), now_ns))

    def _drop(self, count: int) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._last_drop_log >= 1.0:
            log.warning(
                "telemetry buffer full; metrics dropped",
                extra={"dropped": self.dropped - self._dropped_logged, "dropped_total": self.dropped},
            )
            self._dropped_logged, self._last_drop_log = self.dropped, now

    async def run(self) -> None:
        """Send batches until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.flush_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        self._drain_counts()
        while self.buffer and self.send is not None:
            batch = [self.buffer.popleft() for _ in range(min(len(self.buffer), self.settings.batch_size))]
            links = [trace.Link(chat) for chat in self._links]
            self._links.clear()
            with self.tracer.start_as_current_span("send metrics", links=links, attributes={"metrics": len(batch)}):
                await self._send(mpb.WriteMetricsRequest(request_id=uuid.uuid4().hex, metrics=batch))

    async def _send(self, batch: mpb.WriteMetricsRequest) -> None:
        assert self.send is not None
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                await self.send(batch)
                self.sent += len(batch.metrics)
                return
            except Undeliverable as exc:
                log.warning("metrics batch refused", extra={"error": str(exc), "metrics": len(batch.metrics)})
                break
            except Exception as exc:  # any transport failure: retry the same request_id, then drop
                log.warning(
                    "metrics batch not delivered",
                    extra={"attempt": attempt, "error": type(exc).__name__, "metrics": len(batch.metrics)},
                )
                await asyncio.sleep(0.1 * attempt)
        self._drop(len(batch.metrics))
