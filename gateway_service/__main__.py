"""`gateway-service` command line: `serve` runs the gRPC gateway (the fake upstreams: `python -m llm_simulator`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from gateway_service.errors import ConfigError
from servicekit import logs

DEFAULT_PORT = 50051


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway-service", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"), help="(env LOG_LEVEL)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC gateway")
    serve.add_argument(
        "--config",
        default=os.environ.get("GATEWAY_CONFIG"),
        help="YAML config file (env GATEWAY_CONFIG); without one a built-in default names the common providers",
    )
    serve.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "[::]"), help="(env GATEWAY_HOST)")
    serve.add_argument(
        "--port", type=int, default=int(os.environ.get("GATEWAY_PORT", DEFAULT_PORT)), help="(env GATEWAY_PORT)"
    )
    serve.add_argument(
        "--shutdown-grace", type=float, default=20.0, help="seconds in-flight streams get to finish at SIGTERM"
    )
    serve.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get("METRICS_PORT", "0")),
        help="Prometheus /metrics port (env METRICS_PORT; the manifests use 9464); 0, the default, turns it off",
    )  # fmt: skip
    serve.add_argument("--check-config", action="store_true", help="validate the configuration, print it and exit")
    serve.set_defaults(handler=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from gateway_service import config, server

    settings = config.load(args.config)
    for flag, port in (("--port", args.port), ("--metrics-port", args.metrics_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{flag} must be 0-65535, got {port}")
    if args.check_config:
        print(repr(settings))
        return 0
    serve_settings = server.ServeSettings(
        host=args.host, port=args.port, shutdown_grace_s=args.shutdown_grace, metrics_port=args.metrics_port
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(server.run(settings, serve_settings))
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: much of the served gateway's CPU goes to the event loop and its transports."""
    try:
        import uvloop
    except ImportError:  # not built for this platform: the standard loop serves the same way
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"gateway-service: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
