"""Gateway settings: a YAML file (or the built-in default) plus the environment -> frozen dataclasses.

Everything is validated at start-up: an unknown key, a route naming an unknown provider or
model, a bad value or a missing file raises ConfigError naming the file and the key path
(`providers[1].models[0].context_window`). String values may use `${NAME}` or `${NAME:-default}`
from the environment. Keys come from `api_key_env` or `api_key_file` (or `no_api_key: true` for local
endpoints that take none, such as Ollama or the simulator);
a missing key leaves the provider unconfigured (it still starts) and secrets print as `**********`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway_service.config_limits import Budget, LimitSettings, budget, limit_settings
from gateway_service.config_schema import Reader, interpolate
from gateway_service.config_schema import Secret as Secret  # re-exported: callers build ProviderSpec keys
from gateway_service.errors import ConfigError

PROVIDER_TYPES = ("openai", "gemini", "anthropic", "openai_compatible")
HTTP_CLIENTS = ("gateway", "httpx")  # the transport under the SDK: ours, or the SDK's own httpx2 stack
# Anthropic takes a final assistant turn as a prefill the answer continues from; the others do not.
PREFILL_BY_DEFAULT = ("anthropic",)
# How a model is asked to reason: a token budget, or an effort level (README "Reasoning"). OpenAI-family models
# always take reasoning_effort, so only these provider types have the choice.
REASONING_FORMS = ("budget", "effort")
REASONING_FORM_TYPES = ("anthropic", "gemini")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    context_window: int = 0
    input_usd_per_mtok: float = 0.0
    output_usd_per_mtok: float = 0.0
    assistant_prefill: bool = False
    limits: Budget = ()  # this model's upstream rate limits, on top of the provider's
    reasoning: str = "budget"  # budget: a thinking token budget | effort: a thinking level (anthropic, gemini)


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    type: str
    models: tuple[ModelSpec, ...]
    base_url: str | None = None
    api_version: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_key: Secret | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    limits: Budget = ()  # the provider's upstream rate limits, shared by its models
    http_client: str = "gateway"  # gateway: the gateway's HTTP/1.1 transport | httpx: the SDK's default stack

    @property
    def configured(self) -> bool:
        return self.api_key is not None

    @property
    def credential_source(self) -> str:
        """Where the key comes from: the environment variable's name, or the file's path."""
        if self.api_key_env or self.api_key_file:
            return self.api_key_env or str(self.api_key_file)
        return "none (no_api_key)"

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


@dataclass(frozen=True)
class FailoverSettings:
    """How attempts are run (README "Failover")."""

    min_attempt_budget_s: float = 0.05
    default_deadline_s: float = 300.0
    commit_window_ms: int = 0
    commit_window_tokens: int = 0
    rate_limit_cooldown_s: float = 1.0
    quota_cooldown_s: float = 3600.0
    auth_cooldown_s: float = 300.0
    breaker_failures: int = 5
    breaker_open_s: float = 30.0
    stats_window: int = 200


@dataclass(frozen=True)
class TelemetrySettings:
    buffer_size: int = 10_000
    batch_size: int = 500
    flush_interval_s: float = 1.0


@dataclass(frozen=True)
class GatewayConfig:
    providers: tuple[ProviderSpec, ...]
    routes: Mapping[str, tuple[tuple[str, str], ...]]
    schema_service: str | None = None
    failover: FailoverSettings = field(default_factory=FailoverSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    source: str = "<built-in default>"

    def provider(self, name: str) -> ProviderSpec | None:
        return next((p for p in self.providers if p.name == name), None)


DEFAULT_CONFIG_YAML = """
providers:
  - {name: openai, type: openai, api_key_env: OPENAI_API_KEY,
     models: [{name: gpt-4o-mini, context_window: 128000, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.60}]}
  - {name: anthropic, type: anthropic, api_key_env: ANTHROPIC_API_KEY,
     models: [{name: claude-3-5-haiku-latest, context_window: 200000,
               input_usd_per_mtok: 0.80, output_usd_per_mtok: 4.00}]}
  - {name: gemini, type: gemini, api_key_env: GEMINI_API_KEY,
     models: [{name: gemini-2.0-flash, context_window: 1000000,
               input_usd_per_mtok: 0.10, output_usd_per_mtok: 0.40}]}
  - {name: groq, type: openai_compatible, base_url: "https://api.groq.com/openai/v1", api_key_env: GROQ_API_KEY,
     models: [{name: llama-3.1-8b-instant, context_window: 131072,
               input_usd_per_mtok: 0.05, output_usd_per_mtok: 0.08}]}
routes:
  default: [openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest, gemini/gemini-2.0-flash,
            groq/llama-3.1-8b-instant]
"""


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Settings from `path` (else GATEWAY_CONFIG, else the built-in default) and the environment."""
    env = os.environ if env is None else env
    path = path or env.get("GATEWAY_CONFIG") or None
    if path is None:
        return parse(yaml.safe_load(DEFAULT_CONFIG_YAML), source="<built-in default>", env=env)
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return parse(data, source=str(file), env=env)


