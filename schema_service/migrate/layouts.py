"""Other migrators' file layouts (`--format`), so a team can switch tools without renaming anything.

    native          NNN_name.sql, header directives `-- migrate: no-transaction` ...
    dbmate          NNN_name.sql with `-- migrate:up [transaction:false]` ... `-- migrate:down` sections;
                    only the up section runs (the rest of the file is blanked, so lines still match)
    golang-migrate  NNN_name.up.sql runs, NNN_name.down.sql is ignored
    flyway          V<N>__name.sql (integer versions; repeatable R__ and undo U files are refused)

In the native layout, a folder that looks like another tool's is refused with a message naming the
format and the `--format` flag, instead of an obscure error about one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from schema_service.config import FileFormat
from schema_service.migrate.errors import MigrationFileError

FORMATS: tuple[FileFormat, ...] = ("native", "dbmate", "golang-migrate", "flyway")

NATIVE_NAME = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)\.sql$", re.ASCII)
GOLANG_NAME = re.compile(
    r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*?)\.(?P<direction>up|down)\.sql$", re.ASCII
)
FLYWAY_NAME = re.compile(r"^V(?P<version>\d+)__(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)\.sql$", re.ASCII)
FLYWAY_OTHER = re.compile(r"^(?:V\d+[._]\d|R__|U\d)", re.ASCII)
# Versions are stored as bigint (and sent as int64); digits are ASCII only (re.ASCII above), since
# int() would read full-width or Arabic-Indic digits as a version nobody sees in the name.
MAX_VERSION = 2**63 - 1
DBMATE_MARK = re.compile(r"^--\s*migrate:(?P<section>up|down)\b(?P<options>.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Named:
    """What a file's name says: its version and name; None from `name()` means "not a migration"."""

    version: int
    name: str


def name(path: Path, file_format: FileFormat) -> Named | None:
    """Version and name of a migration file in the layout; None for files the layout ignores."""
    if file_format == "golang-migrate":
        match = GOLANG_NAME.match(path.name)
        if match is None:
            raise _misnamed(path, "<version>_<name>.up.sql or .down.sql")
        return _named(path, match) if match["direction"] == "up" else None
    if file_format == "flyway":
        if FLYWAY_OTHER.match(path.name):
            raise MigrationFileError(
                f"{path.name}: only versioned Flyway migrations with an integer version (V<N>__name.sql) are "
                "supported, not dotted versions, repeatable (R__) or undo (U) migrations",
                filename=path.name,
            )
        match = FLYWAY_NAME.match(path.name)
        if match is None:
            raise _misnamed(path, "V<version>__<name>.sql")
        return _named(path, match)
    match = NATIVE_NAME.match(path.name)
    if match is None:
        raise _misnamed(path, "<version>_<description>.sql", hint=_foreign_hint([path]))
    return _named(path, match)


def _named(path: Path, match: re.Match[str]) -> Named:
    digits = match["version"]
    if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:
        raise MigrationFileError(
            f"{path.name}: version {digits[:40]} is over the largest version, {MAX_VERSION}", filename=path.name
        )
    return Named(int(digits), match["name"])


def _misnamed(path: Path, expected: str, hint: str = "") -> MigrationFileError:
    if any(c.isdigit() and not c.isascii() for c in path.name):
        hint = "; versions are ASCII digits 0-9" + hint
    return MigrationFileError(f"{path.name}: not named {expected}{hint}", filename=path.name)


def refuse_foreign(paths: list[Path], file_format: FileFormat) -> None:
    """In the native layout, stop at a folder of another tool's files, naming the format and the flag."""
    if file_format != "native":
        return
    hint = _foreign_hint(paths)
    if hint:
        raise MigrationFileError(f"{paths[0].parent}: not in this tool's layout{hint}")


def _foreign_hint(paths: list[Path]) -> str:
    names = [p.name for p in paths]
    if any(GOLANG_NAME.match(n) for n in names):
        return "; the files look like golang-migrate's (NNN_name.up.sql / .down.sql): pass --format golang-migrate"
    if any(FLYWAY_NAME.match(n) or FLYWAY_OTHER.match(n) for n in names):
        return "; the files look like Flyway's (V1__name.sql): pass --format flyway"
    if any(DBMATE_MARK.search(_head(p)) for p in paths):
        return "; the files look like dbmate's (-- migrate:up / -- migrate:down): pass --format dbmate"
    return ""


def _head(path: Path) -> str:
    """The start of a regular file, for the hint only (a FIFO would block; reading.py refuses it later)."""
    try:
        if not path.is_file():
            return ""
        with path.open(encoding="utf-8", errors="replace") as file:
            return file.read(4096)
    except OSError:
        return ""


@dataclass(frozen=True)
class UpSection:
    """The SQL that runs, with what is outside it blanked (line numbers kept), and its header options."""

    sql: str
    transactional: bool


def dbmate_up(sql: str, filename: str) -> UpSection:
    """dbmate's up section; `transaction:false` on its marker line runs it without a transaction."""
    marks = list(DBMATE_MARK.finditer(sql))
    ups = [m for m in marks if m["section"] == "up"]
    if len(ups) != 1:
        raise MigrationFileError(
            f"{filename}: a dbmate file needs exactly one `-- migrate:up` line (found {len(ups)})", filename=filename
        )
    up = ups[0]
    end = next((m.start() for m in marks if m.start() > up.start() and m["section"] == "down"), len(sql))
    options = dict(item.split(":", 1) for item in up["options"].split() if ":" in item)
    blanked = _blank(sql, 0, up.end()) + sql[up.end() : end] + _blank(sql, end, len(sql))
    return UpSection(blanked, options.get("transaction", "true").lower() != "false")


def _blank(sql: str, start: int, end: int) -> str:
    return "".join(c if c == "\n" else " " for c in sql[start:end])
