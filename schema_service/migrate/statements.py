"""What is in a migration file, according to the real PostgreSQL parser (pglast), never a hand splitter.

Used to refuse transaction control and non-transactional statements in transactional files,
to split no-transaction files into statements, and to map error positions to line and column.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any

import pglast
from pglast import ast, enums
from pglast.parser import ParseError

from schema_service.migrate.copydata import UnsupportedCopy, copy_arguments
from schema_service.migrate.errors import MigrationFileError, StatementRefused, UnsafeStatement
from schema_service.migrate.files import MigrationFile
from schema_service.migrate.unsafe import UNSAFE_KINDS, Use, uses

# BEGIN/COMMIT/ROLLBACK end the runner's own transaction; savepoints nest inside it and are fine.
_TXN_CONTROL = {
    enums.TransactionStmtKind.TRANS_STMT_BEGIN,
    enums.TransactionStmtKind.TRANS_STMT_START,
    enums.TransactionStmtKind.TRANS_STMT_COMMIT,
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK,
    enums.TransactionStmtKind.TRANS_STMT_PREPARE,
    enums.TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED,
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED,
}


@dataclass(frozen=True)
class Statement:
    """One top-level statement: 1-based index, its text, and where it starts in the file.

    A `COPY ... FROM stdin` from a pg_dump script carries the rows that followed it (up to `\\.`)
    in `copy_data`, which start at offset `copy_data_start` of the file.
    """

    index: int
    text: str
    start: int
    node: Any
    copy_data: str | None = None
    copy_data_start: int = 0

    @property
    def checksum(self) -> str:
        data = self.text if self.copy_data is None else f"{self.text}\n{self.copy_data}"
        return hashlib.sha256(data.encode()).hexdigest()


def line_column(sql: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset."""
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return line, column


# psql meta-commands in a pg_dump script. Candidates are lines starting with a backslash; one is
# a meta-command only where pglast says the SQL before it ends between statements.
_META_LINE = re.compile(r"^[ \t]*\\", re.MULTILINE)
_COPY_END = re.compile(r"^\\\.\r?$", re.MULTILINE)
# pg_dump 15.14+/16.10+/17.6+ wrap a dump in \restrict KEY ... \unrestrict KEY (psql refuses other
# meta-commands in between); against a server they mean nothing, so they are skipped.
IGNORED_META = ("\\restrict", "\\unrestrict")
# How far back from a syntax error the end of a `COPY ... FROM stdin;` line is looked for.
_COPY_LOOKBACK_LINES = 20


def parse(file: MigrationFile) -> list[Statement]:
    """The file's top-level statements; a syntax error is reported with its line and column.

    pg_dump output is accepted: `\\restrict`/`\\unrestrict` lines are skipped, the rows after
    `COPY ... FROM stdin;` up to `\\.` go with that statement, and any other psql meta-command is
    refused, named, before anything runs. A line starting with a backslash is a meta-command only
    where the SQL before it ends between statements (else it is inside a string or a body).
    """
    sql, pos, search_from = file.sql, 0, 0
    found: list[Statement] = []
    while True:
        meta = _META_LINE.search(sql, search_from)
        try:
            statements, copy = _parse_segment(file, pos, meta.start() if meta else len(sql), final=meta is None)
        except _InsideStatement:
            assert meta is not None
            search_from = meta.end()
            continue
        found.extend(statements)
        if copy is not None:
            found[-1], pos = _with_copy_data(file, copy)
        elif meta is None:
            break
        else:
            pos = _skip_meta_command(file, meta.start())
        search_from = pos
    return [replace(statement, index=index) for index, statement in enumerate(found, start=1)]


class _InsideStatement(Exception):
    """The SQL before a backslash line does not end between statements."""


def _parse_segment(
    file: MigrationFile, start: int, end: int, *, final: bool
) -> tuple[list[Statement], Statement | None]:
    """Statements of file.sql[start:end], and the last one if it is a COPY FROM stdin whose rows follow."""
    try:
        statements, terminated = _parse_range(file, start, end)
    except ParseError as exc:
        offset = start + (exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0)
        before_copy = _statements_before_copy_data(file, start, offset)
        if before_copy is not None:
            return before_copy, before_copy[-1]
        if not final:
            raise _InsideStatement from exc
        line, column = line_column(file.sql, offset)
        raise MigrationFileError(
            f"{file.filename}:{line}:{column}: syntax error: {exc.args[0]}",
            filename=file.filename,
            line=line,
            column=column,
        ) from exc
    last = statements[-1] if statements else None
    if last is not None and _copy_from_stdin(last.node):
        return statements, last
    if not final and not terminated:
        raise _InsideStatement
    return statements, None


