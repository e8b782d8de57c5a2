"""The one place where database failures become DatabaseUnavailable (UNAVAILABLE + RetryInfo).

Losing the connection, the server shutting down or restarting, running out of connections and
transaction conflicts all leave nothing committed for the failing call, so a retry is safe
(writes carry a request_id, so even a lost COMMIT acknowledgement is retried safely).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

import asyncpg
from asyncpg import exceptions as pg
from asyncpg.pool import PoolConnectionProxy

from schema_service.errors import DatabaseUnavailable

RETRY_AFTER_S = 1.0

# A connection, whether taken from a pool or opened directly.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    pg.InterfaceError,
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
            f"database unavailable during {operation} ({type(exc).__name__}); nothing was committed by this call",
            metadata={"operation": operation, "cause": type(exc).__name__},
            retry_after_s=RETRY_AFTER_S,
        ) from exc
