"""schemaservice.v1.MetricsService servicer: proto in, metrics domain call, proto out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import timestamp_pb2

from schema_service.app import App
from schema_service.errors import SchemaServiceError
from schema_service.metrics import queries
from schema_service.metrics.validation import BatchParser, check_size
from schema_service.metrics.wire import Received, size_limited_parser
from schema_service.metrics.writer import MetricsWriter, WriteResult
from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.boundary import abort, bind_request_id
from servicekit.drain import ServerShuttingDown
from servicekit.server import Lifecycle

AGGREGATE_NAMES = {
    pb.AGGREGATE_COUNT: "count",
    pb.AGGREGATE_SUM: "sum",
    pb.AGGREGATE_MIN: "min",
    pb.AGGREGATE_MAX: "max",
    pb.AGGREGATE_AVG: "avg",
    pb.AGGREGATE_P50: "p50",
    pb.AGGREGATE_P95: "p95",
    pb.AGGREGATE_P99: "p99",
}
DEFAULT_QUERY_RANGE = timedelta(hours=1)
SERVICE = pb.DESCRIPTOR.services_by_name["MetricsService"].full_name
Ack = tuple[str, WriteResult]


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
        self.parser = BatchParser(app.settings.metrics)
        instruments = app.instruments
        self.writer = MetricsWriter(
            app.require_pool, app.settings.metrics, instruments.copy.observe if instruments else None
        )

    async def WriteMetrics(  # noqa: N802 - gRPC method name
        self, request: Received, context: grpc.aio.ServicerContext
    ) -> pb.WriteMetricsResponse:
        bind_request_id(context, request.batch.request_id)
        try:
            _, result = await self._store(request, context, "WriteMetrics")
        except SchemaServiceError as exc:
            await abort(context, exc)
        return pb.WriteMetricsResponse(written_count=result.written_count, duplicate=result.duplicate)

    async def StreamMetrics(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[Received], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamMetricsResponse]:
        """Up to stream_window batches are written at once; acknowledgements go out in arrival order."""
        bind_request_id(context)
        acks: asyncio.Queue[asyncio.Task[Ack] | None] = asyncio.Queue()
        window = asyncio.Semaphore(self.app.settings.metrics.stream_window)
        reader = asyncio.create_task(self._read(request_iterator, acks, window, context))
        # On shutdown stop taking batches, acknowledge those already taken, then say UNAVAILABLE.
        stopper = asyncio.create_task(_cancel_when(self.lifecycle.stopping, reader))
        try:
            while (task := await acks.get()) is not None:
                try:
                    request_id, result = await task
                finally:
                    window.release()
                yield pb.StreamMetricsResponse(
                    request_id=request_id, written_count=result.written_count, duplicate=result.duplicate
                )
            await reader
            if self.lifecycle.stopping.is_set():
                await abort(
                    context,
                    ServerShuttingDown(
                        "server shutting down; reconnect and resend unacknowledged batches", retry_after_s=0.1
                    ),
                )
        except SchemaServiceError as exc:
            await abort(context, exc)
        finally:
            for pending in (reader, stopper, *_drain(acks)):
                pending.cancel()

    async def _read(
        self,
        requests: AsyncIterator[Received],
        acks: asyncio.Queue[asyncio.Task[Ack] | None],
        window: asyncio.Semaphore,
        context: grpc.aio.ServicerContext,
    ) -> None:
        try:
            async for request in requests:
                await window.acquire()
                acks.put_nowait(asyncio.create_task(self._store(request, context, "StreamMetrics")))
        except asyncio.CancelledError:
            pass  # shutdown: stop reading; batches already taken are still acknowledged
        finally:
            acks.put_nowait(None)

    async def _store(self, request: Received, context: grpc.aio.ServicerContext, method: str) -> Ack:
        instruments = self.app.instruments
        try:
            # Refuse an oversized batch at once: waiting for a slot would hold its bytes for nothing.
            check_size(request.size, self.app.settings.metrics.max_batch_bytes)
            async with self.writer.admitted():
                batch = self.parser.parse(request)
                result = await self.writer.write(batch, timeout_s=context.time_remaining())
        except SchemaServiceError:
            if instruments is not None:
                instruments.refused(method)
            raise
        if instruments is not None:
            instruments.stored(method, result.written_count, result.duplicate)
        return batch.request_id, result

    async def QueryMetrics(  # noqa: N802 - gRPC method name
        self, request: pb.QueryMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryMetricsResponse:
        bind_request_id(context)
        try:
            buckets = await queries.query_metrics(self.app.require_pool(), _metric_query(request))
        except SchemaServiceError as exc:
            await abort(context, exc)
        return pb.QueryMetricsResponse(
            buckets=[pb.MetricBucket(start_time=_ts(b.start), count=b.count, **b.aggregates) for b in buckets]
        )

    async def ListBaselines(  # noqa: N802 - gRPC method name
        self, request: pb.ListBaselinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBaselinesResponse:
        bind_request_id(context)
        try:
            rows = await queries.list_baselines(self.app.require_pool(), request.name)
        except SchemaServiceError as exc:
            await abort(context, exc)
        return pb.ListBaselinesResponse(
            baselines=[
                pb.Baseline(
                    name=r.name,
                    labels=r.labels,
                    mean=r.mean,
                    stddev=r.stddev,
                    sample_count=r.sample_count,
                    window_start=_ts(r.window_start),
                    window_end=_ts(r.window_end),
                    computed_at=_ts(r.computed_at),
                )
                for r in rows
            ]
        )

    async def ListAnomalies(  # noqa: N802 - gRPC method name
        self, request: pb.ListAnomaliesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAnomaliesResponse:
        bind_request_id(context)
        try:
            queries.check_ranges({"start_time": request.start_time})
            since = (
                request.start_time.ToDatetime(UTC)
                if request.HasField("start_time")
                else datetime.min.replace(tzinfo=UTC)  # -infinity to PostgreSQL
            )
            rows = await queries.list_anomalies(self.app.require_pool(), request.name, since, request.page_size)
        except SchemaServiceError as exc:
            await abort(context, exc)
        return pb.ListAnomaliesResponse(
            anomalies=[
                pb.Anomaly(
                    name=r.name,
                    labels=r.labels,
                    value=r.value,
                    baseline_mean=r.baseline_mean,
                    baseline_stddev=r.baseline_stddev,
                    z_score=r.z_score,
                    time=_ts(r.time),
                )
                for r in rows
            ]
        )


def _metric_query(request: pb.QueryMetricsRequest) -> queries.MetricQuery:
    """Unset end_time means now; unset start_time means an hour before the end."""
    queries.check_ranges(
        {"start_time": request.start_time, "end_time": request.end_time, "bucket_width": request.bucket_width}
    )
    end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else datetime.now(UTC)
    start = (
        request.start_time.ToDatetime(UTC)
        if request.HasField("start_time")
        else max(end, queries.EARLIEST + DEFAULT_QUERY_RANGE) - DEFAULT_QUERY_RANGE
    )
    return queries.MetricQuery(
        name=request.name,
        labels=dict(request.labels),
        start=start,
        end=end,
        bucket=request.bucket_width.ToTimedelta() if request.HasField("bucket_width") else None,
        aggregates=frozenset(
            AGGREGATE_NAMES.get(a, f"#{a}") for a in request.aggregates if a != pb.AGGREGATE_UNSPECIFIED
        ),
    )


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _cancel_when(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    await event.wait()
    task.cancel()


def _drain(acks: asyncio.Queue[asyncio.Task[Ack] | None]) -> list[asyncio.Task[Ack]]:
    tasks = []
    while not acks.empty():
        with contextlib.suppress(asyncio.QueueEmpty):
            if (task := acks.get_nowait()) is not None:
                tasks.append(task)
    return tasks
