"""Benchmark: usage records through UsageService/RecordUsage against raw binary COPY into the same table.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/usage_ledger.py [--rows 50000]

The service runs in a process of its own (`python -m schema_service serve`), as deployed; this process sends
pre-serialized requests, so the figures are the service's. Measured in one run on a fresh database, the ledger
truncated between measurements:
  raw COPY          copy_records_to_table of prepared rows into `usage_ledger` itself (same columns, partitions
                    and indexes), one transaction per batch of the same size, on one connection (the floor);
                    measured before and after the service's runs, the better kept
  RecordUsage       the same rows as 1,000-record batches, 1 call in flight (one database connection, like for
                    like with raw COPY) and 4 in flight
  RecordUsage retry every batch sent a second time (all duplicates: the ON CONFLICT path)
Target (issue 21): RecordUsage, 1 in flight / raw COPY >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2

from bench.results import save, target
from schema_service.config import UsageSettings
from schema_service.database import with_database
from schema_service.metrics.partitions import create_partitions
from schema_service.migrate import apply_migrations
from schema_service.usage.ledger import LEDGER
from schema_service.usage.records import COLUMNS, parse_batch
from schemaservice.v1 import usage_service_pb2 as pb
from servicekit.procs import free_port, wait_for_health

TARGET = 0.8
BATCH = 1_000


def records(total: int) -> list[pb.UsageRecord]:
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for i in range(total):
        r = pb.UsageRecord(
            request_id=f"req-{i // 2}",
            attempt=i % 2 + 1,
            caller=("web", "batch", "search")[i % 3],
            user_id=f"user-{i % 500}",
            provider=("openai", "anthropic", "gemini")[i % 3],
            model=("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.0-flash")[i % 3],
            key_id="k-3f2a9c",
            outcome=pb.USAGE_OUTCOME_SUCCEEDED if i % 2 else pb.USAGE_OUTCOME_FAILED,
            failure_reason="" if i % 2 else "FAILURE_REASON_RATE_LIMITED",
            input_tokens=1200 + i % 50,
            cached_input_tokens=i % 4000,
            output_tokens=300 + i % 70,
            cost_usd=f"0.{i % 10_000:06d}",
            price_version="a1b2c3d4",
            failover=bool(i % 2),
        )
        r.start_time.FromDatetime(now - timedelta(seconds=i % 3600, microseconds=i))
        r.duration.FromTimedelta(timedelta(milliseconds=400 + i % 900))
        r.time_to_first_token.FromTimedelta(timedelta(milliseconds=90 + i % 200))
        out.append(r)
    return out


def payloads(recs: list[pb.UsageRecord]) -> list[bytes]:
    return [pb.RecordUsageRequest(records=recs[i : i + BATCH]).SerializeToString() for i in range(0, len(recs), BATCH)]


def copy_rows(recs: list[pb.UsageRecord]) -> list[list[tuple[object, ...]]]:
    """The rows the service would write, made by its own validation, batch by batch, with datetimes (as a
    client on asyncpg's own codecs holds them)."""
    now, settings = datetime.now(UTC), UsageSettings()
    batches = [pb.RecordUsageRequest(records=recs[i : i + BATCH]) for i in range(0, len(recs), BATCH)]
    return [parse_batch(b, "gateway", settings, now).rows(micro_times=False) for b in batches]


async def raw_copy(conn: asyncpg.Connection, batches: list[list[tuple[object, ...]]]) -> None:
    for rows in batches:
        async with conn.transaction():
            await conn.copy_records_to_table(LEDGER.parent, records=rows, columns=COLUMNS)


async def record_usage(channel: grpc.aio.Channel, batches: list[bytes], in_flight: int) -> None:
    call = channel.unary_unary("/schemaservice.v1.UsageService/RecordUsage")
    queue = list(reversed(batches))

    async def worker() -> None:
        while queue:
            await call(queue.pop())

    await asyncio.gather(*(worker() for _ in range(in_flight)))


async def start_service(dsn: str) -> tuple[subprocess.Popen[bytes], grpc.aio.Channel]:
    port = free_port()
    args = [sys.executable, "-m", "schema_service", "serve", "--database-url", dsn, "--port", str(port)]
    args += ["--no-migrate", "--insecure-dev"]  # plaintext on 127.0.0.1, no callers: the benchmark measures writes
    process = subprocess.Popen(args, env={**os.environ, "LOG_LEVEL": "WARNING"})
    await wait_for_health(f"127.0.0.1:{port}", "readiness", health_pb2.HealthCheckResponse.SERVING, proc=process)
    return process, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


async def best_rate(
    conn: asyncpg.Connection, work: Callable[[], Awaitable[None]], count: int, rounds: int, *, truncate: bool = True
) -> float:
    """Best of `rounds` (a shared machine only ever slows a round down), the ledger emptied after each."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        await work()
        best = max(best, count / (time.perf_counter() - start))
        if truncate:
            await conn.execute(f"TRUNCATE {LEDGER.parent}")
    return best


async def run(dsn: str, total: int, rounds: int) -> dict[str, float]:
    recs = records(total)
    batches, rows = payloads(recs), copy_rows(recs)
    conn = await asyncpg.connect(dsn)
    await create_partitions(conn, {datetime.now(UTC).date(), (datetime.now(UTC) - timedelta(hours=1)).date()}, LEDGER)
    rates = {"raw COPY, 1 connection": await best_rate(conn, lambda: raw_copy(conn, rows), total, rounds)}
    process, channel = await start_service(dsn)
    try:
        for in_flight in (1, 4):
            work = lambda n=in_flight: record_usage(channel, batches, n)  # noqa: E731
            rates[f"RecordUsage, {in_flight} in flight"] = await best_rate(conn, work, total, rounds)
        await record_usage(channel, batches, 1)
        work = lambda: record_usage(channel, batches, 1)  # noqa: E731
        rates["RecordUsage retry (all duplicates), 1 in flight"] = await best_rate(
            conn, work, total, rounds, truncate=False
        )
        stored = await conn.fetchval(f"SELECT count(*) FROM {LEDGER.parent}")
        assert stored == total, f"{stored} rows stored for {total} records"
        await conn.execute(f"TRUNCATE {LEDGER.parent}")
        # Raw COPY again after the service's runs, the better of both kept: the first round meets cold caches.
        again = await best_rate(conn, lambda: raw_copy(conn, rows), total, rounds)
        rates["raw COPY, 1 connection"] = max(rates["raw COPY, 1 connection"], again)
    finally:
        await channel.close()
        process.terminate()
        process.wait()
        await conn.close()
    return rates


def report(rates: dict[str, float], total: int, rounds: int) -> None:
    floor = rates["raw COPY, 1 connection"]
    print(f"\n{total:,} records in {BATCH:,}-record batches, {os.cpu_count()} CPUs, best of {rounds} rounds")
    print(f"  {'':<50} {'rows/s':>10}  vs raw COPY")
    for label, rate in rates.items():
        print(f"  {label:<50} {rate:>10,.0f}  {rate / floor:8.2f}x")
    ratio = rates["RecordUsage, 1 in flight"] / floor
    target("RecordUsage 1 in flight / raw COPY", ratio, at_least=TARGET)
    path = save("usage_ledger", {"records": total, "rounds": rounds, "rates": rates, "ratio": ratio})
    print(f"  figures saved to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


async def main(total: int, rounds: int) -> None:
    admin_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = await asyncpg.connect(admin_url)
    name = f"bench_usage_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(admin_url, name)
    try:
        await apply_migrations(dsn)
        report(await run(dsn, total, rounds), total, rounds)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.rounds))
