"""Reading the gateway config: the YAML file (PyYAML) or the built-in default, `${VAR}` values, then the models.

Every error is one ConfigError line naming the file and the key path, the way a person finds it in
the file: `gateway.yaml: providers[1].models[0].window: unknown key (allowed: name, context_window, ...)`.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway_service.config.base import DERIVED
from gateway_service.config.model import GatewayConfig
from gateway_service.errors import ConfigError
from servicekit.addresses import grpc_target_problem
from servicekit.settings import problem

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

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
    data = interpolate(data if data is not None else {}, env, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: <top level>: must be a mapping")
    if env.get("SCHEMA_SERVICE_ADDR"):
        problem = grpc_target_problem(env["SCHEMA_SERVICE_ADDR"])
        if problem:  # the variable's fault, not the file's
            raise ConfigError(f"SCHEMA_SERVICE_ADDR: {problem}")
        data = {**data, "schema_service": env["SCHEMA_SERVICE_ADDR"]}
    try:
        config = GatewayConfig.model_validate(data, context={"env": env})
    except ValidationError as exc:
        # An unknown key first: a misspelt key is also why a required one seems missing.
        first = min(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        raise ConfigError(f"{source}: {describe(first)}") from None
    return config.model_copy(update={"source": source})


def interpolate(data: Any, env: Mapping[str, str], source: str, path: str = "") -> Any:
    """`${NAME}` and `${NAME:-default}` in string values, from the environment; a missing one names its path."""
    if isinstance(data, dict):
        return {k: interpolate(v, env, source, f"{path}.{k}" if path else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env, source, f"{path}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is None:
            raise ConfigError(f"{source}: {path}: environment variable {name} is not set (write ${{{name}:-default}})")
        return default

    return _VARIABLE.sub(value, data)


def describe(error: ErrorDetails) -> str:
    """`key.path: message` for one pydantic error, in the words of the config file."""
    loc = list(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == "config" and ctx.get("key"):
        loc.append(ctx["key"])
    where = key_path(loc) or "<top level>"
    return f"{where}: {_message(error, loc)}"


def key_path(loc: list[int | str]) -> str:
    """('providers', 1, 'models', 0, 'name') -> providers[1].models[0].name"""
    text = ""
    for part in loc:
        if isinstance(part, int) or str(part).startswith("["):
            text += f"[{part}]" if isinstance(part, int) else str(part)
        else:
            text += f".{part}" if text else str(part)
    return text


def _message(error: ErrorDetails, loc: list[int | str]) -> str:
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    return problem(error)


def _allowed_keys(loc: list[int | str]) -> list[str]:
    """The keys the model at `loc` accepts (for "unknown key" errors), walking the models from the root."""
    current: Any = GatewayConfig
    for part in loc:
        model = _model_in(current)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            field = model.model_fields[part]
            current = typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        elif model is None:
            current = _item_type(current)
        else:
            return []
    model = _model_in(current)
    return [name for name, info in model.model_fields.items() if info.json_schema_extra != DERIVED] if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation names, through Optional, Annotated and the Budget type (RateLimits)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for meta in getattr(annotation, "__metadata__", ()):
        model = getattr(meta, "written_as", None)
        if model is not None:
            return typing.cast(type[BaseModel], model)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return next((m for m in map(_model_in, typing.get_args(annotation)) if m is not None), None)
    return None


def _item_type(annotation: Any) -> Any:
    """The element of a tuple, or the value of a mapping."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _item_type(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    return args[-1] if args and args[-1] is not Ellipsis else (args[0] if args else None)
