"""Where a gateway's CPU goes, from py-spy's raw samples of its event-loop thread.

    .venv/bin/python bench/cpu_split.py RAW [--per-request-us N]

RAW is `py-spy record --gil --format raw` output (bench/gateway_cpu.py --py-spy writes one). Each sample is given
to the first category, walking from its innermost frame outwards, whose pattern matches a frame; samples of
other threads are left out (the loop thread is ~97 % of the process's CPU, by /proc per-thread times). With
`--per-request-us` (the gateway's CPU per request measured without the profiler) each share is also given in
microseconds per request.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# (category, pattern over one frame "function (path:line)"); the first category matching from the leaf wins.
RULES = (
    ("gRPC server: context.write in cygrpc", r"api/servicers\.py:\d+\)$"),
    ("event loop + C-level I/O (uvloop, grpc completion queue)", r"^Runner\.run \(asyncio/runners\.py"),
    ("logs", r"\(logging/|servicekit/logs\.py"),
    ("metrics (Prometheus, interceptor)", r"prometheus_client/|gateway_service/instruments\.py|servicekit/metrics\.py"),
    ("telemetry (metrics to the schema service, accounting)", r"gateway_service/(telemetry|sender|accounting|usage)"),
    ("tracing", r"opentelemetry/"),
    ("SSE parse + SDK chunk models", r"openai/_streaming\.py|openai/_models\.py|pydantic|openai/types|json/"),
    ("SDK request build", r"openai/(_base_client|resources/|_utils|_client|_response|_compat|_qs|_files)"),
    ("HTTP client (aiohttp under the SDK)", r"aiohttp|httpx|httpcore|yarl|multidict|openai/_vendor|providers/http"),
    ("event mapping (adapter, pipeline)", r"gateway_service/(providers|chat|domain|health|limits)/"),
    ("gRPC server: servicer, interceptors, protobuf", r"grpc|servicekit/|gateway_service/api/|_pb2"),
    ("event loop (asyncio in Python)", r"asyncio/|uvloop"),
)
LOOP_THREAD = re.compile(r"^<module> \(gateway-service")


def split(raw: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or not LOOP_THREAD.match(frames[0]):
            continue
        counts[category(frames)] += int(n)
    return counts


def category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in RULES:
            if re.search(pattern, frame):
                return name
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--per-request-us", type=float)
    args = parser.parse_args()
    counts = split(args.raw.read_text())
    total = sum(counts.values()) or 1
    print(f"{total} samples of the loop thread")
    for name, n in counts.most_common():
        us = f"  {n / total * args.per_request_us:6.0f} us/request" if args.per_request_us else ""
        print(f"  {name:<58} {n / total:6.1%}{us}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
