"""Draws the figures the benchmarks left in bench/results/ as PNG, and indexes them in its README.md.

    .venv/bin/python bench/plot.py        # after `make bench` (which runs it)

Each picture names the machine and date of its run; a benchmark that has not run is left out.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt  # noqa: E402

from bench.results import DIR, load  # noqa: E402


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


PICTURES = {"gateway_overhead": ("gateway_ttft.png", ttft), "metrics_ingest": ("metrics_ingest.png", ingest)}


def main() -> int:
    lines = ["# Benchmark pictures", "", "Drawn by `bench/plot.py` from the JSON beside them (`make bench`).", ""]
    for name, (file, draw) in PICTURES.items():
        data = load(name)
        if data is None:
            continue
        draw(data, DIR / file)
        lines += [f"## {name}", "", f"{_caption(data)}", "", f"![{name}]({file})", ""]
        print(f"wrote {DIR / file}")
    (DIR / "README.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
