"""Gateway configuration: YAML + environment -> frozen settings, every error naming the file and key path."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pydantic
import pytest

from gateway_service import config
from gateway_service.errors import ConfigError

GOOD = """
schema_service: 127.0.0.1:50052
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:1/v1
    api_key_env: OPENAI_API_KEY
    timeout_s: 60
    first_token_timeout_s: 2.5
    http_client: httpx
    models:
      - {name: gpt-4o-mini, context_window: 128000, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.60}
  - name: gemini
    type: gemini
    api_version: v1beta
    api_key_file: KEYFILE
    models: [{name: gemini-2.0-flash, context_window: 1000000}]
  - name: claude
    type: anthropic
    api_key_env: ANTHROPIC_API_KEY
    models: [{name: claude-x}]
routes:
  default: [gemini/gemini-2.0-flash, openai/gpt-4o-mini]
failover: {min_attempt_budget_s: 0.2, commit_window_tokens: 3, breaker_failures: 4}
telemetry: {buffer_size: 100}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(text).replace("KEYFILE", str(tmp_path / "gemini.key")))
    return path


def test_full_file_loads_into_frozen_settings(tmp_path: Path) -> None:
    (tmp_path / "gemini.key").write_text("AIza-secret-from-file\n")
    cfg = config.load(write(tmp_path, GOOD), env={"OPENAI_API_KEY": "sk-live-123"})
    openai, gemini, claude = cfg.providers
    assert openai.configured and openai.api_key is not None and openai.api_key.get_secret_value() == "sk-live-123"
    assert gemini.api_key is not None and gemini.api_key.get_secret_value() == "AIza-secret-from-file"
    assert not claude.configured and claude.credential_source == "ANTHROPIC_API_KEY"
    assert claude.models[0].assistant_prefill and not openai.models[0].assistant_prefill
    assert openai.first_token_timeout_s == 2.5 and openai.models[0].output_usd_per_mtok == Decimal("0.60")
    assert (openai.http_client, gemini.http_client) == ("httpx", "aiohttp")
    assert cfg.routes["default"].targets == (("gemini", "gemini-2.0-flash"), ("openai", "gpt-4o-mini"))
    assert cfg.failover.min_attempt_budget_s == 0.2 and cfg.failover.commit_window_tokens == 3
    assert cfg.failover.breaker_failures == 4 and isinstance(cfg.failover.breaker_failures, int)
    assert cfg.telemetry.buffer_size == 100 and cfg.schema_service == "127.0.0.1:50052"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.schema_service = "x"  # type: ignore[misc]


