"""Where benchmarks leave their figures, and how each states a target.

Figures go to `$BENCH_RESULTS_DIR/<name>.json` (default `.data/bench/`, outside the committed files), with the
machine they ran on; `bench/run_all.py --record` points it at the committed `bench/results/`. `bench/plot.py`
draws them (PNG, indexed in a README.md beside them); `make bench` runs both. The JSON holds raw samples (not
only summaries) so a picture can show a whole distribution.

`target(...)` prints one figure against its bound with `met` / `NOT met` and, under `run_all.py`, appends it to
`$BENCH_TARGETS` (JSON lines), from which run_all prints the summary and `--check` takes its exit code.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

COMMITTED = Path(__file__).resolve().parent / "results"
SCRATCH = COMMITTED.parent.parent / ".data" / "bench"
DIR = Path(os.environ.get("BENCH_RESULTS_DIR") or SCRATCH)


def target(
    what: str, value: float, *, at_most: float | None = None, at_least: float | None = None, unit: str = ""
) -> bool:
    """Print `what` against its bound (exactly one of `at_most`, `at_least`) with met / NOT met; record it for
    run_all. Whether it is met is returned, so a script can say more about a miss."""
    bound = at_most if at_most is not None else at_least
    assert bound is not None and (at_most is None) != (at_least is None)
    met = value <= bound if at_most is not None else value >= bound
    sign = "<=" if at_most is not None else ">="
    line = f"{what} {value:.3g}{unit} (target {sign} {bound:g}{unit}): {'met' if met else 'NOT met'}"
    print(f"  target: {line}", flush=True)
    record = os.environ.get("BENCH_TARGETS")
    if record:
        with open(record, "a") as out:
            out.write(json.dumps({"bench": Path(sys.argv[0]).stem, "line": line, "met": met}) + "\n")
    return met


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU model and count, memory, Python, and when."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    except (OSError, StopIteration, ValueError):
        mem_kib = 0
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save(name: str, data: dict[str, Any], directory: Path = DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1) + "\n")
    return path


def load(name: str, directory: Path = DIR) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
