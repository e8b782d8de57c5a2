"""The schema service's Prometheus families (besides servicekit's per-RPC ones).

    schema_service_metrics_rows_total{method}                 rows stored (WriteMetrics / StreamMetrics)
    schema_service_metrics_batches_total{method, result}      written | duplicate | refused
    schema_service_copy_seconds                               histogram: one batch's COPY into metric_points
    schema_service_db_pool_connections{state}                 busy | idle (at scrape)
    schema_service_migration_version                          newest applied migration, as last read
    schema_service_metric_partitions                          daily partitions of metric_points, as last counted
    schema_service_usage_drift_tokens{direction}              ledger minus metered tokens, input | output, over the
                                                              last whole hour (schema_service/usage/reconcile.py)

Database state is read by the service's own loops (readiness, housekeeping) and cached here: a
scrape never waits on the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from servicekit.metrics import Registry

COPY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class DatabaseState:
    """What the service's loops last learned of the database."""

    migration_version: int | None = None
    partitions: int | None = None
    usage_drift: tuple[int, int] | None = None  # input, output: ledger minus metered, last whole hour


class SchemaMetrics:
    def __init__(self, metrics: Registry) -> None:
        registry = metrics.registry
        self.rows = Counter("schema_service_metrics_rows", "Metric rows stored.", ("method",), registry=registry)
        self.batches = Counter(
            "schema_service_metrics_batches", "Metric batches by result.", ("method", "result"), registry=registry
        )
        self.copy = Histogram(
            "schema_service_copy_seconds", "Time to COPY one batch's rows.", buckets=COPY_BUCKETS, registry=registry
        )
        self.database = DatabaseState()
        self._registry = registry

    def stored(self, method: str, rows: int, duplicate: bool) -> None:
        self.batches.labels(method, "duplicate" if duplicate else "written").inc()
        if not duplicate:
            self.rows.labels(method).inc(rows)

    def refused(self, method: str) -> None:
        self.batches.labels(method, "refused").inc()

    def watch_pool(self, pool: Callable[[], asyncpg.Pool | None]) -> None:
        self._registry.register(_DatabaseCollector(pool, self.database))


class _DatabaseCollector(Collector):
    def __init__(self, pool: Callable[[], asyncpg.Pool | None], state: DatabaseState) -> None:
        self._pool = pool
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            "schema_service_db_pool_connections", "Database pool connections.", labels=("state",)
        )
        pool = self._pool()
        if pool is not None:
            idle = pool.get_idle_size()
            connections.add_metric(("busy",), pool.get_size() - idle)
            connections.add_metric(("idle",), idle)
        yield connections
        # Declared even before the first reading (no sample then), so dashboards and alerts see the family.
        version = GaugeMetricFamily("schema_service_migration_version", "Newest applied migration.")
        if self._state.migration_version is not None:
            version.add_metric((), self._state.migration_version)
        yield version
        partitions = GaugeMetricFamily("schema_service_metric_partitions", "Daily partitions of metric_points.")
        if self._state.partitions is not None:
            partitions.add_metric((), self._state.partitions)
        yield partitions
        drift = GaugeMetricFamily(
            "schema_service_usage_drift_tokens",
            "Usage ledger minus the gateways' metered tokens over the last whole hour.",
            labels=("direction",),
        )
        if self._state.usage_drift is not None:
            for direction, tokens in zip(("input", "output"), self._state.usage_drift, strict=True):
                drift.add_metric((direction,), tokens)
        yield drift
