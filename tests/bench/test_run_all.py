"""`make bench` (bench/run_all.py): each target printed with met / NOT met, --check failing on a miss, and the
figures written outside the committed files unless --record."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run_all
from bench.results import SCRATCH

pytestmark = pytest.mark.timeout(60)

FAKE = """
import os
from bench.results import DIR, target
print("results in", DIR)
target("first token", 2.5, at_most=1, unit=" ms")
target("throughput ratio", 1.2, at_least=1.0)
"""


@pytest.fixture
def one_fake_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    monkeypatch.setattr(run_all, "BENCHES", {"fake": ([str(script)], [])})


@pytest.mark.usefixtures("one_fake_bench")
def test_targets_met_or_not_check_fails_on_a_miss_and_figures_stay_uncommitted(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert run_all.main(["--check"]) == 1
    out = capfd.readouterr().out
    assert "  target: first token 2.5 ms (target <= 1 ms): NOT met\n" in out  # as the benchmark runs
    assert "=== targets ===\n  fake: first token 2.5 ms (target <= 1 ms): NOT met\n" in out  # and at the end
    assert "  fake: throughput ratio 1.2 (target >= 1): met\n1 of 2 targets met\n" in out
    assert f"results in {SCRATCH}\n" in out and f"figures in {SCRATCH} (--record:" in out  # not bench/results/
    assert run_all.main([]) == 0  # without --check a miss is reported, not an error
