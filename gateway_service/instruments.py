"""The gateway's Prometheus families, fed on the side of the request path (never awaited).

    llm_gateway_attempts_total{provider, model, outcome}          every attempt's end (ok, a FailureKind, cancelled)
    llm_gateway_failovers_total{provider, model, reason}          an attempt that failed over to another candidate
    llm_gateway_time_to_first_token_seconds{provider, model}      histogram, per attempt that produced output
    llm_gateway_attempt_duration_seconds{provider, model}         histogram
    llm_gateway_tokens_total{provider, model, type}               input / output, as reported (or estimated)
    llm_gateway_cost_usd_total{provider, model}
    llm_gateway_streams_in_flight{method}                         StreamChat / Chat calls running now
    llm_gateway_limit_events_total{event}                         rate-limit budgets: fail_open, skips, refusals
    llm_gateway_provider_health{provider, state}                  1 for each provider's current state (at scrape)
    llm_gateway_telemetry_buffered_metrics                        metrics waiting for the schema service
    llm_gateway_telemetry_sent_metrics_total
    llm_gateway_telemetry_dropped_metrics_total{reason}          buffer_full, rejected, expired, shutdown
    llm_gateway_telemetry_send_failures_total{code}              failed WriteMetrics calls by status code
    llm_gateway_usage_buffered_records                           usage records waiting for the schema service
    llm_gateway_usage_sent_records_total
    llm_gateway_usage_dropped_records_total{reason}              buffer_full, spool_full, rejected, expired, shutdown
    llm_gateway_usage_send_failures_total{code}                  failed RecordUsage calls by status code
    llm_gateway_usage_spool_bytes                                size of the usage spool's files (with a spool_dir)

Labels are provider and model names from the configuration and the gateway's own enums: a caller
cannot add a label value (an unknown model is refused before any attempt).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway_service.sender import DROP_REASONS, BufferedSender
from gateway_service.telemetry import Telemetry
from gateway_service.usage import UsageFeed
from servicekit.metrics import Registry

if TYPE_CHECKING:
    from gateway_service.domain.events import AttemptRecord, FailedOver
    from gateway_service.domain.request import ChatRequest

# Seconds: first tokens arrive in tens of milliseconds to tens of seconds (reasoning models).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)


class GatewayMetrics:
    """The families above on one server's registry."""

    def __init__(self, metrics: Registry) -> None:
        registry = metrics.registry
        pm = ("provider", "model")
        self.attempts = Counter("llm_gateway_attempts", "Attempts by outcome.", (*pm, "outcome"), registry=registry)
        self.failovers = Counter(
            "llm_gateway_failovers",
            "Attempts that failed over to the next candidate.",
            (*pm, "reason"),
            registry=registry,
        )
        self.ttft = Histogram(
            "llm_gateway_time_to_first_token_seconds",
            "Time from an attempt's request to its first output.",
            pm,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "llm_gateway_attempt_duration_seconds",
            "Time from an attempt's request to its end.",
            pm,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter("llm_gateway_tokens", "Tokens by direction.", (*pm, "type"), registry=registry)
        self.cost = Counter("llm_gateway_cost_usd", "Cost in US dollars at configured prices.", pm, registry=registry)
        self.in_flight = Gauge(
            "llm_gateway_streams_in_flight", "Chat calls running now.", ("method",), registry=registry
        )
        self.limit_events = Counter(
            "llm_gateway_limit_events", "Rate-limit budget events.", ("event",), registry=registry
        )
        self._registry = registry

    def observe_attempt(self, request: ChatRequest, record: AttemptRecord, first_token_s: float | None) -> None:
        """One finished attempt (the failover's per-attempt hook; a skipped candidate never gets here)."""
        pm = (record.provider, record.model)
        outcome = record.outcome.value if record.outcome else ("cancelled" if record.message == "cancelled" else "ok")
        self.attempts.labels(*pm, outcome).inc()
        self.duration.labels(*pm).observe(record.duration_s)
        if first_token_s is not None:
            self.ttft.labels(*pm).observe(first_token_s)
        if record.usage is not None:
            self.tokens.labels(*pm, "input").inc(record.usage.input_tokens)
            self.tokens.labels(*pm, "output").inc(record.usage.output_tokens)
            self.cost.labels(*pm).inc(float(record.usage.cost_usd))

    def observe_failover(self, event: FailedOver) -> None:
        self.failovers.labels(event.from_provider, event.from_model, event.reason.value).inc()

    def count(self, name: str, labels: Mapping[str, str]) -> None:
        """The limits' event hook (`llm.limits.fail_open` ...): counted by event only (its labels may hold ids)."""
        self.limit_events.labels(name.rsplit(".", 1)[-1]).inc()

    def watch(
        self, states: Callable[[], Iterable[tuple[str, str]]], telemetry: Telemetry, usage: UsageFeed | None = None
    ) -> None:
        """State read at scrape time: each provider's health state (name, state), the telemetry and usage backlogs."""
        self._registry.register(_GatewayState(states, telemetry, usage))


class _GatewayState(Collector):
    def __init__(
        self, states: Callable[[], Iterable[tuple[str, str]]], telemetry: Telemetry, usage: UsageFeed | None
    ) -> None:
        self._states = states
        self._telemetry = telemetry
        self._usage = usage

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        health = GaugeMetricFamily(
            "llm_gateway_provider_health", "1 for the provider's current health state.", labels=("provider", "state")
        )
        for provider, state in self._states():
            health.add_metric((provider, state), 1)
        yield health
        yield from sender_families(self._telemetry.sender, "llm_gateway_telemetry", "metrics", "WriteMetrics")
        if self._usage is not None:
            yield from sender_families(self._usage.sender, "llm_gateway_usage", "records", "RecordUsage")
            if self._usage.spool is not None:
                yield GaugeMetricFamily(
                    "llm_gateway_usage_spool_bytes", "Size of the usage spool's files.", value=self._usage.spool.size
                )


def sender_families(
    sender: BufferedSender[Any], prefix: str, noun: str, call: str
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """A buffered sender's backlog, deliveries, drops by reason and failed calls by code."""
    yield GaugeMetricFamily(
        f"{prefix}_buffered_{noun}",
        f"{noun.capitalize()} waiting to be sent to the schema service (queued or in flight).",
        value=sender.waiting,
    )
    yield CounterMetricFamily(
        f"{prefix}_sent_{noun}", f"{noun.capitalize()} the schema service acknowledged.", value=sender.sent
    )
    dropped = CounterMetricFamily(
        f"{prefix}_dropped_{noun}",
        f"{noun.capitalize()} dropped, by reason: buffer_full, spool_full, rejected, expired (retried too long), "
        "shutdown.",
        labels=("reason",),
    )
    for reason in DROP_REASONS:
        dropped.add_metric((reason,), sender.dropped[reason])
    yield dropped
    failures = CounterMetricFamily(
        f"{prefix}_send_failures",
        f"{call} calls that failed (and were retried or dropped), by gRPC status code.",
        labels=("code",),
    )
    for code, count in sorted(sender.failures.items()):
        failures.add_metric((code,), count)
    yield failures
