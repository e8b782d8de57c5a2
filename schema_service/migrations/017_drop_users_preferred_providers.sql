-- users.preferred_providers (002) was never read: the gateway never reads this database, and the order a user
-- prefers reaches it as the chat request's provider_order, which the application sets (docs/routing.md).
-- A column nothing reads would let a reader believe the gateway honours it, so it goes.
-- Dropping a column only marks it dropped in the catalog (no table rewrite); no code reads or writes it.
-- squawk-ignore ban-drop-column
ALTER TABLE users DROP COLUMN IF EXISTS preferred_providers;
