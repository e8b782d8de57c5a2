"""The usage ledger over gRPC against a real PostgreSQL: RecordUsage exactly once, QueryUsage sums, scoping."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc
import pytest

from schema_service.config import UsageSettings
from schema_service.usage.jobs import ledger_housekeeping, months_from
from schema_service.usage.ledger import LEDGER
from schemaservice.v1 import usage_service_pb2 as pb
from schemaservice.v1 import usage_service_pb2_grpc
from servicekit.security import Security
from tests.schema.metrics_helpers import details, metrics_server

pytestmark = pytest.mark.timeout(60)

NOW = datetime.now(UTC).replace(microsecond=0)


def record(
    request_id: str = "r-1",
    attempt: int = 1,
    *,
    caller: str = "web",
    user: str = "u-1",
    cost: str = "0.008",
    at: datetime = NOW,
    **fields: object,
) -> pb.UsageRecord:
    values: dict[str, object] = {
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "key_id": "k-3f2a",
        "outcome": pb.USAGE_OUTCOME_SUCCEEDED,
        "input_tokens": 100,
        "cached_input_tokens": 10_000,
        "output_tokens": 50,
        "price_version": "p-1",
        **fields,
    }
    r = pb.UsageRecord(
        request_id=request_id,
        attempt=attempt,
        caller=caller,
        user_id=user,
        cost_usd=cost,
        **values,  # type: ignore[arg-type]
    )
    r.start_time.FromDatetime(at)
    r.duration.FromTimedelta(timedelta(milliseconds=800))
    r.time_to_first_token.FromTimedelta(timedelta(milliseconds=120))
    return r


async def rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT * FROM usage_ledger ORDER BY request_id, attempt")
    finally:
        await conn.close()


async def test_records_are_stored_once_with_exact_cost_and_a_retry_is_a_duplicate(migrated_db: str) -> None:
    async with metrics_server(migrated_db) as running:
        stub = usage_service_pb2_grpc.UsageServiceStub(running.channel)
        batch = pb.RecordUsageRequest(records=[record("r-1", 1), record("r-1", 2, failover=True), record("r-2")])
        first = await stub.RecordUsage(batch)
        again = await stub.RecordUsage(batch)
        overlap = await stub.RecordUsage(pb.RecordUsageRequest(records=[record("r-2"), record("r-3")]))
    assert (first.written_count, first.duplicate_count, first.summary) == (3, 0, "stored 3 usage records")
    assert (again.written_count, again.duplicate_count) == (0, 3)
    assert overlap.summary == "stored 1 usage record, 1 was stored before"
    stored = await rows(migrated_db)
    assert [(r["request_id"], r["attempt"], r["failover"]) for r in stored] == [
        ("r-1", 1, False),
        ("r-1", 2, True),
        ("r-2", 1, False),
        ("r-3", 1, False),
    ]
    assert stored[0]["cost_usd"] == Decimal("0.008") and stored[0]["outcome"] == "succeeded"
    assert stored[0]["time_to_first_token_s"] == pytest.approx(0.12) and stored[0]["duration_s"] == 0.8
    assert {r["recorded_by"] for r in stored} == {""}  # no callers file: nobody authenticated


async def test_a_batch_with_bad_records_is_refused_whole_naming_each_field(migrated_db: str) -> None:
    bad_cost = record("r-1", cost="0.1234567890123")  # 13 decimal places
    no_outcome = record("r-2", outcome=pb.USAGE_OUTCOME_UNSPECIFIED)
    negative = record("r-3", output_tokens=-1)
    no_time = pb.UsageRecord(request_id="r 4", attempt=0, provider="p", model="m", cost_usd="1000")
    async with metrics_server(migrated_db) as running:
        stub = usage_service_pb2_grpc.UsageServiceStub(running.channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RecordUsage(
                pb.RecordUsageRequest(records=[record("ok"), bad_cost, no_outcome, negative, no_time])
            )
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.RecordUsage(pb.RecordUsageRequest())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(refused.value)["BadRequest"].field_violations}  # type: ignore[attr-defined]
    assert fields == {
        "records[1].cost_usd",
        "records[2].outcome",
        "records[3].output_tokens",
        "records[4].request_id",
        "records[4].attempt",
        "records[4].start_time",
        "records[4].outcome",
    }
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await rows(migrated_db) == []


def test_a_decimal_cost_is_parsed_exactly_and_floats_never_enter() -> None:
    from schema_service.usage.records import parse_cost

    assert parse_cost("0.000000000001") == Decimal("1E-12")
    assert parse_cost("999999999999.999999999999") == Decimal("999999999999.999999999999")
    for bad in ("", "-0.1", "NaN", "inf", "0x10", "1" * 13, "0.0000000000001", "1,5", "1e3", ".5", "1.", " 1", "١"):
        assert parse_cost(bad) is None, bad


async def test_query_groups_sums_and_pages(migrated_db: str) -> None:
    yesterday = NOW - timedelta(days=1)
    batch = [
        record("a", user="u-1", cost="0.5"),
        record("b", user="u-1", cost="0.25", at=yesterday),
        record("c", user="u-2", cost="2", outcome=pb.USAGE_OUTCOME_FAILED, failure_reason="FAILURE_REASON_TIMEOUT"),
        record("d", user="u-3", cost="0.000000000001", estimated=True),
    ]
    async with metrics_server(migrated_db) as running:
        stub = usage_service_pb2_grpc.UsageServiceStub(running.channel)
        await stub.RecordUsage(pb.RecordUsageRequest(records=batch))
        start = pb.QueryUsageRequest(group_by=[pb.USAGE_DIMENSION_USER], page_size=2)
        start.start_time.FromDatetime(NOW - timedelta(days=7))
        first = await stub.QueryUsage(start)
        start.page_token = first.next_page_token
        second = await stub.QueryUsage(start)
        by_day = pb.QueryUsageRequest(group_by=[pb.USAGE_DIMENSION_DAY, pb.USAGE_DIMENSION_USER], user_id="u-1")
        by_day.start_time.FromDatetime(NOW - timedelta(days=7))
        days = await stub.QueryUsage(by_day)
        other = pb.QueryUsageRequest(page_token=first.next_page_token)
        other.start_time.FromDatetime(NOW - timedelta(days=6))
        with pytest.raises(grpc.aio.AioRpcError) as wrong_token:
            await stub.QueryUsage(other)
    assert [(g.user_id, g.cost_usd) for g in first.groups] == [("u-2", "2"), ("u-1", "0.75")]
    assert [(g.user_id, g.cost_usd) for g in second.groups] == [("u-3", "0.000000000001")]
    assert second.next_page_token == "" and first.group_count == 3
    assert first.total.cost_usd == "2.750000000001" and first.total.attempts == 4
    assert (first.total.failed_attempts, first.total.estimated_attempts) == (1, 1)
    assert first.total.cached_input_tokens == 40_000
    assert [(g.day, g.cost_usd) for g in days.groups] == [
        (NOW.date().isoformat(), "0.5"),
        (yesterday.date().isoformat(), "0.25"),
    ]
    assert first.summary == "3 groups, $2.750000000001 over 4 attempts"
    assert wrong_token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(wrong_token.value)["BadRequest"].field_violations]  # type: ignore[attr-defined]
    assert fields == ["page_token"]


async def test_query_refuses_bad_ranges_and_dimensions_naming_the_field(migrated_db: str) -> None:
    async with metrics_server(migrated_db) as running:
        stub = usage_service_pb2_grpc.UsageServiceStub(running.channel)
        cases = {
            "start_time": pb.QueryUsageRequest(),
            "group_by": pb.QueryUsageRequest(group_by=[pb.USAGE_DIMENSION_USER, pb.USAGE_DIMENSION_USER]),
            "page_size": pb.QueryUsageRequest(page_size=5000),
        }
        for name, request in cases.items():
            if name != "start_time":
                request.start_time.FromDatetime(NOW - timedelta(days=1))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.QueryUsage(request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            violations = details(refused.value)["BadRequest"].field_violations  # type: ignore[attr-defined]
            assert [v.field for v in violations] == [name]


def _callers(folder: Path) -> Path:
    def sha(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    path = folder / "callers.yaml"
    path.write_text(
        "callers:\n"
        f'  - {{name: gateway, token_sha256: "{sha("gw")}", roles: [usage.write]}}\n'
        f'  - {{name: web, token_sha256: "{sha("web")}", roles: [usage.read]}}\n'
        f'  - {{name: finance, token_sha256: "{sha("fin")}", roles: [usage.read, usage.read_all]}}\n'
        "...\n"
    )
    return path


async def test_a_caller_reads_its_own_usage_unless_it_holds_read_all(migrated_db: str, tmp_path: Path) -> None:
    security = Security(insecure_dev=True, callers=_callers(tmp_path))
    as_ = {
        name: (("authorization", f"Bearer {token}"),) for name, token in (("gw", "gw"), ("web", "web"), ("fin", "fin"))
    }
    async with metrics_server(migrated_db, security=security) as running:
        stub = usage_service_pb2_grpc.UsageServiceStub(running.channel)
        batch = pb.RecordUsageRequest(
            records=[record("a", caller="web", cost="1"), record("b", caller="batch", cost="2")]
        )
        await stub.RecordUsage(batch, metadata=as_["gw"])
        with pytest.raises(grpc.aio.AioRpcError) as not_a_writer:
            await stub.RecordUsage(batch, metadata=as_["web"])
        query = pb.QueryUsageRequest(group_by=[pb.USAGE_DIMENSION_CALLER])
        query.start_time.FromDatetime(NOW - timedelta(days=1))
        own = await stub.QueryUsage(query, metadata=as_["web"])
        everything = await stub.QueryUsage(query, metadata=as_["fin"])
        query.caller = "batch"
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await stub.QueryUsage(query, metadata=as_["web"])
        with pytest.raises(grpc.aio.AioRpcError) as writer_reads:
            await stub.QueryUsage(query, metadata=as_["gw"])
    assert not_a_writer.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [(g.caller, g.cost_usd) for g in own.groups] == [("web", "1")] and own.total.cost_usd == "1"
    assert [(g.caller, g.cost_usd) for g in everything.groups] == [("batch", "2"), ("web", "1")]
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "usage.read_all" in (other.value.details() or "")
    assert writer_reads.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert {r["recorded_by"] for r in await rows(migrated_db)} == {"gateway"}


async def test_housekeeping_makes_monthly_partitions_ahead_and_drops_old_ones(migrated_db: str) -> None:
    pool = await asyncpg.create_pool(migrated_db, min_size=1, max_size=1)
    assert pool is not None
    try:
        settings = UsageSettings(retention_months=2, partitions_ahead_months=1)
        old = months_from(NOW.date(), -5)
        async with pool.acquire() as conn:
            await conn.execute(
                f"CREATE TABLE {LEDGER.name(old)} PARTITION OF usage_ledger "
                f"FOR VALUES FROM ('{old.isoformat()}') TO ('{months_from(old, 1).isoformat()}')"
            )
        report = await ledger_housekeeping(pool, settings, NOW)
        again = await ledger_housekeeping(pool, settings, NOW)
    finally:
        await pool.close()
    this_month = NOW.date().replace(day=1)
    assert report.created == [this_month, months_from(this_month, 1)]
    assert report.dropped == [old]
    assert again.created == [] and again.dropped == []
    assert LEDGER.name(this_month) == f"usage_ledger_p{this_month:%Y%m}"


async def test_the_cli_prints_spend_by_user_as_a_table_and_as_json(migrated_db: str) -> None:
    from tests.schema.test_migrate_cli import cli

    batch = [record("a", user="u-1", cost="0.5"), record("b", user="u-1", cost="0.25"), record("c", user="u-2")]
    async with metrics_server(migrated_db) as running:
        await usage_service_pb2_grpc.UsageServiceStub(running.channel).RecordUsage(pb.RecordUsageRequest(records=batch))
    code, out, err = await cli("usage", "--database-url", migrated_db, "--by", "user", "--since", "7d")
    assert code == 0, err
    lines = out.splitlines()
    header = "user attempts requests failed input cached cache_write output reasoning cost_usd"
    assert lines[0].split() == header.split()
    assert lines[1].split() == ["u-1", "2", "2", "0", "200", "20,000", "0", "100", "0", "0.75"]
    assert lines[2].split() == ["u-2", "1", "1", "0", "100", "10,000", "0", "50", "0", "0.008"]
    assert lines[3].split() == ["total", "3", "3", "0", "300", "30,000", "0", "150", "0", "0.758"]
    code, out, err = await cli("usage", "--database-url", migrated_db, "--by", "user", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert [(g["user"], g["cost_usd"]) for g in data["groups"]] == [("u-1", "0.75"), ("u-2", "0.008")]
    assert data["total"]["attempts"] == 3
    code, out, err = await cli("usage", "--database-url", migrated_db, "--since", "last week")
    assert code == 2 and "give a span such as 7d" in err
