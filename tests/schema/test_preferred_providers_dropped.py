"""Migration 017: users.preferred_providers, which nothing read, is gone; the users table keeps its rows and the
rest of its columns (docs/routing.md: a user's order reaches the gateway as the request's provider_order)."""

from __future__ import annotations

import asyncpg
import pytest

pytestmark = pytest.mark.timeout(60)


async def test_users_has_no_preferred_providers_and_still_takes_a_user(migrated_db: str) -> None:
    conn = await asyncpg.connect(migrated_db)
    try:
        columns = {
            r["column_name"]
            for r in await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'users'")
        }
        await conn.execute("INSERT INTO users (email, preferences) VALUES ('a@example.com', '{}')")
        count = await conn.fetchval("SELECT count(*) FROM users WHERE lower(email) = 'a@example.com'")
    finally:
        await conn.close()
    assert "preferred_providers" not in columns
    assert {"id", "email", "display_name", "role", "status", "preferences", "created_at"} <= columns
    assert count == 1
