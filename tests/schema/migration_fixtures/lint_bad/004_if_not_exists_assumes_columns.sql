CREATE TABLE IF NOT EXISTS accounts (id bigint PRIMARY KEY, email text NOT NULL);
CREATE INDEX accounts_email_idx ON accounts (email);
COMMENT ON COLUMN public.accounts.email IS 'login';
COMMENT ON CONSTRAINT accounts_pkey ON accounts IS 'key';
COMMENT ON TABLE accounts IS 'no columns assumed';
