"""Running one file: transactional (all or nothing, recorded in the same transaction) or
no-transaction (statement by statement, journaled, resumable).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
from pglast import ast

from schema_service.migrate import concurrent, history
from schema_service.migrate.connections import WorkConnection, restore_session
from schema_service.migrate.copydata import copy_in
from schema_service.migrate.errors import JournalMismatch, LockRetriesExhausted, MigrationFailed
from schema_service.migrate.files import MigrationFile
from schema_service.migrate.statements import Statement, line_column

T = TypeVar("T")
_PLPGSQL_LINE = re.compile(r"PL/pgSQL function inline_code_block line (\d+)")
_COPY_LINE = re.compile(r"^COPY [^,]+, line (\d+)")


@dataclass(frozen=True)
class TimeoutPolicy:
    """Timeouts and lock-timeout retries for one run (see MigrationSettings)."""

    statement_timeout_ms: int = 600_000
    lock_timeout_ms: int = 5_000
    lock_retries: int = 3
    lock_retry_backoff_s: float = 0.5

    def for_file(self, file: MigrationFile) -> tuple[int, int]:
        """(statement, lock) timeouts in ms: the file's header wins over the defaults."""
        opts = file.options
        return (opts.statement_timeout_ms or self.statement_timeout_ms, opts.lock_timeout_ms or self.lock_timeout_ms)


@dataclass(frozen=True)
class StatementDone:
    index: int
    count: int
    duration_s: float
    resumed: bool


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def failure(file: MigrationFile, statement: Statement, exc: asyncpg.PostgresError) -> MigrationFailed:
    """file:line:column (from PostgreSQL's error position), SQLSTATE and message."""
    position = getattr(exc, "position", None)
    offset = statement.start + (int(position) - 1 if position else 0)
    line, column = line_column(file.sql, offset)
    if not position:
        context = str(getattr(exc, "context", "") or "")
        located = _do_block_line(file, statement, context) or _copy_row_line(file, statement, context)
        line, column = located or (line, column)
    sqlstate = str(getattr(exc, "sqlstate", "") or "")
    parts = [f"{file.filename}:{line}:{column}: {sqlstate}: {getattr(exc, 'message', str(exc))}"]
    for label in ("detail", "hint", "context"):
        value = getattr(exc, label, None)
        if value:
            parts.append(f"{label.upper()}: {value}")
    return MigrationFailed("\n".join(parts), sqlstate=sqlstate, filename=file.filename, line=line, column=column)


def _do_block_line(file: MigrationFile, statement: Statement, context: str) -> tuple[int, int] | None:
    """An error inside a DO block has no position, but PL/pgSQL names the line within the body."""
    match = _PLPGSQL_LINE.search(context)
    if match is None or not isinstance(statement.node, ast.DoStmt):
        return None
    bodies = [arg.arg.sval for arg in statement.node.args or () if getattr(arg, "defname", "") == "as"]
    found = file.sql.find(bodies[0], statement.start) if bodies else -1
    if found < 0:
        return None
    line = line_column(file.sql, found)[0] + int(match[1]) - 1
    text = file.sql.splitlines()[line - 1] if line <= file.sql.count("\n") + 1 else ""
    return line, len(text) - len(text.lstrip()) + 1


def _copy_row_line(file: MigrationFile, statement: Statement, context: str) -> tuple[int, int] | None:
    """A bad row of COPY FROM stdin data: PostgreSQL names its line within the rows."""
    match = _COPY_LINE.search(context)
    if match is None or statement.copy_data is None:
        return None
    return line_column(file.sql, statement.copy_data_start)[0] + int(match[1]) - 1, 1


