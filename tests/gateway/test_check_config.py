"""`gateway-service serve --check-config`: a short summary a person reads, secrets as stars; and the serve settings."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway_service import config
from gateway_service.config import ServeSettings
from gateway_service.config.providers import price_version
from gateway_service.config.summary import summary
from servicekit.settings import SettingsError, build

CONFIG = """
schema_service: 127.0.0.1:50052
providers:
  - name: openai
    type: openai
    api_key_env: OPENAI_API_KEY
    first_token_timeout_s: 2.5
    limits: {requests_per_minute: 500}
    models:
      - {name: gpt-4o-mini, context_window: 128000, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.60}
  - name: claude
    type: anthropic
    api_key_env: ANTHROPIC_API_KEY
    models: [{name: claude-x, reasoning: effort}]
routes:
  default: [openai/gpt-4o-mini, claude/claude-x]
failover: {breaker_failures: 4}
limits:
  backend: redis
  redis_url: redis://:hunter2@127.0.0.1:6379/0
  users: {requests_per_minute: 60}
  user_overrides: {batch: {requests_per_minute: 600}}
"""


def test_summary_names_providers_models_routes_and_limits_never_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    cfg = config.load(path, env={"OPENAI_API_KEY": "sk-live-123"})
    text = summary(cfg, ServeSettings(port=7000, metrics_port=9464))
    lines = text.splitlines()
    assert lines[0] == f"config: {path}"
    assert "listen: [::]:7000, shutdown grace 20 s, metrics on :9464" in lines
    assert "security: no TLS, no callers file" in lines and "schema_service: 127.0.0.1:50052" in lines
    assert "  openai (openai): key ********** from OPENAI_API_KEY" in lines
    assert "  claude (anthropic): NOT CONFIGURED: no key in ANTHROPIC_API_KEY" in lines
    assert (
        "    timeouts: attempt 60 s, connect 5 s, first token 2.5 s, idle 30 s; http_client aiohttp, "
        "limits requests_per_minute=500" in lines
    )
    gpt, claude = (price_version(p.models[0]) for p in cfg.providers)
    assert (
        f"    - gpt-4o-mini: context 128000, $0.15/$0.6 per Mtok in/out, cached = input, price version {gpt}, "
        "reasoning budget" in lines
    )
    assert (
        f"    - claude-x: context unknown, $0/$0 per Mtok in/out, cached = input, price version {claude}, "
        "reasoning effort, assistant prefill" in lines
    )
    assert [line for line in lines if line.startswith("warning:")] == [
        "warning: claude/claude-x (route default) has no prices: its usage is costed at $0 "
        "(set input_usd_per_mtok and output_usd_per_mtok)"
    ]
    assert "  default: openai/gpt-4o-mini, claude/claude-x" in lines
    assert "failover: breaker_failures=4" in lines and "telemetry: defaults" in lines
    assert "limits: redis **********, prefix llmgateway:limits; users requests_per_minute=60" in lines
    assert "  user batch: requests_per_minute=600" in lines
    assert "sk-live-123" not in text and "hunter2" not in text
    assert len(text) < 1800 and "Spec(" not in text  # a summary, not a repr


def test_serve_settings_take_flags_over_the_environment_over_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build(ServeSettings) == ServeSettings(host="[::]", port=50051, shutdown_grace_s=20.0, metrics_port=0)
    monkeypatch.setenv("GATEWAY_PORT", "6000")
    monkeypatch.setenv("METRICS_PORT", "9464")
    monkeypatch.setenv("GATEWAY_CONFIG", "/etc/gw.yaml")
    settings = build(ServeSettings)
    assert (settings.port, settings.metrics_port, str(settings.config)) == (6000, 9464, "/etc/gw.yaml")
    assert build(ServeSettings, port="7000").port == 7000  # a flag wins
    monkeypatch.setenv("GATEWAY_PORT", "")  # empty is unset, as before
    assert build(ServeSettings).port == 50051


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"port": "70000"}, "Config 'port' (--port, env GATEWAY_PORT) must be at most 65535, got '70000'"),
        ({"metrics_port": "-1"}, "Config 'metrics_port' (--metrics-port, env METRICS_PORT) must be a non-negative"),
        (
            {"shutdown_grace_s": "soon"},
            "Config 'shutdown_grace_s' (--shutdown-grace, env GATEWAY_SHUTDOWN_GRACE_S) must be a number, got 'soon'",
        ),
    ],
)
def test_bad_serve_settings_name_the_flag_and_the_variable(values: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        build(ServeSettings, **values)
    assert str(error.value).startswith(message), str(error.value)


def test_a_bad_environment_variable_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_PORT", "lots")
    with pytest.raises(SettingsError, match=r"Config 'metrics_port' \(--metrics-port, env METRICS_PORT\) must be an"):
        build(ServeSettings)


def test_summary_says_how_the_gateway_is_secured(tmp_path: Path) -> None:
    from servicekit.security import Security

    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    security = Security(tls_cert=Path("/tls/crt.pem"), tls_key=Path("/tls/key.pem"), callers=Path("/etc/callers.yaml"))
    serve = ServeSettings(security=security, schema_service_tls=True, schema_service_token_file=Path("/tok"))
    lines = summary(config.load(path, env={}), serve).splitlines()
    assert "security: TLS /tls/crt.pem, callers /etc/callers.yaml" in lines
    assert "schema_service: 127.0.0.1:50052 over TLS with a token" in lines


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("_restore_logging")
def test_check_config_refuses_what_serve_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway_service.__main__ import main

    for variable in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "CALLERS_FILE", "INSECURE_DEV"):
        monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    check = ["serve", "--check-config", "--config", str(path)]
    assert main(check) == 2
    assert "gateway-service: refusing to serve without TLS and a callers file" in capsys.readouterr().err
    broken = tmp_path / "callers.yaml"
    broken.write_text("callers: [{name: x}]\n")
    missing = ["--tls-cert", str(tmp_path / "none.crt"), "--tls-key", str(tmp_path / "none.key")]
    assert main([*check, *missing, "--callers", str(broken)]) == 2
    assert "gateway-service: TLS files" in capsys.readouterr().err
    assert main([*check, "--insecure-dev", "--callers", str(broken)]) == 2
    assert f"gateway-service: {broken}" in capsys.readouterr().err
    assert main([*check, "--insecure-dev"]) == 0
    assert capsys.readouterr().out.startswith(f"config: {path}\n")


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("address", ["schema:99999", "schema:abc", "schema:0", "schema", "dns:///schema:x"])
@pytest.mark.parametrize("command", [["serve", "--check-config"], ["serve"]])
def test_a_schema_service_address_with_a_bad_port_is_one_line_and_exit_2(
    address: str,
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Accepted silently, such an address left every metrics write failing; both `serve` and --check-config
    refuse it before listening, naming where it came from: the variable, or the file and its key."""
    from gateway_service.__main__ import main

    monkeypatch.setenv("INSECURE_DEV", "1")
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(CONFIG).replace("127.0.0.1:50052", address))
    target = address.removeprefix("dns:///")
    assert main([*command, "--config", str(path), "--port", "0"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"gateway-service: {path}: schema_service: {target}: "), line
    monkeypatch.setenv("SCHEMA_SERVICE_ADDR", address)
    assert main([*command, "--port", "0"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"gateway-service: SCHEMA_SERVICE_ADDR: {target}: "), line
    assert ("the port must be a number from 1 to 65535" in line) != (address == "schema")


@pytest.mark.parametrize("address", ["127.0.0.1:50052", "[::1]:50052", "dns:///schema-service-headless:50052"])
def test_good_schema_service_addresses_are_taken(address: str) -> None:
    assert config.load(None, env={"SCHEMA_SERVICE_ADDR": address}).schema_service == address


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("command", [["serve", "--check-config"], ["serve"]])
@pytest.mark.parametrize("on_backend_error", ["deny", "allow"])
def test_a_redis_host_that_does_not_exist_is_one_line_and_exit_2(
    command: list[str],
    on_backend_error: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name no resolver knows is a config mistake, not an outage that on_backend_error speaks of."""
    from gateway_service.__main__ import main

    monkeypatch.setenv("INSECURE_DEV", "1")
    monkeypatch.delenv("SCHEMA_SERVICE_ADDR", raising=False)
    path = tmp_path / "gateway.yaml"
    text = textwrap.dedent(CONFIG).replace("127.0.0.1:6379", "no-such-redis.invalid:6379")
    path.write_text(text + f"  spend: {{callers: {{usd_per_day: 5}}, on_backend_error: {on_backend_error}}}\n")
    assert main([*command, "--config", str(path), "--port", "0"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"gateway-service: {path}: limits.redis_url: cannot resolve the Redis host 'no-such-redis.invalid' ("
    ), line
    assert "hunter2" not in line


def test_a_redis_that_refuses_is_an_outage_not_a_config_error(tmp_path: Path) -> None:
    """Nothing listens on the port: the gateway would start (budgets follow their outage rules)."""
    from gateway_service.config.serve import redis_host_problem
    from servicekit.procs import free_port

    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(CONFIG).replace("127.0.0.1:6379", f"127.0.0.1:{free_port()}"))
    assert redis_host_problem(config.load(path, env={}).limits) is None
