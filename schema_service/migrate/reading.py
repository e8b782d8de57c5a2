"""Reading a migrations folder as untrusted input: which entries count, and bounded reads.

Rules (each a MigrationFileError naming the file; lint reports it as `invalid-file`):
  - every entry whose name ends in `.sql` in any case is a migration file: `001_a.SQL` is an error
    ("name it .sql"), never silently left out;
  - a migration file is a regular file inside the folder: a symlink may point within the folder (a
    Kubernetes ConfigMap volume is made of such links) but not out of it, and a FIFO, device or directory
    is refused (opened without blocking, so a FIFO cannot hang a status call);
  - at most MAX_FILE_BYTES per file and MAX_FOLDER_BYTES for the folder, checked on the size before
    anything is read, and a read never takes more than the limit plus one byte (a file that grows
    meanwhile is refused too). A 200 MB file cost GetStatus 684 MiB and LintMigrations 2 GiB before.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from schema_service.migrate.errors import MigrationFileError

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_FOLDER_BYTES = 128 * 1024 * 1024
_MIB = 1024 * 1024


def sql_entries(directory: Path) -> list[Path]:
    """Entries named `*.sql` in any case, sorted; the folder's total size bounded."""
    if not directory.is_dir():
        raise MigrationFileError(f"migrations directory not found: {directory}")
    paths = sorted(p for p in directory.iterdir() if p.name.lower().endswith(".sql"))
    total = sum(_size(p) for p in paths)
    if total > MAX_FOLDER_BYTES:
        raise MigrationFileError(
            f"{directory}: the migration files hold {total} bytes, over the limit of "
            f"{MAX_FOLDER_BYTES // _MIB} MiB for a folder; squash old migrations or move data out of them"
        )
    return paths


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0  # reported with its name when the file is read


def check_entry(path: Path) -> None:
    """Refuse a name not ending in exactly `.sql`, a link out of the folder, anything but a regular file."""
    if not path.name.endswith(".sql"):
        raise MigrationFileError(f"{path.name}: migration files end in .sql (lower case)", filename=path.name)
    try:
        real = path.resolve(strict=True)
        inside = real.is_relative_to(path.parent.resolve(strict=True))
    except (OSError, RuntimeError) as exc:  # a dangling link, a loop
        reason = exc.strerror if isinstance(exc, OSError) else "a symlink loop"
        raise MigrationFileError(f"{path.name}: cannot be read ({reason})", filename=path.name) from exc
    if not inside:
        raise MigrationFileError(f"{path.name}: a link to a file outside the migrations folder", filename=path.name)


def read_bounded(path: Path) -> bytes:
    """The bytes of a regular migration file inside its folder, at most MAX_FILE_BYTES of them."""
    check_entry(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise MigrationFileError(f"{path.name}: cannot be read ({exc.strerror})", filename=path.name) from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MigrationFileError(f"{path.name}: not a regular file", filename=path.name)
        if info.st_size > MAX_FILE_BYTES:
            raise _too_large(path, info.st_size)
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(path, len(data))
    return data


def _too_large(path: Path, size: int) -> MigrationFileError:
    return MigrationFileError(
        f"{path.name}: {size} bytes, over the limit of {MAX_FILE_BYTES // _MIB} MiB for a migration file; "
        "split it, or load large data outside migrations",
        filename=path.name,
    )
