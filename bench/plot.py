"""Draws the figures the benchmarks left (bench/results.py DIR: .data/bench/, or bench/results/ with --record) as
PNG beside them, and indexes them in a README.md there.

    .venv/bin/python bench/plot.py        # after a benchmark; `make bench` runs it

Each picture names the machine and date of its run; a benchmark that has not run is left out.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from bench.results import DIR, load


def _caption(data: dict[str, Any]) -> str:
    m = data["machine"]
    return f"{m['cpus']} x {m['cpu']}, {m['memory_gib']} GiB, Python {m['python']}, {m['date']}"


def ttft(data: dict[str, Any], out: Path) -> None:
    """Time to first token: the bare SDK against the same SDK through the gateway (empirical CDFs)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, samples in data["ttft_ms"].items():
        xs = sorted(samples)
        ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=f"{label} (n={len(xs)})")
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Time to first token: bare SDK vs through the gateway")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.text(0.01, 0.01, _caption(data), fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def ingest(data: dict[str, Any], out: Path) -> None:
    """Metric rows per second by write path, against raw COPY in the same run."""
    rates: dict[str, float] = data["rates"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rates) + 1.5))
    labels = list(rates)
    ax.barh(labels, [rates[k] for k in labels], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("rows per second")
    ax.set_title("Metrics ingest by path")
    for i, label in enumerate(labels):
        ax.text(rates[label], i, f" {rates[label]:,.0f}", va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.text(0.01, 0.01, _caption(data), fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


FAULT_COLOURS = {"503": "tab:red", "429": "tab:orange", "disconnect": "tab:purple", "stall": "tab:brown"}  # outages


def chaos(data: dict[str, Any], out: Path) -> None:
    """Per-second StreamChat success while three upstreams flap (bench/chaos.py), and when each was down."""
    runs = data["runs"]
    fig, (ax, states) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=(3, 1))
    started = ax.twinx()
    # The success lines above everything else: the twin axis (faint counts) behind the main one, and the dashed
    # reference under the lines, which at 100 % would otherwise hide the gateway's own line.
    ax.set_zorder(started.get_zorder() + 1)
    ax.patch.set_visible(False)
    for run in runs:
        # A second in which no call started (every caller waiting on a stall) is a gap, not a 0 %.
        rates = [math.nan if r is None else 100 * r for r in run["rates"]]
        steps = ax.step(range(len(rates) + 1), [*rates, rates[-1]], where="post", label=f"{run['label']}")
        line = steps[0]
        line.set(linewidth=2.2, zorder=3)
        counts = run["started"]
        started.step(
            range(len(counts) + 1), [*counts, counts[-1]], where="post", color=line.get_color(), alpha=0.3, linewidth=1
        )
    started.set_ylabel("calls started per second (faint)", color="grey")
    steady = 100 * data["steady"]["success"]
    ax.axhline(steady, color="grey", linestyle=(0, (2, 4)), linewidth=0.8, zorder=2, label="steady upstreams")
    ax.set_ylabel("calls answered (%)")
    ax.set_ylim(-3, 108)
    ax.set_title("StreamChat success per second, three upstreams flapping out of phase", pad=22)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, fontsize=8, frameon=False)  # over no line
    outages: dict[int, list[tuple[float, float, str]]] = {}
    begun: dict[int, tuple[float, str]] = {}
    for at, upstream, fault in runs[0]["outages"]:
        if upstream in begun:
            start, kind = begun.pop(upstream)
            outages.setdefault(upstream, []).append((start, at - start, kind))
        if fault:
            begun[upstream] = (at, fault.split()[0])
    for upstream, spans in outages.items():
        for start, width, kind in spans:
            states.broken_barh([(start, width)], (upstream - 0.4, 0.8), color=FAULT_COLOURS.get(kind, "black"))
    states.set_yticks(range(len(outages)), [f"p{u} down" for u in range(len(outages))])
    states.set_xlabel("seconds since the first outage")
    patches = [Patch(color=colour, label=kind) for kind, colour in FAULT_COLOURS.items()]
    states.legend(handles=patches, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.text(0.01, 0.01, _caption(data), fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


PICTURES = {
    "gateway_overhead": ("gateway_ttft.png", ttft),
    "metrics_ingest": ("metrics_ingest.png", ingest),
    "chaos": ("chaos.png", chaos),
}


def main() -> int:
    lines = ["# Benchmark pictures", "", "Drawn by `bench/plot.py` from the JSON beside them (`make bench`).", ""]
    for name, (file, draw) in PICTURES.items():
        data = load(name)
        if data is None:
            continue
        draw(data, DIR / file)
        lines += [f"## {name}", "", f"{_caption(data)}", "", f"![{name}]({file})", ""]
        print(f"wrote {DIR / file}")
    DIR.mkdir(parents=True, exist_ok=True)
    (DIR / "README.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
