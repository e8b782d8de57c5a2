"""Fixtures the gateway tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from llm_simulator import SimulatorHandle, start_simulator


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimulatorHandle]:
    """One fake upstream (every provider's wire format) per test module; a module may override it."""
    handle = await start_simulator()
    yield handle
    await handle.close()
