"""`providers:` of the gateway config: each upstream, its key, its timeouts, its models and their prices.

The key comes from `api_key_env` or `api_key_file` (or `no_api_key: true` for local endpoints that
take none, such as Ollama or the simulator); it is read while the file is loaded, from the
environment the loader passes as validation context. A missing key leaves the provider unconfigured:
it still starts, and ListProviders names where the key was looked for.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from gateway_service.config.base import (
    DERIVED,
    Flag,
    Frozen,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Text,
    from_yaml,
    invalid,
    refuse_derived,
)
from gateway_service.config.limits import Budget
from servicekit.addresses import http_url_problem


def _http_url(value: str | None) -> str | None:
    problem = http_url_problem(value) if value else None
    if problem:
        raise PydanticCustomError("config", "{message}", {"message": problem})
    return value


ProviderType = Literal["openai", "gemini", "anthropic", "openai_compatible", "cohere"]
# Dollars per million tokens: exact decimals (a YAML 0.15 is the decimal 0.15), never summed as floats.
UsdPerMtok = Annotated[Decimal, Field(ge=0, le=1_000_000, decimal_places=9)]
# Anthropic takes a final assistant turn as a prefill the answer continues from; the others do not.
PREFILL_BY_DEFAULT = ("anthropic",)
# OpenAI-family models always take reasoning_effort, so only these provider types have the choice (docs/reasoning.md).
REASONING_FORM_TYPES = ("anthropic", "gemini")


class ModelSpec(Frozen):
    """One model of a provider."""

    name: Text
    """The provider's model name, as routes and `provider/model` name it; unique within the provider."""
    context_window: NonNegativeInt = 0
    """Tokens; after "context too long" only models with larger windows are tried (0 = unknown)."""
    input_usd_per_mtok: UsdPerMtok = Decimal(0)
    """Price of a million input tokens read neither from nor into a prompt cache (docs/costs.md)."""
    cached_input_usd_per_mtok: UsdPerMtok | None = None
    """Price of a million input tokens read from the provider's prompt cache (OpenAI `cached_tokens`, Anthropic
    `cache_read_input_tokens`, Gemini `cached_content_token_count`); unset means input_usd_per_mtok, which
    `--check-config` warns about."""
    cache_write_usd_per_mtok: UsdPerMtok | None = None
    """Price of a million input tokens written to the prompt cache (Anthropic `cache_creation_input_tokens`, 1.25x
    input for the 5-minute cache); unset means input_usd_per_mtok."""
    output_usd_per_mtok: UsdPerMtok = Decimal(0)
    """Price of a million output tokens."""
    reasoning_usd_per_mtok: UsdPerMtok | None = None
    """Price of a million reasoning ("thinking") tokens; unset means output_usd_per_mtok, as all three providers
    bill them today."""
    price_version: Text | None = None
    """Names this price entry in the usage ledger, so a price change never rewrites past rows; unset means a hash
    of the five prices."""
    assistant_prefill: Flag = False
    """Can continue a partial assistant turn (the default is true for anthropic models, false for the others)."""
    limits: Budget = ()
    """This model's upstream rate limits, on top of its provider's."""
    capabilities: tuple[Literal["vision", "documents"], ...] = ()
    """What the model takes besides text: `vision` (image parts), `documents` (PDF parts). A request with a part
    the model cannot take skips it (FAILURE_REASON_UNSUPPORTED_CONTENT) rather than sending it (docs/gateway.md)."""
    reasoning: Literal["budget", "effort"] = "budget"
    """Anthropic and Gemini models only: how the model is asked to reason: budget (a thinking token budget) or
    effort (a thinking level). See "Reasoning"."""


