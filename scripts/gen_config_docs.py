"""Writes docs/configuration.md, the configuration reference of both services, from their pydantic models.

    python scripts/gen_config_docs.py          # rewrite the file
    python scripts/gen_config_docs.py --check  # exit 1 if the committed file differs (the tests run this)

Every key, flag, variable, default and meaning comes from the models (a field's docstring is its
meaning), and the commands a flag belongs to from the command-line parsers themselves, so the
reference cannot drift from what the services accept.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from gateway_service import __main__ as gateway_cli
from gateway_service.config import GatewayConfig, RateLimits, ServeSettings
from gateway_service.config.serve import GatewaySecurity
from schema_service import __main__ as schema_cli
from schema_service.config import MetricsSettings, MigrationSettings, SchemaSecurity, Settings, UsageSettings
from servicekit.settings import FLAG_USERS, LogSettings, default_text, env_name, extra

OUT = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

HEADER = """\
# Configuration reference

Generated from the settings models by `scripts/gen_config_docs.py` (do not edit by hand: change a
field's default or docstring and run the script; `make test` fails while this file is out of date).

Command-line settings are read from the flag, else the environment variable, else the default; an
empty variable counts as unset. A bad value stops start-up with exit code 2 and one line naming the
setting, its flag and its variable, e.g. `Config 'port' (--port, env SCHEMA_SERVICE_PORT) must be an
integer, got 'fifty'`. Secrets (keys, database and Redis URLs) print as `**********`.
"""


def cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().replace("|", "\\|")


def meaning(info: FieldInfo, where: str) -> str:
    if not info.description:
        raise SystemExit(f"{where}: a field without a docstring; its docstring is its meaning in the reference")
    return cell(info.description)


def settings_table(
    model: type[BaseSettings], prog: str, default: Callable[[str, FieldInfo], str] | None = None
) -> Iterator[str]:
    """One row per setting; the commands taking a flag as add_flags registered them while the parsers were built;
    `default(name, info)` words a default the model alone does not know."""
    programs = {p for users in FLAG_USERS.values() for p in users if p.startswith(prog + " ")}
    yield "| setting | flag | environment | default | meaning |"
    yield "|---|---|---|---|---|"
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseSettings):
            continue  # a nested group, listed on its own
        flag = extra(info).get("flag")
        used = {p for p in FLAG_USERS.get(flag or "", set()) if p.startswith(prog + " ")}
        where = f"`{flag}`" if flag else "(environment only)"
        if used:
            names = ", ".join(sorted(p.removeprefix(prog + " ") for p in used))
            where += " (" + ("every command" if used == programs and len(programs) > 1 else names) + ")"
        elif flag:
            where += " (before the command)"
        yield (
            f"| `{name}` | {where} | `{env_name(model, name)}` | {cell((default or _default)(name, info))} "
            f"| {meaning(info, f'{model.__name__}.{name}')} |"
        )


def _default(_: str, info: FieldInfo) -> str:
    return default_text(info)


def security_default(name: str, info: FieldInfo) -> str:
    """A security setting's default, per service where each service's model sets its own (its limits)."""
    gateway = default_text(GatewaySecurity.model_fields[name])
    schema = default_text(SchemaSecurity.model_fields[name])
    return gateway if gateway == schema else f"gateway {gateway}, schema service {schema}"


def type_text(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args if a is not type(None))
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is tuple:
        return "budget" if args and getattr(args[0], "__name__", "") == "Rate" else "list"
    if origin in (dict, Mapping) or annotation is dict:
        return "mapping"
    simple = {
        bool: "bool",
        int: "integer",
        float: "number",
        Decimal: "decimal",
        str: "string",
        SecretStr: "string (secret)",
    }
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return str(annotation)


def bounds(info: FieldInfo) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥"}
    found = [f"{words[k]} {getattr(m, k)}" for m in info.metadata for k in words if getattr(m, k, None) is not None]
    return f" ({', '.join(found)})" if found else ""


def yaml_default(info: FieldInfo) -> str:
    value = info.default
    if value is PydanticUndefined:
        return "required"
    if value is None or value == () or value == {}:
        return "none"
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds (through Optional, lists and mappings), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_of(arg)
        if found is not None:
            return found
    return None


def yaml_rows(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, info in model.model_fields.items():
        if extra(info).get("derived"):
            continue
        key = f"{prefix}{name}"
        annotation = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        kind = type_text(annotation)
        yield f"| `{key}` | {kind}{bounds(info)} | {yaml_default(info)} | {meaning(info, key)} |"
        nested = model_of(info.annotation)
        if nested is not None and kind != "budget":
            list_like = typing.get_origin(info.annotation) is tuple
            yield from yaml_rows(nested, f"{key}[]." if list_like else f"{key}.")


def render() -> str:
    parts = [HEADER]
    gateway_cli.build_parser(), schema_cli.build_parser()  # they register which command takes which flag
    parts.append(
        "## gateway-service\n\n`gateway-service [--log-level LEVEL] serve [flags]`; `serve --check-config` "
        "validates the configuration, prints a summary (secrets as `**********`) and exits.\n"
    )
    parts += [*settings_table(LogSettings, "gateway-service"), ""]
    parts += [*settings_table(ServeSettings, "gateway-service"), ""]
    parts.append(
        "## Gateway config file\n\nThe YAML file given by `--config` (`GATEWAY_CONFIG`). String values may "
        "use `${NAME}` or `${NAME:-default}` from the environment; a key written with no value means its "
        "default. `[]` marks a list of sections.\n"
    )
    parts += ["| key | type | default | meaning |", "|---|---|---|---|", *yaml_rows(GatewayConfig, ""), ""]
    parts.append(
        "A **budget** (a provider's or model's `limits`, `limits.users`, each `limits.user_overrides` "
        "entry) is a mapping of rates; leave a rate out for no limit:\n"
    )
    parts += ["| key | type | meaning |", "|---|---|---|"]
    parts += [f"| `{n}` | integer (> 0) | {meaning(i, n)} |" for n, i in RateLimits.model_fields.items()]
    parts.append("\n## schema-service\n\n`schema-service [--log-level LEVEL] COMMAND [flags]`.\n")
    parts += [*settings_table(LogSettings, "schema-service"), ""]
    parts += [*settings_table(Settings, "schema-service"), ""]
    parts.append("### Security settings (`serve` of both services)\n")
    parts += [*settings_table(SchemaSecurity, "schema-service", security_default), ""]
    parts.append("### Migration settings\n")
    parts += [*settings_table(MigrationSettings, "schema-service"), ""]
    parts.append("### Metrics settings\n")
    parts += [*settings_table(MetricsSettings, "schema-service"), ""]
    parts.append("### Usage ledger settings\n")
    parts += [*settings_table(UsageSettings, "schema-service"), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the models")
    parser.add_argument("--path", type=Path, default=OUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != text:
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(args.path), "models", lineterm="")
            print("\n".join(list(diff)[:60]), file=sys.stderr)
            print(f"{args.path} is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
