"""Each service's default limits are written once, as the defaults of its Security model (`LIMITS` in its
config, `Security.with_limits`): `serve --help` shows them, the server runs with them, flags override them."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
from collections.abc import Callable

import pytest

from gateway_service import __main__ as gateway_cli
from gateway_service import config, server
from gateway_service.config.serve import LIMITS as GATEWAY_LIMITS
from gateway_service.config.serve import GatewaySecurity, ServeSettings
from schema_service import __main__ as schema_cli
from schema_service.config import LIMITS as SCHEMA_LIMITS
from schema_service.config import SchemaSecurity, Settings
from servicekit.concurrency import Limits
from servicekit.security import Security
from servicekit.server import DEFAULT_LIMITS
from servicekit.settings import build

pytestmark = pytest.mark.timeout(30)

SERVICES = [
    pytest.param(gateway_cli.build_parser, GatewaySecurity, GATEWAY_LIMITS, id="gateway"),
    pytest.param(schema_cli.build_parser, SchemaSecurity, SCHEMA_LIMITS, id="schema-service"),
]
NAMES = [field.name for field in dataclasses.fields(Limits)]


def serve_options(build_parser: Callable[[], argparse.ArgumentParser]) -> str:
    """The options part of `serve --help`, its whitespace collapsed (argparse wraps to the terminal)."""
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        build_parser().parse_args(["serve", "--help"])
    return " ".join(out.getvalue().partition("options:")[2].split())


@pytest.mark.parametrize(("build_parser", "model", "limits"), SERVICES)
def test_serve_help_shows_the_models_default_of_each_limit(
    build_parser: Callable[[], argparse.ArgumentParser], model: type[Security], limits: Limits
) -> None:
    options = serve_options(build_parser)
    for name in NAMES:
        default = model.model_fields[name].default
        assert default == getattr(limits, name)
        flag = "--" + name.replace("_", "-")
        meaning = options.partition(f"{flag} N ")[2].partition(" --")[0]
        assert meaning.endswith(f"(env {name.upper()}; default {default})"), (flag, meaning)


@pytest.mark.parametrize(("build_parser", "model", "limits"), SERVICES)
def test_the_models_defaults_are_the_limits_and_a_variable_overrides_one(
    build_parser: Callable[[], argparse.ArgumentParser],
    model: type[Security],
    limits: Limits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert build(model).limits(DEFAULT_LIMITS) == limits != DEFAULT_LIMITS
    monkeypatch.setenv("MAX_STREAMS_PER_CALLER", "3")
    args = build_parser().parse_args(["serve", "--max-calls", "7"])
    given = build(model, args).limits(DEFAULT_LIMITS)
    assert given == dataclasses.replace(limits, max_calls=7, max_streams_per_caller=3)


def test_each_services_settings_take_its_own_model() -> None:
    assert type(ServeSettings().security) is GatewaySecurity
    assert type(Settings().security) is SchemaSecurity


async def test_the_gateway_serves_with_its_models_limits() -> None:
    settings = ServeSettings(host="127.0.0.1", port=0, security=GatewaySecurity(insecure_dev=True))
    running = await server.start(config.load(None), settings)
    try:
        assert running.lifecycle.limits == GATEWAY_LIMITS
    finally:
        await running.server.stop(0)
        await running.close()
