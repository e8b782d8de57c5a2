"""Batches in, acknowledgements out: WriteMetrics' one batch and StreamMetrics' pipelined stream (no gRPC).

A batch is checked for size before it waits for a write slot (waiting would hold its bytes for nothing),
then validated and written with COPY. A stream keeps up to `stream_window` batches in flight and
acknowledges them in arrival order; when `stopping` is set it takes no more batches, acknowledges those
already taken, and ends (the servicer then says UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import asyncpg

from schema_service.config import MetricsSettings
from schema_service.errors import SchemaServiceError
from schema_service.instruments import SchemaMetrics
from schema_service.metrics.validation import BatchParser, check_size
from schema_service.metrics.wire import Received
from schema_service.metrics.writer import MetricsWriter, WriteResult

Ack = tuple[str, WriteResult]  # the batch's request_id and what was written
Deadline = Callable[[], float | None]  # seconds left for the call (grpc's context.time_remaining)


class Ingest:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        settings: MetricsSettings,
        instruments: SchemaMetrics | None = None,
        *,
        micro_times: bool = False,
    ) -> None:
        """`micro_times`: the pool's connections take times as integers (database.micro_times_codec)."""
        self.settings = settings
        self.instruments = instruments
        self.parser = BatchParser(settings)
        observe = instruments.copy.observe if instruments else None
        self.writer = MetricsWriter(pool, settings, observe, micro_times=micro_times)

    async def store(self, received: Received, time_remaining: Deadline, method: str, caller: str = "") -> Ack:
        """Write one batch of `caller` (the authenticated writer, whose series it goes to); `method`
        (WriteMetrics, StreamMetrics) labels the counts in `instruments`."""
        try:
            check_size(received.size, self.settings.max_batch_bytes)
            async with self.writer.admitted():
                batch = self.parser.parse(received, caller=caller)
                result = await self.writer.write(batch, timeout_s=time_remaining())
        except SchemaServiceError:
            if self.instruments is not None:
                self.instruments.refused(method)
            raise
        if self.instruments is not None:
            self.instruments.stored(method, result.written_count, result.duplicate)
        return batch.request_id, result

    async def stream(
        self, batches: AsyncIterator[Received], stopping: asyncio.Event, time_remaining: Deadline, caller: str = ""
    ) -> AsyncGenerator[Ack, None]:
        """Up to stream_window batches are written at once; acknowledgements come in arrival order."""
        acks: asyncio.Queue[asyncio.Task[Ack] | None] = asyncio.Queue()
        window = asyncio.Semaphore(self.settings.stream_window)
        reader = asyncio.create_task(self._read(batches, acks, window, time_remaining, caller))
        stopper = asyncio.create_task(_cancel_when(stopping, reader))
        try:
            while (task := await acks.get()) is not None:
                try:
                    yield await task
                finally:
                    window.release()
            await reader
        finally:
            for pending in (reader, stopper, *_drain(acks)):
                pending.cancel()

    async def _read(
        self,
        batches: AsyncIterator[Received],
        acks: asyncio.Queue[asyncio.Task[Ack] | None],
        window: asyncio.Semaphore,
        time_remaining: Deadline,
        caller: str,
    ) -> None:
        try:
            async for received in batches:
                await window.acquire()
                acks.put_nowait(asyncio.create_task(self.store(received, time_remaining, "StreamMetrics", caller)))
        except asyncio.CancelledError:
            pass  # shutdown: stop reading; batches already taken are still acknowledged
        finally:
            acks.put_nowait(None)


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
