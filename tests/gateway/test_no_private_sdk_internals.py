"""Production code uses the SDKs' public API only: no underscore modules or names of openai, anthropic,
google-genai (google.genai), httpx2, httpx or aiohttp, no attribute starting with an underscore on them, and
no request options (`options=`, typed by the SDKs' private RequestOptions) on their request methods. The
client's documented `post()` (docs/performance.md) is public. A newer SDK that moves a public name
then fails at import, not in a private corner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway_service

ROOT = Path(gateway_service.__file__).parent
SDKS = ("openai", "anthropic", "google.genai", "cohere", "httpx2", "httpx", "aiohttp", "httpx_aiohttp")
LOW_LEVEL_KEYWORDS = {"options"}  # RequestOptions (openai._types, anthropic._types) goes in through it


def is_sdk(module: str) -> bool:
    return any(module == sdk or module.startswith(sdk + ".") for sdk in SDKS)


def private_part(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def violations(source: str, name: str) -> list[str]:
    tree = ast.parse(source)
    found: list[str] = []
    sdk_names: set[str] = set()  # local names bound to an SDK module or one of its members
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_sdk(alias.name):
                    sdk_names.add((alias.asname or alias.name).split(".")[0])
                    if private_part(alias.name):
                        found.append(f"{name}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and is_sdk(node.module):
            for alias in node.names:
                sdk_names.add(alias.asname or alias.name)
                if private_part(node.module) or private_part(alias.name):
                    found.append(f"{name}:{node.lineno} imports {alias.name} from {node.module}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private_part(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in sdk_names:
                found.append(f"{name}:{node.lineno} uses {base.id}...{node.attr}")
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in LOW_LEVEL_KEYWORDS and any(k.arg == "cast_to" for k in node.keywords):
                    found.append(f"{name}:{node.lineno} calls a low-level request method with {keyword.arg}=")
    return found


def test_gateway_service_uses_only_public_sdk_api() -> None:
    paths = sorted(ROOT.rglob("*.py"))
    assert len(paths) > 20  # the scan sees the package
    found = [v for path in paths for v in violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "from openai._exceptions import SubjectTokenProviderError",
        "from openai import _AmbiguousModuleClientUsageError",
        "import anthropic.lib._extras._common",
        "from google.genai._api_client import BaseApiClient",
        "from httpx2._utils import get_environment_proxies",
        "import httpx2\nx = httpx2._client.AsyncClient",
        "import openai as o\no._base_client",
        "client.post('/x', cast_to=int, options={'security': {}}, stream=True)",
    ],
)
def test_the_scan_catches_each_form(source: str) -> None:
    assert violations(source, "example.py")


def test_the_scan_passes_public_use() -> None:
    source = (
        "import openai\nfrom google.genai import types\nimport httpx2\n"
        "openai.DefaultAioHttpClient(limits=httpx2.Limits())\n"
        "client.post('/x', cast_to=int, body={}, stream=True, stream_cls=openai.AsyncStream[object])\n"
        "self._client.close()\n"
    )
    assert violations(source, "example.py") == []
