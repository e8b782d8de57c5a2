"""schema_service.dberrors, the one mapping of database failures to statuses, against a real PostgreSQL.

Each SQLSTATE is sent by the server itself (`RAISE ... USING ERRCODE`), so asyncpg picks its exception class
from the wire as it does in service; client-side failures are provoked for real too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from asyncpg import exceptions as pg
from google.protobuf import message as pb_message
from google.rpc import code_pb2, error_details_pb2

from schema_service.dberrors import database_error, database_errors
from schema_service.errors import SchemaServiceError
from tests.schema.metrics_helpers import status_details

SERVER_TEXT = "server text that may quote a value"
UNAVAILABLE, INVALID, PRECONDITION = code_pb2.UNAVAILABLE, code_pb2.INVALID_ARGUMENT, code_pb2.FAILED_PRECONDITION

# One SQLSTATE per class (or code) the mapper knows, a neighbour of each specific code, and an unknown class.
TABLE = [
    ("08006", UNAVAILABLE, "DATABASE_UNAVAILABLE", True),  # connection_failure
    ("53300", UNAVAILABLE, "DATABASE_UNAVAILABLE", True),  # too_many_connections
    ("57P01", UNAVAILABLE, "DATABASE_UNAVAILABLE", True),  # admin_shutdown
    ("57014", UNAVAILABLE, "DATABASE_CONFLICT", True),  # query_canceled
    ("40001", UNAVAILABLE, "DATABASE_CONFLICT", True),  # serialization_failure
    ("40P01", UNAVAILABLE, "DATABASE_CONFLICT", True),  # deadlock_detected
    ("55P03", UNAVAILABLE, "DATABASE_CONFLICT", True),  # lock_not_available
    ("25006", UNAVAILABLE, "DATABASE_UNAVAILABLE", True),  # read_only_sql_transaction: a standby
    ("55006", PRECONDITION, "DATABASE_REFUSED", False),  # object_in_use: class 55 is not retryable as a whole
    ("22012", INVALID, "DATABASE_VALUE_REJECTED", False),  # division_by_zero
    ("42703", PRECONDITION, "DATABASE_SCHEMA_MISMATCH", False),  # undefined_column
    ("42501", PRECONDITION, "DATABASE_REFUSED", False),  # insufficient_privilege
    ("23505", PRECONDITION, "DATABASE_REFUSED", False),  # unique_violation
    ("XX000", PRECONDITION, "DATABASE_REFUSED", False),  # internal_error
    ("ZZ999", PRECONDITION, "DATABASE_REFUSED", False),  # a class PostgreSQL does not define
]


def _info_and_retry(
    found: dict[str, pb_message.Message],
) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo | None]:
    info, retry = found["ErrorInfo"], found.get("RetryInfo")
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert retry is None or isinstance(retry, error_details_pb2.RetryInfo)
    return info, retry


async def _raised_by_server(dsn: str, sqlstate: str) -> pg.PostgresError:
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(pg.PostgresError) as caught:
            await conn.execute(f"DO $$ BEGIN RAISE EXCEPTION '{SERVER_TEXT}' USING ERRCODE = '{sqlstate}'; END $$")
    finally:
        await conn.close()
    return caught.value


@pytest.mark.parametrize(("sqlstate", "code", "reason", "retryable"), TABLE)
async def test_each_sqlstate_class_maps_to_its_code_reason_and_retry_info(
    pg_admin_dsn: str, sqlstate: str, code: int, reason: str, retryable: bool
) -> None:
    exc = await _raised_by_server(pg_admin_dsn, sqlstate)
    status = database_error(exc, "test").to_status_proto()
    info, retry = _info_and_retry(status_details(status))
    assert (status.code, info.reason, info.domain) == (code, reason, "schemaservice")
    assert dict(info.metadata) == {"operation": "test", "cause": type(exc).__name__, "sqlstate": sqlstate}
    assert (retry is not None) == retryable
    assert retry is None or retry.retry_delay.ToNanoseconds() > 0
    assert sqlstate in status.message and SERVER_TEXT not in status.message


async def _refused_connection(dsn: str) -> None:
    await asyncpg.connect("postgresql://postgres@127.0.0.1:1/none", timeout=5)


async def _closed_connection(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.close()
    await conn.fetchval("SELECT 1")


async def _timed_out_query(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.fetchval("SELECT pg_sleep(5)", timeout=0.05)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("provoke", "cause"),
    [
        (_refused_connection, ConnectionRefusedError),
        (_closed_connection, pg.InterfaceError),
        (_timed_out_query, TimeoutError),
    ],
)
async def test_a_connection_lost_or_never_made_is_unavailable_with_retry_info(
    pg_admin_dsn: str, provoke: Callable[[str], Awaitable[None]], cause: type[Exception]
) -> None:
    with pytest.raises(SchemaServiceError) as caught, database_errors("test"):
        await provoke(pg_admin_dsn)
    assert isinstance(caught.value.__cause__, cause)
    status = caught.value.to_status_proto()
    info, retry = _info_and_retry(status_details(status))
    assert (status.code, info.reason) == (UNAVAILABLE, "DATABASE_UNAVAILABLE")
    assert "sqlstate" not in info.metadata and info.metadata["cause"] == type(caught.value.__cause__).__name__
    assert retry is not None and retry.retry_delay.ToNanoseconds() > 0


def _postgres_errors() -> list[type[pg.PostgresError]]:
    found, todo = [], [pg.PostgresError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


def test_every_asyncpg_error_class_gets_a_status_that_is_never_unknown_or_internal() -> None:
    for kind in _postgres_errors():
        with pytest.raises(SchemaServiceError) as caught, database_errors("test"):
            raise kind("boom")
        status = caught.value.to_status_proto()
        assert status.code not in (code_pb2.UNKNOWN, code_pb2.INTERNAL), kind
        assert caught.value.metadata.get("sqlstate", "") == (kind.sqlstate or ""), kind
        # Only UNAVAILABLE invites a retry, and every UNAVAILABLE does.
        assert (caught.value.retry_after_s is not None) == (status.code == code_pb2.UNAVAILABLE), kind
        assert "boom" not in status.message


@pytest.mark.parametrize(
    ("query", "sqlstate", "reason"),
    [
        ("SET statement_timeout = '1ms'; SELECT pg_sleep(1)", "57014", "DATABASE_CONFLICT"),
        ("SET ROLE pg_monitor; CREATE SCHEMA nope", "42501", "DATABASE_REFUSED"),
        ("SELECT no_such_column FROM pg_class", "42703", "DATABASE_SCHEMA_MISMATCH"),
    ],
)
async def test_real_failures_keep_their_sqlstate(empty_db: str, query: str, sqlstate: str, reason: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(SchemaServiceError) as caught, database_errors("test"):
            await conn.execute(query)
    finally:
        await conn.close()
    assert (caught.value.reason, caught.value.metadata["sqlstate"]) == (reason, sqlstate)


async def test_only_failures_a_retry_cannot_fix_are_logged_with_the_server_text(
    pg_admin_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="schema_service.dberrors"):
        for sqlstate in ("40001", "42501"):
            exc = await _raised_by_server(pg_admin_dsn, sqlstate)
            with pytest.raises(SchemaServiceError), database_errors("test"):
                raise exc
    logged = [(getattr(r, "sqlstate", None), getattr(r, "error", None)) for r in caplog.records]
    assert logged == [("42501", SERVER_TEXT)]
