"""Writes the Grafana dashboards in deploy/k8s/components/monitoring/dashboards/ from the panel lists below.

    python scripts/gen_dashboards.py          # rewrite the JSON files
    python scripts/gen_dashboards.py --check  # exit 1 if a committed file differs (the tests run this)

Every expression uses only metric families that the services register (tests/servicekit/
test_dashboards.py scrapes both services and checks each name), with `$job`/`$namespace`
template variables so one dashboard serves every environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "components" / "monitoring" / "dashboards"
SEL = '{namespace=~"$namespace", job=~"$job"}'
NOT_OK = 'grpc_code!="OK"'
Panel = tuple[str, str, list[str]]  # title, unit, PromQL expressions (one series group each)


def rate(family: str, by: str, where: str = "", window: str = "5m") -> str:
    selector = SEL if not where else SEL[:-1] + ", " + where + "}"
    return f"sum by ({by}) (rate({family}{selector}[{window}]))"


def quantile(q: float, histogram: str, by: str) -> str:
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', 'le, ' + by if by else 'le')})"


def gauge(family: str, by: str, how: str = "sum") -> str:
    return f"{how} by ({by}) ({family}{SEL})" if by else f"{how}({family}{SEL})"


GRPC: list[Panel] = [
    ("Requests per second by method", "reqps", [rate("grpc_server_handled_total", "grpc_method")]),
    ("Errors per second by code", "reqps", [rate("grpc_server_handled_total", "grpc_method, grpc_code", NOT_OK)]),
    ("Latency p99 by method", "s", [quantile(0.99, "grpc_server_handling_seconds", "grpc_method")]),
]

GATEWAY: list[Panel] = GRPC + [
    ("Streams in flight", "short", [gauge("llm_gateway_streams_in_flight", "method")]),
    ("Attempts by provider and outcome", "reqps", [rate("llm_gateway_attempts_total", "provider, outcome")]),
    ("Failovers by provider and reason", "reqps", [rate("llm_gateway_failovers_total", "provider, reason")]),
    (
        "Time to first token p50 / p99 by provider",
        "s",
        [quantile(q, "llm_gateway_time_to_first_token_seconds", "provider") for q in (0.5, 0.99)],
    ),
    ("Attempt duration p95 by provider", "s", [quantile(0.95, "llm_gateway_attempt_duration_seconds", "provider")]),
    ("Tokens per second by provider", "short", [rate("llm_gateway_tokens_total", "provider, type")]),
    ("Cost per hour (USD) by provider", "currencyUSD", [rate("llm_gateway_cost_usd_total", "provider") + " * 3600"]),
    ("Provider health (1 = in state)", "short", [gauge("llm_gateway_provider_health", "provider, state", "max")]),
    ("Rate-limit budget events", "short", [rate("llm_gateway_limit_events_total", "event")]),
    (
        "Success ratio (5m) and attempts in flight by model",
        "short",
        [
            "min by (provider, model) (llm_gateway_model_success_ratio" + SEL[:-1] + ', window="5m"})',
            gauge("llm_gateway_model_in_flight", "provider, model"),
        ],
    ),
    (
        "Headroom left by the providers' headers (requests, tokens) by model",
        "short",
        [gauge("llm_gateway_model_headroom_remaining", "provider, model, limit", "min")],
    ),
    (
        "Metrics waiting to be sent / dropped per second by reason / failed sends by code",
        "short",
        [
            gauge("llm_gateway_telemetry_buffered_metrics", ""),
            rate("llm_gateway_telemetry_dropped_metrics_total", "reason"),
            rate("llm_gateway_telemetry_send_failures_total", "code"),
        ],
    ),
]

SCHEMA: list[Panel] = GRPC + [
    ("Rows ingested per second", "short", [rate("schema_service_metrics_rows_total", "method")]),
    ("Batches by result", "short", [rate("schema_service_metrics_batches_total", "method, result")]),
    ("COPY latency p50 / p99", "s", [quantile(q, "schema_service_copy_seconds", "") for q in (0.5, 0.99)]),
    ("Database pool connections", "short", [gauge("schema_service_db_pool_connections", "state")]),
    ("Schema version", "short", [gauge("schema_service_migration_version", "", "max")]),
    ("Metric partitions", "short", [gauge("schema_service_metric_partitions", "", "max")]),
]


def _panel(index: int, title: str, unit: str, exprs: list[str]) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "expr": e, "legendFormat": "__auto"} for i, e in enumerate(exprs)],
    }


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "includeAll": True,
        "multi": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard(uid: str, title: str, panels: list[Panel], job: str) -> dict[str, Any]:
    source = {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}}
    return {
        "uid": uid,
        "title": title,
        "tags": ["llm-platform"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                source,
                _variable("namespace", "label_values(grpc_server_handled_total, namespace)"),
                _variable("job", f'label_values(grpc_server_handled_total{{job=~".*{job}.*"}}, job)'),
            ]
        },
        "panels": [_panel(i, *p) for i, p in enumerate(panels)],
    }


DASHBOARDS = {
    "gateway.json": dashboard("llm-gateway", "LLM gateway", GATEWAY, "gateway"),
    "schema-service.json": dashboard("schema-service", "Schema service", SCHEMA, "schema"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed dashboard differs")
    args = parser.parse_args()
    stale = []
    for name, board in DASHBOARDS.items():
        text = json.dumps(board, indent=2) + "\n"
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run scripts/gen_dashboards.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
