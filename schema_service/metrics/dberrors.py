"""The one place where database failures become DatabaseUnavailable (UNAVAILABLE + RetryInfo).

Losing the connection, the server shutting down or restarting, running out of connections,
transaction conflicts, and the client-side protocol errors asyncpg raises on a connection broken
mid-operation (MagicStack/asyncpg#784) are all retryable: a write either committed or not, and its
request_id makes the retry store it exactly once either way.
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
