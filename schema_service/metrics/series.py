"""Series identity: (caller, name, unit, labels) stored once in `metric_series`, referred to by a 64-bit id.

The id is a hash of the canonical form, so every replica derives the same id without a round trip.
With 64 bits, a collision among a million series has a probability of about 3e-8.

The writing caller is part of the identity (migration 016): another caller's values for the same name
and labels are another series, so no caller can write into the gateway's. The caller "" (a server
without callers, and every series written before 016) hashes as before 016, so its series go on.
No part holds NUL (validation and the caller-name rule refuse it), so the parts are unambiguous.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b


@dataclass(frozen=True, slots=True)
class Series:
    """One series as stored in `metric_series`; `labels_json` is canonical (keys sorted)."""

    series_id: int
    name: str
    unit: str
    labels_json: str
    caller: str = ""


def make_series(name: str, unit: str, labels: Iterable[tuple[str, str]], caller: str = "") -> Series:
    """The series of these parts, written by `caller`, with its id."""
    labels_json = json.dumps(dict(sorted(labels)), separators=(",", ":"), ensure_ascii=False)
    canonical = f"{name}\x00{unit}\x00{labels_json}"
    if caller:
        canonical = f"{caller}\x00{canonical}"
    digest = blake2b(canonical.encode(), digest_size=8).digest()
    return Series(int.from_bytes(digest, "big", signed=True), name, unit, labels_json, caller)
