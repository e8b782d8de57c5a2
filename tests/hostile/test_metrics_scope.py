"""Metrics scoped by caller: another writer cannot forge the gateway's series, nor read them without
metrics.read_all, and every series and write request records who wrote it (#18 point 12)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from schema_service.metrics.baselines import compute_baselines
from schemaservice.v1 import metrics_service_pb2 as pb
from servicekit.security import Security
from tests.schema.metrics_helpers import metric, metrics_server, violations

NOW = datetime.now(UTC).replace(microsecond=0)
NAME, LABELS = "llm.attempt.cost_micro_usd", {"provider": "openai"}
TOKENS = {"gateway": "gw-token", "evil": "evil-token", "ops": "ops-token"}
AS = {name: (("authorization", f"Bearer {token}"),) for name, token in TOKENS.items()}


def _callers(folder: Path) -> Security:
    def entry(name: str, roles: str) -> str:
        digest = hashlib.sha256(TOKENS[name].encode()).hexdigest()
        return f'  - {{name: {name}, token_sha256: "{digest}", roles: [{roles}]}}\n'

    path = folder / "callers.yaml"
    path.write_text(
        "callers:\n"
        + entry("gateway", "metrics.write, metrics.read")
        + entry("evil", "metrics.write, metrics.read")
        + entry("ops", "metrics.read, metrics.read_all")
        + "...\n"
    )
    return Security(insecure_dev=True, callers=path)


def _batch(request_id: str, *values: float) -> pb.WriteMetricsRequest:
    metrics = [metric(v, at=NOW - timedelta(seconds=i + 1), name=NAME, labels=LABELS) for i, v in enumerate(values)]
    return pb.WriteMetricsRequest(request_id=request_id, metrics=metrics)


def _sum(caller: str = "") -> pb.QueryMetricsRequest:
    query = pb.QueryMetricsRequest(name=NAME, labels=LABELS, aggregates=[pb.AGGREGATE_SUM])
    query.start_time.FromDatetime(NOW - timedelta(hours=1))
    query.end_time.FromDatetime(NOW + timedelta(seconds=1))
    query.caller = caller
    return query


async def _total(stub: object, caller: str, reader: str) -> float:
    answer = await stub.QueryMetrics(_sum(caller), metadata=AS[reader], timeout=10)  # type: ignore[attr-defined]
    return sum(b.sum for b in answer.buckets)


async def test_another_writer_cannot_forge_the_gateways_series(migrated_db: str, tmp_path: Path) -> None:
    async with metrics_server(migrated_db, security=_callers(tmp_path)) as running:
        stub = running.stub
        await stub.WriteMetrics(_batch("gw-1", 0.25, 0.25), metadata=AS["gateway"], timeout=10)
        await stub.WriteMetrics(_batch("forged", 1e9), metadata=AS["evil"], timeout=10)

        assert await _total(stub, "", "gateway") == 0.5
        assert await _total(stub, "gateway", "ops") == 0.5
        assert await _total(stub, "", "evil") == 1e9
        assert await _total(stub, "*", "ops") == 0.5 + 1e9
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await _total(stub, "gateway", "evil")

    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "metrics.read_all" in (denied.value.details() or "")
    conn = await asyncpg.connect(migrated_db)
    try:
        series = await conn.fetch("SELECT caller, count(*) AS n FROM metric_series GROUP BY 1 ORDER BY 1")
        requests = await conn.fetch("SELECT caller, request_id FROM metric_write_requests ORDER BY 1")
    finally:
        await conn.close()
    assert [(r["caller"], r["n"]) for r in series] == [("evil", 1), ("gateway", 1)]
    assert [(r["caller"], r["request_id"]) for r in requests] == [("evil", "forged"), ("gateway", "gw-1")]


async def test_a_request_id_is_per_caller_so_another_cannot_claim_the_gateways(
    migrated_db: str, tmp_path: Path
) -> None:
    async with metrics_server(migrated_db, security=_callers(tmp_path)) as running:
        stub = running.stub
        squatted = await stub.WriteMetrics(_batch("gw-7", 5.0), metadata=AS["evil"], timeout=10)
        same_content = await stub.WriteMetrics(_batch("gw-7", 5.0), metadata=AS["gateway"], timeout=10)
        retried = await stub.WriteMetrics(_batch("gw-7", 5.0), metadata=AS["gateway"], timeout=10)

        assert not squatted.duplicate and not same_content.duplicate  # the gateway's batch is stored, not skipped
        assert retried.duplicate and retried.written_count == 1  # and its own retry is still exactly once
        assert await _total(stub, "", "gateway") == 5.0


async def test_baselines_and_anomalies_are_scoped_and_name_their_writer(migrated_db: str, tmp_path: Path) -> None:
    async with metrics_server(migrated_db, security=_callers(tmp_path)) as running:
        stub = running.stub
        await stub.WriteMetrics(_batch("gw", 1.0, 2.0, 3.0), metadata=AS["gateway"], timeout=10)
        await stub.WriteMetrics(_batch("ev", 7.0, 8.0, 9.0), metadata=AS["evil"], timeout=10)
        conn = await asyncpg.connect(migrated_db)
        try:
            window = (NOW - timedelta(hours=1), NOW + timedelta(seconds=1))
            await compute_baselines(
                conn,
                window_start=window[0],
                window_end=window[1],
                since=window[1],
                min_samples=1,
                z_score=4.0,
                max_abs_value=1e100,
            )
        finally:
            await conn.close()
        own = await stub.ListBaselines(pb.ListBaselinesRequest(), metadata=AS["evil"], timeout=10)
        every = await stub.ListBaselines(pb.ListBaselinesRequest(caller="*"), metadata=AS["ops"], timeout=10)
        anomalies = await stub.ListAnomalies(pb.ListAnomaliesRequest(caller="*"), metadata=AS["ops"], timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ListAnomalies(pb.ListAnomaliesRequest(caller="gateway"), metadata=AS["evil"], timeout=10)

    assert [(b.caller, b.mean) for b in own.baselines] == [("evil", 8.0)]
    assert sorted((b.caller, b.mean) for b in every.baselines) == [("evil", 8.0), ("gateway", 2.0)]
    assert list(anomalies.anomalies) == []
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("caller", ["has space", "x" * 65, "**", "gate\x00way"])
async def test_a_bad_caller_field_is_invalid_argument_naming_it(migrated_db: str, tmp_path: Path, caller: str) -> None:
    async with metrics_server(migrated_db, security=_callers(tmp_path)) as running:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await running.stub.QueryMetrics(_sum(caller), metadata=AS["ops"], timeout=10)

    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "caller" in violations(bad.value)