def _parse_range(file: MigrationFile, start: int, end: int) -> tuple[list[Statement], bool]:
    """Statements of file.sql[start:end], and whether the last one ends with its semicolon."""
    statements, terminated = [], True
    for item in pglast.parse_sql(file.sql[start:end]):
        at = start + (item.stmt_location or 0)
        # stmt_len 0: the statement runs to the end of the input, without a semicolon.
        terminated = bool(item.stmt_len)
        length = item.stmt_len or end - at
        statements.append(Statement(0, file.sql[at : at + length].strip(), at, item.stmt))
    return statements, terminated


def _statements_before_copy_data(file: MigrationFile, start: int, error_at: int) -> list[Statement] | None:
    """When a syntax error is in the rows of a `COPY ... FROM stdin;`, the statements up to that COPY."""
    sql = file.sql
    line_end = sql.rfind("\n", start, error_at)
    for _ in range(_COPY_LOOKBACK_LINES):
        if line_end <= start:
            return None
        if sql[start:line_end].rstrip().endswith(";"):
            try:
                statements = _parse_range(file, start, line_end)[0]
            except ParseError:
                statements = []
            if statements:
                return statements if _copy_from_stdin(statements[-1].node) else None
        line_end = sql.rfind("\n", start, line_end)
    return None


def _copy_from_stdin(node: Any) -> bool:
    return isinstance(node, ast.CopyStmt) and bool(node.is_from) and not node.filename and not node.is_program


def _with_copy_data(file: MigrationFile, copy: Statement) -> tuple[Statement, int]:
    """The COPY statement with its rows (the lines after it up to `\\.`), and where parsing resumes."""
    sql = file.sql
    newline = sql.find("\n", sql.find(copy.text, copy.start) + len(copy.text))
    data_start = len(sql) if newline < 0 else newline + 1
    terminator = _COPY_END.search(sql, data_start)
    if terminator is None:
        line, column = line_column(sql, copy.start)
        raise MigrationFileError(
            f"{file.filename}:{line}:{column}: COPY ... FROM stdin without the `\\.` line that ends its rows",
            filename=file.filename,
            line=line,
            column=column,
        )
    try:
        copy_arguments(copy.node)
    except UnsupportedCopy as exc:
        line, column = line_column(sql, copy.start)
        raise MigrationFileError(
            f"{file.filename}:{line}:{column}: {exc}", filename=file.filename, line=line, column=column
        ) from exc
    data = sql[data_start : terminator.start()]
    return replace(copy, copy_data=data, copy_data_start=data_start), terminator.end()


def _skip_meta_command(file: MigrationFile, at: int) -> int:
    """Past an ignored meta-command line; any other meta-command is refused, named."""
    line_end = file.sql.find("\n", at)
    line_end = len(file.sql) if line_end < 0 else line_end + 1
    command = file.sql[at:line_end].split()[0]
    if command in IGNORED_META:
        return line_end
    line, column = line_column(file.sql, at)
    raise MigrationFileError(
        f"{file.filename}:{line}:{column}: psql meta-command {command} is not supported: migrations are sent "
        "to the server, not run by psql; only pg_dump's \\restrict/\\unrestrict (ignored) and the rows of "
        "COPY ... FROM stdin (sent with the COPY protocol) are understood",
        filename=file.filename,
        line=line,
        column=column,
    )


def sql_only(file: MigrationFile, statements: list[Statement]) -> str:
    """The file with its psql-only parts (meta-command lines, COPY rows and their `\\.` line) blanked,
    line numbers kept: what a tool that reads SQL only (squawk) can take."""
    sql = file.sql
    inside = [(s.start, sql.find(s.text, s.start) + len(s.text)) for s in statements]
    blank = []
    for statement in statements:
        if statement.copy_data is not None:
            end = statement.copy_data_start + len(statement.copy_data)
            terminator = _COPY_END.match(sql, end)
            blank.append((statement.copy_data_start, terminator.end() if terminator else end))
    for meta in _META_LINE.finditer(sql):
        if not any(start <= meta.start() < end for start, end in inside + blank):
            line_end = sql.find("\n", meta.start())
            blank.append((meta.start(), len(sql) if line_end < 0 else line_end))
    chars = list(sql)
    for start, end in blank:
        chars[start:end] = [c if c == "\n" else " " for c in chars[start:end]]
    return "".join(chars)


