"""The callers file: who may call, how each one proves it, and with which roles.

    callers:
      - {name: billing-api, token_sha256: "<hex sha-256 of the token>", roles: [chat, providers.read]}
      - {name: web-frontend, tls_subject: "CN=web-frontend", roles: [chat], limits: {requests_per_second: 50}}
    ...

A caller has exactly one credential: a bearer token (only its SHA-256 is stored, so the file holds no
secret) or the subject of a client certificate signed by the server's client CA (`--tls-client-ca`).
`limits` are request rates the gateway enforces per caller. The file is YAML (PyYAML) validated with
pydantic; `CallersSource` reloads it when its modification time changes, keeping the last good one
when the new one is invalid.

A version is taken only whole: a regular file (a FIFO or device is refused, never waited on) of at most
MAX_FILE_BYTES, unchanged while it was read, and ending with YAML's end-of-document line `...` (last but
comments), so a file caught half-written or cut short is refused rather than loaded. A cut can fall
anywhere and still leave YAML that fits the schema: inside a value (a `tls_subject` cut short names a
shorter subject), or at a line break (the entries after it, or a caller's `limits`, silently gone); only
the writer's own last line tells a whole file from a prefix of it. `yaml.safe_dump(..., explicit_end=True)`
writes it. Write the file in one step too: a rename, or a Kubernetes Secret (which swaps a symlink).
Reloads read the file in a worker thread, so a hung filesystem holds that thread, never the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import ErrorDetails

log = logging.getLogger(__name__)

Role = Literal[
    "chat",
    "providers.read",
    "metrics.write",
    "metrics.read",
    "metrics.read_all",
    "migrations.read",
    "migrations.admin",
    "usage.write",
    "usage.read",
    "usage.read_all",
]
RateName = Literal["requests_per_second", "requests_per_minute", "requests_per_hour", "requests_per_day"]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class SetupError(ValueError):
    """A security setting (callers file, certificates, listen address) is unusable; the message says which."""


class Caller(BaseModel):
    """One entry of the callers file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    token_sha256: Sha256Hex | None = None
    tls_subject: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    roles: tuple[Role, ...] = Field(min_length=1)
    limits: dict[RateName, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_credential(self) -> Caller:
        if (self.token_sha256 is None) == (self.tls_subject is None):
            raise ValueError("give exactly one of token_sha256 and tls_subject")
        return self


class CallersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    callers: tuple[Caller, ...]

    @model_validator(mode="after")
    def _unique(self) -> CallersFile:
        for field in ("name", "token_sha256", "tls_subject"):
            values = [getattr(c, field) for c in self.callers if getattr(c, field) is not None]
            if len(values) != len(set(values)):
                raise ValueError(f"two callers share a {field}")
        return self


class Callers:
    """The callers of one version of the file, looked up without revealing which names exist."""

    def __init__(self, callers: tuple[Caller, ...]) -> None:
        self.by_token = [(bytes.fromhex(c.token_sha256), c) for c in callers if c.token_sha256]
        self.by_subject = {c.tls_subject: c for c in callers if c.tls_subject}

    def by_bearer(self, token: str) -> Caller | None:
        """The caller whose token this is: compared as hashes, in constant time, against every entry."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for expected, caller in self.by_token:
            # No early exit: the time taken does not depend on where (or whether) the token is listed.
            if hmac.compare_digest(digest, expected):
                found = caller
        return found

    def by_certificate(self, subject: str) -> Caller | None:
        """The caller named by a verified client certificate's subject (the TLS layer proved the key)."""
        return self.by_subject.get(subject)


def parse(text: str, source: str) -> Callers:
    """The callers in `text` (YAML); SetupError naming the entry and field that is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SetupError(f"{source}: not valid YAML: {exc}") from None
    try:
        return Callers(CallersFile.model_validate(data).callers)
    except ValidationError as exc:
        # One error, an unknown key first (a misspelt key is also why a required one seems missing), in the words
        # of the gateway's config errors; never the input: an operator may have pasted a token where its hash goes.
        first = min(exc.errors(include_input=False), key=lambda error: error["type"] != "extra_forbidden")
        raise SetupError(f"{source}: {_path(first['loc'])}: {_problem(first)}") from None


def _path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "(top)"


_WORDS = {
    "token_sha256": "must be the SHA-256 of the token as 64 lowercase hex digits (sha256sum), never the token",
    "name": "must be 1-64 letters, digits or . _ @ - (starting with a letter or digit)",
    "roles": "must list at least one role",
}


def _problem(error: ErrorDetails) -> str:
    """What is wrong, as a person would say it: `unknown key (allowed: ...)`, `must be one of chat, ...`."""
    kind, loc = error["type"], error["loc"]
    field = next((str(part) for part in reversed(loc) if isinstance(part, str)), "")
    if kind == "extra_forbidden":
        model = Caller if len(loc) > 2 or (len(loc) == 2 and isinstance(loc[0], int)) else CallersFile
        return f"unknown key (allowed: {', '.join(model.model_fields)})"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        options = ", ".join(re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", ""))))
        return f"must be one of {options}"
    if kind == "value_error":
        return str((error.get("ctx") or {}).get("error") or error["msg"])
    if field in _WORDS and kind in ("string_pattern_mismatch", "too_short", "string_too_short", "string_too_long"):
        return _WORDS[field]
    if kind in ("model_type", "dict_type"):
        return "must be a mapping"
    if kind in ("tuple_type", "list_type"):
        return "must be a list"
    return str(error["msg"]).lower()


MAX_FILE_BYTES = 1024 * 1024  # some thousands of callers


def load(path: Path) -> Callers:
    try:
        text = read_whole(path)
    except OSError as exc:
        raise SetupError(f"callers file {path}: {exc.strerror}") from None
    callers = parse(text, str(path))
    if not _ends_as_written(text):
        raise SetupError(
            f"callers file {path}: does not end with the line '...' (YAML's end of document), so it may be cut "
            "short (written half-way?); end the file with that line"
        )
    return callers


def _ends_as_written(text: str) -> bool:
    """True when the one YAML document in `text` (parse() took it) is closed by its end marker `...`."""
    ends = [e for e in yaml.parse(text, Loader=yaml.SafeLoader) if isinstance(e, yaml.DocumentEndEvent)]
    return len(ends) == 1 and bool(ends[0].explicit)


def read_whole(path: Path) -> str:
    """The text of `path` when it is a complete regular file of a bounded size; SetupError saying why not."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise SetupError(f"callers file {path}: not a regular file")
        if before.st_size > MAX_FILE_BYTES:
            raise SetupError(f"callers file {path}: {before.st_size} bytes, more than {MAX_FILE_BYTES}")
        data = os.read(fd, MAX_FILE_BYTES + 1)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(data) != after.st_size:
        raise SetupError(f"callers file {path}: changed while it was read (write it in one step: a rename)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SetupError(f"callers file {path}: not UTF-8") from None


@dataclass
class _Loaded:
    callers: Callers
    stamp: tuple[int, int, int]


class CallersSource:
    """The callers file, reloaded when it changes (checked at most every `check_interval_s`).

    Kubernetes updates a mounted Secret by swapping a symlink, so the stamp is taken through it. On an
    event loop the check runs in a worker thread, one at a time, and its result is used once it is done.
    """

    def __init__(self, path: Path, *, check_interval_s: float = 1.0) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._loaded = _Loaded(load(path), _stamp(path))
        self._refused: tuple[int, int, int] | None = None  # a bad version, logged once rather than every check
        self._next_check = time.monotonic() + check_interval_s
        self.checking: asyncio.Future[None] | None = None  # a check running in a worker thread

    def current(self) -> Callers:
        now = time.monotonic()
        if now >= self._next_check and self.checking is None:
            self._next_check = now + self.check_interval_s
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (the CLI, tests): look now
                self._reload_if_changed()
            else:
                self.checking = loop.run_in_executor(None, self._reload_if_changed)
                self.checking.add_done_callback(self._checked)
        return self._loaded.callers

    def _checked(self, _: object) -> None:
        self.checking = None
        self._next_check = time.monotonic() + self.check_interval_s

    def _reload_if_changed(self) -> None:
        stamp = None
        try:
            stamp = _stamp(self.path)
            if stamp in (self._loaded.stamp, self._refused):
                return
            self._loaded = _Loaded(load(self.path), stamp)
        except (OSError, SetupError) as exc:
            self._refused = stamp
            log.error("callers file not reloaded; the previous one stays in force", extra={"error": str(exc)})
            return
        log.info("callers file reloaded", extra={"path": str(self.path)})


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)  # through the symlink: a swapped file is a new inode even within one mtime tick
    return st.st_ino, st.st_mtime_ns, st.st_size
