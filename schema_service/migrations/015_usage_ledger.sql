-- Usage ledger (issue 21): one row per LLM attempt, written by the gateway through UsageService/RecordUsage.
-- Monthly range partitions named usage_ledger_pYYYYMM are created ahead of time by the service and dropped
-- whole by retention. Money is numeric, never a float.
CREATE TABLE usage_ledger (
    start_time timestamptz NOT NULL,
    caller text NOT NULL,
    request_id text NOT NULL,
    attempt integer NOT NULL CHECK (attempt >= 1),
    user_id text NOT NULL DEFAULT '',
    provider text NOT NULL,
    model text NOT NULL,
    key_id text NOT NULL DEFAULT '',
    outcome text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'cancelled')),
    failure_reason text NOT NULL DEFAULT '',
    input_tokens bigint NOT NULL CHECK (input_tokens >= 0),
    cached_input_tokens bigint NOT NULL CHECK (cached_input_tokens >= 0),
    cache_write_tokens bigint NOT NULL CHECK (cache_write_tokens >= 0),
    output_tokens bigint NOT NULL CHECK (output_tokens >= 0),
    reasoning_tokens bigint NOT NULL CHECK (reasoning_tokens >= 0),
    cost_usd numeric(24, 12) NOT NULL CHECK (cost_usd >= 0),
    price_version text NOT NULL DEFAULT '',
    estimated boolean NOT NULL DEFAULT false,
    time_to_first_token_s double precision,
    duration_s double precision NOT NULL CHECK (duration_s >= 0),
    failover boolean NOT NULL DEFAULT false,
    hedge boolean NOT NULL DEFAULT false,
    -- Who wrote the row through RecordUsage (the authenticated writer, usually the gateway).
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (start_time);

-- A record's identity; a retried batch finds its rows here and is not written twice. The partition key must
-- be part of a unique index on a partitioned table, so start_time is part of the identity (a retry carries it).
CREATE UNIQUE INDEX usage_ledger_identity_idx ON usage_ledger (caller, request_id, attempt, start_time);
CREATE INDEX usage_ledger_time_brin ON usage_ledger USING brin (start_time);
CREATE INDEX usage_ledger_caller_user_time_idx ON usage_ledger (caller, user_id, start_time);
