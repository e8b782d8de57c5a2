"""The metrics store: validation, COPY writer, partitions, retention, queries, baselines (no gRPC in here).

Storage: each distinct (caller, name, unit, labels) is one row of `metric_series`, keyed by a 64-bit hash
the writer computes (the writing caller is part of a series, see series.py);
`system_performance_metrics` holds (time, series_id, value, metadata) in daily range partitions, written
by binary COPY in the same transaction as the batch's `metric_write_requests` row.
"""
