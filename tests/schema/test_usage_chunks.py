"""RecordUsage batches larger than one chunk (usage/records.CHUNK): parsed while the chunk before is stored,
still one transaction, refused whole, exactly once; and the write path on a pool with asyncpg's own codecs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from schema_service.config import UsageSettings
from schema_service.database import create_pool
from schema_service.errors import InvalidRequest
from schema_service.usage.ledger import LedgerWriter
from schema_service.usage.records import CHUNK, parse_batch
from schemaservice.v1 import usage_service_pb2 as pb
from schemaservice.v1 import usage_service_pb2_grpc
from tests.schema.metrics_helpers import details, metrics_server
from tests.schema.test_usage_ledger import NOW, record, rows

pytestmark = pytest.mark.timeout(60)

COUNT = 2 * CHUNK + 7  # three chunks, the last one short


def many(prefix: str, count: int = COUNT) -> list[pb.UsageRecord]:
    return [record(f"{prefix}-{i}", at=NOW - timedelta(microseconds=i)) for i in range(count)]


async def test_a_batch_of_several_chunks_is_stored_once_with_every_time_exact(migrated_db: str) -> None:
    batch = pb.RecordUsageRequest(records=many("r"))
    async with metrics_server(migrated_db) as running:
        stub = usage_service_pb2_grpc.UsageServiceStub(running.channel)
        first = await stub.RecordUsage(batch)
        # Half stored before, half new: the retry stores only the new half, whichever chunk it is in.
        overlap = await stub.RecordUsage(pb.RecordUsageRequest(records=[*many("r")[CHUNK:], *many("s", CHUNK)]))
    assert (first.written_count, first.duplicate_count) == (COUNT, 0)
    assert (overlap.written_count, overlap.duplicate_count) == (CHUNK, COUNT - CHUNK)
    stored = {r["request_id"]: r["start_time"] for r in await rows(migrated_db)}
    assert len(stored) == COUNT + CHUNK
    assert all(stored[f"r-{i}"] == NOW - timedelta(microseconds=i) for i in range(COUNT))


async def test_a_bad_record_in_the_last_chunk_refuses_the_whole_batch(migrated_db: str) -> None:
    records = many("r")
    records[-1].cost_usd = "lots"
    records[1].output_tokens = -1
    async with metrics_server(migrated_db) as running:
        stub = usage_service_pb2_grpc.UsageServiceStub(running.channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RecordUsage(pb.RecordUsageRequest(records=records))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(refused.value)["BadRequest"].field_violations}  # type: ignore[attr-defined]
    assert fields == {"records[1].output_tokens", f"records[{COUNT - 1}].cost_usd"}
    assert await rows(migrated_db) == []  # the first chunks' COPYs were rolled back with the batch


async def test_a_bad_batch_is_invalid_argument_even_while_the_database_is_unreachable() -> None:
    records = many("r")
    records[-1].attempt = 0
    batch = parse_batch(pb.RecordUsageRequest(records=records), "gateway", UsageSettings(), datetime.now(UTC))
    pool = await create_pool("postgresql://postgres@127.0.0.1:1/postgres", min_size=0)
    try:
        with pytest.raises(InvalidRequest) as refused:
            await LedgerWriter(lambda: pool, micro_times=True).write(batch, timeout_s=5)
    finally:
        await pool.close()
    assert [v.field for v in refused.value.field_violations] == [f"records[{COUNT - 1}].attempt"]


async def test_a_pool_with_asyncpg_codecs_gets_datetimes(migrated_db: str) -> None:
    """Without micro_times (a pool whose connections exchange datetimes), the same rows are stored."""
    batch = parse_batch(pb.RecordUsageRequest(records=many("r")), "gateway", UsageSettings(), datetime.now(UTC))
    pool = await create_pool(migrated_db)
    try:
        writer = LedgerWriter(lambda: pool)
        first, again = await writer.write(batch), await writer.write(batch)
    finally:
        await pool.close()
    assert (first.written, first.duplicates, again.written, again.duplicates) == (COUNT, 0, 0, COUNT)
    stored = await rows(migrated_db)
    assert {r["start_time"] for r in stored} == {NOW - timedelta(microseconds=i) for i in range(COUNT)}
    assert {r["recorded_by"] for r in stored} == {"gateway"}


async def test_the_writers_pool_refuses_a_datetime_rather_than_storing_it_wrong(migrated_db: str) -> None:
    pool = await create_pool(migrated_db, micro_times=True)
    try:
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.DataError, match="not iterable"):
                await conn.fetchval("SELECT $1::timestamptz", NOW)
            assert await conn.fetchval("SELECT $1::timestamptz = 'epoch'", (-946_684_800_000_000,)) is True
            assert isinstance(await conn.fetchval("SELECT now()"), tuple)
    finally:
        await pool.close()
    conn = await asyncpg.connect(migrated_db)  # other connections keep asyncpg's codecs
    try:
        assert isinstance(await conn.fetchval("SELECT now()"), datetime)
    finally:
        await conn.close()
