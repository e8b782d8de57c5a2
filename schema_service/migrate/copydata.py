"""`COPY ... FROM stdin` with its rows in the file (pg_dump data), sent through the COPY protocol.

asyncpg's public `copy_to_table` builds the COPY statement from keyword arguments, so the
statement pglast parsed is turned into those arguments; an option it cannot pass is refused
before anything runs.
"""

from __future__ import annotations

import io
from typing import Any

import asyncpg
from pglast import ast
from pglast.stream import RawStream

_TEXT_OPTIONS = ("format", "delimiter", "null", "quote", "escape", "encoding")
_BOOL_OPTIONS = ("header", "freeze")
_COLUMN_OPTIONS = ("force_not_null", "force_null")
_TRUE = {"true", "on", "1", "yes"}


class UnsupportedCopy(ValueError):
    """A COPY option the COPY protocol client cannot pass on (the message names it)."""


def copy_arguments(node: ast.CopyStmt) -> dict[str, Any]:
    """asyncpg `copy_to_table` keyword arguments (besides `source`) for a parsed COPY FROM stdin."""
    relation = node.relation
    if relation is None:
        raise UnsupportedCopy("COPY (query) FROM stdin is not a COPY into a table")
    arguments: dict[str, Any] = {"table_name": relation.relname, "schema_name": relation.schemaname}
    if node.attlist:
        arguments["columns"] = [column.sval for column in node.attlist]
    if node.whereClause is not None:
        arguments["where"] = RawStream()(node.whereClause)
    for option in node.options or ():
        arguments[option.defname] = _option_value(option)
    return arguments


def _option_value(option: ast.DefElem) -> Any:
    name, arg = option.defname, option.arg
    if name in _TEXT_OPTIONS and isinstance(arg, ast.String):
        return arg.sval
    if name in _BOOL_OPTIONS:
        if arg is None:
            return True
        if isinstance(arg, ast.Boolean):
            return bool(arg.boolval)
        if isinstance(arg, (ast.String, ast.Integer)):
            return str(getattr(arg, "sval", getattr(arg, "ival", ""))).lower() in _TRUE
    if name in _COLUMN_OPTIONS and isinstance(arg, tuple):
        return [column.sval for column in arg]
    raise UnsupportedCopy(f"COPY option {str(name).upper()} in this form is not supported for rows in the file")


async def copy_in(conn: asyncpg.Connection, node: ast.CopyStmt, data: str) -> None:
    """Send the rows that followed a COPY FROM stdin through the COPY protocol."""
    arguments = copy_arguments(node)
    # A file-like source: asyncpg takes bytes as a path name.
    await conn.copy_to_table(arguments.pop("table_name"), source=io.BytesIO(data.encode()), **arguments)
