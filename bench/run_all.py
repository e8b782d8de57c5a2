"""`make bench`: every benchmark, one after another, each printing ratios against its own baseline.

    .venv/bin/python bench/run_all.py [--quick]

DATABASE_URL names the PostgreSQL server for the schema benchmarks (default: the local one at
127.0.0.1:5432, user postgres). They run one at a time so that they do not disturb each other's
figures on a small machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHES = {
    "migrations": (["migrations.py"], ["--rounds", "2"]),
    "metrics_ingest": (["metrics_ingest.py"], ["--rows", "50000", "--rounds", "1"]),
    "usage_ledger": (["usage_ledger.py"], ["--rows", "10000", "--rounds", "1"]),
    "gateway_overhead": (["gateway_overhead.py"], ["--requests", "100", "--seconds", "2"]),
    "chaos": (["chaos.py"], ["--seconds", "12", "--steady-seconds", "3"]),
    "watchdog": (["watchdog.py"], ["--chunks", "5000", "--rounds", "3"]),
    "load": (["load.py"], ["--streams", "50", "--seconds", "5"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs: a smoke test of the benchmarks")
    parser.add_argument("only", nargs="*", choices=[[], *BENCHES], help="benchmarks to run (default: all)")
    args = parser.parse_args()
    env = {**os.environ}
    env.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    failed = []
    for name, (script, quick_args) in BENCHES.items():
        if args.only and name not in args.only:
            continue
        print(f"\n=== {name} ===", flush=True)
        command = [sys.executable, str(HERE / script[0]), *(quick_args if args.quick else [])]
        if subprocess.run(command, env=env).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