def price_version(model: ModelSpec) -> str:
    """The model's price_version, or a short hash of its five prices (the same prices give the same version)."""
    if model.price_version:
        return model.price_version
    prices = (
        model.input_usd_per_mtok,
        model.cached_input_usd_per_mtok,
        model.cache_write_usd_per_mtok,
        model.output_usd_per_mtok,
        model.reasoning_usd_per_mtok,
    )
    text = ",".join("-" if p is None else format(p.normalize(), "f") for p in prices)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ProviderTimeouts(Frozen):
    """The timeouts of one provider's attempts; the adapters' defaults are these (providers/base.ProviderConfig)."""

    timeout_s: NonNegativeFloat = 60.0
    """Whole attempt, at most."""
    connect_timeout_s: NonNegativeFloat = 5.0
    """TCP/TLS connect."""
    first_token_timeout_s: NonNegativeFloat = 30.0
    """From the start of the attempt to the first output (text, reasoning or a tool call's pieces)."""
    idle_timeout_s: NonNegativeFloat = 30.0
    """Longest gap between outputs once output flows; chunks without any (empty deltas, pings) do not reset it."""


DEFAULT_TIMEOUTS = ProviderTimeouts()


class ProviderTransport(Frozen):
    """How one provider's SDK reaches its upstream; the adapters' defaults are these (providers/http.py)."""

    http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    """HTTP stack under the SDK: aiohttp (the SDK's aiohttp-backed client) or httpx (the SDK's own httpx2 stack,
    which reuses no connection). See docs/performance.md."""
    max_connections: PositiveInt = 100
    """Connections to this provider's origin at once; more requests wait for one."""
    keepalive_expiry_s: NonNegativeFloat = 5.0
    """An idle connection older than this is closed rather than reused."""
    ca_bundle: Text | None = None
    """PEM file of the CAs to trust instead of the system's (self-hosted servers, corporate proxies)."""
    client_cert: Text | None = None
    """PEM file of the client certificate (chain) shown to the upstream, for mutual TLS."""
    client_key: Text | None = None
    """PEM file of its private key, when not in client_cert's file."""
    max_sse_line_bytes: PositiveInt = Field(default=1 << 20, le=3 << 20)
    """Longest line of a streamed answer; a longer one fails the attempt (malformed_response) as it is read."""
    max_sse_event_bytes: PositiveInt = Field(default=1 << 20, le=3 << 20)
    """Largest event of a streamed answer (its lines together), checked the same way. At most 3 MiB: the delta
    an event carries must fit in one gRPC message to the caller (4 MiB)."""
    max_body_bytes: PositiveInt = 1 << 20
    """An error response's body is read up to this much (its status still decides the failure)."""
    max_response_bytes: PositiveInt = 64 << 20
    """Every byte of one attempt's streamed answer, at most; past it the attempt fails as malformed_response."""


DEFAULT_TRANSPORT = ProviderTransport()


