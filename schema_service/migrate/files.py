"""Migration files: `<version>_<description>.sql` (or another tool's layout, see layouts.py), their
header directives and checksums.

A file's header is its leading run of comment and blank lines; directives there look like
`-- migrate: no-transaction`, `-- migrate: statement-timeout 30min` or `-- migrate: allow-unsafe
copy-program` (one per kind of SQL that reaches outside the database, see unsafe.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

from schema_service.config import FileFormat
from schema_service.migrate import layouts, reading
from schema_service.migrate.errors import MigrationFileError
from schema_service.migrate.unsafe import UNSAFE_KINDS

DIRECTIVE = re.compile(r"^--\s*migrate:\s*(?P<key>[a-z\-]+)(?:\s+(?P<value>\S+))?\s*$", re.IGNORECASE)
DURATION = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>ms|s|sec|min|m|h)?$")
UNIT_MS = {None: 1000.0, "ms": 1.0, "s": 1000.0, "sec": 1000.0, "min": 60_000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class FileOptions:
    """Header directives of one file; None means "use the configured default"."""

    transactional: bool = True
    statement_timeout_ms: int | None = None
    lock_timeout_ms: int | None = None
    allowed_unsafe: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MigrationFile:
    """One migration file, read once: what runs is exactly what was checksummed."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str
    options: FileOptions

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def transactional(self) -> bool:
        return self.options.transactional


def parse_duration_ms(text: str) -> int:
    """`30min`, `5s`, `250ms`, `2h` (a bare number is seconds) in milliseconds."""
    match = DURATION.match(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 250ms, 5s, 30min, 2h)")
    return int(float(match["amount"]) * UNIT_MS[match["unit"]])


def parse_header(sql: str, filename: str) -> FileOptions:
    """Directives from the leading comment lines; an unknown directive is an error, not ignored."""
    values: dict[str, object] = {}
    allowed: set[str] = set()
    for number, raw in enumerate(sql.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("--"):
            break
        match = DIRECTIVE.match(line)
        if match is None:
            continue
        key, value = match["key"].lower(), match["value"]
        try:
            if key == "allow-unsafe":
                allowed.add(_unsafe_kind(value))
            else:
                values.update(_directive(key, value))
        except ValueError as exc:
            raise MigrationFileError(f"{filename}:{number}: {exc}", filename=filename, line=number) from exc
    return FileOptions(**values, allowed_unsafe=frozenset(allowed))  # type: ignore[arg-type]


def _unsafe_kind(kind: str | None) -> str:
    """The kind an `allow-unsafe <kind>` directive names: one kind each, never "all"."""
    if kind is None or kind.lower() not in UNSAFE_KINDS:
        raise ValueError(f"allow-unsafe needs one of {', '.join(UNSAFE_KINDS)} (got {kind or 'nothing'!r})")
    return kind.lower()


def _directive(key: str, value: str | None) -> dict[str, object]:
    if key == "no-transaction" and value is None:
        return {"transactional": False}
    if key in ("statement-timeout", "lock-timeout") and value is not None:
        return {key.replace("-", "_") + "_ms": parse_duration_ms(value)}
    raise ValueError(f"unknown migrate directive {key!r}{' ' + value if value else ''}")


def read_file(path: Path, file_format: FileFormat = "native") -> MigrationFile:
    """One migration file; a file the layout ignores (golang-migrate's .down.sql) is not one."""
    reading.check_entry(path)
    named = layouts.name(path, file_format)
    if named is None:
        raise MigrationFileError(f"{path.name}: not a migration in the {file_format} layout", filename=path.name)
    data = reading.read_bounded(path)
    try:
        sql = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationFileError(f"{path.name}: not UTF-8 ({exc})", filename=path.name) from exc
    if file_format == "dbmate":
        up = layouts.dbmate_up(sql, path.name)
        options = replace(parse_header(up.sql, path.name), transactional=up.transactional)
        # What runs is what is checksummed: the up section (editing the down section changes nothing).
        return MigrationFile(named.version, named.name, path, up.sql, _sha256(up.sql.encode()), options)
    return MigrationFile(named.version, named.name, path, sql, _sha256(data), parse_header(sql, path.name))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def migration_paths(directory: Path, file_format: FileFormat = "native") -> list[Path]:
    """The migration files of a folder in the layout (golang-migrate's .down.sql left out)."""
    paths = reading.sql_entries(directory)
    layouts.refuse_foreign(paths, file_format)
    return [p for p in paths if file_format != "golang-migrate" or not p.name.endswith(".down.sql")]


def load_dir(directory: Path, file_format: FileFormat = "native") -> list[MigrationFile]:
    """Every migration file in version order; two files with one version are refused."""
    paths = migration_paths(directory, file_format)
    files = sorted((read_file(p, file_format) for p in paths), key=lambda f: f.version)
    for before, after in zip(files, files[1:], strict=False):
        if before.version == after.version:
            raise MigrationFileError(
                f"two files with version {after.version}: {before.filename} and {after.filename}",
                filename=after.filename,
            )
    return files
