"""SQL that reaches outside the database: found by the PostgreSQL parser (pglast), refused unless named.

A migration runs as a role that can usually do anything, so a file that runs a program on the database
host or reads its files must say so in its header. Kinds, each with the name of its override:

  copy-program        COPY ... TO/FROM PROGRAM (a shell command on the database host)
  server-files        COPY ... TO/FROM '<file>' on the server, pg_read_file, pg_read_binary_file, pg_ls_dir
  large-object-files  lo_import, lo_export (server files to and from large objects)
  alter-system        ALTER SYSTEM (writes postgresql.auto.conf)

The override is a header directive, one per kind: `-- migrate: allow-unsafe copy-program`. `lint` reports
each use as an error without it (a warning with it), and `migrate` refuses the whole run before any file
runs (UnsafeStatement, FAILED_PRECONDITION).

Looked into: top-level statements, SQL and PL/pgSQL bodies of CREATE FUNCTION/PROCEDURE and DO blocks,
and bodies within bodies up to MAX_DEPTH; deeper nesting cannot be checked and is refused with no
override (kind `too-deep`).
Not seen, by nature: SQL built at run time (`EXECUTE 'COPY ' || ...`) and bodies in other languages. This
is a review guard, not a sandbox; the sandbox is a migrating role without superuser or the
pg_execute_server_program / pg_read_server_files / pg_write_server_files roles (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast
from pglast.parser import ParseError, scan
from pglast.visitors import Visitor

UNSAFE_KINDS = ("copy-program", "server-files", "large-object-files", "alter-system")
MAX_DEPTH = 8

_FUNCTIONS = {
    "pg_read_file": "server-files",
    "pg_read_binary_file": "server-files",
    "pg_ls_dir": "server-files",
    "lo_import": "large-object-files",
    "lo_export": "large-object-files",
}
# PL/pgSQL expression parse modes (PostgreSQL's RawParseMode): 0 is a whole statement, 2 an
# expression (PostgreSQL parses it as a SELECT list); 3-5 are assignments `target := expression`.
_STATEMENT, _EXPRESSION = 0, 2


@dataclass(frozen=True)
class Use:
    """One use of an unsafe kind: what it is, as the message names it."""

    kind: str
    what: str


TOO_DEEP = Use("too-deep", f"function or DO bodies nested more than {MAX_DEPTH} deep")


def uses(node: Any, text: str, depth: int = 0) -> list[Use]:
    """The unsafe uses in one statement (its parse tree and its text), in order, once each; `depth`
    counts the bodies it sits in."""
    if depth > MAX_DEPTH:
        return [TOO_DEEP]
    found = _Finder(depth)
    found(node)
    if isinstance(node, ast.DoStmt | ast.CreateFunctionStmt) and _language(node) == "plpgsql":
        found.found.extend(_in_plpgsql(text, depth + 1))
    return list(dict.fromkeys(found.found))


class _Finder(Visitor):
    def __init__(self, depth: int) -> None:
        self.found: list[Use] = []
        self.depth = depth

    def visit_CopyStmt(self, ancestors: Any, node: ast.CopyStmt) -> None:
        direction = "FROM" if node.is_from else "TO"
        if node.is_program:
            self.found.append(Use("copy-program", f"COPY ... {direction} PROGRAM"))
        elif node.filename:
            self.found.append(Use("server-files", f"COPY ... {direction} a server file"))

    def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:
        name = getattr(node.funcname[-1], "sval", "") if node.funcname else ""
        if name in _FUNCTIONS:
            self.found.append(Use(_FUNCTIONS[name], f"{name}()"))

    def visit_AlterSystemStmt(self, ancestors: Any, node: ast.AlterSystemStmt) -> None:
        self.found.append(Use("alter-system", "ALTER SYSTEM"))

    def visit_CreateFunctionStmt(self, ancestors: Any, node: ast.CreateFunctionStmt) -> None:
        if _language(node) == "sql":
            for body in _bodies(node):
                self.found.extend(_in_sql(body, self.depth + 1))


def _language(node: ast.DoStmt | ast.CreateFunctionStmt) -> str:
    options = node.args if isinstance(node, ast.DoStmt) else node.options
    names = [getattr(o.arg, "sval", "") for o in options or () if getattr(o, "defname", "") == "language"]
    return (names[0] if names else "plpgsql" if isinstance(node, ast.DoStmt) else "sql").lower()


def _bodies(node: ast.CreateFunctionStmt) -> list[str]:
    """`AS '...'` bodies (a sql_body, BEGIN ATOMIC or RETURN, is part of the tree and visited already)."""
    arg = next((o.arg for o in node.options or () if getattr(o, "defname", "") == "as"), None)
    items = arg if isinstance(arg, tuple) else (arg,) if arg is not None else ()
    return [item.sval for item in items if isinstance(getattr(item, "sval", None), str)]


def _in_sql(sql: str, depth: int) -> list[Use]:
    """The uses in a body of SQL statements, each looked into as a statement of its own."""
    try:
        statements = pglast.parse_sql(sql)
    except ParseError:  # PostgreSQL reports it at CREATE FUNCTION time; there is nothing to look into
        return []
    found = []
    for raw in statements:
        at = raw.stmt_location or 0
        text = sql[at : at + raw.stmt_len] if raw.stmt_len else sql[at:]
        if raw.stmt is not None:
            found.extend(uses(raw.stmt, text, depth))
    return found


def _in_plpgsql(text: str, depth: int) -> list[Use]:
    """Each SQL statement and expression of a PL/pgSQL body, parsed as PostgreSQL would."""
    try:
        tree = pglast.parse_plpgsql(text)
    except pglast.Error:  # PostgreSQL reports it when the block runs or the function is created
        return []
    found = []
    for query, mode in _expressions(tree):
        if mode == _STATEMENT:
            found.extend(_in_sql(query, depth))
        elif mode == _EXPRESSION:
            found.extend(_in_sql(f"SELECT {query}", depth))
        else:
            found.extend(_called(query))
    return found


def _expressions(tree: Any) -> Iterator[tuple[str, int]]:
    """(query, parse mode) of every PLpgSQL_expr anywhere in a parsed PL/pgSQL tree."""
    if isinstance(tree, list):
        for item in tree:
            yield from _expressions(item)
    elif isinstance(tree, dict):
        expr = tree.get("PLpgSQL_expr")
        if isinstance(expr, dict) and isinstance(expr.get("query"), str):
            yield expr["query"], int(expr.get("parseMode", _STATEMENT))
        for value in tree.values():
            yield from _expressions(value)


def _called(query: str) -> list[Use]:
    """Functions called in an assignment `target := expression`: PostgreSQL's own lexer finds the
    identifiers followed by `(` (pglast parses no assignment on its own)."""
    try:
        tokens = scan(query)
    except ParseError:
        return []
    found = []
    for token, after in zip(tokens, tokens[1:], strict=False):
        word = query[token.start : token.end + 1]
        name = word[1:-1] if word.startswith('"') else word.lower()  # unquoted names fold to lower case
        if token.name == "IDENT" and after.name == "ASCII_40" and name in _FUNCTIONS:
            found.append(Use(_FUNCTIONS[name], f"{name}()"))
    return found
