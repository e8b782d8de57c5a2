-- migrate: no-transaction
-- migrate: statement-timeout 30min
-- Built CONCURRENTLY so writers are not blocked on a large table; every statement is re-runnable.

CREATE INDEX CONCURRENTLY IF NOT EXISTS capability_gaps_open_last_seen_idx
    ON capability_gaps (last_seen_at DESC) WHERE status = 'open';

CREATE INDEX CONCURRENTLY IF NOT EXISTS user_ai_agents_user_last_used_idx
    ON user_ai_agents (user_id, last_used_at DESC);
