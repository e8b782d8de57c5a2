"""Callers end to end through the real gateway: per-caller request rates, and users scoped by caller."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
from pathlib import Path

import grpc
import pytest

from gateway_service import config
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import provider_service_pb2 as ppb
from servicekit.logs import JsonFormatter
from servicekit.security import Security
from tests.gateway.e2e_helpers import Harness, Upstream, details, gateway_config, serving, user

pytestmark = pytest.mark.timeout(30)
SIM = Upstream("p", "openai", "m", patient=True)


def callers_file(tmp_path: Path) -> Path:
    path = tmp_path / "callers.yaml"
    entries = [
        ("billing", "[chat, providers.read]", ""),
        ("web", "[chat]", ""),
        ("batch", "[chat, providers.read]", ", limits: {requests_per_minute: 2}"),
    ]
    path.write_text(
        "callers:\n"
        + "".join(
            f'  - {{name: {name}, token_sha256: "{_sha(name)}", roles: {roles}{extra}}}\n'
            for name, roles, extra in entries
        )
        + "...\n"
    )
    return path


def _sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def as_caller(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {name}"),)


async def test_two_callers_users_of_the_same_name_have_their_own_budgets(sim: SimulatorHandle, tmp_path: Path) -> None:
    data = {
        "providers": [SIM.entry(sim.base_url)],
        "routes": {"default": ["p/m"]},
        "limits": {"users": {"requests_per_minute": 1}},
    }
    cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
    async with serving(sim, cfg, Security(callers=callers_file(tmp_path), insecure_dev=True)) as h:
        request = pb.ChatRequest(model="default", messages=user("[[reply:ok]]"), user_id="alice")
        assert (await h.chat.Chat(request, metadata=as_caller("billing"), timeout=5)).message.content == "ok"
        # web's alice is someone else: her budget is untouched by billing's alice.
        assert (await h.chat.Chat(request, metadata=as_caller("web"), timeout=5)).message.content == "ok"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.chat.Chat(request, metadata=as_caller("billing"), timeout=5)
        failed = details(caught.value, [])
        assert (failed.code, failed.info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "USER_BUDGET_EXHAUSTED")


async def test_a_caller_over_its_request_rate_is_refused_with_retry_info(sim: SimulatorHandle, tmp_path: Path) -> None:
    cfg = gateway_config(sim.base_url, [SIM])
    async with serving(sim, cfg, Security(callers=callers_file(tmp_path), insecure_dev=True)) as h:
        for _ in range(2):
            await h.providers.ListProviders(ppb.ListProvidersRequest(), metadata=as_caller("batch"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.chat.Chat(
                pb.ChatRequest(model="default", messages=user("hi")), metadata=as_caller("batch"), timeout=5
            )
        failed = details(caught.value, [])
        assert failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failed.info.reason == "CALLER_RATE_LIMITED"
        assert failed.retry is not None and 0 < failed.retry.retry_delay.ToTimedelta().total_seconds() <= 30
        # Other callers are not held back by batch's rate.
        await h.providers.ListProviders(ppb.ListProvidersRequest(), metadata=as_caller("billing"), timeout=5)


async def test_the_callers_name_is_in_the_log_lines_of_its_calls(sim: SimulatorHandle, tmp_path: Path) -> None:
    # Lines are formatted as they are written, inside the call, the way `serve` logs them.
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("servicekit.auth").addHandler(handler)
    try:
        cfg = gateway_config(sim.base_url, [SIM])
        async with serving(sim, cfg, Security(callers=callers_file(tmp_path), insecure_dev=True)) as h:
            with pytest.raises(grpc.aio.AioRpcError):
                await h.providers.ListProviders(ppb.ListProvidersRequest(), metadata=as_caller("web"), timeout=5)
    finally:
        logging.getLogger("servicekit.auth").removeHandler(handler)
    [line] = [json.loads(text) for text in written.getvalue().splitlines()]
    assert (line["caller"], line["role"]) == ("web", "providers.read")
    assert line["message"] == "call refused: permission denied"
    assert "Bearer" not in written.getvalue()


async def test_a_rotation_to_a_file_cut_at_a_line_break_keeps_the_callers_in_force(
    sim: SimulatorHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rewritten and caught half-way (or left so), the file may end at a line break and still fit the schema:
    here without `batch`; it is refused, logged once, and the callers before it keep their access."""
    path = callers_file(tmp_path)
    whole = path.read_text()
    reloads = _Reloads()
    logging.getLogger("servicekit.callers").addHandler(reloads)
    try:
        caplog.set_level(logging.INFO, logger="servicekit.callers")  # the reload's INFO line too
        async with serving(sim, gateway_config(sim.base_url, [SIM]), Security(callers=path, insecure_dev=True)) as h:
            path.write_text(whole[: whole.index("  - {name: batch")])
            await reloads.seen("callers file not reloaded; the previous one stays in force", h)
            await h.providers.ListProviders(ppb.ListProvidersRequest(), metadata=as_caller("batch"), timeout=5)
            web = next(line for line in whole.splitlines(keepends=True) if line.startswith("  - {name: web,"))
            path.write_text(whole.replace(web, ""))  # whole, without web
            await reloads.seen("callers file reloaded", h)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await h.chat.Chat(pb.ChatRequest(model="default", messages=user("hi")), metadata=as_caller("web"))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        logging.getLogger("servicekit.callers").removeHandler(reloads)
    [refused] = [r for r in reloads.records if r.levelno == logging.ERROR]
    assert "does not end with the line '...'" in refused.error


class _Reloads(logging.Handler):
    """The callers file's reload lines, written in a worker thread, told to the test's loop."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.loop.call_soon_threadsafe(self.changed.set)

    async def seen(self, message: str, h: Harness) -> None:
        """Calls (each lets the gateway look at the file, at most once a second) until `message` is logged."""
        while not any(r.getMessage() == message for r in self.records):
            self.changed.clear()
            await h.providers.ListProviders(ppb.ListProvidersRequest(), metadata=as_caller("billing"), timeout=5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.2)
