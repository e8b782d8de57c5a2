"""Prometheus metrics both servers share: every RPC counted and timed, and the `/metrics` endpoint.

Each server owns a `CollectorRegistry` (not the process-wide default), so two servers in one
process (the tests) never see each other's numbers. The gRPC families follow the names
go-grpc-prometheus made the convention, so existing dashboards and alerts apply:

    grpc_server_started_total{grpc_service, grpc_method, grpc_type}
    grpc_server_handled_total{grpc_service, grpc_method, grpc_type, grpc_code, caller}
    grpc_server_handling_seconds{grpc_service, grpc_method, grpc_type}   (histogram)

Labels come from the server's own method table (unknown methods are never wrapped) and the
callers file (`caller`: the authenticated caller's name, `none` for calls without one), so a
caller cannot grow the label sets.

Each registry also holds the standard process_* (CPU, memory, file descriptors, start time) and python_*
(version, GC) collectors, which stock dashboards and alerts expect. Counters and histograms export no
`_created` series: they doubled the exposition and no query here reads them (Prometheus' created-timestamp
handling does not need them in the text format).
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from servicekit.callers import SetupError
from servicekit.handlers import WrappingInterceptor
from servicekit.logs import caller_var

# Seconds; from a health check (sub-millisecond) to a long streamed answer (minutes).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

disable_created_metrics()  # process-wide in prometheus_client; every family of both services is made after this

_KINDS = {
    "unary_unary": "unary",
    "unary_stream": "server_stream",
    "stream_unary": "client_stream",
    "stream_stream": "bidi_stream",
}


@dataclass
class Registry:
    """One server's collectors; services add their own families to `registry`."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        labels = ("grpc_service", "grpc_method", "grpc_type")
        self.started = Counter("grpc_server_started", "RPCs started on the server.", labels, registry=self.registry)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code and caller.",
            (*labels, "grpc_code", "caller"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from the call's start to its status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


class MetricsInterceptor(WrappingInterceptor):
    """Counts and times every call of a known method; the status code is read from the context."""

    def __init__(self, metrics: Registry) -> None:
        super().__init__(self._measure)
        self.metrics = metrics
        # Per method, not per call: the labels and their children are looked up once (known methods only).
        self._series: dict[str, tuple[tuple[str, str, str], Any, Any]] = {}

    def _series_of(self, method: str, kind: str) -> tuple[tuple[str, str, str], Any, Any]:
        series = self._series.get(method)
        if series is None:
            service, _, name = method.lstrip("/").rpartition("/")
            labels = (service, name, _KINDS[kind])
            series = (labels, self.metrics.started.labels(*labels), self.metrics.latency.labels(*labels))
            self._series[method] = series
        return series

    @asynccontextmanager
    async def _measure(self, method: str, kind: str, context: grpc.aio.ServicerContext) -> AsyncIterator[_Counted]:
        labels, started, latency = self._series_of(method, kind)
        started.inc()
        call = _Counted(context, self.metrics, labels, latency)
        try:
            yield call
        except BaseException as exc:
            call.ended(_failed_code(context, exc))
            raise
        call.ended(context.code() or grpc.StatusCode.OK)


class _Counted:
    """The call's context as the hooks inside and the servicer see it, counting the call once as it ends.

    grpc.aio's `abort()` sends the status before it raises, so a count taken while the exception leaves
    the handler could come after the caller has the status (and after a scrape it makes then): an
    aborted call is counted here, before the status is sent.
    """

    __slots__ = ("_context", "_metrics", "_labels", "_latency", "_begin", "_counted")

    def __init__(self, context: grpc.aio.ServicerContext, metrics: Registry, labels: tuple[str, ...], latency: Any):
        self._context, self._metrics, self._labels, self._latency = context, metrics, labels, latency
        self._begin, self._counted = time.perf_counter(), False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: Any, *args: Any, **kwargs: Any) -> None:
        self.ended(code)
        await self._context.abort(code, *args, **kwargs)

    def ended(self, code: Any) -> None:
        if self._counted:
            return
        self._counted = True
        self._latency.observe(time.perf_counter() - self._begin)
        # The auth interceptor (inside this one) set the caller in this call's context.
        self._metrics.handled.labels(*self._labels, _code_name(code), caller_var.get() or "none").inc()


def _failed_code(context: grpc.aio.ServicerContext, exc: BaseException) -> grpc.StatusCode:
    """The status a raising handler ends with: what abort() set, CANCELLED, or UNKNOWN."""
    code = context.code()
    if code is not None:
        return _as_status(code)
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _as_status(code: Any) -> grpc.StatusCode:
    # grpc.aio reports the code set by abort() either as a StatusCode or as its integer value.
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


def _code_name(code: Any) -> str:
    name: str = _as_status(code).name
    return name


class Endpoint:
    """The `/metrics` HTTP endpoint of one registry (port 0 picks a free port; see `port`)."""

    def __init__(self, metrics: Registry, host: str, port: int) -> None:
        """SetupError (exit 2, one line) when the port cannot be had, as for the gRPC port."""
        try:
            # gRPC spells "all IPv6 interfaces" [::]; the HTTP server wants the bare address.
            self._server, self._thread = start_http_server(port, addr=host.strip("[]"), registry=metrics.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SetupError(f"metrics port {port} is in use (another server listens on {host}:{port})") from None
            raise SetupError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
