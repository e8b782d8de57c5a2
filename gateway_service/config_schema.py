"""A small typed reader over loaded YAML that names the file and key path in every error."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from gateway_service.errors import ConfigError

T = TypeVar("T")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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


class Secret:
    """A credential that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "**********"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Reader:
    """One YAML mapping at `path` inside `source`."""

    def __init__(self, data: Any, source: str, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {path or '<top level>'}: must be a mapping")
        self.data: dict[str, Any] = data
        self.source = source
        self.path = path

    def _at(self, key: str) -> str:
        if not key:
            return self.path or "<top level>"
        if key.startswith("["):
            return f"{self.path}{key}"
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self._at(key)}: {message}")

    def only(self, *allowed: str) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.error(str(key), f"unknown key (allowed: {', '.join(allowed)})")

    def keys(self) -> Iterable[str]:
        return [str(k) for k in self.data]

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "is required")
            return None
        return self.data[key]

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or (required and not value):
            raise self.error(key, "must be a non-empty string")
        return value

    def required_text(self, key: str) -> str:
        value = self.text(key, required=True)
        assert value is not None  # text() raised otherwise
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.required_text(key) if default is None else (self.text(key) or default)
        if value not in options:
            raise self.error(key, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.error(key, f"must be a non-negative number, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def items(self, key: str, *, required: bool = False) -> list[Reader]:
        value = self._get(key, required)
        if value is None:
            return []
        if not isinstance(value, list) or (required and not value):
            raise self.error(key, "must be a non-empty list")
        return [Reader(item, self.source, self._at(f"{key}[{i}]")) for i, item in enumerate(value)]

    def str_list(self, key: str) -> list[str]:
        value = self._get(key, True)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a list of `provider/model` strings")
        return value

    def mapping(self, key: str) -> Reader:
        return Reader(self._get(key, False) or {}, self.source, self._at(key))

    def section(self, key: str, cls: type[T]) -> T:
        """A flat section of numbers into dataclass `cls`, defaults for what is missing."""
        section = self.mapping(key)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        section.only(*fields)
        values: dict[str, Any] = {}
        for name, spec in fields.items():
            default = spec.default
            number = section.number(name, float(default))  # type: ignore[arg-type]
            values[name] = int(number) if isinstance(default, int) else number
        return cls(**values)
