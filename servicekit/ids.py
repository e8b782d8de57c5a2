"""The rule for caller-chosen identifiers (`request_id`, `user_id`), the same in both services.

1-128 visible ASCII characters (`!` to `~`): no spaces, no control characters, nothing that could split
or forge a log line, and short enough to copy into every log line of a call.
"""

from __future__ import annotations

import re

MAX_ID_CHARS = 128
ID_RE = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_ID_CHARS)
ID_RULE = f"1-{MAX_ID_CHARS} visible ASCII characters (! to ~, no spaces)"


def valid_id(text: str) -> bool:
    """Whether `text` follows the identifier rule (empty does not)."""
    return len(text) <= MAX_ID_CHARS and ID_RE.fullmatch(text) is not None
