"""`schema-service` command line: `serve` runs the gRPC server; `migrate`, `status`, `verify`, `lint`, `repair`,
`baseline` and `import-history` manage the schema, `usage` reports the usage ledger (exit codes: 0 done, 1 the
command found or hit a problem, 2 bad configuration)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from schema_service import cli
from schema_service.config import MigrationSettings, SchemaSecurity, Settings
from servicekit.settings import LogSettings, add_flags, from_command_line
from servicekit.startup import run_command, run_forever

SERVE_MIGRATION_FLAGS = ("migrations_dir", "file_format", "migrate_on_start", "scratch_url", "allow_out_of_order")


def add_database_args(parser: argparse.ArgumentParser) -> None:
    """The flags every command takes: where the database is, and the migrations."""
    add_flags(parser, Settings, ("database_url", "embedded", "data_dir"))
    add_flags(parser, MigrationSettings, ("migrations_dir", "file_format"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="schema-service", description=__doc__)
    add_flags(parser, LogSettings)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    add_flags(serve, Settings)
    add_flags(serve, MigrationSettings, SERVE_MIGRATION_FLAGS)
    add_flags(serve, SchemaSecurity)
    serve.set_defaults(handler=_serve)
    cli.register(commands, add_database_args)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from schema_service import server

    run_forever(server.run(from_command_line(Settings, args)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
