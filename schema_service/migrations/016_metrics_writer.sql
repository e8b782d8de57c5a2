-- Metrics scoped by caller (issue 18, point 12): every series records the caller that wrote it, so each
-- value row is attributed through its series_id, and another caller's values for the same name and labels
-- are another series (the writer derives series_id from the caller too): nobody can write into the
-- gateway's series. The values table is left as it is, so COPY sends the same four columns.
-- Series and write requests from before this file have the writer '' (not recorded); a constant default
-- rewrites neither table.
ALTER TABLE metric_series ADD COLUMN caller text NOT NULL DEFAULT '';

COMMENT ON COLUMN metric_series.caller IS 'the authenticated caller that wrote the series ('''' before 016)';

-- A request_id is unique per caller, not across callers: one caller's ids can neither block nor be
-- acknowledged as another's. The key is replaced in this one transaction (never a moment without one).
-- metric_write_requests holds only the idempotency window's rows (purged by the service), so the ACCESS
-- EXCLUSIVE lock lasts as long as building a small index, bounded by the runner's lock and statement
-- timeouts; hence the squawk rules ignored below.
ALTER TABLE metric_write_requests ADD COLUMN caller text NOT NULL DEFAULT '';

-- squawk-ignore ban-drop-constraint
ALTER TABLE metric_write_requests DROP CONSTRAINT metric_write_requests_pkey;

-- squawk-ignore constraint-missing-not-valid, adding-serial-primary-key-field
ALTER TABLE metric_write_requests ADD CONSTRAINT metric_write_requests_pkey PRIMARY KEY (caller, request_id);
