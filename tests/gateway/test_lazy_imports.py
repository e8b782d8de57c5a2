"""A gateway imports only what its config uses: the SDKs, Redis, TLS and tracing of what is not configured never load.

Read from the real process: `PYTHONPROFILEIMPORTTIME=1` (the environment form of `python -X importtime`) makes
the interpreter itself write one line to stderr for every module it imports, for the process's whole life.
The gateway starts, serves one streamed chat through its openai provider and exits; its import lines must then
name the openai SDK (so the lines were read at all) and none of the modules a second, unused type would load.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import grpc
import pytest

from llm_simulator import start_simulator
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.procs import ServiceProcess

# Never imported by a gateway with one openai provider, memory limits, no TLS, no OTLP endpoint and no --openai-port.
UNUSED = (
    "google.genai",
    "anthropic",
    "cohere",
    "redis",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "cryptography",
    "gateway_service.openai_http",
)
KEEP = ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT")


def imported(output: str) -> set[str]:
    """Module names from the interpreter's `import time:` lines (`import time: self | cumulative | name`)."""
    names = set()
    for line in output.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.add(name)
    return names


def loaded(names: set[str], package: str) -> list[str]:
    return sorted(n for n in names if n == package or n.startswith(package + "."))


@pytest.mark.timeout(90)
async def test_an_openai_only_gateway_never_imports_the_other_sdks(tmp_path: Path) -> None:
    sim = await start_simulator()
    path = tmp_path / "gateway.yaml"
    path.write_text(
        textwrap.dedent(f"""
        providers:
          - {{name: sim, type: openai, base_url: "{sim.base_url}/v1", api_key_env: SIM_KEY,
             models: [{{name: m, context_window: 1000}}]}}
        routes: {{default: [sim/m]}}
    """)
    )
    env = {k: v for k, v in os.environ.items() if k not in KEEP} | {"SIM_KEY": "sk-sim", "PYTHONPROFILEIMPORTTIME": "1"}
    try:
        with ServiceProcess("gateway-service", "--config", str(path), env=env) as proc:
            await proc.wait_serving(timeout_s=60)
            async with grpc.aio.insecure_channel(proc.address) as channel:
                stub = chat_service_pb2_grpc.ChatServiceStub(channel)
                request = pb.StreamChatRequest(
                    model="default", messages=[pb.Message(role=pb.ROLE_USER, content="[[reply:a b c]]")]
                )
                events = [event async for event in stub.StreamChat(request, timeout=20)]
            assert events[-1].HasField("done")
            proc.terminate()
            assert await proc.wait_exit(timeout_s=30) == 0
            names = imported(proc.output())
    finally:
        await sim.close()
    # The lines were there and read: the SDK in use and its adapter's modules, imported while serving. (A module
    # loaded by importlib.import_module, as the adapter registry loads the adapter, gets no line of its own; the
    # modules it imports do, so every check here is on a package and all its submodules.)
    assert {"grpc", "openai", "gateway_service.providers.openai_convert"} <= names
    assert {package: loaded(names, package) for package in UNUSED} == {package: [] for package in UNUSED}


def test_the_import_lines_are_parsed() -> None:
    output = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |   google.genai.types\n"
        "import time:        30 |        150 | google.genai\n"
        '{"level": "INFO", "message": "import time: not a line | of the interpreter"}\n'
    )
    names = imported(output)
    assert names == {"google.genai.types", "google.genai"}
    assert loaded(names, "google.genai") == ["google.genai", "google.genai.types"]
    assert loaded(names, "google") == ["google.genai", "google.genai.types"]
    assert loaded(names, "anthropic") == []
