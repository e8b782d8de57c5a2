"""Migration 018: the seed table's prices and priority, which nothing read, are gone; its rows stay (docs/costs.md)."""

from __future__ import annotations

import asyncpg
import pytest

pytestmark = pytest.mark.timeout(60)


async def test_ai_agent_providers_keeps_its_rows_without_prices(migrated_db: str) -> None:
    conn = await asyncpg.connect(migrated_db)
    try:
        columns = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'ai_agent_providers'"
            )
        }
        slugs = [r["slug"] for r in await conn.fetch("SELECT slug FROM ai_agent_providers ORDER BY slug")]
    finally:
        await conn.close()
    assert not columns & {"input_price_per_mtok", "output_price_per_mtok", "priority"}
    assert {"slug", "wire_format", "api_key_env", "default_model", "models", "is_enabled"} <= columns
    assert slugs == ["anthropic", "cohere", "gemini", "openai"]
