"""Checks of JSON and Struct values against the request bounds (config `requests:`, docs/gateway.md#request-bounds).

A request over a limit is refused with INVALID_ARGUMENT naming the field. The size of a whole request is
bounded before it is read, by the server's `max_request_bytes` (gRPC answers RESOURCE_EXHAUSTED "Received
message larger than max").
"""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf import struct_pb2

from gateway_service.config import RequestBounds

# The limits are settings of the gateway config (`requests:`); these are its defaults.
DEFAULT_BOUNDS = RequestBounds()


def json_problem(text: str, max_depth: int) -> str | None:
    """Why `text` is not an acceptable JSON object (None when it is): syntax, NaN/Infinity, depth."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        return f"nested more than {max_depth} levels deep"
    except ValueError as exc:
        return "must be a JSON object" if "NaN" not in str(exc) else "numbers must be finite (no NaN or Infinity)"
    if not isinstance(value, dict):
        return "must be a JSON object"
    if _depth(value, max_depth) > max_depth:
        return f"nested more than {max_depth} levels deep"
    return None


def struct_problem(struct: struct_pb2.Struct, max_depth: int) -> str | None:
    """Why a Struct cannot be sent on as JSON (None when it can): a NaN or infinite number, or too deep."""
    stack: list[tuple[Any, int]] = [(struct, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            return f"nested more than {max_depth} levels deep"
        if isinstance(value, struct_pb2.Struct):
            stack.extend((v, depth) for v in value.fields.values())
            continue
        if isinstance(value, struct_pb2.ListValue):
            stack.extend((v, depth) for v in value.values)
            continue
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            return "numbers must be finite (no NaN or Infinity)"
        if kind == "struct_value":
            stack.append((value.struct_value, depth + 1))
        elif kind == "list_value":
            stack.append((value.list_value, depth + 1))
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (NaN)")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of decoded JSON (an object or array is one level), counted no further than limit + 1."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest
