"""The one place where database failures become service errors: transient ones DatabaseUnavailable
(UNAVAILABLE + RetryInfo), any other PostgreSQL error one carrying its SQLSTATE (never UNKNOWN).

Losing the connection, the server shutting down or restarting, running out of connections,
transaction conflicts, and the client-side protocol errors asyncpg raises on a connection broken
mid-operation (MagicStack/asyncpg#784) are all retryable: a write either committed or not, and its
request_id makes the retry store it exactly once either way.

Anything else is mapped by SQLSTATE class, as a last line of defence behind validation: 22 (data
exception: a value the input carried) INVALID_ARGUMENT, 42 (undefined table or column: the database
is not migrated as this service expects, the outage's "column value does not exist") FAILED_PRECONDITION,
the rest INTERNAL. The status message names the SQLSTATE and the error class, not the server's text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

import asyncpg
from asyncpg import exceptions as pg
from asyncpg.pool import PoolConnectionProxy

from schema_service.errors import DatabaseFault, DatabaseUnavailable, SchemaMismatch, SchemaServiceError, ValueRejected

RETRY_AFTER_S = 1.0

# A connection, whether taken from a pool or opened directly.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    pg.InterfaceError,
    pg.InternalClientError,
    pg.PostgresConnectionError,
    pg.OperatorInterventionError,
    pg.InsufficientResourcesError,
    pg.TransactionRollbackError,
)


@contextmanager
def database_errors(operation: str) -> Iterator[None]:
    """Turn transient database failures during `operation` into DatabaseUnavailable."""
    try:
        yield
    except TRANSIENT as exc:
        raise DatabaseUnavailable(
            f"database unavailable during {operation} ({type(exc).__name__}); retry with the same request_id",
            metadata={"operation": operation, "cause": type(exc).__name__},
            retry_after_s=RETRY_AFTER_S,
        ) from exc
    except pg.PostgresError as exc:
        raise postgres_error(operation, exc) from exc


def postgres_error(operation: str, exc: pg.PostgresError) -> SchemaServiceError:
    """The service error for a PostgreSQL error that is not transient, by SQLSTATE class."""
    sqlstate = str(exc.sqlstate or "")
    kind = {"22": ValueRejected, "42": SchemaMismatch}.get(sqlstate[:2], DatabaseFault)
    what = {ValueRejected: "refused a value", SchemaMismatch: "does not have the expected schema"}.get(kind, "failed")
    return kind(
        f"the database {what} during {operation} (SQLSTATE {sqlstate}, {type(exc).__name__})",
        metadata={"operation": operation, "sqlstate": sqlstate, "cause": type(exc).__name__},
    )
