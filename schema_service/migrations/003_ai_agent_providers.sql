-- LLM providers an agent can use, with the environment variable that holds each key
-- (never the key itself) and list prices per million tokens.

CREATE TYPE provider_wire_format AS ENUM ('openai', 'anthropic', 'gemini', 'cohere');

CREATE TABLE ai_agent_providers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]*$'),
    display_name text NOT NULL,
    wire_format provider_wire_format NOT NULL,
    base_url text,
    api_key_env text NOT NULL CHECK (api_key_env ~ '^[A-Z][A-Z0-9_]*$'),
    default_model text NOT NULL,
    models text[] NOT NULL DEFAULT '{}',
    input_price_per_mtok numeric(12, 6) NOT NULL DEFAULT 0 CHECK (input_price_per_mtok >= 0),
    output_price_per_mtok numeric(12, 6) NOT NULL DEFAULT 0 CHECK (output_price_per_mtok >= 0),
    priority integer NOT NULL DEFAULT 100,
    is_enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER ai_agent_providers_set_updated_at
    BEFORE UPDATE ON ai_agent_providers
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

INSERT INTO ai_agent_providers (slug, display_name, wire_format, api_key_env, default_model, models, priority) VALUES
    ('openai', 'OpenAI', 'openai', 'OPENAI_API_KEY', 'gpt-4o-mini', '{gpt-4o-mini,gpt-4o}', 10),
    ('anthropic', 'Anthropic', 'anthropic', 'ANTHROPIC_API_KEY', 'claude-3-5-haiku-latest',
     '{claude-3-5-haiku-latest,claude-sonnet-4-0}', 20),
    ('gemini', 'Google Gemini', 'gemini', 'GEMINI_API_KEY', 'gemini-2.0-flash', '{gemini-2.0-flash}', 30),
    ('cohere', 'Cohere', 'cohere', 'COHERE_API_KEY', 'command-r', '{command-r,command-r-plus}', 40);
