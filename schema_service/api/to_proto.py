"""Domain results -> schemaservice.v1 messages, for the servicers (no grpc import here), as the gateway's
api/to_proto.py; the other direction, requests -> domain queries, is from_proto.py.

The servicers stay proto in, domain call, proto out: what a migration event, a status report, a schema
difference, a lint finding or a metrics row looks like on the wire is decided here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from google.protobuf import duration_pb2, timestamp_pb2

from schema_service.drift.verify import Difference
from schema_service.metrics import queries
from schema_service.migrate import events as ev
from schema_service.migrate.lint import Finding
from schema_service.migrate.lock import LockHolder
from schema_service.migrate.ops import Status
from schema_service.usage.queries import UsagePage, UsageQuery, UsageSum, page_token
from schema_service.usage.reconcile import Reconciliation
from schemaservice.v1 import metrics_service_pb2 as mpb
from schemaservice.v1 import migration_service_pb2 as pb
from schemaservice.v1 import usage_service_pb2 as upb

DIFFERENCE_KINDS = {
    "missing": pb.DIFFERENCE_KIND_MISSING,
    "unexpected": pb.DIFFERENCE_KIND_UNEXPECTED,
    "changed": pb.DIFFERENCE_KIND_CHANGED,
}
SEVERITIES = {"warning": pb.LINT_SEVERITY_WARNING, "error": pb.LINT_SEVERITY_ERROR}


# MigrationService


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def holder(lock_holder: LockHolder | None) -> pb.LockHolder | None:
    if lock_holder is None:
        return None
    since = timestamp_pb2.Timestamp()
    if lock_holder.since is not None:
        since.FromDatetime(lock_holder.since)
    return pb.LockHolder(
        backend_pid=lock_holder.backend_pid,
        application_name=lock_holder.application_name,
        client_addr=lock_holder.client_addr,
        since=since,
    )


def planned(item: ev.PlannedItem) -> pb.PlannedMigration:
    return pb.PlannedMigration(
        version=item.version,
        name=item.name,
        checksum=item.checksum,
        transactional=item.transactional,
        statement_count=item.statement_count,
    )


def migrate_event(event: ev.Event) -> pb.MigrateResponse:
    if isinstance(event, ev.PlanReady):
        plan = pb.Plan(current_version=event.current_version, migrations=[planned(i) for i in event.items])
        return pb.MigrateResponse(plan=plan)
    if isinstance(event, ev.LockWaiting):
        return pb.MigrateResponse(lock_waiting=pb.LockWaiting(holder=holder(event.holder)))
    if isinstance(event, ev.MigrationStarted):
        started = pb.MigrationStarted(version=event.version, name=event.name, statement_count=event.statement_count)
        return pb.MigrateResponse(migration_started=started)
    if isinstance(event, ev.StatementFinished):
        finished = pb.StatementFinished(
            version=event.version,
            statement_index=event.index,
            statement_count=event.count,
            duration=duration(event.duration_s),
            resumed=event.resumed,
        )
        return pb.MigrateResponse(statement_finished=finished)
    if isinstance(event, ev.MigrationFinished):
        done = pb.MigrationFinished(
            version=event.version, name=event.name, duration=duration(event.duration_s), checksum=event.checksum
        )
        return pb.MigrateResponse(migration_finished=done)
    return pb.MigrateResponse(
        done=pb.MigrateDone(current_version=event.current_version, applied_count=event.applied_count)
    )


def status_response(report: Status) -> pb.GetStatusResponse:
    applied = [
        pb.AppliedMigration(
            version=row.version,
            name=row.name,
            checksum=row.checksum,
            applied_at=timestamp(row.applied_at),
            execution_time=duration(row.execution_ms / 1000),
            applied_by=row.applied_by,
            success=row.success,
        )
        for row in report.applied
    ]
    return pb.GetStatusResponse(
        current_version=report.current_version,
        applied=applied,
        pending=[planned(i) for i in report.pending],
        lock_holder=holder(report.lock_holder),
        problems=report.problems,
    )


def verify_response(differences: Sequence[Difference]) -> pb.VerifySchemaResponse:
    return pb.VerifySchemaResponse(
        matches=not differences,
        differences=[
            pb.SchemaDifference(
                object_kind=d.object_kind,
                object_name=d.object_name,
                kind=DIFFERENCE_KINDS[d.kind],
                expected=d.expected,
                actual=d.actual,
            )
            for d in differences
        ],
    )


def lint_response(findings: Sequence[Finding]) -> pb.LintMigrationsResponse:
    return pb.LintMigrationsResponse(
        summary=_lint_summary(findings),
        findings=[
            pb.LintFinding(
                file=f.file,
                line=f.line,
                column=f.column,
                rule=f.rule,
                message=f.message,
                severity=SEVERITIES[f.severity],
            )
            for f in findings
        ],
    )


# MetricsService


def query_response(buckets: Sequence[queries.Bucket]) -> mpb.QueryMetricsResponse:
    return mpb.QueryMetricsResponse(
        buckets=[mpb.MetricBucket(start_time=timestamp(b.start), count=b.count, **b.aggregates) for b in buckets]
    )


def baselines_response(rows: Sequence[queries.BaselineRow]) -> mpb.ListBaselinesResponse:
    return mpb.ListBaselinesResponse(
        summary=_count(len(rows), "baseline") if rows else "no baselines yet",
        baselines=[
            mpb.Baseline(
                name=r.name,
                labels=r.labels,
                mean=r.mean,
                stddev=r.stddev,
                sample_count=r.sample_count,
                window_start=timestamp(r.window_start),
                window_end=timestamp(r.window_end),
                computed_at=timestamp(r.computed_at),
                caller=r.caller,
            )
            for r in rows
        ],
    )


def anomalies_response(rows: Sequence[queries.AnomalyRow]) -> mpb.ListAnomaliesResponse:
    return mpb.ListAnomaliesResponse(
        anomalies=[
            mpb.Anomaly(
                name=r.name,
                labels=r.labels,
                value=r.value,
                baseline_mean=r.baseline_mean,
                baseline_stddev=r.baseline_stddev,
                z_score=r.z_score,
                time=timestamp(r.time),
                caller=r.caller,
            )
            for r in rows
        ]
    )


def write_summary(request_id: str, written_count: int, duplicate: bool) -> str:
    """WriteMetrics' and StreamMetrics' outcome in words: a duplicate must not read as more rows."""
    stored = _count(written_count, "metric")
    if duplicate:
        return f"duplicate of request_id {request_id!r}, whose first call stored {stored}; nothing was written now"
    return f"stored {stored}"


def _lint_summary(findings: Sequence[Finding]) -> str:
    if not findings:
        return "no findings"
    errors = sum(1 for f in findings if f.severity == "error")
    parts = [_count(n, kind) for n, kind in ((errors, "error"), (len(findings) - errors, "warning")) if n]
    return f"{_count(len(findings), 'finding')}: {', '.join(parts)}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# UsageService


def usage_response(query: UsageQuery, page: UsagePage) -> upb.QueryUsageResponse:
    total = _group(page.total)
    summary = (
        f"{page.group_count} group{'' if page.group_count == 1 else 's'}, ${_dollars(page.total.cost_usd)} over "
        f"{page.total.attempts} attempt{'' if page.total.attempts == 1 else 's'}"
        if page.total.attempts
        else "no usage in the range"
    )
    return upb.QueryUsageResponse(
        groups=[_group(g) for g in page.groups],
        total=total,
        group_count=page.group_count,
        next_page_token=page_token(query, page.next_offset) if page.next_offset is not None else "",
        summary=summary,
    )


def reconciliation(r: Reconciliation) -> upb.UsageReconciliation:
    return upb.UsageReconciliation(
        ledger_input_tokens=r.ledger_input,
        ledger_output_tokens=r.ledger_output,
        metered_input_tokens=r.metered_input,
        metered_output_tokens=r.metered_output,
        input_drift_tokens=r.input_drift,
        output_drift_tokens=r.output_drift,
    )


def _group(s: UsageSum) -> upb.UsageGroup:
    keys = {"user_id" if k == "user" else k: v for k, v in s.keys.items()}
    return upb.UsageGroup(
        **keys,
        attempts=s.attempts,
        requests=s.requests,
        failed_attempts=s.failed_attempts,
        estimated_attempts=s.estimated_attempts,
        input_tokens=s.input_tokens,
        cached_input_tokens=s.cached_input_tokens,
        cache_write_tokens=s.cache_write_tokens,
        output_tokens=s.output_tokens,
        reasoning_tokens=s.reasoning_tokens,
        cost_usd=_dollars(s.cost_usd),
    )


def _dollars(cost: Decimal) -> str:
    """`0.00252`, `0`: no trailing zeros and no exponent (a numeric(24, 12) zero reads back as 0E-12)."""
    return format(cost.normalize(), "f") if cost else "0"
