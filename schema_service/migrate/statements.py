"""What is in a migration file, according to the real PostgreSQL parser (pglast), never a hand splitter.

Used to refuse transaction control and non-transactional statements in transactional files,
to split no-transaction files into statements, and to map error positions to line and column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast, enums
from pglast.parser import ParseError

from schema_service.migrate.errors import MigrationFileError, StatementRefused
from schema_service.migrate.files import MigrationFile

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
    """One top-level statement: 1-based index, its text, and where it starts in the file."""

    index: int
    text: str
    start: int
    node: Any

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def line_column(sql: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset."""
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return line, column


def parse(file: MigrationFile) -> list[Statement]:
    """The file's top-level statements; a syntax error is reported with its line and column."""
    try:
        raw = pglast.parse_sql(file.sql)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line, column = line_column(file.sql, offset)
        raise MigrationFileError(
            f"{file.filename}:{line}:{column}: syntax error: {exc.args[0]}",
            filename=file.filename,
            line=line,
            column=column,
        ) from exc
    statements = []
    for index, item in enumerate(raw, start=1):
        start = item.stmt_location or 0
        length = item.stmt_len or len(file.sql) - start
        statements.append(Statement(index, file.sql[start : start + length].strip(), start, item.stmt))
    return statements


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
