-- ai_agent_providers (003) carried list prices and a priority that nothing reads: the gateway prices each
-- attempt from its own config (input/cached/cache-write/output/reasoning per model, with a price_version that
-- every usage_ledger row keeps), orders candidates by its routes and policies, and never reads this database.
-- Two sources of prices that disagree would let a reader believe the wrong one is billed, so these go; the
-- rows themselves (which providers and models an agent may use) stay. See docs/costs.md.
-- Dropping a column only marks it dropped in the catalog (no table rewrite); no code reads or writes them.
-- squawk-ignore ban-drop-column
ALTER TABLE ai_agent_providers DROP COLUMN IF EXISTS input_price_per_mtok;
-- squawk-ignore ban-drop-column
ALTER TABLE ai_agent_providers DROP COLUMN IF EXISTS output_price_per_mtok;
-- squawk-ignore ban-drop-column
ALTER TABLE ai_agent_providers DROP COLUMN IF EXISTS priority;
