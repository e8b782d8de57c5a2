"""Benchmark: metrics ingest through the schema service against raw COPY into the same table.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/metrics_ingest.py [--rows 200000]

The service runs in a process of its own (`python -m schema_service serve`), as deployed; this process
sends pre-serialized requests, so the figures are the service's, not the client's. Measured in one run
on a fresh database, the tables truncated between measurements:
  raw COPY        copy_records_to_table of prepared records, 10,000 per transaction (the ceiling), on one
                  connection and on as many connections in parallel as the service uses (like-for-like)
  labels per row  the same COPY into a table repeating name/unit/labels in every row (the design not taken)
  executemany     one INSERT statement for all rows, in one transaction
  single INSERT   one INSERT and commit per metric (how the old flusher wrote)
  WriteMetrics    1,000- and 10,000-row batches of per-metric messages, 1 and 4 calls in flight
  StreamMetrics   the same batches on one stream; and both RPCs with the columnar form
  --before PATH   StreamMetrics (10,000-row batches) also through a service run from another source tree
                  (e.g. `git archive <commit>` unpacked), for a before/after in the same run
  --only-target   only raw COPY on one connection and StreamMetrics' 10,000-row batches (and --before's)
The machine is shared, so each round takes every measurement once, back to back, the order alternating from
round to round, and each ratio is taken within its round; rates and ratios are the median over rounds, with
the spread (min-max) of the ratio. Target (issue 23): StreamMetrics per-metric >= 1.0 x raw COPY on one
connection (median). p50/p99 acknowledgement time of 1,000-row WriteMetrics calls.
The "conns" column says on how many database connections each path writes at once: 1 for the direct
ones; for the service, one per batch in flight up to its pool's size (WriteMetrics: the calls in flight;
StreamMetrics: stream_window). Each rate is divided by raw COPY on one connection and by raw COPY on that
many connections in parallel (like-for-like). The service's backends open at the end are printed as a check.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import asyncpg
import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.results import save, target
from schema_service.config import MetricsSettings
from schema_service.database import create_pool, with_database
from schema_service.metrics.partitions import create_partitions
from schema_service.metrics.series import make_series
from schema_service.migrate import apply_migrations
from schemaservice.v1 import metrics_service_pb2 as pb

SERIES = [("llm.latency_ms", "ms"), ("llm.tokens", "tok"), ("llm.cost", "usd")]
LABELS = [{"provider": p, "model": m} for p in ("openai", "gemini", "anthropic") for m in ("small", "large")]
Record = tuple[datetime, int, float, None]
# The service's pool size and per-stream window, as `serve` uses them.
POOL_MAX: int = inspect.signature(create_pool).parameters["max_size"].default
STREAM_WINDOW = MetricsSettings().stream_window
PARALLEL = sorted({min(4, POOL_MAX), min(STREAM_WINDOW, POOL_MAX)})  # WriteMetrics 4 in flight; one stream
Build = Callable[[list, int, str], list[bytes]]


def rows(total: int) -> list[tuple[str, str, dict[str, str], datetime, float]]:
    now = datetime.now(UTC).replace(microsecond=0)
    series = [(n, u, lab) for n, u in SERIES for lab in LABELS]
    return [
        (*series[i % len(series)], now - timedelta(seconds=i % 1800, microseconds=i), float(i % 997))
        for i in range(total)
    ]


def per_metric_requests(data: list, size: int, tag: str) -> list[bytes]:
    out = []
    for start in range(0, len(data), size):
        request = pb.WriteMetricsRequest(request_id=f"{tag}-{start}")
        for name, unit, labels, at, value in data[start : start + size]:
            m = request.metrics.add(name=name, unit=unit, value=value, labels=labels)
            m.time.FromDatetime(at)
        out.append(request.SerializeToString())
    return out


def columnar_requests(data: list, size: int, tag: str) -> list[bytes]:
    keys = sorted({(n, u, tuple(sorted(lab.items()))) for n, u, lab, _, _ in data})
    index = {k: i for i, k in enumerate(keys)}
    series = [pb.MetricSeries(name=n, unit=u, labels=dict(lab)) for n, u, lab in keys]
    out = []
    for start in range(0, len(data), size):
        chunk = data[start : start + size]
        columns = pb.MetricColumns(
            series=series,
            series_indexes=[index[(n, u, tuple(sorted(lab.items())))] for n, u, lab, _, _ in chunk],
            times_unix_nanos=[int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000 for *_, at, _ in chunk],
            values=[v for *_, v in chunk],
        )
        out.append(pb.WriteMetricsRequest(request_id=f"{tag}-{start}", columns=columns).SerializeToString())
    return out


def records(data: list) -> list[Record]:
    return [(at, make_series(n, u, lab.items()).series_id, v, None) for n, u, lab, at, v in data]


async def timed(work: Callable[[], Awaitable[object]], count: int) -> float:
    start = time.perf_counter()
    await work()
    return count / (time.perf_counter() - start)


async def raw_copy(conn: asyncpg.Connection, recs: list[Record], table: str = "system_performance_metrics") -> None:
    for start in range(0, len(recs), 10_000):
        async with conn.transaction():
            await conn.copy_records_to_table(table, records=recs[start : start + 10_000])


async def parallel_copy(conns: list[asyncpg.Connection], recs: list[Record]) -> None:
    """The same 10,000-row transactions, taken from one queue by every connection at once."""
    chunks = [recs[start : start + 10_000] for start in range(0, len(recs), 10_000)][::-1]

    async def worker(conn: asyncpg.Connection) -> None:
        while chunks:
            chunk = chunks.pop()
            async with conn.transaction():
                await conn.copy_records_to_table("system_performance_metrics", records=chunk)

    await asyncio.gather(*(worker(c) for c in conns))


async def executemany(conn: asyncpg.Connection, recs: list[Record]) -> None:
    async with conn.transaction():
        await conn.executemany("INSERT INTO system_performance_metrics VALUES ($1, $2, $3, $4)", recs)


async def single_inserts(conn: asyncpg.Connection, recs: list[Record]) -> None:
    for rec in recs:
        await conn.execute("INSERT INTO system_performance_metrics VALUES ($1, $2, $3, $4)", *rec)


async def wide_table(conn: asyncpg.Connection, data: list) -> list[tuple[object, ...]]:
    """The design not taken: name, unit and labels repeated in every row; range-partitioned, same indexes."""
    await conn.execute(
        "CREATE TABLE bench_wide (time timestamptz NOT NULL, name text NOT NULL, unit text NOT NULL, "
        "labels jsonb NOT NULL, value double precision NOT NULL, metadata jsonb) PARTITION BY RANGE (time);"
        "CREATE INDEX ON bench_wide USING brin (time); CREATE INDEX ON bench_wide (name, time);"
        "CREATE TABLE bench_wide_p PARTITION OF bench_wide FOR VALUES FROM ('-infinity') TO ('infinity')"
    )
    return [(at, n, u, json.dumps(lab), v, None) for n, u, lab, at, v in data]


async def unary(channel: grpc.aio.Channel, payloads: list[bytes], in_flight: int) -> list[float]:
    """Latencies of WriteMetrics calls, `in_flight` at a time."""
    call = channel.unary_unary("/schemaservice.v1.MetricsService/WriteMetrics")
    queue = list(reversed(payloads))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            payload = queue.pop()
            start = time.perf_counter()
            await call(payload)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies


async def stream(channel: grpc.aio.Channel, payloads: list[bytes]) -> None:
    call = channel.stream_stream("/schemaservice.v1.MetricsService/StreamMetrics")

    async def requests() -> AsyncIterator[bytes]:
        for payload in payloads:
            yield payload

    acks = [ack async for ack in call(requests())]
    assert len(acks) == len(payloads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_service(dsn: str, tree: Path | None = None) -> tuple[subprocess.Popen[bytes], grpc.aio.Channel]:
    """The service of this checkout, or of source `tree`."""
    port = free_port()
    env = {**os.environ, "LOG_LEVEL": "WARNING", **({"PYTHONPATH": str(tree)} if tree else {})}
    args = [sys.executable, "-m", "schema_service", "serve", "--database-url", dsn, "--port", str(port), "--no-migrate"]
    args.append("--insecure-dev")  # plaintext on 127.0.0.1, no callers: the benchmark measures writes
    process = subprocess.Popen(args, env=env, cwd=tree)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    health = health_pb2_grpc.HealthStub(channel)
    while True:  # poll: the process offers nothing to await until it serves
        if process.poll() is not None:
            raise RuntimeError(f"the service{f' of {tree}' if tree else ''} exited with {process.returncode}")
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return process, channel
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)


async def main(total: int, rounds: int, before: Path | None, only_target: bool) -> None:
    admin_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = await asyncpg.connect(admin_url)
    name = f"bench_metrics_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(admin_url, name)
    try:
        await apply_migrations(dsn)
        await run(dsn, total, rounds, before, only_target)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@dataclass(frozen=True)
class Result:
    rate: float  # median over rounds
    ratio: list[float]  # rate / raw COPY on one connection, in each round
    cpu_us: float | None
    conns: int


Prepare = Callable[[], Callable[[], Awaitable[object]]]


@dataclass(frozen=True)
class Measurement:
    label: str
    prepare: Prepare  # builds one round's inputs (untimed), returns the work to time
    count: int
    conns: int
    process: psutil.Process | None  # whose CPU time is counted (the service's), if any


class Bench:
    """Every measurement once per round, the order alternating between rounds (a shared machine drifts); each
    rate is divided by raw COPY on one connection in the same round."""

    def __init__(self, conn: asyncpg.Connection, rounds: int) -> None:
        self.conn, self.rounds = conn, rounds
        self.plan: list[Measurement] = []
        self.service: psutil.Process | None = None

    def measure(self, label: str, prepare: Prepare, count: int, conns: int = 1) -> None:
        self.plan.append(Measurement(label, prepare, count, conns, self.service))

    async def run(self) -> dict[str, Result]:
        samples: dict[str, list[tuple[float, float | None]]] = {m.label: [] for m in self.plan}
        for index in range(self.rounds):
            for m in self.plan if index % 2 == 0 else reversed(self.plan):
                work = m.prepare()
                before = sum(m.process.cpu_times()[:2]) if m.process else 0.0
                rate = await timed(work, m.count)
                cpu = (sum(m.process.cpu_times()[:2]) - before) / m.count * 1e6 if m.process else None
                samples[m.label].append((rate, cpu))
                await self.conn.execute("TRUNCATE system_performance_metrics, metric_write_requests")
        floor = [rate for rate, _ in samples[COPY_1]]
        results = {}
        for m in self.plan:
            rates, cpus = [r for r, _ in samples[m.label]], [c for _, c in samples[m.label] if c is not None]
            ratio = [r / f for r, f in zip(rates, floor, strict=True)]
            results[m.label] = Result(
                statistics.median(rates), ratio, statistics.median(cpus) if cpus else None, m.conns
            )
        return results


async def run(dsn: str, total: int, rounds: int, before: Path | None, only_target: bool) -> None:
    data = rows(total)
    recs = records(data)
    conn = await asyncpg.connect(dsn)
    await create_partitions(conn, {r[0].date() for r in recs} | {datetime.now(UTC).date()})
    series = {make_series(n, u, lab.items()) for n, u, lab, *_ in data}
    await conn.executemany(
        "INSERT INTO metric_series (series_id, name, unit, labels) VALUES ($1, $2, $3, $4)",
        [(s.series_id, s.name, s.unit, s.labels_json) for s in series],
    )
    bench = Bench(conn, rounds)
    wide = await wide_table(conn, data)
    tenth = recs[: total // 10]
    extra = {n: [await asyncpg.connect(dsn) for _ in range(n)] for n in ([] if only_target else PARALLEL)}
    bench.measure(COPY_1, lambda: lambda: raw_copy(conn, recs), total)
    for n, conns in extra.items():
        bench.measure(copy_label(n), lambda conns=conns: lambda: parallel_copy(conns, recs), total, n)
    if not only_target:
        bench.measure("raw COPY, labels repeated per row", lambda: lambda: wide_copy(conn, wide), total)
        bench.measure("executemany, one transaction", lambda: lambda: executemany(conn, tenth), len(tenth))
        bench.measure("one INSERT per metric", lambda: lambda: single_inserts(conn, recs[:2000]), 2000)
    services = [await start_service(dsn)]
    if before is not None:
        services.append(await start_service(dsn, before))
    try:
        bench.service = psutil.Process(services[0][0].pid)
        latencies = through_grpc(services[0][1], bench, data, only_target)
        if before is not None:
            bench.service = psutil.Process(services[1][0].pid)
            through_grpc(services[1][1], bench, data, True, f", {before.name}")
        results = await bench.run()
        open_conns = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'schema-service'"
        )
        print(f"services: pools of up to {POOL_MAX} connections ({open_conns} open at the end), window {STREAM_WINDOW}")
    finally:
        for process, channel in services:
            await channel.close()
            process.terminate()
            process.wait()
        for conns in extra.values():
            for c in conns:
                await c.close()
        await conn.close()
    report(results, latencies, total, rounds)


async def wide_copy(conn: asyncpg.Connection, wide: list[tuple[object, ...]]) -> None:
    await raw_copy(conn, wide, "bench_wide")  # type: ignore[arg-type]
    await conn.execute("TRUNCATE bench_wide")


def through_grpc(
    channel: grpc.aio.Channel, bench: Bench, data: list, only_target: bool, suffix: str = ""
) -> list[float]:
    """Plan both RPCs and shapes, with the service's CPU time per row; latencies of 1,000-row calls (filled
    as the bench runs)."""
    latencies: list[float] = []
    rounds = iter(range(1_000_000))  # fresh request_ids every round

    def calls(build: Build, size: int, in_flight: int, out: list[float]) -> Callable[[], Awaitable[None]]:
        payloads = build(data, size, f"u{next(rounds)}")
        return lambda: _extend(out, unary(channel, payloads, in_flight))

    def streamed(build: Build, size: int) -> Callable[[], Awaitable[None]]:
        payloads = build(data, size, f"s{next(rounds)}")
        return lambda: stream(channel, payloads)

    for size in (10_000,) if only_target else (1_000, 10_000):
        for shape, build in (("per-metric", per_metric_requests), ("columnar", columnar_requests)):
            for in_flight in () if only_target else (1, 4):
                got = latencies if (size, shape, in_flight) == (1_000, "per-metric", 1) else []
                label = f"WriteMetrics {size:>6,}-row {shape}, {in_flight} in flight"
                bench.measure(label, partial(calls, build, size, in_flight, got), len(data), min(in_flight, POOL_MAX))
            label = f"StreamMetrics {size:>6,}-row {shape}{suffix}"
            bench.measure(label, partial(streamed, build, size), len(data), min(STREAM_WINDOW, POOL_MAX))
    return latencies


async def _extend(out: list[float], latencies: Awaitable[list[float]]) -> None:
    out.extend(await latencies)


COPY_1 = "raw COPY (copy_records_to_table)"


def copy_label(conns: int) -> str:
    return f"raw COPY, {conns} connections in parallel"


def like_for_like(results: dict[str, Result], conns: int) -> float:
    """Raw COPY on `conns` connections, or on the nearest number measured below it."""
    measured = [n for n in (1, *PARALLEL) if n <= conns and (n == 1 or copy_label(n) in results)]
    return results[COPY_1 if max(measured) == 1 else copy_label(max(measured))].rate


def report(results: dict[str, Result], latencies: list[float], total: int, rounds: int) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{total:,} rows, {os.cpu_count()} CPUs, load average {load}, {rounds} rounds (medians)")
    print(
        f"  {'':<56} {'rows/s':>11} {'conns':>5}  {'vs COPY x1 (min-max)':>21}  {'vs COPY x conns':>15}  "
        "service CPU/row"
    )
    for label, r in results.items():
        cpu_text = f"{r.cpu_us:6.2f} us" if r.cpu_us is not None else ""
        ratio, spread = statistics.median(r.ratio), f"({min(r.ratio):.2f}-{max(r.ratio):.2f})"
        same = r.rate / like_for_like(results, r.conns)
        print(f"  {label:<56} {r.rate:>11,.0f} {r.conns:>5}  {ratio:8.2f}x {spread:>12}  {same:14.2f}x  {cpu_text}")
    if latencies:
        cuts = statistics.quantiles(latencies, n=100)
        print(
            "  WriteMetrics 1,000-row per-metric ack time (1 in flight): "
            f"p50 {cuts[49] * 1e3:.1f} ms, p99 {cuts[98] * 1e3:.1f} ms"
        )
    path = save(
        "metrics_ingest",
        {
            "rows": total,
            "rounds": rounds,
            "rates": {label: r.rate for label, r in results.items()},
            "ratios": {label: r.ratio for label, r in results.items()},
            "write_ack_ms": {"p50": cuts[49] * 1e3, "p99": cuts[98] * 1e3} if latencies else {},
        },
    )
    print(f"  figures saved to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    for shape in ("per-metric", "columnar"):
        label = f"StreamMetrics 10,000-row {shape}"
        r = results[label]
        print(f"  {label} / raw COPY on 1 connection, per round: " + " ".join(f"{x:.2f}" for x in r.ratio))
        target(f"{label} / raw COPY on 1 connection, median", statistics.median(r.ratio), at_least=1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="also StreamMetrics through the service of this source tree")
    parser.add_argument("--only-target", action="store_true", help="only raw COPY x1 and StreamMetrics 10,000-row")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rows, arguments.rounds, arguments.before, arguments.only_target))
