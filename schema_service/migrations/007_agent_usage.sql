-- Usage counters per agent, maintained by the application through touch_user_ai_agent().

ALTER TABLE user_ai_agents
    ADD COLUMN request_count bigint NOT NULL DEFAULT 0 CHECK (request_count >= 0),
    ADD COLUMN output_token_count bigint NOT NULL DEFAULT 0 CHECK (output_token_count >= 0);

CREATE FUNCTION touch_user_ai_agent(p_agent_id uuid, p_output_tokens bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE user_ai_agents
       SET request_count = request_count + 1,
           output_token_count = output_token_count + greatest(p_output_tokens, 0),
           last_used_at = now()
     WHERE id = p_agent_id;
$$;
