"""Every metric name the gateway writes to the schema service is documented in docs/metrics.md."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from gateway_service.domain.events import AttemptRecord, AttemptUsage
from gateway_service.telemetry import attempt_metrics

ROOT = Path(__file__).resolve().parents[2]


def test_the_attempt_metrics_are_documented_with_their_units() -> None:
    usage = AttemptUsage("p", "m", 1, input_tokens=3, output_tokens=4, cost_usd=Decimal("0.01"))
    record = AttemptRecord(attempt=1, provider="p", model="m", duration_s=0.5, usage=usage)
    metrics = attempt_metrics(record, 0.1, 0)
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = {name: line for line in text.splitlines() for name in re.findall(r"`(llm\.[a-z_.]+)`", line)}
    assert len(metrics) == 5
    for metric in metrics:
        assert metric.name in rows, f"{metric.name} is not in docs/metrics.md"
        assert f"| `{metric.unit}` |" in rows[metric.name]
    limits = re.findall(
        r'count\("(llm\.limits\.[a-z_]+)"', "".join(p.read_text() for p in (ROOT / "gateway_service").rglob("*.py"))
    )
    assert limits and set(limits) <= set(rows)
