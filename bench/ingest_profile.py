"""Where an ingested row's time goes: CPU microseconds per row for each stage, measured in one process.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/ingest_profile.py \
        [--rows 100000] [--rounds 5]
    PYTHONPATH=OTHER_TREE .venv/bin/python bench/ingest_profile.py ...   (the same stages of another source tree)

For StreamMetrics' per-metric form (10,000-row batches) and RecordUsage (1,000-record batches), each stage as
the service runs it, on CPU time (process_time for this process, psutil for the PostgreSQL backend), so the
figures hold on a loaded machine where wall-clock rates do not; the best of `rounds` is kept:
  decode      the request's bytes to protobuf (upb), as the gRPC deserializer does
  validate    checks, series lookup, digest and the COPY rows (datetimes, or integers where the tree has
              database.micro_times_codec)
  encode      asyncpg's side of copy_records_to_table (binary encoding and the protocol), this process
  database    the PostgreSQL backend's CPU for the same COPY (partitions, indexes, WAL)
What the served path adds on top (gRPC receive, the event loop, acknowledgements) is the service process's
CPU per row printed by bench/metrics_ingest.py and bench/usage_ledger.py minus decode + validate + encode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psutil

from bench import metrics_ingest, usage_ledger
from schema_service import database
from schema_service.config import MetricsSettings, UsageSettings
from schema_service.database import with_database
from schema_service.metrics.partitions import PARENT, create_partitions
from schema_service.metrics.validation import BatchParser
from schema_service.metrics.wire import parse_batch
from schema_service.migrate import apply_migrations
from schema_service.usage import records as usage_records
from schema_service.usage.ledger import LEDGER
from schemaservice.v1 import usage_service_pb2 as upb

MICRO = hasattr(database, "micro_times_codec")  # this tree COPYs times as integers


def cpu_us(work: Callable[[], Any], rows: int, rounds: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(rounds):
        began = time.process_time()
        out = work()
        best = min(best, time.process_time() - began)
    return best / rows * 1e6, out


async def copy_cpu(
    conn: asyncpg.Connection, table: str, batches: list[list[Any]], columns: Any, rounds: int
) -> tuple[float, float]:
    """Best client and backend CPU per row of COPYing `batches`, one transaction each."""
    backend = psutil.Process(conn.get_server_pid())
    rows = sum(map(len, batches))
    best = (float("inf"), float("inf"))
    for _ in range(rounds):
        began, server = time.process_time(), sum(backend.cpu_times()[:2])
        for batch in batches:
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=batch, columns=columns)
        client, server = time.process_time() - began, sum(backend.cpu_times()[:2]) - server
        best = min(best, (client / rows * 1e6, server / rows * 1e6))
        await conn.execute(f"TRUNCATE {table}")
    return best


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    if MICRO:
        await database.micro_times_codec(conn)
    return conn


async def metrics(dsn: str, total: int, rounds: int) -> dict[str, float]:
    data = metrics_ingest.rows(total)
    raw = metrics_ingest.per_metric_requests(data, 10_000, "p")
    decode, received = cpu_us(lambda: [parse_batch(r) for r in raw], total, rounds)
    parser = BatchParser(MetricsSettings())
    parser.parse(received[0])  # series known, as on a running service
    validate, batches = cpu_us(lambda: [parser.parse(r) for r in received], total, rounds)
    conn = await connect(dsn)
    await create_partitions(conn, {at.date() for *_, at, _ in data} | {datetime.now(UTC).date()})
    copy_rows = [b.rows if MICRO else b.records for b in batches]
    encode, backend = await copy_cpu(conn, PARENT, copy_rows, ("time", "series_id", "value", "metadata"), rounds)
    await conn.close()
    return {"decode": decode, "validate": validate, "encode": encode, "database": backend}


async def usage(dsn: str, total: int, rounds: int) -> dict[str, float]:
    raw = usage_ledger.payloads(usage_ledger.records(total))
    decode, requests = cpu_us(lambda: [upb.RecordUsageRequest.FromString(r) for r in raw], total, rounds)
    now, settings = datetime.now(UTC), UsageSettings()

    def parse() -> list[Any]:
        parsed = [usage_records.parse_batch(r, "gateway", settings, now) for r in requests]
        return [b.rows() if callable(b.rows) else b.rows for b in parsed]

    validate, batches = cpu_us(parse, total, rounds)
    conn = await connect(dsn)
    await create_partitions(conn, {now.date(), (now - timedelta(hours=1)).date()}, LEDGER)
    encode, backend = await copy_cpu(conn, LEDGER.parent, batches, usage_records.COLUMNS, rounds)
    await conn.close()
    return {"decode": decode, "validate": validate, "encode": encode, "database": backend}


async def main(total: int, rounds: int) -> None:
    admin_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = await asyncpg.connect(admin_url)
    name = f"bench_profile_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(admin_url, name)
    try:
        await apply_migrations(dsn)
        found = {
            "StreamMetrics per-metric, 10,000-row batches": await metrics(dsn, total, rounds),
            "RecordUsage, 1,000-record batches": await usage(dsn, total // 2, rounds),
        }
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"CPU us per row, best of {rounds} rounds; times as {'integers' if MICRO else 'datetimes'}; load {load}")
    for label, stages in found.items():
        parts = "  ".join(f"{stage} {us:5.2f}" for stage, us in stages.items())
        print(f"  {label:<46} {parts}  (service side {sum(stages.values()) - stages['database']:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.rounds))
