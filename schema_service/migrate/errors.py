"""Errors of the migration engine (all FAILED_PRECONDITION unless noted).

MigrationError (schema_service.errors)      MIGRATION_FAILED: a file failed in PostgreSQL
 +-- MigrationFileError                     MIGRATION_FILE_INVALID: bad name, header, duplicate version
 +-- StatementRefused                       MIGRATION_STATEMENT_REFUSED: BEGIN/COMMIT or a
 |                                          non-transactional statement in a transactional file
 +-- ChecksumMismatch                       CHECKSUM_MISMATCH: an applied file was changed
 +-- OutOfOrder                             MIGRATION_OUT_OF_ORDER: a new file older than the applied version
 +-- JournalMismatch                        JOURNAL_MISMATCH: a half-run no-transaction file was changed
 +-- BaselineRefused                        BASELINE_REFUSED: the database already has history
 +-- LockWaitTimeout                        ABORTED, MIGRATION_LOCK_TIMEOUT: another runner held the lock too long
 +-- LockRetriesExhausted                   ABORTED, LOCK_TIMEOUT: a table lock stayed unavailable
 +-- DatabaseRefused                        DATABASE_REFUSED: PostgreSQL refused the engine's own work
 |                                          (history tables, catalog reads: e.g. a missing privilege)
 +-- DatabaseConflict                       ABORTED + RetryInfo, DATABASE_CONFLICT: the engine's own query
                                            was cancelled, timed out on a lock or hit a deadlock / serialization failure
database_error() maps any asyncpg.PostgresError outside a migration file to one of these, or to
DatabaseUnavailable (UNAVAILABLE + RetryInfo) when the server is unreachable, restarting or full;
all carry the SQLSTATE as ErrorInfo metadata `sqlstate`.
"""

from __future__ import annotations

import asyncpg
from google.rpc import code_pb2

from schema_service.errors import DatabaseUnavailable, MigrationError, SchemaServiceError


class _Located(MigrationError):
    """An error pointing into a migration file; file/line/column land in the ErrorInfo metadata."""

    def __init__(
        self,
        message: str,
        *,
        filename: str = "",
        line: int = 0,
        column: int = 0,
        extra: dict[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        located = {"file": filename, "line": str(line or ""), "column": str(column or "")}
        metadata = {key: value for key, value in located.items() if value}
        metadata.update(extra or {})
        super().__init__(message, metadata=metadata, retry_after_s=retry_after_s)
        self.filename = filename
        self.line = line
        self.column = column


class MigrationFailed(_Located):
    """PostgreSQL rejected a statement; everything the file did was rolled back (transactional files)."""

    def __init__(self, message: str, *, sqlstate: str, **kwargs: object) -> None:
        super().__init__(message, extra={"sqlstate": sqlstate}, **kwargs)  # type: ignore[arg-type]
        self.sqlstate = sqlstate


class MigrationFileError(_Located):
    reason = "MIGRATION_FILE_INVALID"


class StatementRefused(_Located):
    reason = "MIGRATION_STATEMENT_REFUSED"


class ChecksumMismatch(_Located):
    reason = "CHECKSUM_MISMATCH"


class OutOfOrder(_Located):
    reason = "MIGRATION_OUT_OF_ORDER"


class JournalMismatch(_Located):
    reason = "JOURNAL_MISMATCH"


class BaselineRefused(MigrationError):
    reason = "BASELINE_REFUSED"


class ScratchDatabaseUnavailable(MigrationError):
    reason = "SCRATCH_DATABASE_UNAVAILABLE"


class LockWaitTimeout(MigrationError):
    code = code_pb2.ABORTED
    reason = "MIGRATION_LOCK_TIMEOUT"


class LockRetriesExhausted(_Located):
    code = code_pb2.ABORTED
    reason = "LOCK_TIMEOUT"


class DatabaseRefused(MigrationError):
    reason = "DATABASE_REFUSED"


class DatabaseConflict(MigrationError):
    code = code_pb2.ABORTED
    reason = "DATABASE_CONFLICT"


# Connection exceptions, admin/crash shutdown and "cannot connect now", too many connections / out of
# resources: the server is (for now) unable to work, so another try later may succeed.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53")
# Serialization failure / deadlock, lock_timeout, query cancelled (statement_timeout, pg_cancel_backend):
# nothing is wrong with the request, another try may pass.
_CONFLICT_SQLSTATES = ("40", "55P03", "57014")


def database_error(exc: asyncpg.PostgresError) -> SchemaServiceError:
    """A PostgreSQL error raised outside a migration file, with its SQLSTATE in the metadata."""
    sqlstate = str(getattr(exc, "sqlstate", "") or "")
    message = str(getattr(exc, "message", "") or exc)
    metadata = {"sqlstate": sqlstate} if sqlstate else {}
    if isinstance(exc, asyncpg.PostgresConnectionError) or sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
        return DatabaseUnavailable(f"database unavailable: {sqlstate}: {message}", metadata=metadata, retry_after_s=1.0)
    if sqlstate.startswith(_CONFLICT_SQLSTATES):
        return DatabaseConflict(f"database query aborted: {sqlstate}: {message}", metadata=metadata, retry_after_s=1.0)
    return DatabaseRefused(f"database refused the migration engine: {sqlstate}: {message}", metadata=metadata)
