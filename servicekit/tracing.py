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
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"


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
        from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

        # Probes call Health every few seconds; a span each would drown the traces that matter.
        not_health = filters.negate(filters.health_check())
        return [aio_server_interceptor(tracer_provider=self.provider, filter_=not_health)]

    def client_interceptors(self) -> list[Any]:
        if self.provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        return list(aio_client_interceptors(tracer_provider=self.provider))

    def shutdown(self) -> None:
        """Export what is buffered (bounded by the processor's own timeout)."""
        if self.provider is not None:
            self.provider.shutdown()


def configure(service_name: str, exporter: SpanExporter | None = None) -> Tracing:
    """Tracing for one server: the given exporter (tests), else OTLP when its endpoint is set, else off."""
    if exporter is None:
        if not os.environ.get(ENDPOINT_ENV):
            return Tracing()
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)