def test_secrets_print_as_stars(tmp_path: Path) -> None:
    (tmp_path / "gemini.key").write_text("AIza-secret-from-file")
    cfg = config.load(write(tmp_path, GOOD), env={"OPENAI_API_KEY": "sk-live-123"})
    text = repr(cfg) + str(cfg.providers[0].api_key)
    assert "sk-live-123" not in text and "AIza-secret-from-file" not in text
    assert "**********" in text


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    timeout_s: 60", "    timeout: 60", "providers[0].timeout: unknown key"),
        (
            "{name: gemini-2.0-flash, context_window: 1000000}",
            "{name: gemini-2.0-flash, window: 1}",
            "providers[1].models[0].window: unknown key",
        ),
        (
            "[gemini/gemini-2.0-flash, openai/gpt-4o-mini]",
            "[gemini/gemini-2.0-flash, opnai/gpt-4o-mini]",
            "routes.default[1]: unknown provider 'opnai'",
        ),
        (
            "[gemini/gemini-2.0-flash, openai/gpt-4o-mini]",
            "[gemini/gemini-2.0-flash, openai/gpt-5]",
            "routes.default[1]: unknown model 'gpt-5' of provider 'openai'",
        ),
        ("    type: gemini", "    type: bard", "providers[1].type: must be one of"),
        ("http_client: httpx", "http_client: gateway", "providers[0].http_client: must be one of aiohttp, httpx"),
        ("http_client: httpx", "max_connections: 0", "providers[0].max_connections: must be at least 1, got 0"),
        ("http_client: httpx", "ca_bundle: /no/ca.pem", "providers[0].ca_bundle: no such file: /no/ca.pem"),
        ("http_client: httpx", "client_key: /nonexistent/k.pem", "providers[0].client_key: needs client_cert"),
        ("timeout_s: 60", "timeout_s: soon", "providers[0].timeout_s: must be a number, got 'soon'"),
        ("timeout_s: 60", "timeout_s: -1", "providers[0].timeout_s: must be a non-negative number, got -1"),
        ("breaker_failures: 4", "breaker_fails: 4", "failover.breaker_fails: unknown key"),
        ("schema_service:", "schema_svc:", "schema_svc: unknown key"),
        ("    api_key_env: ANTHROPIC_API_KEY\n", "", "providers[2]: exactly one of api_key_env, api_key_file or"),
        ("    api_key_env: ANTHROPIC_API_KEY\n", "    api_key_env: A\n    no_api_key: true\n", "providers[2]: exactly"),
        ("  - name: claude", "  - name: openai", "providers[2].name: duplicate name 'openai'"),
        (
            "{name: gemini-2.0-flash, context_window: 1000000}",
            "{name: gemini-2.0-flash, reasoning: level}",
            "providers[1].models[0].reasoning: must be one of budget, effort, got 'level'",
        ),
        (
            "output_usd_per_mtok: 0.60}",
            "output_usd_per_mtok: 0.60, reasoning: effort}",
            "providers[0].models[0].reasoning: only anthropic and gemini models take it; "
            "openai models are always asked",
        ),
        (
            "output_usd_per_mtok: 0.60}",
            "output_usd_per_mtok: 0.60, reasoning: budget}",
            "providers[0].models[0].reasoning: only anthropic and gemini models take it",
        ),
    ],
)
def test_mistakes_are_start_up_errors_naming_the_path(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        config.load(path, env={})
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}/nope.yaml: config file not found"):
        config.load(tmp_path / "nope.yaml", env={})


def test_gateway_config_env_is_the_fallback_and_schema_service_addr_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    cfg = config.load(None, env={"GATEWAY_CONFIG": str(path), "SCHEMA_SERVICE_ADDR": "10.0.0.1:7"})
    assert cfg.source == str(path) and cfg.schema_service == "10.0.0.1:7"


def test_built_in_default_names_the_common_providers_and_starts_without_keys() -> None:
    cfg = config.load(None, env={})
    sources = {p.name: p.credential_source for p in cfg.providers}
    assert sources == {
        "openai": "OPENAI_API_KEY",
        "anthropic": "ANTHROPIC_API_KEY",
        "gemini": "GEMINI_API_KEY",
        "groq": "GROQ_API_KEY",
    }
    assert not any(p.configured for p in cfg.providers)
    assert len(cfg.routes["default"].targets) == 4
    assert config.load(None, env={"GEMINI_API_KEY": "k"}).provider("gemini").configured  # type: ignore[union-attr]


