"""The provider rows the schema seeds name wire formats the gateway speaks (migration 003's Cohere row among them).

Read with pglast (PostgreSQL's own parser): the `provider_wire_format` enum and every seeded row's
`wire_format` must each be a gateway provider type (gateway_service.providers.PROVIDER_TYPES).
"""

from __future__ import annotations

from pathlib import Path

import pglast
from pglast import ast

from gateway_service.providers import PROVIDER_TYPES

MIGRATION = Path(__file__).resolve().parents[2] / "schema_service" / "migrations" / "003_ai_agent_providers.sql"


def wire_formats() -> tuple[list[str], list[str]]:
    """The enum's values and the seeded rows' wire_format values."""
    enum: list[str] = []
    seeded: list[str] = []
    for raw in pglast.parse_sql(MIGRATION.read_text()):
        statement = raw.stmt
        if isinstance(statement, ast.CreateEnumStmt):
            enum += [value.sval for value in statement.vals]
        elif isinstance(statement, ast.InsertStmt) and statement.relation.relname == "ai_agent_providers":
            column = [c.name for c in statement.cols].index("wire_format")
            seeded += [row[column].val.sval for row in statement.selectStmt.valuesLists]
    return enum, seeded


def test_every_seeded_wire_format_is_a_provider_type() -> None:
    enum, seeded = wire_formats()
    assert "cohere" in seeded and len(seeded) == 4
    assert set(enum) <= set(PROVIDER_TYPES), set(enum) - set(PROVIDER_TYPES)
    assert set(seeded) <= set(PROVIDER_TYPES), set(seeded) - set(PROVIDER_TYPES)
