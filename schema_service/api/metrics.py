"""schemaservice.v1.MetricsService servicer: proto in, metrics domain call, proto out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from schema_service.api import protomap
from schema_service.api.boundary import BOUNDARY
from schema_service.app import App
from schema_service.metrics import queries
from schema_service.metrics.ingest import Ingest
from schema_service.metrics.wire import Received, size_limited_parser
from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.boundary import bind_request_id
from servicekit.drain import ServerShuttingDown
from servicekit.server import Lifecycle

SERVICE = pb.DESCRIPTOR.services_by_name["MetricsService"].full_name


def add_metrics_service(server: grpc.aio.Server, app: App, lifecycle: Lifecycle) -> None:
    """Register MetricsService like the generated `add_MetricsServiceServicer_to_server`, except that write
    batches are read by `wire.parse_batch` (same bytes, a shape cheaper to validate; see metrics/wire.py)."""
    servicer = MetricsServicer(app, lifecycle)
    parse_batch = size_limited_parser(app.settings.metrics.max_batch_bytes)
    handlers = {
        "WriteMetrics": grpc.unary_unary_rpc_method_handler(
            servicer.WriteMetrics,
            request_deserializer=parse_batch,
            response_serializer=pb.WriteMetricsResponse.SerializeToString,
        ),
        "StreamMetrics": grpc.stream_stream_rpc_method_handler(
            servicer.StreamMetrics,
            request_deserializer=parse_batch,
            response_serializer=pb.StreamMetricsResponse.SerializeToString,
        ),
    }
    for name, request, response in (
        ("QueryMetrics", pb.QueryMetricsRequest, pb.QueryMetricsResponse),
        ("ListBaselines", pb.ListBaselinesRequest, pb.ListBaselinesResponse),
        ("ListAnomalies", pb.ListAnomaliesRequest, pb.ListAnomaliesResponse),
    ):
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


class MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    """schemaservice.v1.MetricsService."""

    def __init__(self, app: App, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.ingest = Ingest(app.require_pool, app.settings.metrics, app.instruments)

    async def WriteMetrics(self, request: Received, context: grpc.aio.ServicerContext) -> pb.WriteMetricsResponse:
        bind_request_id(context, request.batch.request_id)
        async with BOUNDARY(context, "WriteMetrics"):
            request_id, result = await self.ingest.store(request, context.time_remaining, "WriteMetrics")
        return pb.WriteMetricsResponse(
            written_count=result.written_count,
            duplicate=result.duplicate,
            summary=protomap.write_summary(request_id, result.written_count, result.duplicate),
        )

    async def StreamMetrics(
        self, request_iterator: AsyncIterator[Received], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamMetricsResponse]:
        """Acknowledgements in arrival order; at shutdown those already taken, then UNAVAILABLE."""
        bind_request_id(context)
        acks = self.ingest.stream(request_iterator, self.lifecycle.stopping, context.time_remaining)
        async with BOUNDARY(context, "StreamMetrics"), contextlib.aclosing(acks):
            async for request_id, result in acks:
                yield pb.StreamMetricsResponse(
                    request_id=request_id,
                    written_count=result.written_count,
                    duplicate=result.duplicate,
                    summary=protomap.write_summary(request_id, result.written_count, result.duplicate),
                )
            if self.lifecycle.stopping.is_set():
                raise ServerShuttingDown(
                    "server shutting down; reconnect and resend unacknowledged batches", retry_after_s=0.1
                )

    async def QueryMetrics(
        self, request: pb.QueryMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryMetricsResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "QueryMetrics"):
            buckets = await queries.query_metrics(self.app.require_pool(), protomap.metric_query(request))
        return protomap.query_response(buckets)

    async def ListBaselines(
        self, request: pb.ListBaselinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBaselinesResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "ListBaselines"):
            rows = await queries.list_baselines(self.app.require_pool(), request.name)
        return protomap.baselines_response(rows)

    async def ListAnomalies(
        self, request: pb.ListAnomaliesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAnomaliesResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "ListAnomalies"):
            since = protomap.anomalies_since(request)
            rows = await queries.list_anomalies(self.app.require_pool(), request.name, since, request.page_size)
        return protomap.anomalies_response(rows)