def parse(data: Any, *, source: str, env: Mapping[str, str]) -> GatewayConfig:
    """Validate a loaded YAML document; every error names `source` and the key path."""
    root = Reader(interpolate(data if data is not None else {}, env, source), source, "")
    root.only("schema_service", "providers", "routes", "failover", "telemetry", "limits")
    providers = tuple(_provider(item, env) for item in root.items("providers", required=True))
    _unique([(p.name, r) for p, r in zip(providers, root.items("providers", required=True), strict=True)])
    routes = _routes(root.mapping("routes"), providers)
    schema_service = env.get("SCHEMA_SERVICE_ADDR") or root.text("schema_service")
    return GatewayConfig(
        providers=providers,
        routes=routes,
        schema_service=schema_service or None,
        failover=root.section("failover", FailoverSettings),
        telemetry=root.section("telemetry", TelemetrySettings),
        limits=limit_settings(root),
        source=source,
    )


def _provider(item: Reader, env: Mapping[str, str]) -> ProviderSpec:
    item.only(
        "name", "type", "base_url", "api_version", "api_key_env", "api_key_file", "no_api_key", "models",
        "timeout_s", "connect_timeout_s", "first_token_timeout_s", "idle_timeout_s", "limits", "http_client",
    )  # fmt: skip
    name = item.required_text("name")
    kind = item.choice("type", PROVIDER_TYPES)
    key_env, key_file = item.text("api_key_env"), item.text("api_key_file")
    keyless = item.flag("no_api_key", False)
    if int(bool(key_env)) + int(bool(key_file)) + int(keyless) != 1:
        raise item.error("", "exactly one of api_key_env, api_key_file or no_api_key: true is required")
    if kind == "openai_compatible" and not item.text("base_url"):
        raise item.error("base_url", "is required for type openai_compatible")
    models = tuple(_model(m, kind) for m in item.items("models", required=True))
    _unique([(m.name, r) for m, r in zip(models, item.items("models", required=True), strict=True)])
    return ProviderSpec(
        name=name,
        type=kind,
        models=models,
        base_url=item.text("base_url"),
        api_version=item.text("api_version"),
        api_key_env=key_env,
        api_key_file=key_file,
        # The SDKs insist on some key; an endpoint that takes none ignores this placeholder.
        api_key=Secret("no-key") if keyless else _read_key(key_env, key_file, env),
        timeout_s=item.number("timeout_s", 60.0),
        connect_timeout_s=item.number("connect_timeout_s", 5.0),
        first_token_timeout_s=item.number("first_token_timeout_s", 30.0),
        idle_timeout_s=item.number("idle_timeout_s", 30.0),
        limits=budget(item),
        http_client=item.choice("http_client", HTTP_CLIENTS, "gateway"),
    )


def _model(item: Reader, provider_type: str) -> ModelSpec:
    item.only(
        "name", "context_window", "input_usd_per_mtok", "output_usd_per_mtok", "assistant_prefill", "limits",
        "reasoning",
    )  # fmt: skip
    return ModelSpec(
        name=item.required_text("name"),
        context_window=int(item.number("context_window", 0)),
        input_usd_per_mtok=item.number("input_usd_per_mtok", 0.0),
        output_usd_per_mtok=item.number("output_usd_per_mtok", 0.0),
        assistant_prefill=item.flag("assistant_prefill", provider_type in PREFILL_BY_DEFAULT),
        limits=budget(item),
        reasoning=_reasoning_form(item, provider_type),
    )


def _reasoning_form(item: Reader, provider_type: str) -> str:
    if provider_type not in REASONING_FORM_TYPES and item.text("reasoning") is not None:
        # Refused rather than ignored: a key that changes nothing would let a reader believe it does.
        raise item.error("reasoning", f"only {' and '.join(REASONING_FORM_TYPES)} models take it; {provider_type} "
                                      "models are always asked with reasoning_effort")
    return item.choice("reasoning", REASONING_FORMS, "budget")


def _read_key(key_env: str | None, key_file: str | None, env: Mapping[str, str]) -> Secret | None:
    if key_env:
        value = env.get(key_env, "").strip()
        return Secret(value) if value else None
    try:
        value = Path(str(key_file)).read_text().strip()
    except OSError:
        return None  # like a missing env var: the provider shows as unconfigured, naming the file
    return Secret(value) if value else None


def _unique(named: list[tuple[str, Reader]]) -> None:
    seen: set[str] = set()
    for name, reader in named:
        if name in seen:
            raise reader.error("name", f"duplicate name {name!r}")
        seen.add(name)


def _routes(routes: Reader, providers: tuple[ProviderSpec, ...]) -> dict[str, tuple[tuple[str, str], ...]]:
    by_name = {p.name: p for p in providers}
    result: dict[str, tuple[tuple[str, str], ...]] = {}
    for alias in routes.keys():
        targets: list[tuple[str, str]] = []
        for index, target in enumerate(routes.str_list(alias)):
            where = f"{alias}[{index}]"
            provider_name, _, model_name = target.partition("/")
            provider = by_name.get(provider_name)
            if provider is None:
                raise routes.error(where, f"unknown provider {provider_name!r} in {target!r}")
            if provider.model(model_name) is None:
                raise routes.error(where, f"unknown model {model_name!r} of provider {provider_name!r}")
            targets.append((provider_name, model_name))
        if not targets:
            raise routes.error(alias, "a route needs at least one target")
        result[alias] = tuple(targets)
    return result
