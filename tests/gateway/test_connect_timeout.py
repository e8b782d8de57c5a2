"""connect_timeout_s bounds the TCP connect itself, separately from the first-token budget.

A listener whose accept queue is full never completes new handshakes (Linux drops the SYN),
so a connect to it hangs: exactly what an unreachable upstream looks like, on 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from gateway_service.domain.failures import FailureKind
from gateway_service.providers import create_adapter
from tests.gateway.test_provider_streams import TYPES, chat, collect_failure, config_for


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts no new connections: its one-slot backlog is filled."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):  # the queue holds backlog + 1 completed handshakes
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.05)  # let the kernel finish the fillers' handshakes; nothing to await on raw sockets
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
@pytest.mark.parametrize("kind_name", TYPES)
async def test_connect_timeout_is_its_own_budget(kind_name: str, http_client: str, blackhole: int) -> None:
    config = config_for(
        kind_name,
        f"http://127.0.0.1:{blackhole}",
        http_client,
        connect_timeout_s=0.3,
        first_token_timeout_s=8.0,
        timeout_s=9.0,
    )
    adapter = create_adapter(config)
    started = time.monotonic()
    try:
        events, error = await collect_failure(adapter, chat("hi"), deadline_s=9.0)
    finally:
        await adapter.aclose()
    elapsed = time.monotonic() - started
    assert events == []
    assert error.kind is FailureKind.TIMEOUT, error
    # Well under the 8 s first-token budget: the connect timeout ended it.
    assert elapsed < 4.0, elapsed
