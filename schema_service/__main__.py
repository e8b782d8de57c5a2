"""`schema-service` command line: serve (and the migration commands, see schema_service.cli)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from schema_service import cli
from schema_service.config import DEFAULT_PORT, ConfigError, MigrationSettings, Settings, env_str
from schema_service.migrate.layouts import FORMATS
from servicekit import logs
from servicekit.callers import SetupError
from servicekit.security import Security
from servicekit.settings import SettingsError, add_flags, build


def add_database_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=env_str("DATABASE_URL"),
        help="PostgreSQL URL (env DATABASE_URL); without one an embedded PostgreSQL is started",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("SCHEMA_SERVICE_DATA_DIR", ".data/postgres")),
        help="data folder of the embedded PostgreSQL (env SCHEMA_SERVICE_DATA_DIR)",
    )
    parser.add_argument(
        "--migrations-dir",
        type=Path,
        default=Path(env_str("SCHEMA_SERVICE_MIGRATIONS_DIR") or MigrationSettings.migrations_dir),
        help="folder of NNN_name.sql migrations (env SCHEMA_SERVICE_MIGRATIONS_DIR)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=env_str("SCHEMA_SERVICE_MIGRATIONS_FORMAT") or "native",
        help="layout of the migration files: native, dbmate, golang-migrate or flyway "
        "(env SCHEMA_SERVICE_MIGRATIONS_FORMAT)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="schema-service", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    add_database_args(serve)
    host = os.environ.get("SCHEMA_SERVICE_HOST", "[::]")
    serve.add_argument("--host", default=host, help="listen address (env SCHEMA_SERVICE_HOST)")
    # A string default goes through `type`, so a malformed SCHEMA_SERVICE_PORT is a usage error (exit 2).
    serve.add_argument(
        "--port",
        type=int,
        default=os.environ.get("SCHEMA_SERVICE_PORT", str(DEFAULT_PORT)),
        help="listen port, 0 picks one (env SCHEMA_SERVICE_PORT)",
    )
    serve.add_argument("--shutdown-grace", type=float, default=20.0, help="seconds in-flight calls get at SIGTERM")
    serve.add_argument(
        "--readiness-interval", type=float, default=2.0, help="seconds between database checks for readiness"
    )
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        default=Settings.max_message_bytes,
        help="largest gRPC message accepted or sent (default 17 MiB: a batch of max_batch_bytes fits)",
    )
    serve.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=128,
        help="calls served at once; more are refused with RESOURCE_EXHAUSTED",
    )
    serve.add_argument(
        "--scratch-url",
        default=env_str("SCHEMA_SERVICE_SCRATCH_URL"),
        help="server where VerifySchema builds its scratch database (env SCHEMA_SERVICE_SCRATCH_URL)",
    )
    serve.add_argument(
        "--allow-out-of-order", action="store_true", help="apply files older than the applied version at start"
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start (a Job does)")
    serve.add_argument(
        "--metrics-port", type=int, default=os.environ.get("METRICS_PORT", "0"),
        help="Prometheus /metrics port (env METRICS_PORT; the manifests use 9464); 0, the default, turns it off",
    )  # fmt: skip
    add_flags(serve, Security)
    serve.set_defaults(handler=_serve)
    cli.register(commands, add_database_args)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from schema_service import server

    settings = Settings(
        database_url=args.database_url,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        shutdown_grace_s=args.shutdown_grace,
        readiness_interval_s=args.readiness_interval,
        max_message_bytes=args.max_message_bytes,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        log_level=args.log_level,
        metrics_port=args.metrics_port,
        security=build(Security, args),
    )
    migration = replace(
        settings.migration,
        migrations_dir=args.migrations_dir,
        file_format=args.format,
        migrate_on_start=not args.no_migrate,
        scratch_url=args.scratch_url,
        allow_out_of_order=args.allow_out_of_order or settings.migration.allow_out_of_order,
    )
    settings = replace(settings, migration=migration).validate()
    asyncio.run(server.run(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        code: int = args.handler(args)
    except (ConfigError, SettingsError, SetupError) as exc:
        print(f"schema-service: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
