-- Metrics store (issue 4): values partitioned by time, labels stored once per series,
-- idempotency records for write batches, rolling baselines and detected anomalies.

-- One row per distinct (name, unit, labels). series_id is a 64-bit hash the writer computes,
-- so a batch needs no round trip to learn ids and every replica derives the same id.
CREATE TABLE metric_series (
    series_id bigint PRIMARY KEY,
    name text NOT NULL,
    unit text NOT NULL,
    labels jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX metric_series_name_idx ON metric_series (name);

-- Values: daily range partitions named system_performance_metrics_pYYYYMMDD are created
-- ahead of time by the service and dropped whole by retention.
CREATE TABLE system_performance_metrics (
    time timestamptz NOT NULL,
    series_id bigint NOT NULL,
    value double precision NOT NULL,
    metadata jsonb
) PARTITION BY RANGE (time);

CREATE INDEX system_performance_metrics_time_brin ON system_performance_metrics USING brin (time);
CREATE INDEX system_performance_metrics_series_time_idx ON system_performance_metrics (series_id, time);

-- One row per committed write batch, inserted in the batch's own transaction: a retry with the
-- same request_id finds it and is acknowledged without writing again.
CREATE TABLE metric_write_requests (
    request_id text PRIMARY KEY,
    written_count bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX metric_write_requests_committed_at_idx ON metric_write_requests (committed_at);

-- Rolling statistics per series over the baseline window, replaced by each baseline run.
CREATE TABLE performance_baselines (
    series_id bigint PRIMARY KEY REFERENCES metric_series (series_id) ON DELETE CASCADE,
    mean double precision NOT NULL,
    stddev double precision NOT NULL,
    sample_count bigint NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now()
);

-- Values far outside their series' baseline; one row per (series, time).
CREATE TABLE performance_anomalies (
    anomaly_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series_id bigint NOT NULL REFERENCES metric_series (series_id) ON DELETE CASCADE,
    time timestamptz NOT NULL,
    value double precision NOT NULL,
    baseline_mean double precision NOT NULL,
    baseline_stddev double precision NOT NULL,
    z_score double precision NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT performance_anomalies_series_time_key UNIQUE (series_id, time)
);

CREATE INDEX performance_anomalies_time_idx ON performance_anomalies (time);
