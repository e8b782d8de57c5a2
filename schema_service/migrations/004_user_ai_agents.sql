-- Agents a user configured: a provider, a model and the agent's own instructions.

CREATE TYPE agent_status AS ENUM ('active', 'paused', 'archived');

CREATE TABLE user_ai_agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider_id bigint NOT NULL REFERENCES ai_agent_providers (id) ON DELETE RESTRICT,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    model text NOT NULL,
    system_prompt text NOT NULL DEFAULT '',
    temperature numeric(3, 2) CHECK (temperature BETWEEN 0 AND 2),
    max_output_tokens integer CHECK (max_output_tokens > 0),
    settings jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    is_default boolean NOT NULL DEFAULT false,
    status agent_status NOT NULL DEFAULT 'active',
    last_used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_ai_agents_user_name_key UNIQUE (user_id, name)
);

-- At most one default agent per user.
CREATE UNIQUE INDEX user_ai_agents_one_default_idx ON user_ai_agents (user_id) WHERE is_default;
CREATE INDEX user_ai_agents_provider_id_idx ON user_ai_agents (provider_id);

CREATE TRIGGER user_ai_agents_set_updated_at
    BEFORE UPDATE ON user_ai_agents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
