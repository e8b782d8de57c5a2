-- Metrics idempotency (issue 4, review): a digest of each write batch's content beside its request_id, so a
-- repeat carrying other metrics is refused (REQUEST_ID_REUSED) instead of acknowledged as a duplicate.
-- A new file rather than an edit of 010, whose checksum existing databases have recorded. Nullable: rows
-- written before this migration have no digest and are compared by count only until they expire
-- (idempotency_window_s). Adding a nullable column without a default rewrites nothing.
ALTER TABLE metric_write_requests ADD COLUMN batch_digest bytea;
