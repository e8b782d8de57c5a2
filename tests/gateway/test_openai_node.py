"""The official `openai` npm client (tests/node/) against the gateway's OpenAI-compatible port, when Node is here.

`make test` installs it (`npm ci` in tests/node, from its lock file) when npm is on the machine; without Node
or without that install the test is skipped and says which.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from llm_simulator import SimulatorHandle
from tests.gateway.e2e_helpers import Upstream, gateway_config
from tests.gateway.test_openai_http import base_url, gateway_with_openai

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
pytestmark = pytest.mark.timeout(90)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed on this machine")
@pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "openai").is_dir(),
    reason="the openai npm package is not installed: `npm ci --prefix tests/node` (make test does it when npm is here)",
)
async def test_the_openai_npm_client_streams_and_reads_errors(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    cfg = gateway_config(sim.base_url, [Upstream("first", "openai", "gpt-first", patient=True)])
    async with gateway_with_openai(cfg) as running:
        node = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / "clients.mjs"),
            base_url(running),
            "unused",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["completion"] == {"content": "Hello from node", "finish": "stop"}
    assert seen["stream"]["text"] == "one two three" and seen["stream"]["completion_tokens"] > 0
    assert seen["unknown"] == {"status": 404, "code": "model_not_found", "type": "invalid_request_error"}
    assert seen["cut"]["partial"] == "a b", seen["cut"]
    assert seen["cut"]["error"] == "APIError", "a stream cut mid-way must raise, not end as if complete"