async def with_lock_retries(
    timeouts: TimeoutPolicy, file: MigrationFile, blocked: Callable[[], Statement], attempt: Callable[[], Awaitable[T]]
) -> T:
    """Retry on lock_timeout (55P03) with exponential backoff, then report it; never hang behind a query.

    `blocked()` names the statement that was waiting when the lock timeout struck.
    """
    delay = timeouts.lock_retry_backoff_s
    for tries in range(timeouts.lock_retries + 1):
        try:
            return await attempt()
        except asyncpg.LockNotAvailableError as exc:
            if tries == timeouts.lock_retries:
                raise _lock_exhausted(timeouts, file, blocked(), tries + 1, delay, exc) from exc
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _lock_exhausted(
    timeouts: TimeoutPolicy, file: MigrationFile, statement: Statement, tries: int, delay: float, exc: Exception
) -> LockRetriesExhausted:
    line, column = line_column(file.sql, statement.start)
    first_line = statement.text.splitlines()[0] if statement.text else ""
    return LockRetriesExhausted(
        f"{file.filename}:{line}:{column}: statement {statement.index} ({first_line[:80]}) could not take its "
        f"lock: lock not available after {tries} attempts (lock_timeout {timeouts.for_file(file)[1]} ms): {exc}",
        filename=file.filename,
        line=line,
        column=column,
        extra={"statement": str(statement.index)},
        retry_after_s=delay,
    )


async def run_transactional(
    work: WorkConnection, file: MigrationFile, statements: list[Statement], timeouts: TimeoutPolicy
) -> AsyncIterator[StatementDone]:
    """Run the whole file and record it in one transaction on the work connection, reporting each
    statement as it finishes (again from the first one when a lock timeout restarts the transaction).

    The transaction runs in a task of its own and reports through a queue, so a slow reader of the
    progress (a gRPC client) never holds the file's locks open longer.
    """
    queue: asyncio.Queue[StatementDone | None] = asyncio.Queue()
    task = asyncio.ensure_future(_transaction(work, file, statements, timeouts, queue))
    try:
        while (done := await queue.get()) is not None:
            yield done
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _transaction(
    work: WorkConnection,
    file: MigrationFile,
    statements: list[Statement],
    timeouts: TimeoutPolicy,
    queue: asyncio.Queue[StatementDone | None],
) -> None:
    try:
        statement_ms, lock_ms = timeouts.for_file(file)
        conn = await work.acquire(statement_timeout_ms=statement_ms, lock_timeout_ms=lock_ms)
        await _run_transaction(conn, file, statements, timeouts, queue.put_nowait, durable=work.durable)
    finally:
        queue.put_nowait(None)


async def _run_transaction(
    conn: asyncpg.Connection,
    file: MigrationFile,
    statements: list[Statement],
    timeouts: TimeoutPolicy,
    report: Callable[[StatementDone], None],
    *,
    durable: bool,
) -> None:
    statement_ms, lock_ms = timeouts.for_file(file)
    started = time.monotonic()
    current = statements[0] if statements else Statement(1, "", 0, None)

    async def attempt() -> None:
        nonlocal current
        async with conn.transaction():
            for statement in statements:
                current, t0 = statement, time.monotonic()
                await _execute(conn, file, statement)
                report(StatementDone(statement.index, len(statements), time.monotonic() - t0, resumed=False))
            async with _bookkeeping(file):
                await restore_session(conn, statement_timeout_ms=statement_ms, lock_timeout_ms=lock_ms, durable=durable)
                await history.record(
                    conn,
                    version=file.version,
                    name=file.name,
                    checksum=file.checksum,
                    transactional=True,
                    execution_ms=_elapsed_ms(started),
                    success=True,
                )

    await with_lock_retries(timeouts, file, lambda: current, attempt)


async def _execute(conn: asyncpg.Connection, file: MigrationFile, statement: Statement) -> None:
    try:
        await _send(conn, statement)
    except asyncpg.LockNotAvailableError:
        raise
    except asyncpg.PostgresError as exc:
        raise failure(file, statement, exc) from exc


