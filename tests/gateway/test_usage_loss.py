"""No usage record lost, none doubled, while the schema service restarts or loses its database during 1,000
chats: every attempt made (failed ones too) is one ledger row (the real schema service, PostgreSQL, gRPC)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from llm_simulator import SimulatorHandle
from tests.gateway.usage_helpers import FAIL_EVERY, Chats, UsageGateway, ledger_counts, ledger_rows, usage_gateway
from tests.schemaserver import RestartableSchemaServer
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.timeout(120)
CHATS = 1000
BUDGET_S = 60  # only a broken feed waits this long
Fault = Callable[[], Awaitable[None]]


async def chats_across(gateway: UsageGateway, away: Fault, back: Fault) -> Chats:
    """1,000 chats; the fault starts (`away`) once the first third has answered and ends (`back`) after two
    thirds, once the feed has met it."""
    chats = Chats()

    async def fault() -> None:
        await chats.reached(CHATS // 3)
        await away()
        await chats.reached(2 * CHATS // 3)
        await gateway.feed.sender.until(lambda: bool(gateway.feed.sender.failures))
        await back()

    await asyncio.gather(gateway.run_chats(CHATS, chats), fault())
    return chats


async def check_ledger(dsn: str, gateway: UsageGateway, chats: Chats) -> None:
    made = chats.attempts_made
    assert len(chats.attempts) == CHATS and made >= CHATS + CHATS // FAIL_EVERY  # every tenth failed over
    await asyncio.wait_for(gateway.delivered(made), BUDGET_S)
    assert not gateway.feed.sender.dropped and gateway.feed.sender.failures  # nothing given up, faults were met
    rows, doubles = await ledger_counts(dsn)
    assert (rows, doubles) == (made, 0)
    stored = await ledger_rows(dsn, "SELECT request_id, max(attempt) AS n FROM usage_ledger GROUP BY request_id")
    assert {r["request_id"]: r["n"] for r in stored} == chats.attempts


async def test_a_schema_service_restart_during_chats_loses_no_usage_record(
    sim: SimulatorHandle, migrated_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    try:
        with caplog.at_level(logging.INFO, logger="gateway_service.sender"):
            async with usage_gateway(sim, schema.address) as gateway:
                chats = await chats_across(gateway, schema.stop, schema.start)
                await check_ledger(migrated_db, gateway, chats)
    finally:
        await schema.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway_service.sender.usage records"]
    assert "usage records delivered again" in lines and not [line for line in lines if "dropped" in line]


async def test_a_database_cut_during_chats_loses_no_usage_record(sim: SimulatorHandle, migrated_db: str) -> None:
    proxy, dsn = await TcpProxy.for_database(migrated_db)
    schema = RestartableSchemaServer(dsn)
    await schema.start()
    try:
        async with usage_gateway(sim, schema.address) as gateway:
            chats = await chats_across(gateway, proxy.cut, proxy.restore)
            await check_ledger(migrated_db, gateway, chats)
    finally:
        await schema.stop()
        await proxy.cut()
