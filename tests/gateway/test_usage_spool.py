"""The usage spool keeps what it accepted across a gateway kill -9: records are on disk (fsync per batch) before
they count as accepted, replayed at the next start, deleted once the ledger acknowledged them."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from gateway_service.usage.spool import HEADER, Spool, SpoolFull, frame, frames
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from schemaservice.v1 import usage_service_pb2 as upb
from servicekit.procs import ServiceProcess
from tests.gateway.e2e_helpers import user
from tests.gateway.usage_helpers import FAST_USAGE, NEVER_UNHEALTHY, UPSTREAMS, ledger_counts, ledger_rows, prompt
from tests.schemaserver import RestartableSchemaServer

pytestmark = pytest.mark.timeout(240)
CHATS = 600
BUDGET_S = 60


def records(count: int, start: int = 0) -> list[upb.UsageRecord]:
    return [
        upb.UsageRecord(request_id=f"r-{i}", attempt=1, provider="p", model="m") for i in range(start, start + count)
    ]


def test_the_spool_replays_what_it_wrote_and_stops_at_a_torn_frame(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "notes.usage").write_text("not a segment")  # was a ValueError that stopped the start
    assert spool.replay() == []
    first = spool.append(records(3))
    assert spool.append(records(2, start=3)) == first
    spool.close()
    path = tmp_path / "spool" / f"{first:010d}.usage"
    whole = path.read_bytes()
    path.write_bytes(whole + whole[: HEADER.size + 5])  # a third frame cut short by a kill
    again = Spool(tmp_path / "spool", max_bytes=1 << 20)
    (replayed,) = again.replay()
    assert replayed.segment == first and [r.request_id for r in replayed.records] == [f"r-{i}" for i in range(5)]
    assert again.append(records(1, start=5)) == first + 1  # never appended after a torn frame
    again.remove(first)
    again.close()
    assert not path.exists() and list(again.sizes) == [first + 1]
    corrupt = bytearray(whole)
    corrupt[-1] ^= 0xFF  # the last record's bytes changed: its frame fails its CRC
    assert [len(batch) for batch in frames(bytes(corrupt))] == [3]


def test_a_frame_after_a_failed_write_goes_to_a_new_segment(tmp_path: Path) -> None:
    """A write cut by a full disk (here the file-size limit, a real EFBIG) leaves part of a frame in the segment;
    frames appended after it were on disk and acknowledged as accepted, yet replay stopped at the cut one."""
    import resource
    import signal

    spool = Spool(tmp_path, max_bytes=1 << 20)
    first = spool.append(records(3))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (spool.sizes[first] + 10, limit[1]))
        with pytest.raises(OSError):
            spool.append(records(3, start=3))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert spool.append(records(1, start=6)) == first + 1
    spool.close()
    replayed = Spool(tmp_path, max_bytes=1 << 20).replay()
    assert [(r.segment, [x.request_id for x in r.records]) for r in replayed] == [
        (first, ["r-0", "r-1", "r-2"]),
        (first + 1, ["r-6"]),
    ]


def test_the_spool_refuses_a_frame_past_its_bound(tmp_path: Path) -> None:
    one = len(frame(records(10, start=10)))  # ten two-digit ids: every such frame is as long
    spool = Spool(tmp_path, max_bytes=2 * one)
    try:
        spool.append(records(10, start=10))
        spool.append(records(10, start=20))
        with pytest.raises(SpoolFull, match="usage.spool_max_bytes"):
            spool.append(records(10, start=30))
    finally:
        spool.close()
    assert spool.size == 2 * one == sum(p.stat().st_size for p in tmp_path.glob("*.usage"))


def gateway_yaml(sim: SimulatorHandle, schema_address: str, spool_dir: Path) -> dict[str, Any]:
    usage = FAST_USAGE.model_dump(exclude={"spool_dir"}) | {"spool_dir": str(spool_dir)}
    return {
        "schema_service": schema_address,
        "providers": [u.entry(sim.base_url) for u in UPSTREAMS],
        "routes": {"default": [f"{u.name}/{u.model}" for u in UPSTREAMS]},
        "failover": {"min_attempt_budget_s": 0.01, **NEVER_UNHEALTHY},
        "usage": usage,
    }


def spooled(spool_dir: Path) -> set[tuple[str, int]]:
    """(request_id, attempt) of every record in the spool's files: what the spool acknowledged and still holds."""
    return {
        (r.request_id, r.attempt) for path in spool_dir.glob("*.usage") for b in frames(path.read_bytes()) for r in b
    }