async def _send(conn: asyncpg.Connection, statement: Statement) -> None:
    if statement.copy_data is not None:
        await copy_in(conn, statement.node, statement.copy_data)
    else:
        # No arguments: the simple query protocol, so PostgreSQL parses the statement exactly as written.
        await conn.execute(statement.text)


async def run_no_transaction(
    work: WorkConnection,
    book: asyncpg.Connection,
    file: MigrationFile,
    statements: list[Statement],
    timeouts: TimeoutPolicy,
) -> AsyncIterator[StatementDone]:
    """Statement by statement outside a transaction, skipping those an earlier run journaled.

    The journal is written on another connection (`book`, the runner's lock connection): the file's
    statements may change their session (SET ROLE, SET search_path, ...) for the statements after them,
    and none of that may reach the bookkeeping. A journaled SET runs again on resume, so what follows
    sees its session.
    """
    statement_ms, lock_ms = timeouts.for_file(file)
    conn = await work.acquire(statement_timeout_ms=statement_ms, lock_timeout_ms=lock_ms)
    done = await history.journal(book, file.version)
    check_journal(file, statements, done)
    started = time.monotonic()
    for statement in statements:
        if statement.index in done:
            if isinstance(statement.node, ast.VariableSetStmt):
                await _run_one(conn, file, statement)
            yield StatementDone(statement.index, len(statements), 0.0, resumed=True)
            continue
        t0 = time.monotonic()
        run_one = functools.partial(_run_one, conn, file, statement)
        await with_lock_retries(timeouts, file, _fixed(statement), run_one)
        async with _bookkeeping(file):
            await history.journal_statement(book, file.version, statement.index, statement.checksum, _elapsed_ms(t0))
        yield StatementDone(statement.index, len(statements), time.monotonic() - t0, resumed=False)
    async with _bookkeeping(file), book.transaction():
        await history.record(
            book,
            version=file.version,
            name=file.name,
            checksum=file.checksum,
            transactional=False,
            execution_ms=_elapsed_ms(started),
            success=True,
        )
        await history.clear_journal(book, file.version)


@contextlib.asynccontextmanager
async def _bookkeeping(file: MigrationFile) -> AsyncIterator[None]:
    """A failure of the runner's own history or journal writes is a failure of the file, named as such
    (so it is recorded and reported like one), never a bare driver traceback."""
    try:
        yield
    except asyncpg.LockNotAvailableError:
        raise
    except asyncpg.PostgresError as exc:
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        raise MigrationFailed(
            f"{file.filename}: its statements ran, but recording them in {history.SCHEMA} failed: "
            f"{sqlstate}: {getattr(exc, 'message', str(exc))}",
            sqlstate=sqlstate,
            filename=file.filename,
        ) from exc


def _fixed(statement: Statement) -> Callable[[], Statement]:
    return lambda: statement


async def _run_one(conn: asyncpg.Connection, file: MigrationFile, statement: Statement) -> None:
    """One statement, with CONCURRENTLY index builds checked before (INVALID leftovers) and after."""
    try:
        await concurrent.drop_invalid_leftovers(conn, statement.node)
        await _send(conn, statement)
        await concurrent.check_valid(conn, statement.node)
    except asyncpg.LockNotAvailableError:
        raise
    except asyncpg.PostgresError as exc:
        raise failure(file, statement, exc) from exc


def check_journal(file: MigrationFile, statements: list[Statement], done: dict[int, str]) -> None:
    """A journaled statement must still be the statement that ran; else resuming would skip new SQL."""
    for index, checksum in sorted(done.items()):
        if index > len(statements) or statements[index - 1].checksum != checksum:
            line, column = line_column(file.sql, statements[min(index, len(statements)) - 1].start)
            raise JournalMismatch(
                f"{file.filename}: statement {index} changed after an earlier run finished it; restore the file, "
                "or run `schema-service repair` to forget the journal (every statement then runs again)",
                filename=file.filename,
                line=line,
                column=column,
            )
