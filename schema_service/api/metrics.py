"""schemaservice.v1.MetricsService servicer: proto in, metrics domain call, proto out.

Metrics are scoped by caller. A batch is written into the series of the authenticated caller
(`current_caller()`), always: there is no role to write as another, so no caller can forge the
gateway's series. A read covers the reader's own series; `caller` in the request names another
writer's, or `*` every writer's, which needs the role metrics.read_all.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import grpc

from schema_service.api import from_proto, to_proto
from schema_service.api.boundary import BOUNDARY
from schema_service.app import App
from schema_service.errors import InvalidRequest
from schema_service.metrics import queries
from schema_service.metrics.ingest import Ingest
from schema_service.metrics.wire import Received, size_limited_parser
from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.auth import PermissionDenied, caller_holds, current_caller
from servicekit.boundary import bind_request_id
from servicekit.drain import ServerShuttingDown
from servicekit.errors import FieldViolation
from servicekit.server import Lifecycle

SERVICE = pb.DESCRIPTOR.services_by_name["MetricsService"].full_name
READ_ALL = "metrics.read_all"
EVERY_WRITER = "*"
# The callers file's rule for a name (servicekit.callers.Name).
_CALLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def whose_series(asked: str) -> str | None:
    """The writer whose series a read covers (None: every writer's): `asked` as the request names it,
    "" for the reader's own; another writer's, or `*`, only with metrics.read_all."""
    own = current_caller()
    if asked in ("", own):
        return own
    if asked != EVERY_WRITER and not _CALLER_NAME.fullmatch(asked):
        rule = f'a caller\'s name (1-64 of [A-Za-z0-9._@-]), "{EVERY_WRITER}" for every writer, or empty for yours'
        raise InvalidRequest("invalid caller", field_violations=[FieldViolation("caller", rule)])
    if not caller_holds(READ_ALL):
        raise PermissionDenied(
            f"reading another caller's metrics needs the role {READ_ALL}", metadata={"role": READ_ALL}
        )
    return None if asked == EVERY_WRITER else asked


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
        self.ingest = Ingest(app.require_write_pool, app.settings.metrics, app.instruments, micro_times=True)
        self._timeout_s = app.settings.metrics.query_timeout_s

    async def WriteMetrics(self, request: Received, context: grpc.aio.ServicerContext) -> pb.WriteMetricsResponse:
        bind_request_id(context, request.batch.request_id)
        async with BOUNDARY(context, "WriteMetrics"):
            request_id, result = await self.ingest.store(
                request, context.time_remaining, "WriteMetrics", current_caller()
            )
        return pb.WriteMetricsResponse(
            written_count=result.written_count,
            duplicate=result.duplicate,
            summary=to_proto.write_summary(request_id, result.written_count, result.duplicate),
        )

    async def StreamMetrics(
        self, request_iterator: AsyncIterator[Received], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamMetricsResponse]:
        """Acknowledgements in arrival order; at shutdown those already taken, then UNAVAILABLE."""
        bind_request_id(context)
        acks = self.ingest.stream(request_iterator, self.lifecycle.stopping, context.time_remaining, current_caller())
        async with BOUNDARY(context, "StreamMetrics"), contextlib.aclosing(acks):
            async for request_id, result in acks:
                yield pb.StreamMetricsResponse(
                    request_id=request_id,
                    written_count=result.written_count,
                    duplicate=result.duplicate,
                    summary=to_proto.write_summary(request_id, result.written_count, result.duplicate),
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
            query = from_proto.metric_query(request, whose_series(request.caller))
            buckets = await queries.query_metrics(self.app.require_pool(), query, timeout_s=self._timeout_s)
        return to_proto.query_response(buckets)

    async def ListBaselines(
        self, request: pb.ListBaselinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBaselinesResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "ListBaselines"):
            whose = whose_series(request.caller)
            rows = await queries.list_baselines(self.app.require_pool(), request.name, whose, timeout_s=self._timeout_s)
        return to_proto.baselines_response(rows)

    async def ListAnomalies(
        self, request: pb.ListAnomaliesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAnomaliesResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "ListAnomalies"):
            since, whose = from_proto.anomalies_since(request), whose_series(request.caller)
            rows = await queries.list_anomalies(
                self.app.require_pool(), request.name, since, request.page_size, whose, timeout_s=self._timeout_s
            )
        return to_proto.anomalies_response(rows)
