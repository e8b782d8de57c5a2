"""Settings of a service's command line: its flags, then the environment, then the model's defaults.

Each service describes its settings once, as a pydantic-settings model: the field holds the default,
its docstring the meaning (shown by `--help` and in docs/configuration.md), the environment variable
comes from the model's prefix (or the field's alias), and `setting(..., flag="--port")` names its
command-line flag. argparse only parses the flags (it has no defaults of its own, so an unset flag leaves the
environment or the default in force); `build` validates everything at once and turns a pydantic
error into one line naming the setting: `Config 'port' (--port, env SCHEMA_SERVICE_PORT) must be
an integer, got 'fifty'`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError, PydanticUndefined
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)

# flag -> the programs taking it ("schema-service migrate"), as add_flags registered them; the reference lists them.
FLAG_USERS: dict[str, set[str]] = {}


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it (start-up exits with code 2)."""


class ServiceSettings(BaseSettings):
    """Frozen, unknown names refused, empty environment variables treated as unset."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, use_attribute_docstrings=True, env_ignore_empty=True
    )


def setting(
    default: Any = PydanticUndefined,
    *,
    flag: str | None = None,
    env: str | None = None,
    const: bool | None = None,
    metavar: str | None = None,
    shown: str | None = None,
    **field: Any,
) -> Any:
    """A field with its command-line `flag` (a switch storing `const` when given) and its environment variable
    `env` when that is not the model's prefix + the field's name; `shown` is the default as help and the reference
    print it, when the value itself is not what a reader should see (an absolute path of this machine)."""
    return Field(
        default,
        validation_alias=AliasChoices(env) if env else None,
        json_schema_extra={"flag": flag, "const": const, "metavar": metavar, "shown": shown},
        **field,
    )


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LogSettings(ServiceSettings):
    """The log level, shared by every command of both services."""

    log_level: Annotated[LogLevel, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)] = setting(
        "INFO", flag="--log-level", env="LOG_LEVEL", metavar="LEVEL"
    )
    """DEBUG, INFO, WARNING, ERROR or CRITICAL (any case); logs are JSON lines on stderr."""


def extra(info: FieldInfo) -> dict[str, Any]:
    value = info.json_schema_extra
    return value if isinstance(value, dict) else {}


def env_name(model: type[BaseSettings], name: str) -> str:
    """The environment variable a field is read from."""
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1])
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def default_text(info: FieldInfo) -> str:
    """The default as a person would write it on the command line ("none" when there is none)."""
    if extra(info).get("shown"):
        return str(extra(info)["shown"])
    if info.default_factory is not None:
        return "see below"
    value = info.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text(model: type[BaseSettings], name: str) -> str:
    """The meaning, the variable and the default as the flag sees it: a switch is off unless given (`--no-migrate`
    sets migrate_on_start false, and its variable does the same with `=false`)."""
    info = model.model_fields[name]
    meaning = re.sub(r"\s+", " ", info.description or "").strip()
    const = extra(info).get("const")
    if const is not None:
        variable = f"{env_name(model, name)}={str(const).lower()}"
        default = "on" if info.default == const else "off"
        return f"{meaning} (env {variable}; default {default})".replace("%", "%%")
    return f"{meaning} (env {env_name(model, name)}; default {default_text(info)})".replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser, model: type[BaseSettings], names: Sequence[str] | None = None) -> None:
    """A flag for each of `names` (every field that has one by default), with no default of argparse's own."""
    for name, info in model.model_fields.items():
        spec = extra(info)
        if not spec.get("flag") or (names is not None and name not in names):
            continue
        FLAG_USERS.setdefault(spec["flag"], set()).add(parser.prog)
        if spec["const"] is not None:
            parser.add_argument(
                spec["flag"],
                dest=name,
                action="store_const",
                const=spec["const"],
                default=None,
                help=help_text(model, name),
            )
        else:
            parser.add_argument(
                spec["flag"], dest=name, default=None, metavar=spec["metavar"], help=help_text(model, name)
            )


def flags_given(model: type[BaseSettings], args: argparse.Namespace) -> dict[str, Any]:
    """The fields set by their own flags on this command line (another flag's value of the same name is not one)."""
    return {
        name: getattr(args, name)
        for name, info in model.model_fields.items()
        if extra(info).get("flag") and getattr(args, name, None) is not None
    }


