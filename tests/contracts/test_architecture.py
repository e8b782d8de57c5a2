"""The lines never to cross (shared/ARCHITECTURE.md), checked on the source so they stay uncrossed."""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
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
    "folder",
    [
        "gateway_service/domain",
        "gateway_service/chat",
        "gateway_service/providers",
        "gateway_service/health",
        "gateway_service/limits",
        "schema_service/migrate",
        "schema_service/metrics",
        "schema_service/drift",
        "schema_service/usage",
    ],
)
def test_domain_packages_never_import_grpc(folder: str) -> None:
    assert offenders(sources(folder), ("grpc", "grpc_status", "grpc_health", "grpc_reflection")) == []


def test_providers_never_import_chat() -> None:
    """Both stand on domain/ (the request, the events, the failure taxonomy), which stands on neither."""
    assert offenders(sources("gateway_service/providers"), ("gateway_service.chat", "gateway_service.api")) == []
    above_domain = ("gateway_service.chat", "gateway_service.providers", "gateway_service.api", "gateway_service.app")
    assert offenders(sources("gateway_service/domain"), above_domain) == []


HEALTH_ROOMS = tuple(f"gateway_service.health.{p.stem}" for p in sorted((ROOT / "gateway_service/health").glob("*.py")))


def test_health_stands_below_the_pipeline() -> None:
    """Health is told about attempts and asked about targets; it knows nothing of who asks."""
    above = ("gateway_service.chat", "gateway_service.providers", "gateway_service.limits", "gateway_service.api")
    assert offenders(sources("gateway_service/health"), (*above, "gateway_service.app")) == []


def test_only_the_face_of_health_is_imported_from_outside() -> None:
    """Breakers, stall watches and the in-memory store are health's own: others use `gateway_service.health`."""
    outside = [p for p in sources("gateway_service") if "health" not in p.relative_to(ROOT).parts]
    assert offenders(outside, HEALTH_ROOMS) == []
    # Guard against a check that cannot fail: the breaker's own test reaches inside, and is seen to.
    assert offenders([ROOT / "tests/gateway/test_breaker.py"], HEALTH_ROOMS) != []


def test_provider_sdks_stay_inside_providers() -> None:
    outside = [p for p in sources("gateway_service") if "providers" not in p.parts]
    assert offenders(outside, SDKS) == []


def test_the_simulator_is_a_development_tool() -> None:
    """llm_simulator serves make run, the tests and the benchmarks; nothing shipped imports it."""
    assert offenders(sources("gateway_service", "schema_service", "servicekit"), ("llm_simulator",)) == []
    assert offenders(sources("llm_simulator"), ("gateway_service", "schema_service")) == []


def test_nothing_imports_tests_or_bench() -> None:
    shipped = sources("gateway_service", "schema_service", "servicekit", "bench", "scripts")
    assert offenders(shipped, ("tests",)) == []
    # Only the benchmarks' own tests (tests/bench/) may import bench: they test its --record/--check handling.
    others = [
        p
        for p in sources("gateway_service", "schema_service", "servicekit", "tests")
        if "bench" not in p.relative_to(ROOT).parts
    ]
    assert offenders(others, ("bench",)) == []
    assert offenders(sources("tests/bench"), ("bench",)) != []  # the exception is real, not a check that cannot fail


def test_the_check_sees_imports() -> None:
    """Guard against a check that cannot fail: it finds the imports it is meant to find."""
    assert "grpc" in set(imports(ROOT / "gateway_service" / "api" / "servicers.py"))
    assert offenders([ROOT / "gateway_service" / "api" / "servicers.py"], ("grpc",)) != []


FIRST_PARTY = ("gateway_service", "schema_service", "servicekit", "llm_simulator")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def every_import(path: Path, module: str, known: Collection[str]) -> Iterator[str]:
    """The `known` modules `path` imports anywhere: top level, inside functions, under TYPE_CHECKING.

    `from pkg import name` is an import of the module pkg.name when there is one, else of pkg itself.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                if target in known:
                    yield target


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    names = {module_name(p): p for p in paths}
    return {name: set(every_import(path, name, names)) - {name} for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_not_even_behind_a_function_level_import() -> None:
    assert cycles(import_graph(sources(*FIRST_PARTY))) == []


def test_the_cycle_check_sees_function_level_imports(tmp_path: Path) -> None:
    """Guard against a check that cannot fail: a lazy import inside a function still closes a cycle."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from . import a\n    return a\n")
    known = {"pkg", "pkg.a", "pkg.b"}
    graph = {f"pkg.{name}": set(every_import(package / f"{name}.py", f"pkg.{name}", known)) for name in ("a", "b")}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