async def stored(dsn: str) -> set[tuple[str, int]]:
    return {(r["request_id"], r["attempt"]) for r in await ledger_rows(dsn)}


async def chats_until_killed(address: str, answered: list[str]) -> None:
    """Chats, 8 at a time, until the gateway is gone; each answered one's request id in `answered`."""
    indexes = iter(range(CHATS))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = chat_service_pb2_grpc.ChatServiceStub(channel)

        async def worker() -> None:
            for index in indexes:
                request = pb.ChatRequest(model="default", messages=user(prompt(index)), request_id=f"chat-{index}")
                try:
                    answered.append((await stub.Chat(request, timeout=30)).request_id)
                except grpc.aio.AioRpcError:
                    return  # the gateway was killed

        await asyncio.gather(*(worker() for _ in range(8)))


async def until(holds: Any, what: str) -> None:
    """Poll another process's effect (files, rows) until it holds; a broken feed fails at BUDGET_S."""
    deadline = time.monotonic() + BUDGET_S
    while not await holds():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_kill_9_loses_nothing_the_spool_acknowledged(
    sim: SimulatorHandle, migrated_db: str, tmp_path: Path
) -> None:
    sim.simulator.clear()
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    spool_dir, config = tmp_path / "spool", tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_yaml(sim, schema.address, spool_dir)))
    env = {**os.environ, "SIM_KEY": "sk-sim", "SCHEMA_SERVICE_ADDR": schema.address}
    answered: list[str] = []
    try:
        with ServiceProcess("gateway-service", "--config", str(config), env=env) as first:
            await first.wait_serving()
            traffic = asyncio.create_task(chats_until_killed(first.address, answered))
            await until(lambda: _at_least(answered, CHATS // 3), "the first third of the chats")
            await schema.stop()  # records pile up in the spool from here on
            await until(lambda: _at_least(answered, 2 * CHATS // 3), "the second third of the chats")
            first.proc.kill()  # SIGKILL, chats in flight
            first.proc.wait(10)
            await traffic
        before, on_disk = await stored(migrated_db), spooled(spool_dir)
        assert len(on_disk) > CHATS // 3  # everything since the schema service went away, at least
        attempts_made = len(sim.simulator.observations)
        await schema.start()
        with ServiceProcess("gateway-service", "--config", str(config), env=env) as second:
            await second.wait_serving()
            acknowledged = before | on_disk
            await until(lambda: _stored_all(migrated_db, acknowledged), "every spooled record in the ledger")
            await until(lambda: _empty(spool_dir), "the spool's segments deleted once acknowledged")
            second.terminate()
            assert await second.wait_exit() == 0
    finally:
        await schema.stop()
    rows, doubles = await ledger_counts(migrated_db)
    ledger = await stored(migrated_db)
    assert acknowledged <= ledger and doubles == 0 and rows == len(ledger)
    assert rows <= attempts_made  # none made up; the difference is what was in flight, never acknowledged
    print(f"kill -9: {attempts_made} attempts made, {len(on_disk)} in the spool at the kill, {len(before)} in the "
          f"ledger before it, {rows} ledger rows after the restart, {doubles} doubles")  # fmt: skip


async def _at_least(answered: list[str], count: int) -> bool:
    return len(answered) >= count


async def _stored_all(dsn: str, wanted: set[tuple[str, int]]) -> bool:
    return wanted <= await stored(dsn)


async def _empty(spool_dir: Path) -> bool:
    return not spooled(spool_dir) and not list(spool_dir.glob("*.usage"))
