"""Message parts end to end: images, documents and cache hints over gRPC, through each official SDK to the
simulator, which records the body each provider received; models without the capability are skipped."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
import yaml

from gateway_service import config
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Upstream, chat_failure, serving

pytestmark = pytest.mark.timeout(60)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
OPENAI = Upstream("oa", "openai", "gpt-vision", patient=True)
ANTHROPIC = Upstream("an", "anthropic", "claude-vision", patient=True)
GEMINI = Upstream("ge", "gemini", "gemini-vision", patient=True)
COHERE = Upstream("co", "cohere", "command-vision", patient=True)
TEXT_ONLY = Upstream("plain", "openai", "gpt-text", patient=True)


def parts_config(
    sim_url: str, upstreams: Sequence[Upstream], capable: Sequence[str], route: Sequence[str] | None = None
) -> config.GatewayConfig:
    providers = []
    for upstream in upstreams:
        entry = upstream.entry(sim_url)
        if upstream.name in capable:
            entry["models"][0]["capabilities"] = ["vision"] if upstream.type == "cohere" else ["vision", "documents"]
        providers.append(entry)
    data = {
        "providers": providers,
        "routes": {"default": list(route or [f"{u.name}/{u.model}" for u in upstreams])},
        "failover": {"min_attempt_budget_s": 0.01},
    }
    return config.parse(yaml.safe_load(yaml.safe_dump(data)), source="test", env={"SIM_KEY": "sk-sim-key-1234"})


def image(**kw: Any) -> pb.Part:
    return pb.Part(image=pb.Image(**kw))


def asking(*parts: pb.Part, system: Sequence[pb.Part] = (), model: str = "default") -> pb.ChatRequest:
    messages = [pb.Message(role=pb.ROLE_SYSTEM, parts=list(system))] if system else []
    messages.append(pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="[[reply:seen]] what is this?"), *parts]))
    return pb.ChatRequest(model=model, messages=messages)


async def received(sim: SimulatorHandle, upstream: Upstream, request: pb.ChatRequest) -> dict[str, Any]:
    """The body the simulator got from the gateway for `request`, sent to `upstream` alone."""
    sim.simulator.clear()
    async with serving(sim, parts_config(sim.base_url, [upstream], [upstream.name])) as h:
        answer = await h.chat.Chat(request, timeout=10)
    assert answer.message.content == "seen"
    (observation,) = sim.simulator.observations
    return observation.body


async def test_openai_gets_image_url_parts_and_file_parts(sim: SimulatorHandle) -> None:
    body = await received(
        sim,
        OPENAI,
        asking(
            image(data=PNG, media_type="image/png"),
            image(url="https://example.com/cat.jpg"),
            pb.Part(document=pb.Document(data=PDF, media_type="application/pdf", name="report.pdf")),
        ),
    )
    content = body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "[[reply:seen]] what is this?"}
    assert content[1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }
    assert content[2] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    assert content[3]["type"] == "file"
    assert content[3]["file"] == {
        "file_data": "data:application/pdf;base64," + base64.b64encode(PDF).decode(),
        "filename": "report.pdf",
    }


async def test_anthropic_gets_image_and_document_blocks_with_cache_control(sim: SimulatorHandle) -> None:
    long_prompt = pb.Part(text="You are a careful reader. " * 20, cache=pb.CACHE_EPHEMERAL, cache_ttl_s=3600)
    body = await received(
        sim,
        ANTHROPIC,
        asking(
            image(data=PNG, media_type="image/png"),
            pb.Part(document=pb.Document(data=PDF, media_type="application/pdf"), cache=pb.CACHE_EPHEMERAL),
            image(url="https://example.com/cat.jpg"),
            system=[long_prompt],
        ),
    )
    assert body["system"] == [
        {"type": "text", "text": long_prompt.text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    blocks = body["messages"][-1]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
    }
    assert blocks[2] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(PDF).decode()},
        "cache_control": {"type": "ephemeral"},
    }
    assert blocks[3] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


async def test_a_system_prompt_without_hints_stays_one_string(sim: SimulatorHandle) -> None:
    body = await received(sim, ANTHROPIC, asking(system=[pb.Part(text="Be brief.")]))
    assert body["system"] == "Be brief."


async def test_gemini_gets_inline_data_and_file_data(sim: SimulatorHandle) -> None:
    body = await received(
        sim,
        GEMINI,
        asking(
            image(data=PNG, media_type="image/png"),
            image(url="https://example.com/cat.jpg", media_type="image/jpeg"),
            pb.Part(document=pb.Document(data=PDF, media_type="application/pdf")),
        ),
    )
    parts = body["contents"][-1]["parts"]
    # As the SDK writes them: proto JSON, whose readers take either spelling of a field and either base64 alphabet.
    assert [_blob(parts[1], "inline"), _blob(parts[3], "inline")] == [("image/png", PNG), ("application/pdf", PDF)]
    file_data = parts[2].get("fileData") or parts[2]["file_data"]
    assert file_data.get("fileUri", file_data.get("file_uri")) == "https://example.com/cat.jpg"
    assert file_data.get("mimeType", file_data.get("mime_type")) == "image/jpeg"


def _blob(part: dict[str, Any], kind: str) -> tuple[str, bytes]:
    blob = part.get(f"{kind}Data") or part[f"{kind}_data"]
    return blob.get("mimeType", blob.get("mime_type")), base64.urlsafe_b64decode(blob["data"])


async def test_cohere_gets_image_url_content(sim: SimulatorHandle) -> None:
    body = await received(sim, COHERE, asking(image(data=PNG, media_type="image/png")))
    content = body["messages"][-1]["content"]
    assert content[1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }


async def test_a_model_without_vision_is_skipped_not_sent(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    async with serving(sim, parts_config(sim.base_url, [TEXT_ONLY, OPENAI], ["oa"])) as h:
        answer = await h.chat.Chat(asking(image(data=PNG, media_type="image/png")), timeout=10)
    assert answer.provider == "oa"
    assert [(s.provider, s.reason) for s in answer.skipped] == [("plain", pb.FAILURE_REASON_UNSUPPORTED_CONTENT)]
    assert "vision" in answer.skipped[0].message
    assert [o.model for o in sim.simulator.observations] == ["gpt-vision"], "the text-only model got no request"


async def test_no_capable_model_is_invalid_argument_naming_the_part(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    async with serving(sim, parts_config(sim.base_url, [TEXT_ONLY], [])) as h:
        failed = await chat_failure(h, asking(image(data=PNG, media_type="image/png")))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.bad_request is not None
    assert [v.field for v in failed.bad_request.field_violations] == ["messages[0].parts[1]"]
    assert not sim.simulator.observations


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.Message(role=pb.ROLE_USER, content="x", parts=[pb.Part(text="y")]), "messages[0].content"),
        (pb.Message(role=pb.ROLE_USER, parts=[pb.Part()]), "messages[0].parts[0]"),
        (
            pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=""), image(url="https://example.com/a.png")]),
            "messages[0].parts[0].text",
        ),
        (
            pb.Message(role=pb.ROLE_USER, parts=[image(data=PNG, media_type="image/bmp")]),
            "messages[0].parts[0].image.media_type",
        ),
        (
            pb.Message(role=pb.ROLE_USER, parts=[image(url="http://example.com/a.png")]),
            "messages[0].parts[0].image.url",
        ),
        (pb.Message(role=pb.ROLE_USER, parts=[image(media_type="image/png")]), "messages[0].parts[0].image"),
        (
            pb.Message(role=pb.ROLE_USER, parts=[pb.Part(document=pb.Document(data=PDF, media_type="text/plain"))]),
            "messages[0].parts[0].document.media_type",
        ),
        (pb.Message(role=pb.ROLE_SYSTEM, parts=[image(data=PNG, media_type="image/png")]), "messages[0].parts[0]"),
        (
            pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="x", cache=pb.CACHE_EPHEMERAL, cache_ttl_s=60)]),
            "messages[0].parts[0].cache_ttl_s",
        ),
        (pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="x", cache=7)]), "messages[0].parts[0].cache"),  # type: ignore[arg-type]
        (pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="x")] * 3), "messages[0].parts"),
        (
            pb.Message(role=pb.ROLE_USER, parts=[image(data=b"x" * 3000, media_type="image/png")]),
            "messages[0].parts[0].image.data",
        ),
    ],
)
async def test_bad_parts_are_invalid_argument_naming_the_field(
    sim: SimulatorHandle, message: pb.Message, field: str
) -> None:
    data = {
        "providers": [OPENAI.entry(sim.base_url)],
        "requests": {"max_parts": 2, "max_part_bytes": 2048, "max_parts_bytes": 4096},
    }
    cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
    async with serving(sim, cfg) as h:
        failed = await chat_failure(h, pb.ChatRequest(model="oa/gpt-vision", messages=[message]))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.bad_request is not None
    assert field in [v.field for v in failed.bad_request.field_violations], failed.bad_request


async def test_all_parts_of_a_request_together_are_bounded(sim: SimulatorHandle) -> None:
    data = {"providers": [OPENAI.entry(sim.base_url)], "requests": {"max_part_bytes": 2048, "max_parts_bytes": 4096}}
    cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
    three = [image(data=b"x" * 2000, media_type="image/png")] * 3
    async with serving(sim, cfg) as h:
        failed = await chat_failure(
            h, pb.ChatRequest(model="oa/gpt-vision", messages=[pb.Message(role=pb.ROLE_USER, parts=three)])
        )
    assert failed.bad_request is not None
    assert [v.field for v in failed.bad_request.field_violations] == ["messages"]


@pytest.mark.parametrize(
    ("flood", "field"),
    [
        (pb.Message(role=pb.ROLE_USER, parts=[pb.Part()] * 100_000), "parts"),
        (pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[pb.ToolCall()] * 100_000), "tool_calls"),
        (pb.Message(role=pb.ROLE_ASSISTANT, reasoning=[pb.Reasoning()] * 100_000), "reasoning"),
    ],
)
def test_a_flood_in_a_message_is_refused_by_its_count_before_any_entry_is_looked_at(
    flood: pb.Message, field: str
) -> None:
    """Before, every part, tool call and reasoning block of a message was walked (bytes summed, arguments
    parsed, each one copied) before its count was checked: a message of a million empty ones held the event
    loop for seconds to be refused, with one violation per tool call."""
    from gateway_service.api import from_proto
    from gateway_service.errors import InvalidRequest

    request = pb.ChatRequest(model="m", messages=[pb.Message(role=pb.ROLE_USER, content="hi"), flood])
    with pytest.raises(InvalidRequest) as caught:
        from_proto.chat_request(request, "r", config.RequestBounds())
    violations = [(v.field, v.description) for v in caught.value.field_violations]
    assert violations == [(f"messages[1].{field}", "at most 64 entries (got 100,000)")]