def build(model: type[S], args: argparse.Namespace | None = None, **values: Any) -> S:
    """The settings from the flags in `args` (and `values`), else the environment, else the defaults."""
    given = {**(flags_given(model, args) if args is not None else {}), **values}
    try:
        return model(**given)
    except ValidationError as exc:
        raise SettingsError(describe(model, exc.errors()[0])) from None


def from_command_line(model: type[S], args: argparse.Namespace) -> S:
    """A command's settings, the one way both services build them: each section that is settings itself
    (`security`, `migration`, `metrics`, ...: the class its default is made from) from the same flags and its
    own environment, then the model around them; flag over variable over default throughout, and a bad value
    is a SettingsError naming the setting, its flag and its variable."""
    sections = {name: from_command_line(kind, args) for name, kind in _sections(model).items()}
    return build(model, args, **sections)


def _sections(model: type[BaseSettings]) -> dict[str, type[BaseSettings]]:
    found = {}
    for name, info in model.model_fields.items():
        for kind in (info.default_factory, info.annotation):
            if isinstance(kind, type) and issubclass(kind, BaseSettings):
                found[name] = kind
                break
    return found


def invalid(key: str, message: str) -> PydanticCustomError:
    """An error about `key` (relative to the model that raises it: `base_url`, `default[1]`, `metrics.max_batch_bytes`)
    for a check that involves more than one field, so the message still names the key it is about."""
    return PydanticCustomError("config", "{message}", {"key": key, "message": message})


def describe(model: type[BaseSettings], error: ErrorDetails) -> str:
    """`Config 'port' (--port, env X) <message>` for one pydantic error about a field of `model`."""
    loc = [str(part) for part in error["loc"]]
    key = (error.get("ctx") or {}).get("key")
    if error["type"] == "config" and key:
        loc += str(key).split(".")
    if not loc:
        return f"Config: {problem(error)}"
    name = _field_name(model, loc[0])
    if error["type"] == "missing" and name in model.model_fields:
        flag = extra(model.model_fields[name]).get("flag")
        return f"Config '{env_name(model, name)}' is missing" + (f" (or pass {flag})" if flag else "")
    path = ".".join([name, *loc[1:]])
    where = _where(model, [name, *loc[1:]])
    return f"Config '{path}'" + (f" ({where})" if where else "") + f" {problem(error)}"


def _field_name(model: type[BaseSettings], name: str) -> str:
    """The field a location names: itself, or the field read from the environment variable of that name."""
    if name in model.model_fields:
        return name
    return next((n for n in model.model_fields if env_name(model, n).lower() == name.lower()), name)


def _where(model: type[BaseSettings], loc: list[str]) -> str:
    """`--flag, env NAME` of the field at `loc`, looking into nested settings (`metrics.max_batch_bytes`)."""
    info = model.model_fields.get(loc[0])
    if info is None:
        return ""
    nested = info.annotation
    if len(loc) > 1 and isinstance(nested, type) and issubclass(nested, BaseSettings):
        return _where(nested, [_field_name(nested, loc[1]), *loc[2:]])
    return ", ".join(x for x in (extra(info).get("flag"), f"env {env_name(model, loc[0])}") if x)


_KINDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "path_type": "a path",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}


def problem(error: ErrorDetails) -> str:
    """What is wrong with a value, in words: `must be an integer, got 'fifty'`; both services' config errors."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("config", "value_error"):
        return str(ctx.get("message") or ctx.get("error") or error["msg"])
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx["expected"]))  # "'memory' or 'redis'"
        return f"must be one of {', '.join(options)}, got {got!r}"
    if kind == "greater_than_equal" and ctx.get("ge") == 0:
        return f"must be a non-negative number, got {got!r}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = ctx.get("ge", ctx.get("gt", ctx.get("le", ctx.get("lt"))))
        words = {
            "greater_than_equal": "at least",
            "greater_than": "greater than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }
        return f"must be {words[kind]} {bound:g}, got {got!r}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "string_too_short":
        return "must be a non-empty string"
    if kind in _KINDS:
        if _KINDS[kind] == "a mapping":
            return "must be a mapping"
        return f"must be {_KINDS[kind]}, got {got!r}"
    return str(error["msg"])
