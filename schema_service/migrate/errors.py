"""Errors of the migration engine (all FAILED_PRECONDITION unless noted).

MigrationError (schema_service.errors)      MIGRATION_FAILED: a file failed in PostgreSQL
 +-- MigrationFileError                     MIGRATION_FILE_INVALID: bad name, header, duplicate version
 +-- StatementRefused                       MIGRATION_STATEMENT_REFUSED: BEGIN/COMMIT or a
 |                                          non-transactional statement in a transactional file
 +-- UnsafeStatement                        MIGRATION_UNSAFE_STATEMENT: SQL that reaches outside the
 |                                          database without its `allow-unsafe` override (migrate/unsafe.py)
 +-- ChecksumMismatch                       CHECKSUM_MISMATCH: an applied file was changed
 +-- OutOfOrder                             MIGRATION_OUT_OF_ORDER: a new file older than the applied version
 +-- JournalMismatch                        JOURNAL_MISMATCH: a half-run no-transaction file was changed
 +-- BaselineRefused                        BASELINE_REFUSED: the database already has history
 +-- HistoryImportRefused                   HISTORY_IMPORT_REFUSED: no usable history of another tool to take over
 +-- ScratchDatabaseUnavailable             SCRATCH_DATABASE_UNAVAILABLE: verify cannot create its scratch database
 +-- ScratchBuildFailed                     SCRATCH_BUILD_FAILED: the migrations failed in verify's scratch database
 +-- LockWaitTimeout                        ABORTED, MIGRATION_LOCK_TIMEOUT: another runner held the lock too long
 +-- LockRetriesExhausted                   ABORTED, LOCK_TIMEOUT: a table lock stayed unavailable

PostgreSQL errors outside a migration file (the engine's own queries) are mapped by schema_service.dberrors,
like the metrics service's.
"""

from __future__ import annotations

from google.rpc import code_pb2

from schema_service.errors import MigrationError


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


class UnsafeStatement(_Located):
    reason = "MIGRATION_UNSAFE_STATEMENT"


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


class ScratchBuildFailed(MigrationError):
    """Not a live migration failure: building the scratch database verify compares against failed."""

    reason = "SCRATCH_BUILD_FAILED"


class LockWaitTimeout(MigrationError):
    code = code_pb2.ABORTED
    reason = "MIGRATION_LOCK_TIMEOUT"


class LockRetriesExhausted(_Located):
    code = code_pb2.ABORTED
    reason = "LOCK_TIMEOUT"


class HistoryImportRefused(MigrationError):
    """import-history found no other tool's history, one it cannot take over, or a database with history."""

    reason = "HISTORY_IMPORT_REFUSED"
