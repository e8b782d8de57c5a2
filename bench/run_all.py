"""`make bench`: every benchmark, one after another, each printing ratios against its own baseline, then the
pictures (bench/plot.py) and every target with met / NOT met.

    .venv/bin/python bench/run_all.py [--quick] [--record] [--check] [NAME ...]

Figures go to .data/bench/ unless --record puts them in the committed bench/results/ (what a new measurement
for bench/RESULTS.md does). --check exits 1 when a target is not met (a benchmark that fails always does).
DATABASE_URL names the PostgreSQL server for the schema benchmarks (default: the local one at 127.0.0.1:5432,
user postgres). They run one at a time so that they do not disturb each other's figures on a small machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.results import COMMITTED, SCRATCH

HERE = Path(__file__).resolve().parent

BENCHES = {
    "migrations": (["migrations.py"], ["--rounds", "2"]),
    "metrics_ingest": (["metrics_ingest.py"], ["--rows", "50000", "--rounds", "1"]),
    "usage_ledger": (["usage_ledger.py"], ["--rows", "10000", "--rounds", "1"]),
    "gateway_overhead": (["gateway_overhead.py"], ["--requests", "100", "--seconds", "2"]),
    "openai_facade": (["openai_facade.py"], ["--requests", "100", "--seconds", "2"]),
    "gateway_cpu": (["gateway_cpu.py"], ["--rounds", "2", "--seconds", "2"]),
    "gateway_rss": (["gateway_rss.py"], ["--rounds", "1"]),
    "chaos": (["chaos.py"], ["--seconds", "12", "--steady-seconds", "3"]),
    "watchdog": (["watchdog.py"], ["--chunks", "5000", "--rounds", "3"]),
    "load": (["load.py"], ["--streams", "50", "--seconds", "5"]),
    "routing": (["routing.py"], ["--seconds", "5"]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs: a smoke test of the benchmarks")
    parser.add_argument("--record", action="store_true", help=f"write the figures into {COMMITTED} (committed)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    parser.add_argument("only", nargs="*", choices=[[], *BENCHES], help="benchmarks to run (default: all)")
    return parser.parse_args(argv)


def summary(records: list[dict[str, object]], failed: list[str]) -> list[str]:
    """The closing lines: each target with met / NOT met, grouped by benchmark, and the benchmarks that failed."""
    lines = ["", "=== targets ==="]
    lines += [f"  {r['bench']}: {r['line']}" for r in records] or ["  (none stated by the benchmarks run)"]
    missed = sum(1 for r in records if not r["met"])
    lines.append(f"{len(records) - missed} of {len(records)} targets met")
    if failed:
        lines.append(f"failed: {', '.join(failed)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = COMMITTED if args.record else SCRATCH
    targets = Path(tempfile.mkstemp(prefix="bench-targets-", suffix=".jsonl")[1])
    env = {**os.environ, "BENCH_RESULTS_DIR": str(results), "BENCH_TARGETS": str(targets)}
    env.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    failed = []
    try:
        for name, (script, quick_args) in BENCHES.items():
            if args.only and name not in args.only:
                continue
            print(f"\n=== {name} ===", flush=True)
            command = [sys.executable, str(HERE / script[0]), *(quick_args if args.quick else [])]
            if subprocess.run(command, env=env).returncode != 0:
                failed.append(name)
        if subprocess.run([sys.executable, str(HERE / "plot.py")], env=env).returncode != 0:
            failed.append("plot")
        records = [json.loads(line) for line in targets.read_text().splitlines()]
    finally:
        targets.unlink(missing_ok=True)
    print("\n".join(summary(records, failed)))
    print(f"figures in {results}" + ("" if args.record else " (--record: into the committed bench/results/)"))
    missed = any(not r["met"] for r in records)
    return 1 if failed or (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
