-- Repair migration for databases adopted with `baseline --version 7` after the outage.
-- On a database the migrations built, every statement here is a no-op, so one history fits both.

-- users was created by an older CREATE TABLE IF NOT EXISTS and silently lacked these columns.
ALTER TABLE users
    ADD COLUMN IF NOT EXISTS password_hash text,
    ADD COLUMN IF NOT EXISTS preferences jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT users_preferences_check CHECK (jsonb_typeof(preferences) = 'object'),
    ADD COLUMN IF NOT EXISTS last_login_at timestamptz;

-- A rerun of the old runner attached the updated_at trigger a second time under another name.
DROP TRIGGER IF EXISTS set_updated_at_users ON users;

-- The provider index was created by hand before its migration, under another name.
ALTER INDEX IF EXISTS idx_agents_provider RENAME TO user_ai_agents_provider_id_idx;
