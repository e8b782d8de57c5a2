"""The one place where database failures become service errors, for both services (migrations, metrics).

By SQLSTATE (asyncpg's exception classes carry `sqlstate`): a full code first, then its two-letter class.

    SQLSTATE      what                                      gRPC code            ErrorInfo reason          RetryInfo
    ------------  ----------------------------------------  -------------------  ------------------------  ---------
    (none)        connection lost or never made: OSError,   UNAVAILABLE          DATABASE_UNAVAILABLE      1 s
                  TimeoutError, asyncpg Interface/Internal-
                  ClientError (no answer from the server)
    08            connection exception                      UNAVAILABLE          DATABASE_UNAVAILABLE      1 s
    53            insufficient resources: too many          UNAVAILABLE          DATABASE_UNAVAILABLE      1 s
                  connections, disk full, out of memory
    57            operator intervention: admin or crash     UNAVAILABLE          DATABASE_UNAVAILABLE      1 s
                  shutdown, cannot connect now
    25006         read_only_sql_transaction: the server is  UNAVAILABLE          DATABASE_UNAVAILABLE      1 s
                  a standby (or was demoted); the pool drops
                  its connections, the next ones go to the
                  primary (target_session_attrs=read-write)
    57014         query_canceled (statement_timeout,        UNAVAILABLE          DATABASE_CONFLICT         1 s
                  pg_cancel_backend)
    40            transaction rollback: serialization       UNAVAILABLE          DATABASE_CONFLICT         1 s
                  failure 40001, deadlock 40P01
    55P03         lock_not_available (lock_timeout, NOWAIT) UNAVAILABLE          DATABASE_CONFLICT         1 s
    22            data exception: a value the input carried INVALID_ARGUMENT     DATABASE_VALUE_REJECTED   no
    42            undefined table or column, syntax: the    FAILED_PRECONDITION  DATABASE_SCHEMA_MISMATCH  no
                  database is not migrated as expected
    42501         insufficient_privilege (the service's     FAILED_PRECONDITION  DATABASE_REFUSED          no
                  role lacks a grant)
    any other     constraints (23), internal (XX), I/O      FAILED_PRECONDITION  DATABASE_REFUSED          no
                  (58), unknown classes ...

Retryable means a retry of the same call may succeed: nothing is wrong with the request, and a write either
committed or not, its request_id making the retry store it exactly once either way. UNAVAILABLE (not
ABORTED) for conflicts too, since the caller retries just this call. A PostgreSQL error is never UNKNOWN or
INTERNAL. Every error carries ErrorInfo metadata `operation`, `cause` (the exception class) and, when the
server answered, `sqlstate`. The status message names those, never the server's text (which can quote the
values sent); errors that a retry cannot fix log that text for the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from schema_service.database import DATABASE_FAILURES, drop_read_only_connections
from schema_service.errors import (
    DatabaseConflict,
    DatabaseRefused,
    DatabaseUnavailable,
    SchemaMismatch,
    SchemaServiceError,
    ValueRejected,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1.0
READ_ONLY = "25006"

# Checked in order: full SQLSTATEs before the class they belong to.
_BY_SQLSTATE: tuple[tuple[str, type[SchemaServiceError]], ...] = (
    (READ_ONLY, DatabaseUnavailable),
    ("57014", DatabaseConflict),
    ("55P03", DatabaseConflict),
    ("42501", DatabaseRefused),
    ("08", DatabaseUnavailable),
    ("53", DatabaseUnavailable),
    ("57", DatabaseUnavailable),
    ("40", DatabaseConflict),
    ("22", ValueRejected),
    ("42", SchemaMismatch),
)
_RETRYABLE = (DatabaseUnavailable, DatabaseConflict)
_WHAT: dict[type[SchemaServiceError], str] = {
    DatabaseUnavailable: "the database is unavailable",
    DatabaseConflict: "the database aborted the query",
    ValueRejected: "the database refused a value",
    SchemaMismatch: "the database does not have the expected schema",
    DatabaseRefused: "the database refused the operation",
}


def error_kind(sqlstate: str) -> type[SchemaServiceError]:
    """The service error for a SQLSTATE ("" when the server never answered: the connection is gone)."""
    if not sqlstate:
        return DatabaseUnavailable
    return next((kind for prefix, kind in _BY_SQLSTATE if sqlstate.startswith(prefix)), DatabaseRefused)


def database_error(exc: BaseException, operation: str) -> SchemaServiceError:
    """The service error for a failure of the database (one of schema_service.database.DATABASE_FAILURES)."""
    sqlstate = str(getattr(exc, "sqlstate", None) or "")
    cause = type(exc).__name__
    kind = error_kind(sqlstate)
    metadata = {"operation": operation, "cause": cause}
    if sqlstate:
        metadata["sqlstate"] = sqlstate
    retryable = issubclass(kind, _RETRYABLE)
    where = f"SQLSTATE {sqlstate}, {cause}" if sqlstate else cause
    message = f"{_WHAT[kind]} during {operation} ({where})" + ("; retry" if retryable else "")
    return kind(message, metadata=metadata, retry_after_s=RETRY_AFTER_S if retryable else None)


@contextmanager
def database_errors(operation: str) -> Iterator[None]:
    """Turn database failures during `operation` into service errors (see the table above)."""
    try:
        yield
    except DATABASE_FAILURES as exc:
        error = database_error(exc, operation)
        if error.metadata.get("sqlstate") == READ_ONLY:
            drop_read_only_connections()
        if error.retry_after_s is None:
            log.warning("database refused an operation", extra={**error.metadata, "error": str(exc)})
        raise error from exc
