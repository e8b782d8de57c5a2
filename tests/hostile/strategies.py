"""Hypothesis strategies for any protobuf request: random and adversarial values for every field, by descriptor.

Strings lean to the hostile (NUL, invalid-looking escapes, right-to-left marks, huge, path- and id-like), numbers
to the extremes (int64 ends, NaN, infinities, 1e300), enums to unknown values, nesting up to a few levels
(`google.protobuf.Struct` included), and raw bytes are mutated after serialization.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor, message, message_factory
from hypothesis import strategies as st

F = descriptor.FieldDescriptor
HOSTILE_TEXT = [
    "",
    " ",
    "default",
    "sim/gpt-4o-mini",
    "a" * 300,
    "x" * 70_000,
    "\x00",
    "nul\x00inside",
    "é" * 50,
    "\u202e\u0000",
    "\ud7ff\ue000",
    "../../etc/passwd",
    "%s%n%x",
    '{"a": NaN}',
    "[[fault:500]]",
    "'; DROP TABLE x;--",
    "\n\r\t",
    "🙂" * 30,
    "9" * 40,
    "-1",
    "NaN",
    "Infinity",
]
INT64 = st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 253_402_300_800, -62_135_596_801])
FLOATS = st.sampled_from([0.0, -0.0, 1e300, -1e300, 1e200, float("nan"), float("inf"), float("-inf"), 5e-324])


def text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40))


def _scalar(field: descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_STRING:
        return text()
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_DOUBLE,):
        return st.one_of(FLOATS, st.floats())
    if kind == F.TYPE_FLOAT:
        return st.one_of(st.sampled_from([float("nan"), float("inf"), 0.0]), st.floats(width=32))
    if kind == F.TYPE_ENUM:
        return st.integers(-3, 40)
    if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return st.one_of(INT64, st.integers(-(2**63), 2**63 - 1))
    if kind in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if kind in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    return st.integers(-(2**31), 2**31 - 1)


def messages(desc: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[message.Message]:
    """Messages of type `desc`, each field set or not, nested messages up to 4 levels."""
    cls = message_factory.GetMessageClass(desc)

    @st.composite
    def build(draw: st.DrawFn) -> message.Message:
        built = cls()
        for field in desc.fields:
            if not draw(st.booleans()):
                continue
            _set(draw, built, field, depth)
        return built

    return build()


def _set(draw: st.DrawFn, built: message.Message, field: descriptor.FieldDescriptor, depth: int) -> None:
    target = getattr(built, field.name)
    sub = field.message_type
    if sub is not None and sub.GetOptions().map_entry:
        key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
        for key in draw(st.lists(_scalar(key_field), max_size=3)):
            if value_field.message_type is None:
                target[key] = draw(_scalar(value_field))
            elif depth < 4:
                target[key].CopyFrom(draw(messages(value_field.message_type, depth + 1)))
        return
    if field.is_repeated:
        if sub is None:
            target.extend(draw(st.lists(_scalar(field), max_size=4)))
        elif depth < 4:
            for item in draw(st.lists(messages(sub, depth + 1), max_size=3)):
                target.add().CopyFrom(item)
        return
    if sub is None:
        setattr(built, field.name, draw(_scalar(field)))
    elif depth < 4:
        target.CopyFrom(draw(messages(sub, depth + 1)))


@st.composite
def mutated(draw: st.DrawFn, desc: descriptor.Descriptor) -> bytes:
    """A serialized message with a few bytes flipped, cut or inserted: mostly undecodable, sometimes not."""
    raw = bytearray(draw(messages(desc)).SerializeToString())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and raw and at < len(raw):
            raw[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del raw[at:]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


def payloads(desc: descriptor.Descriptor) -> st.SearchStrategy[bytes]:
    """Raw bytes, mutated messages and well-formed adversarial messages, in about equal shares."""
    return st.one_of(
        st.binary(max_size=256),
        mutated(desc),
        messages(desc).map(lambda m: m.SerializeToString()),
    )
