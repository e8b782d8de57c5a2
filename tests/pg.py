"""Helpers for reaching the test PostgreSQL (shared via DATABASE_URL, or embedded)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server and role, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def admin_dsn_for(url: str) -> str:
    """DATABASE_URL points at some database; administration happens from `postgres`."""
    return dsn_with_database(url, "postgres")


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded server under data_dir and return its admin DSN."""
    from schema_service.database import start_embedded_postgres

    return start_embedded_postgres(data_dir)


def database_of(dsn: str) -> str:
    """The database a DSN names (also for socket DSNs such as `postgresql://u@/db?host=/run/pg`)."""
    return urlsplit(dsn).path.lstrip("/")


def dsn_with_user(dsn: str, user: str) -> str:
    """The same server and database, another role (no password: the test servers trust local roles)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))