class ProviderSpec(ProviderTransport, ProviderTimeouts):
    """One upstream: exactly one of api_key_env, api_key_file or no_api_key: true."""

    name: Text
    """Unique; used in routes, provider_order and `provider/model`."""
    max_connections_per_caller: PositiveInt | None = None
    """Of `max_connections`, the most one caller's attempts may hold (default: half, at least 1); past it that
    caller's calls skip this provider (gateway_service/limits/shares.py), so no caller can take every one."""
    type: ProviderType
    """The wire format, each spoken through its official SDK."""
    models: tuple[ModelSpec, ...] = Field(min_length=1)
    """Non-empty, names unique."""
    base_url: Annotated[Text | None, AfterValidator(_http_url)] = None
    """Proxies, local servers, tests (required for openai_compatible); http:// or https://, checked at start."""
    api_version: Text | None = None
    """Gemini API version."""
    api_key_env: Text | None = None
    """Environment variable holding the key; unset or empty leaves the provider unconfigured (not an error)."""
    api_key_file: Text | None = None
    """File holding the key (e.g. under /var/run/secrets); missing or empty leaves the provider unconfigured."""
    no_api_key: Flag = False
    """A local endpoint that takes no key (Ollama, vLLM, the simulator)."""
    api_key: SecretStr | None = Field(None, json_schema_extra=DERIVED)
    """Read from api_key_env or api_key_file when the file is loaded; never written in the file."""
    limits: Budget = ()
    """The provider's upstream rate limits, shared by its models."""
    stream_options: Flag = True
    """openai_compatible only: send `stream_options: {include_usage: true}` (usage in a last chunk); false for
    endpoints that refuse the field (Cohere's compatibility API, older servers): usage is then what the server
    sends unasked, else estimated. See docs/providers.md."""

    @model_validator(mode="before")
    @classmethod
    def _key_and_model_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or not from_yaml(info):
            return data
        refuse_derived(data, "api_key", info)
        sources = [bool(data.get("api_key_env")), bool(data.get("api_key_file")), data.get("no_api_key") is True]
        if sum(sources) != 1:
            raise invalid("", "exactly one of api_key_env, api_key_file or no_api_key: true is required")
        env = info.context["env"] if isinstance(info.context, dict) else {}
        data = {**data, "api_key": _read_key(data, env)}
        if data.get("type") in PREFILL_BY_DEFAULT and isinstance(data.get("models"), list):
            data["models"] = [_prefill_by_default(m) for m in data["models"]]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ProviderSpec:
        if self.type == "openai_compatible" and not self.base_url:
            raise invalid("base_url", "is required for type openai_compatible")
        if self.type != "openai_compatible" and "stream_options" in self.model_fields_set:
            # Refused rather than ignored, as `reasoning` is: OpenAI itself always takes the field.
            raise invalid("stream_options", f"only openai_compatible providers take it, not {self.type}")
        if self.client_key and not self.client_cert:
            raise invalid("client_key", "needs client_cert")
        for key in ("ca_bundle", "client_cert", "client_key"):
            path = getattr(self, key)
            if path and not Path(path).is_file():
                raise invalid(key, f"no such file: {path}")
        for index, model in enumerate(self.models):
            if model.name in (m.name for m in self.models[:index]):
                raise invalid(f"models[{index}].name", f"duplicate name {model.name!r}")
            if self.type == "cohere" and "documents" in model.capabilities:
                # Cohere's chat API has no document part: every PDF routed here would fail INVALID_REQUEST after
                # the candidate was chosen, instead of being skipped for a model that takes it.
                raise invalid(f"models[{index}].capabilities", "cohere models take no documents (PDF parts)")
            if self.type not in REASONING_FORM_TYPES and "reasoning" in model.model_fields_set:
                # Refused rather than ignored: a key that changes nothing would let a reader believe it does.
                raise invalid(
                    f"models[{index}].reasoning",
                    f"only {' and '.join(REASONING_FORM_TYPES)} models take it; {self.type} models are always "
                    "asked with reasoning_effort",
                )
        return self

    @property
    def configured(self) -> bool:
        return self.api_key is not None

    @property
    def key_id(self) -> str:
        """A stable, non-secret name of the credential, so cooldowns follow the key ("" without a key)."""
        if self.api_key is None:
            return ""
        return hashlib.sha256(self.api_key.get_secret_value().encode()).hexdigest()[:12]

    @property
    def credential_source(self) -> str:
        """Where the key comes from: the environment variable's name, or the file's path."""
        return self.api_key_env or self.api_key_file or "none (no_api_key)"

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


def _read_key(data: dict[str, Any], env: Any) -> SecretStr | None:
    if data.get("no_api_key") is True:
        return SecretStr("no-key")  # the SDKs insist on some key; an endpoint that takes none ignores this one
    if data.get("api_key_env"):
        value = str(env.get(str(data["api_key_env"]), "")).strip()
        return SecretStr(value) if value else None
    try:
        value = Path(str(data["api_key_file"])).read_text().strip()
    except OSError:
        return None  # like a missing env var: the provider shows as unconfigured, naming the file
    return SecretStr(value) if value else None


def _prefill_by_default(model: Any) -> Any:
    if isinstance(model, dict) and model.get("assistant_prefill") is None:
        return {**model, "assistant_prefill": True}
    return model
