"""Waiting for a schema version, woken by the NOTIFY each recorded migration sends at commit."""

from __future__ import annotations

import asyncio

from schema_service.errors import DeadlineExceeded
from schema_service.migrate import history
from schema_service.migrate.connections import connect


async def wait_for_version(dsn: str, version: int, *, timeout_s: float | None) -> int:
    """The applied version once it is at least `version`; DeadlineExceeded after `timeout_s`."""
    conn = await connect(dsn, "schema-service-wait")
    reached = asyncio.Event()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        if str(payload).isdigit() and int(str(payload)) >= version:
            reached.set()

    try:
        # Listen before reading, so a migration committed in between is not missed.
        await conn.add_listener(history.NOTIFY_CHANNEL, on_notify)
        current = await history.applied_version(conn)
        if current >= version:
            return current
        try:
            await asyncio.wait_for(reached.wait(), timeout_s)
        except TimeoutError:
            current = await history.applied_version(conn)
            raise DeadlineExceeded(
                f"schema version {version} not reached within {timeout_s:.1f} s (at {current})",
                metadata={"version": str(version)},
            ) from None
        return await history.applied_version(conn)
    finally:
        await conn.close()
