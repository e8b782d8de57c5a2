"""CONCURRENTLY index builds: a failed or killed build leaves an INVALID index behind, which
`CREATE INDEX CONCURRENTLY IF NOT EXISTS` would then silently skip. So before such a build an
INVALID index of that name is dropped, and after it the index must be valid.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from pglast import ast, enums

from schema_service.errors import MigrationError

log = logging.getLogger(__name__)


class InvalidIndex(MigrationError):
    reason = "INDEX_INVALID"


def _qualified(schema: str | None, name: str) -> str:
    quoted = '"' + name.replace('"', '""') + '"'
    return quoted if not schema else '"' + schema.replace('"', '""') + '".' + quoted


def index_name(node: Any) -> str | None:
    """The qualified name of the index a CONCURRENTLY build or rebuild produces, if named."""
    if isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname and node.relation is not None:
        return _qualified(node.relation.schemaname, node.idxname)
    is_reindex = isinstance(node, ast.ReindexStmt) and node.kind == enums.ReindexObjectType.REINDEX_OBJECT_INDEX
    if is_reindex and any(getattr(p, "defname", None) == "concurrently" for p in node.params or ()):
        return _qualified(node.relation.schemaname, node.relation.relname)
    return None


async def _validity(conn: asyncpg.Connection, name: str) -> tuple[str, bool] | None:
    row = await conn.fetchrow(
        "SELECT indexrelid::regclass::text AS name, indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", name
    )
    return None if row is None else (row["name"], row["indisvalid"])


async def drop_invalid_leftovers(conn: asyncpg.Connection, node: Any) -> None:
    """Drop an INVALID index (and REINDEX's `_ccnew` copies) an interrupted build left."""
    name = index_name(node)
    if name is None:
        return
    targets = []
    if isinstance(node, ast.IndexStmt):
        found = await _validity(conn, name)
        if found is not None and not found[1]:
            targets.append(found[0])
    else:
        rows = await conn.fetch(
            """SELECT i.indexrelid::regclass::text AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_index t ON t.indrelid = i.indrelid AND t.indexrelid = to_regclass($1)
               WHERE NOT i.indisvalid AND c.relname LIKE (SELECT relname FROM pg_class WHERE oid = t.indexrelid)
                     || '\\_ccnew%'""",
            name,
        )
        targets.extend(row["name"] for row in rows)
    for target in targets:
        log.warning("dropping INVALID index left by an interrupted build", extra={"index": target})
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {target}")


async def check_valid(conn: asyncpg.Connection, node: Any) -> None:
    """After a CONCURRENTLY build, the index must exist and be valid."""
    name = index_name(node)
    if name is None:
        return
    found = await _validity(conn, name)
    if found is None or not found[1]:
        raise InvalidIndex(
            f"index {name} is {'missing' if found is None else 'INVALID'} after a CONCURRENTLY build",
            metadata={"index": name},
        )
