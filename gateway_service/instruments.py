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
    llm_gateway_health_shared{backend}                            health.backend redis: 1 shared, 0 Redis away
  per provider + model, at scrape (health/views.py; window is 1m, 5m or 60m):
    llm_gateway_model_health{provider, model, state}              1 for the model's current state
    llm_gateway_model_cooldown_until_timestamp_seconds{provider, model}   when it has a cooldown (or no headroom)
    llm_gateway_model_window_attempts{provider, model, window}    attempts that ended in the window
    llm_gateway_model_window_failures{provider, model, window, reason}    of which failed, by FailureKind
    llm_gateway_model_success_ratio{provider, model, window}      only for a window with attempts
    llm_gateway_model_ttft_seconds{provider, model, quantile}     0.5 and 0.95 over recent successes
    llm_gateway_model_output_tokens_per_second{provider, model}   over recent successes
    llm_gateway_model_in_flight{provider, model}                  attempts running now
    llm_gateway_model_headroom_remaining{provider, model, limit}  what the provider's headers say is left
    llm_gateway_model_headroom_limit{provider, model, limit}      of how much, when it said
    llm_gateway_model_headroom_reset_timestamp_seconds{provider, model, limit}   when it is whole again
    llm_gateway_model_price_usd_per_mtok{provider, model, type}   input / output, as configured
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
    from gateway_service.health import ModelView

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
        self.shared = Gauge(  # labelled so that a gateway with health in memory exports none (not a 0 "away")
            "llm_gateway_health_shared",
            "1 while provider health is shared through Redis, 0 while this replica keeps its own (Redis away).",
            ("backend",),
            registry=registry,
        )
        self._registry = registry

    def health_shared(self, up: bool) -> None:
        """Shared health's hook: Redis is there (True) or away (False)."""
        self.shared.labels("redis").set(1 if up else 0)

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

    def watch_models(self, views: Callable[[], Iterable[ModelView]]) -> None:
        """Each model's state, windows, speed, headroom and prices, read at scrape time."""
        self._registry.register(_ModelState(views))


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


WINDOW_LABELS = {60: "1m", 300: "5m", 3600: "60m"}


class _ModelState(Collector):
    def __init__(self, views: Callable[[], Iterable[ModelView]]) -> None:
        self._views = views

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pm = ("provider", "model")
        families = {
            name: GaugeMetricFamily(f"llm_gateway_model_{name}", text, labels=(*pm, *extra))
            for name, text, extra in _MODEL_FAMILIES
        }
        for view in self._views():
            _add_model(families, view)
        yield from families.values()


_MODEL_FAMILIES = (
    ("health", "1 for the model's current health state.", ("state",)),
    ("cooldown_until_timestamp_seconds", "End of the model's cooldown, open breaker or exhausted headroom.", ()),
    ("window_attempts", "Attempts that ended in the last window (1m, 5m, 60m).", ("window",)),
    ("window_failures", "Attempts that failed in the last window, by failure kind.", ("window", "reason")),
    ("success_ratio", "Share of the window's attempts that succeeded (windows with attempts only).", ("window",)),
    ("ttft_seconds", "Time to first token over recent successful attempts, by quantile.", ("quantile",)),
    ("output_tokens_per_second", "Output tokens per second after the first token, over recent successes.", ()),
    ("in_flight", "Attempts running now.", ()),
    ("headroom_remaining", "What the provider's rate-limit headers say is left, by limit.", ("limit",)),
    ("headroom_limit", "The whole limit, when the provider's headers said.", ("limit",)),
    ("headroom_reset_timestamp_seconds", "When the limit is whole again.", ("limit",)),
    ("price_usd_per_mtok", "Configured price of a million tokens, input or output.", ("type",)),
)


def _add_model(families: dict[str, GaugeMetricFamily], view: ModelView) -> None:
    pm, stats = (view.provider, view.model.name), view.stats
    families["health"].add_metric((*pm, view.state.name.lower()), 1)
    if view.until is not None:
        families["cooldown_until_timestamp_seconds"].add_metric(pm, view.until)
    for window in stats.windows:
        label = WINDOW_LABELS.get(window.window_s, f"{window.window_s}s")
        families["window_attempts"].add_metric((*pm, label), window.requests)
        for kind, count in sorted(window.errors.items(), key=lambda item: item[0].value):
            families["window_failures"].add_metric((*pm, label, kind.value), count)
        if window.requests:
            families["success_ratio"].add_metric((*pm, label), window.success_rate)
    if stats.ttft_p50_ms:
        families["ttft_seconds"].add_metric((*pm, "0.5"), stats.ttft_p50_ms / 1000)
        families["ttft_seconds"].add_metric((*pm, "0.95"), stats.ttft_p95_ms / 1000)
    if stats.output_tokens_per_s:
        families["output_tokens_per_second"].add_metric(pm, stats.output_tokens_per_s)
    families["in_flight"].add_metric(pm, stats.in_flight)
    for limit in view.headroom:
        families["headroom_remaining"].add_metric((*pm, limit.limit), limit.remaining)
        if limit.of is not None:
            families["headroom_limit"].add_metric((*pm, limit.limit), limit.of)
        families["headroom_reset_timestamp_seconds"].add_metric((*pm, limit.limit), limit.resets_at)
    families["price_usd_per_mtok"].add_metric((*pm, "input"), float(view.model.input_usd_per_mtok))
    families["price_usd_per_mtok"].add_metric((*pm, "output"), float(view.model.output_usd_per_mtok))


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
