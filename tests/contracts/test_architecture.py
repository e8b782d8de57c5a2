"""The lines never to cross (shared/ARCHITECTURE.md), checked on the source so they stay uncrossed."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDKS = ("openai", "anthropic", "google.genai", "httpx", "httpx2")


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def offenders(paths: list[Path], banned: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in paths
        for name in imports(path)
        if any(name == b or name.startswith(b + ".") for b in banned)
    ]


def test_the_services_never_import_each_other() -> None:
    assert offenders(sources("gateway_service"), ("schema_service",)) == []
    assert offenders(sources("schema_service"), ("gateway_service",)) == []


@pytest.mark.parametrize(
    "folder", ["gateway_service/chat", "gateway_service/providers", "schema_service/migrate", "schema_service/metrics"]
)
def test_domain_packages_never_import_grpc(folder: str) -> None:
    assert offenders(sources(folder), ("grpc", "grpc_status", "grpc_health", "grpc_reflection")) == []


def test_provider_sdks_stay_inside_providers() -> None:
    outside = [p for p in sources("gateway_service") if "providers" not in p.parts and "simulator" not in p.parts]
    assert offenders(outside, SDKS) == []


def test_nothing_imports_tests_or_bench() -> None:
    shipped = sources("gateway_service", "schema_service", "servicekit", "bench", "scripts")
    assert offenders(shipped, ("tests",)) == []
    assert offenders(sources("gateway_service", "schema_service", "servicekit", "tests"), ("bench",)) == []


def test_the_check_sees_imports() -> None:
    """Guard against a check that cannot fail: it finds the imports it is meant to find."""
    assert "grpc" in set(imports(ROOT / "gateway_service" / "servicers.py"))
    assert offenders([ROOT / "gateway_service" / "servicers.py"], ("grpc",)) != []