def test_openai_compatible_needs_a_base_url(tmp_path: Path) -> None:
    text = GOOD.replace("    type: openai\n    base_url: http://127.0.0.1:1/v1\n", "    type: openai_compatible\n")
    with pytest.raises(ConfigError, match=r"providers\[0\].base_url: is required for type openai_compatible"):
        config.load(write(tmp_path, text), env={})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:99999/v1", "127.0.0.1:99999: the port must be a number from 1 to 65535"),
        ("http://127.0.0.1:abc/v1", "127.0.0.1:abc: the port must be a number from 1 to 65535"),
        ("http://[zz::1]:5/v1", "malformed host"),
        ("ftp://127.0.0.1/v1", "must start with http:// or https://"),
        ("http:///v1", "has no host"),
    ],
)
def test_a_malformed_base_url_is_a_start_up_error(tmp_path: Path, url: str, message: str) -> None:
    """Accepted silently before, such a URL failed every attempt of the provider at run time instead."""
    text = GOOD.replace("base_url: http://127.0.0.1:1/v1", f'base_url: "{url}"')
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, text), env={})
    assert str(error.value).startswith(f"{tmp_path / 'gateway.yaml'}: providers[0].base_url: {message}")


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("providers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path, env={})


def test_environment_variables_in_values(tmp_path: Path) -> None:
    text = GOOD.replace("http://127.0.0.1:1/v1", "${SIMULATOR_URL:-http://127.0.0.1:8090}/v1")
    text = text.replace("schema_service: 127.0.0.1:50052", "schema_service: ${SCHEMA_HOST}:50052")
    path = write(tmp_path, text)
    cfg = config.load(path, env={"SCHEMA_HOST": "10.1.1.1"})
    assert cfg.providers[0].base_url == "http://127.0.0.1:8090/v1" and cfg.schema_service == "10.1.1.1:50052"
    cfg = config.load(path, env={"SCHEMA_HOST": "h", "SIMULATOR_URL": "http://sim:1"})
    assert cfg.providers[0].base_url == "http://sim:1/v1"
    with pytest.raises(ConfigError, match=f"{path}: schema_service: environment variable SCHEMA_HOST is not set"):
        config.load(path, env={})


def test_local_endpoints_may_take_no_key(tmp_path: Path) -> None:
    text = GOOD.replace("    api_key_env: ANTHROPIC_API_KEY\n", "    no_api_key: true\n")
    claude = config.load(write(tmp_path, text), env={}).providers[2]
    assert claude.configured and claude.credential_source == "none (no_api_key)"


def test_models_choose_how_they_are_asked_to_reason(tmp_path: Path) -> None:
    text = GOOD.replace("models: [{name: claude-x}]", "models: [{name: claude-x, reasoning: effort}, {name: claude-y}]")
    _, gemini, claude = config.load(write(tmp_path, text), env={}).providers
    assert [m.reasoning for m in claude.models] == ["effort", "budget"]
    assert gemini.models[0].reasoning == "budget"  # the default: a token budget


def test_transport_keys_reach_the_adapter(tmp_path: Path) -> None:
    from gateway_service.app import provider_config

    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    keys = (
        f"http_client: httpx\n    max_connections: 7\n    keepalive_expiry_s: 1.5\n    ca_bundle: {ca}\n"
        f"    client_cert: {ca}"
    )
    cfg = config.load(write(tmp_path, GOOD.replace("http_client: httpx", keys)), env={})
    transport = provider_config(cfg.providers[0]).transport
    assert (transport.http_client, transport.max_connections, transport.keepalive_expiry_s) == ("httpx", 7, 1.5)
    assert (transport.ca_bundle, transport.client_cert, transport.client_key) == (str(ca), str(ca), None)
    defaults = provider_config(cfg.providers[1]).transport
    assert (defaults.http_client, defaults.max_connections, defaults.keepalive_expiry_s) == ("aiohttp", 100, 5.0)


def test_the_adapters_defaults_are_the_configs() -> None:
    """Defaults are written once, in the config models; the adapter's config only repeats them."""
    from gateway_service.providers.base import ProviderConfig
    from gateway_service.providers.http import TransportSettings

    adapter = ProviderConfig(name="p", type="openai", base_url=None, api_key=None)
    for key in config.ProviderTimeouts.model_fields:
        assert getattr(adapter, key) == getattr(config.DEFAULT_TIMEOUTS, key), key
    transport = TransportSettings()
    for key in config.ProviderTransport.model_fields:
        assert getattr(transport, key) == getattr(config.DEFAULT_TRANSPORT, key), key


def test_a_cohere_model_cannot_claim_documents() -> None:
    model = {"name": "command-a", "capabilities": ["vision", "documents"]}
    data = {"providers": [{"name": "co", "type": "cohere", "api_key_env": "K", "models": [model]}]}
    with pytest.raises(ConfigError, match=r"providers\[0\]\.models\[0\]\.capabilities: cohere models take no"):
        config.parse(data, source="test", env={"K": "k"})
    model["capabilities"] = ["vision"]
    assert config.parse(data, source="test", env={"K": "k"}).providers[0].models[0].capabilities == ("vision",)
