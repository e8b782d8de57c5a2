"""Both services start the same way (servicekit/startup.py), checked on the source: one error boundary each,
servicers registered in api/servicers.py, prepare/start/run in server.py, one event loop for both commands."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway_service", "schema_service")


def calls_to(name: str, path: Path) -> list[ast.Call]:
    """Calls of `name` (a bare name or an attribute `x.name`) in the file at `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called == name:
                found.append(node)
    return found


def boundaries(service: str) -> dict[str, list[ast.Call]]:
    paths = sorted((ROOT / service).rglob("*.py"))
    made = {str(p.relative_to(ROOT)): calls_to("ErrorBoundary", p) for p in paths}
    return {path: calls for path, calls in made.items() if calls}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_one_error_boundary(service: str) -> None:
    made = boundaries(service)
    assert sum(len(calls) for calls in made.values()) == 1, made


def test_the_schema_services_boundary_translates_database_errors() -> None:
    (path, (call,)), *_ = boundaries("schema_service").items()
    translate = {k.arg: k.value for k in call.keywords}.get("translate")
    assert isinstance(translate, ast.Name) and translate.id == "database_errors", path


@pytest.mark.parametrize("service", SERVICES)
def test_servicers_are_registered_in_api_servicers(service: str) -> None:
    paths = sorted((ROOT / service).rglob("*.py"))
    defining = [str(p.relative_to(ROOT)) for p in paths if "def add_to_server(" in p.read_text()]
    assert defining == [f"{service}/api/servicers.py"]
    assert calls_to("add_to_server", ROOT / service / "server.py"), "server.py registers the servicers through it"


@pytest.mark.parametrize("service", SERVICES)
def test_server_has_prepare_start_and_run_and_a_closable_running(service: str) -> None:
    tree = ast.parse((ROOT / service / "server.py").read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.AsyncFunctionDef)}
    assert {"prepare", "start", "run"} <= functions
    running = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Running")
    assert [b.id for b in running.bases if isinstance(b, ast.Name)] == ["StartedServer"]


@pytest.mark.parametrize("service", SERVICES)
def test_the_command_runs_on_the_shared_loop(service: str) -> None:
    main = ROOT / service / "__main__.py"
    assert calls_to("run_forever", main), f"{main} does not start through servicekit.startup.run_forever"
    own_loop = [
        call
        for name in ("run", "Runner", "new_event_loop")
        for call in calls_to(name, main)
        if isinstance(call.func, ast.Attribute) and ast.unparse(call.func.value) in ("asyncio", "uvloop")
    ]
    assert own_loop == [], f"{main} picks its own event loop"


SERVE = {
    "gateway-service": ("gateway_service.__main__", ["serve"], "GATEWAY_"),
    "schema-service": ("schema_service.__main__", ["serve"], "SCHEMA_SERVICE_"),
}


def refusal(prog: str, argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Exit code and stderr of `prog serve ...` run in-process through its main()."""
    import contextlib
    import importlib
    import io
    import logging

    module, command, _ = SERVE[prog]
    for name in ("GATEWAY_PORT", "SCHEMA_SERVICE_PORT", "MAX_CALLS", "INSECURE_DEV", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = importlib.import_module(module).main([*command, *argv])
    finally:
        root.handlers[:], root.level = handlers, level
    return code, err.getvalue()


@pytest.mark.parametrize("prog", SERVE)
def test_both_services_build_settings_one_way_and_say_what_is_wrong_alike(
    prog: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """servicekit.settings.from_command_line builds both `serve` commands' settings (nested sections too) and
    servicekit.startup.run_command reports them: flag over variable, one line naming flag and variable, exit 2."""
    prefix = SERVE[prog][2]
    port = f"Config 'port' (--port, env {prefix}PORT) must be an integer, got 'fifty'"
    assert refusal(prog, ["--port", "fifty"], {}, monkeypatch) == (2, f"{prog}: {port}\n")
    assert refusal(prog, [], {f"{prefix}PORT": "fifty"}, monkeypatch) == (2, f"{prog}: {port}\n")
    assert refusal(prog, ["--port", "fifty"], {f"{prefix}PORT": "1"}, monkeypatch) == (2, f"{prog}: {port}\n")
    calls = "Config 'max_calls' (--max-calls, env MAX_CALLS) must be greater than 0, got '0'"
    assert refusal(prog, ["--max-calls", "0"], {}, monkeypatch) == (2, f"{prog}: {calls}\n")
    assert refusal(prog, [], {"MAX_CALLS": "0"}, monkeypatch) == (2, f"{prog}: {calls}\n")


@pytest.mark.parametrize("service", SERVICES)
def test_both_commands_are_run_and_configured_through_servicekit(service: str) -> None:
    main = ROOT / service / "__main__.py"
    assert calls_to("run_command", main), f"{main} reports errors its own way"
    assert calls_to("from_command_line", main), f"{main} builds its settings its own way"
    assert not calls_to("build", main), f"{main} builds settings by hand"
