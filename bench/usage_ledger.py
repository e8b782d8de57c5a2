"""Benchmark: usage records through UsageService/RecordUsage against raw binary COPY into the same table.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/usage_ledger.py \
        [--rows 50000] [--rounds 5] [--before PATH]

The service runs in a process of its own (`python -m schema_service serve`), as deployed; this process sends
pre-serialized requests, so the figures are the service's. Measured in one run on a fresh database, the ledger
truncated between measurements:
  raw COPY          copy_records_to_table of prepared rows (datetimes, Decimals: asyncpg's own codecs) into
                    `usage_ledger` itself (same columns, partitions and indexes), one transaction per batch of
                    the same size, on one connection (the floor)
  RecordUsage       the same rows as 1,000-record batches, 1 call in flight (one database connection, like for
                    like with raw COPY) and 4 in flight
  RecordUsage retry every batch sent a second time (all duplicates: the ON CONFLICT path)
  --before PATH     also a service run from another source tree (e.g. `git archive <commit>` unpacked), 1 in flight
The machine is shared, so each round measures raw COPY and every service back to back (the order alternating
from round to round), and each ratio is taken within its round; the median and the spread over rounds are
printed. Target (issue 21): RecordUsage, 1 in flight / raw COPY >= 0.8, the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import psutil
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


async def start_service(dsn: str, tree: Path | None = None) -> tuple[subprocess.Popen[bytes], grpc.aio.Channel]:
    """The service of this checkout, or of source `tree`."""
    port = free_port()
    args = [sys.executable, "-m", "schema_service", "serve", "--database-url", dsn, "--port", str(port)]
    args += ["--no-migrate", "--insecure-dev"]  # plaintext on 127.0.0.1, no callers: the benchmark measures writes
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    process = subprocess.Popen(args, env=env, cwd=tree)
    await wait_for_health(f"127.0.0.1:{port}", "readiness", health_pb2.HealthCheckResponse.SERVING, proc=process)
    return process, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


CPU: dict[str, list[float]] = {}  # service CPU us per row, by measurement


async def rate(
    conn: asyncpg.Connection,
    work: Callable[[], Awaitable[None]],
    count: int,
    *,
    truncate: bool = True,
    service: tuple[str, psutil.Process] | None = None,
) -> float:
    before = sum(service[1].cpu_times()[:2]) if service else 0.0
    start = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - start
    if service:
        CPU.setdefault(service[0], []).append((sum(service[1].cpu_times()[:2]) - before) / count * 1e6)
    if truncate:
        await conn.execute(f"TRUNCATE {LEDGER.parent}")
    return count / elapsed


RAW = "raw COPY, 1 connection"
MAIN = "RecordUsage, 1 in flight"


async def run(dsn: str, total: int, rounds: int, before: Path | None) -> dict[str, list[float]]:
    """Rates of each measurement, one per round."""
    recs = records(total)
    batches, rows = payloads(recs), copy_rows(recs)
    conn = await asyncpg.connect(dsn)
    await create_partitions(conn, {datetime.now(UTC).date(), (datetime.now(UTC) - timedelta(hours=1)).date()}, LEDGER)
    services = [await start_service(dsn)]
    if before is not None:
        services.append(await start_service(dsn, before))
    channel, new = services[0][1], (MAIN, psutil.Process(services[0][0].pid))
    work: dict[str, Callable[[], Awaitable[float]]] = {
        RAW: lambda: rate(conn, lambda: raw_copy(conn, rows), total),
        MAIN: lambda: rate(conn, lambda: record_usage(channel, batches, 1), total, service=new),
        "RecordUsage, 4 in flight": lambda: rate(conn, lambda: record_usage(channel, batches, 4), total),
    }
    if before is not None:
        old, label = services[1][1], f"RecordUsage, 1 in flight, {before.name}"
        was = (label, psutil.Process(services[1][0].pid))
        work[label] = lambda: rate(conn, lambda: record_usage(old, batches, 1), total, service=was)
    rates: dict[str, list[float]] = {label: [] for label in [*work, "RecordUsage retry (all duplicates), 1 in flight"]}
    try:
        await raw_copy(conn, rows)  # warm: the first round would otherwise meet cold caches
        await conn.execute(f"TRUNCATE {LEDGER.parent}")
        for index in range(rounds):
            order = list(work) if index % 2 == 0 else list(reversed(work))
            for label in order:
                rates[label].append(await work[label]())
            await record_usage(channel, batches, 1)
            retry = await rate(conn, lambda: record_usage(channel, batches, 1), total, truncate=False)
            rates["RecordUsage retry (all duplicates), 1 in flight"].append(retry)
            stored = await conn.fetchval(f"SELECT count(*) FROM {LEDGER.parent}")
            assert stored == total, f"{stored} rows stored for {total} records"
            await conn.execute(f"TRUNCATE {LEDGER.parent}")
    finally:
        for process, service_channel in services:
            await service_channel.close()
            process.terminate()
            process.wait()
        await conn.close()
    return rates


def report(rates: dict[str, list[float]], total: int, rounds: int) -> None:
    floor = rates[RAW]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{total:,} records in {BATCH:,}-record batches, {os.cpu_count()} CPUs, load average {load}, {rounds} rounds"
    )
    print(f"  {'':<50} {'rows/s (median)':>15}  vs raw COPY in the same round: median (min-max); service CPU/row")
    ratios = {label: [r / f for r, f in zip(values, floor, strict=True)] for label, values in rates.items()}
    for label, values in rates.items():
        spread = ratios[label]
        print(
            f"  {label:<50} {statistics.median(values):>15,.0f}  {statistics.median(spread):8.2f}x "
            f"({min(spread):.2f}-{max(spread):.2f})"
            + (f"  {statistics.median(CPU[label]):6.2f} us" if label in CPU else "")
        )
    ratio = statistics.median(ratios[MAIN])
    target("RecordUsage 1 in flight / raw COPY, median of rounds", ratio, at_least=TARGET)
    path = save("usage_ledger", {"records": total, "rounds": rounds, "rates": rates, "ratios": ratios, "ratio": ratio})
    print(f"  figures saved to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


async def main(total: int, rounds: int, before: Path | None) -> None:
    admin_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = await asyncpg.connect(admin_url)
    name = f"bench_usage_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(admin_url, name)
    try:
        await apply_migrations(dsn)
        report(await run(dsn, total, rounds, before), total, rounds)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, help="also run the service of this source tree (1 in flight)")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.rounds, args.before))
