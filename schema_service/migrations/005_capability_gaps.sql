-- Things users asked agents for that they could not do, deduplicated by fingerprint
-- (a hash of the normalised capability) so repeats count occurrences instead of adding rows.

CREATE TYPE capability_gap_status AS ENUM ('open', 'triaged', 'planned', 'resolved', 'wont_fix');

CREATE TABLE capability_gaps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint text NOT NULL UNIQUE,
    capability text NOT NULL CHECK (length(capability) BETWEEN 1 AND 500),
    description text NOT NULL DEFAULT '',
    example_request text,
    user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    agent_id uuid REFERENCES user_ai_agents (id) ON DELETE SET NULL,
    status capability_gap_status NOT NULL DEFAULT 'open',
    severity smallint NOT NULL DEFAULT 3 CHECK (severity BETWEEN 1 AND 5),
    occurrences integer NOT NULL DEFAULT 1 CHECK (occurrences > 0),
    metadata jsonb NOT NULL DEFAULT '{}',
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT capability_gaps_resolved_at_check
        CHECK ((resolved_at IS NOT NULL) = (status IN ('resolved', 'wont_fix'))),
    CONSTRAINT capability_gaps_seen_order_check CHECK (last_seen_at >= first_seen_at)
);

CREATE INDEX capability_gaps_user_id_idx ON capability_gaps (user_id);
CREATE INDEX capability_gaps_agent_id_idx ON capability_gaps (agent_id);

CREATE TRIGGER capability_gaps_set_updated_at
    BEFORE UPDATE ON capability_gaps
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- One call records a sighting: insert, or count another occurrence of a known gap.
CREATE FUNCTION record_capability_gap(
    p_fingerprint text, p_capability text, p_user_id uuid, p_agent_id uuid, p_example text
) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO capability_gaps AS g (fingerprint, capability, user_id, agent_id, example_request)
    VALUES (p_fingerprint, p_capability, p_user_id, p_agent_id, p_example)
    ON CONFLICT (fingerprint) DO UPDATE
        SET occurrences = g.occurrences + 1, last_seen_at = now()
    RETURNING g.id;
$$;
