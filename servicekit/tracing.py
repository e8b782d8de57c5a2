"""OpenTelemetry tracing for both servers: off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

When on, each server exports its spans with OTLP over gRPC (the SDK reads the standard
`OTEL_EXPORTER_OTLP_*` and `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` variables itself), a
server interceptor opens one span per RPC (joining the caller's trace from the `traceparent`
metadata), and client interceptors carry the context on the gateway's calls to the schema
service, so one chat is one trace across both services. Log lines carry the current `trace_id`
and `span_id` (servicekit.logs).

The tracer provider is held here rather than installed process-wide, so tests can give each
server its own in-memory exporter; with tracing off, every tracer is a no-op tracer and the
interceptors are not installed at all (nothing on the hot path).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from servicekit.handlers import WrappingInterceptor

if TYPE_CHECKING:  # the SDK (and the OTLP exporter) are imported only when tracing is on: configure()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
HEALTH = "grpc.health.v1.Health"


@dataclass(frozen=True)
class Tracing:
    """A tracer provider, or None when tracing is off."""

    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def tracer(self, name: str) -> trace.Tracer:
        if self.provider is None:
            return trace.NoOpTracer()
        return self.provider.get_tracer(name)

    def server_interceptors(self) -> list[Any]:
        if self.provider is None:
            return []
        return [WrappingInterceptor(partial(_server_span, self.tracer("servicekit.tracing")))]

    def client_interceptors(self) -> list[Any]:
        if self.provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        return list(aio_client_interceptors(tracer_provider=self.provider))

    def shutdown(self) -> None:
        """Export what is buffered (bounded by the processor's own timeout)."""
        if self.provider is not None:
            self.provider.shutdown()


@asynccontextmanager
async def _server_span(tracer: trace.Tracer, method: str, kind: str, context: Any) -> AsyncIterator[None]:
    """One SERVER span per call, joining the caller's trace from its `traceparent` metadata.

    Our own rather than opentelemetry-instrumentation-grpc's aio server interceptor, which expects every
    streaming handler to be an async generator and breaks ours (StreamChat writes with context.write).
    """
    service, _, name = method.lstrip("/").rpartition("/")
    if service == HEALTH:  # probes call it every few seconds; a span each would drown the traces that matter
        yield
        return
    carrier = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    with tracer.start_as_current_span(
        method.lstrip("/"),
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        finally:
            code = context.code()
            number = code.value[0] if isinstance(code, grpc.StatusCode) else (code or 0)
            span.set_attribute("rpc.grpc.status_code", number)
            if number not in (0, 1):  # OK and CANCELLED are not server errors
                span.set_status(Status(StatusCode.ERROR))


def configure(service_name: str, exporter: SpanExporter | None = None) -> Tracing:
    """Tracing for one server: the given exporter (tests), else OTLP when its endpoint is set, else off.

    The OpenTelemetry SDK, its resource detection (psutil) and the exporter are imported here, only when
    tracing is on: a server without it loads the API alone (its no-op tracer).
    """
    if exporter is None:
        if not os.environ.get(ENDPOINT_ENV):
            return Tracing()
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)
