"""`gateway-service` command line: `serve` runs the gRPC gateway (the fake upstreams: `python -m llm_simulator`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway_service.config.serve import GatewaySecurity, ServeSettings, redis_host_problem
from gateway_service.errors import ConfigError
from servicekit import callers
from servicekit.security import Security
from servicekit.settings import LogSettings, add_flags, from_command_line
from servicekit.startup import run_command, run_forever


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway-service", description=__doc__)
    add_flags(parser, LogSettings)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC gateway")
    add_flags(serve, ServeSettings)
    add_flags(serve, GatewaySecurity)
    serve.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration as serve would (exit 2 on what it refuses), print a summary (no secrets) "
        "and exit; default off",
    )
    serve.set_defaults(handler=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from gateway_service import config, server
    from gateway_service.config.summary import summary

    serve_settings = from_command_line(ServeSettings, args)
    settings = config.load(serve_settings.config)
    redis = redis_host_problem(settings.limits)
    if redis:
        raise ConfigError(f"{settings.source}: {redis}")
    if args.check_config:
        _refusals(serve_settings.security)
        print(summary(settings, serve_settings), end="")
        return 0
    run_forever(server.run(settings, serve_settings))
    return 0


def _refusals(security: Security) -> None:
    """What `serve` would refuse before it listens, as the SetupError it would stop with: serving insecure without
    --insecure-dev, TLS files that do not load, a callers file that does not parse. --check-config exits 2 on
    these too, so a config it passes is one `serve` starts with."""
    security.check()
    if security.tls is not None:
        security.tls.load()
    if security.callers is not None:
        callers.load(security.callers)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
