"""Buffered metrics to the schema service, off the request path.

`observe` (called by failover for each finished attempt) only appends to a bounded buffer and
never blocks or awaits; when the buffer is full the metrics are dropped and counted, with at
most one log line a second saying how many. `count` (the rate-limit budgets' fail-opens, skips
and refusals) only adds one to a number per series: each flush turns the numbers into one metric
per series, the count since the last flush (unit `count`; sum them over time for totals), so an
event that happens on every call (fail-open while Redis is down) costs a dict update, not a metric.
Delivery is gateway_service.sender's: a bounded queue, batches with a request_id kept across retries
(the schema service stores a batch once), retries with backoff over minutes, drops counted by reason.
`send` (server.py builds it on the generated `schemaservice.v1` stub) raises `SendError` for a failure.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

from opentelemetry import trace

from gateway_service.config import TelemetrySettings
from gateway_service.domain.events import AttemptRecord
from gateway_service.domain.request import ChatRequest
from gateway_service.limits.spend import micro_usd
from gateway_service.sender import BufferedSender, SenderSettings
from schemaservice.v1 import metrics_service_pb2 as mpb

Send = Callable[[mpb.WriteMetricsRequest], Awaitable[None]]
Series = tuple[str, tuple[tuple[str, str], ...]]  # metric name and sorted labels


MAX_LINKS = 128  # chats a batch's span links to, at most (the newest)


def attempt_metrics(record: AttemptRecord, first_token_s: float | None, now_ns: int) -> list[mpb.Metric]:
    """The metrics of one attempt: duration, time to first token, tokens and cost, labelled."""
    labels = {
        "provider": record.provider,
        "model": record.model,
        "outcome": record.outcome.value if record.outcome else ("cancelled" if record.message == "cancelled" else "ok"),
    }
    values: list[tuple[str, float | int, str]] = [("llm.attempt.duration", record.duration_s * 1000, "ms")]
    if first_token_s is not None:
        values.append(("llm.attempt.ttft", first_token_s * 1000, "ms"))
    if record.usage is not None:
        values += [
            ("llm.attempt.input_tokens", record.usage.input_tokens, "tokens"),
            ("llm.attempt.output_tokens", record.usage.output_tokens, "tokens"),
            # Integer micro-dollars (what the dollar budgets count): float8 adds integers exactly, so a
            # sum over any window is exact, where dollars as floats would drift (0.1 ten times is not 1).
            ("llm.attempt.cost_micro_usd", micro_usd(record.usage.cost_usd), "micro_usd"),
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
        self._counts: dict[Series, int] = {}
        self.sender: BufferedSender[mpb.Metric] = BufferedSender(
            "metrics", sender_settings(settings), self._write, before_flush=self._drain_counts
        )

    @property
    def enabled(self) -> bool:
        return self.send is not None

    @property
    def sent(self) -> int:
        return self.sender.sent

    @property
    def dropped(self) -> int:
        return self.sender.dropped.total()

    def observe(self, request: ChatRequest, record: AttemptRecord, first_token_s: float | None) -> None:
        """Queue an attempt's metrics; drops (counted) rather than wait when the buffer is full."""
        if self.send is None:
            return
        if not self.sender.put(attempt_metrics(record, first_token_s, time.time_ns())):
            return
        if self._tracing and (chat := trace.get_current_span().get_span_context()).is_valid:
            self._links.append(chat)

    def count(self, name: str, labels: Mapping[str, str]) -> None:
        """One more of a named, labelled event; sent with the next flush. Never blocks or awaits."""
        if self.send is None:
            return
        series = (name, tuple(sorted(labels.items())))
        self._counts[series] = self._counts.get(series, 0) + 1

    def _drain_counts(self) -> None:
        """The counts so far become metrics, as many as the buffer has room for; the others wait, still counting."""
        now_ns = time.time_ns()
        for series in list(self._counts)[: self.sender.room]:
            self.sender.put([count_metric(series, self._counts.pop(series), now_ns)])

    async def run(self) -> None:
        """Send batches until cancelled."""
        await self.sender.run()

    async def flush(self) -> None:
        """Send what waits now (retrying as the sender's rules say)."""
        await self.sender.flush()

    async def close(self, grace_s: float) -> None:
        """Send what waits within `grace_s` (the loop already stopped); the rest is dropped and counted."""
        if self.send is not None:
            await self.sender.close(grace_s)

    async def _write(self, request_id: str, metrics: Sequence[mpb.Metric]) -> None:
        assert self.send is not None
        links = [trace.Link(chat) for chat in self._links]
        self._links.clear()
        with self.tracer.start_as_current_span("send metrics", links=links, attributes={"metrics": len(metrics)}):
            await self.send(mpb.WriteMetricsRequest(request_id=request_id, metrics=metrics))


def sender_settings(settings: TelemetrySettings) -> SenderSettings:
    return SenderSettings(
        buffer_size=settings.buffer_size,
        batch_size=max(settings.batch_size, 1),
        flush_interval_s=settings.flush_interval_s,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
        retry_for_s=settings.retry_for_s,
    )