def is_transaction_control(node: Any) -> bool:
    return isinstance(node, ast.TransactionStmt) and node.kind in _TXN_CONTROL


def non_transactional_reason(node: Any) -> str | None:
    """Why PostgreSQL would refuse this statement inside a transaction block, or None."""
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(node, ast.ReindexStmt) and _has_option(node.params, "concurrently"):
        return "REINDEX CONCURRENTLY"
    if isinstance(node, ast.ReindexStmt) and node.kind != enums.ReindexObjectType.REINDEX_OBJECT_INDEX:
        if node.kind != enums.ReindexObjectType.REINDEX_OBJECT_TABLE:
            return "REINDEX SCHEMA/DATABASE/SYSTEM"
    if isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd:
        return "VACUUM"
    if isinstance(node, ast.ClusterStmt) and node.relation is None:
        return "CLUSTER without a table"
    if isinstance(node, ast.AlterTableStmt) and any(_detach_concurrently(cmd) for cmd in node.cmds or ()):
        return "DETACH PARTITION CONCURRENTLY"
    return _NON_TXN_TYPES.get(type(node))


_NON_TXN_TYPES: dict[type, str] = {
    ast.CreatedbStmt: "CREATE DATABASE",
    ast.DropdbStmt: "DROP DATABASE",
    ast.AlterSystemStmt: "ALTER SYSTEM",
    ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
    ast.DropTableSpaceStmt: "DROP TABLESPACE",
    ast.CreateSubscriptionStmt: "CREATE SUBSCRIPTION",
    ast.DropSubscriptionStmt: "DROP SUBSCRIPTION",
}


def _has_option(params: Any, name: str) -> bool:
    return any(isinstance(p, ast.DefElem) and p.defname == name for p in params or ())


def _detach_concurrently(cmd: Any) -> bool:
    return (
        isinstance(cmd, ast.AlterTableCmd)
        and cmd.subtype == enums.AlterTableType.AT_DetachPartition
        and isinstance(cmd.def_, ast.PartitionCmd)
        and bool(cmd.def_.concurrent)
    )


def check_transactional(file: MigrationFile, statements: list[Statement]) -> None:
    """Refuse, before anything runs, what cannot work inside the file's single transaction."""
    for statement in statements:
        line, column = line_column(file.sql, statement.start)
        where = f"{file.filename}:{line}:{column}"
        if is_transaction_control(statement.node):
            raise StatementRefused(
                f"{where}: transaction control ({statement.text.split()[0].upper()}) is not allowed: "
                "the runner wraps each file in one transaction",
                filename=file.filename,
                line=line,
                column=column,
            )
        reason = non_transactional_reason(statement.node)
        if reason is not None:
            raise StatementRefused(
                f"{where}: {reason} cannot run inside a transaction: move it to a file whose header "
                "has `-- migrate: no-transaction`",
                filename=file.filename,
                line=line,
                column=column,
            )


def unsafe_uses(statements: list[Statement]) -> list[tuple[Statement, Use]]:
    """Each statement's SQL that reaches outside the database (see unsafe.py), allowed or not."""
    return [(statement, use) for statement in statements for use in uses(statement.node, statement.text)]


def check_unsafe(file: MigrationFile, statements: list[Statement]) -> None:
    """Refuse, before anything runs, unsafe SQL that the file's header does not allow by name."""
    for statement, use in unsafe_uses(statements):
        if use.kind not in file.options.allowed_unsafe:
            line, column = line_column(file.sql, statement.start)
            raise UnsafeStatement(
                f"{file.filename}:{line}:{column}: {unsafe_message(use)}",
                filename=file.filename,
                line=line,
                column=column,
                extra={"unsafe": use.kind},
            )


def unsafe_message(use: Use) -> str:
    if use.kind not in UNSAFE_KINDS:
        return f"{use.what} cannot be checked for SQL that reaches outside the database; nest less deeply"
    return (
        f"{use.what} reaches outside the database ({use.kind}); if that is intended, "
        f"name it in the file's header: `-- migrate: allow-unsafe {use.kind}`"
    )
