"""What every model of the gateway config shares: frozen, unknown keys refused, numbers strictly typed.

The YAML is read by PyYAML and validated by these pydantic models; the loader (loading.py) turns
pydantic's errors into `file: key.path: message` lines. A check that involves more than one field
raises servicekit.settings.invalid(key, message) so the error still names the key it is about.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, model_validator
from pydantic.config import JsonDict

from servicekit.settings import invalid as invalid  # re-exported: the sections raise it

NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveInt = Annotated[int, Strict(), Field(ge=1)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict(), Field(min_length=1)]


def from_yaml(info: ValidationInfo) -> bool:
    """Whether the data being validated came from a config file (the loader passes its environment as context)."""
    return isinstance(info.context, dict) and "env" in info.context


class Frozen(BaseModel):
    """A config section: immutable once validated, every key known."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _absent_when_empty(cls, data: Any) -> Any:
        """A key written with no value (`key:` or `${VAR:-}`) means the default, as if left out."""
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items() if v is not None and v != ""}


DERIVED: JsonDict = {"derived": True}  # json_schema_extra of a field the loader fills in: not a key of the file


def refuse_derived(data: dict[str, Any], key: str, info: ValidationInfo) -> None:
    """A field the loader fills in (a provider's key, the file's name) may not be written in the file."""
    if from_yaml(info) and key in data:
        raise invalid(key, "unknown key (the loader sets it; it cannot be written)")
