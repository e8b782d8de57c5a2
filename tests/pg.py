"""Helpers for reaching the test PostgreSQL (shared via DATABASE_URL, or embedded)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from schema_service.database import with_database


def admin_dsn_for(url: str) -> str:
    """DATABASE_URL points at some database; administration happens from `postgres`."""
    return with_database(url, "postgres")


def database_of(dsn: str) -> str:
    """The database a DSN names (also for socket DSNs such as `postgresql://u@/db?host=/run/pg`)."""
    return urlsplit(dsn).path.lstrip("/")


def dsn_with_user(dsn: str, user: str) -> str:
    """The same server and database, another role (no password: the test servers trust local roles)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))
