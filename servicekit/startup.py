"""How both services start: `prepare` builds a server, `start` serves, `run` serves until SIGTERM.

Each service's `server.py` has the same three functions, and its `Running` extends `StartedServer` here:

    running = await server.start(...)      # tests, tools: a server on its port, serving
    async with running:                    # leaving stops it at once and closes what it holds
        ...

    run_forever(server.run(...))           # `serve`: on uvloop, until SIGTERM, then the drain (servicekit.server)

`run` is `prepare`, then `until_stopped`; tests start the same servers through `start`, so a start-up change
is made once per service and tested as it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import grpc

from servicekit import logs, native_logs
from servicekit.callers import SetupError
from servicekit.metrics import Endpoint, Registry
from servicekit.security import Security
from servicekit.server import Lifecycle, serve
from servicekit.settings import LogSettings, SettingsError, build


class Listening(Protocol):
    """What `serve` settings of both services hold about listening and stopping."""

    @property
    def host(self) -> str: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def shutdown_grace_s(self) -> float: ...
    @property
    def security(self) -> Security: ...


class StartedServer:
    """A prepared server: its grpc.aio server, port and lifecycle, and `close()` for what the service holds."""

    server: grpc.aio.Server
    port: int
    lifecycle: Lifecycle

    async def close(self) -> None:
        """Release what the service holds (pools, background tasks, telemetry); the server has stopped."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop serving at once (calls in flight are cancelled), then close."""
        await self.server.stop(0)
        await self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()


def metrics_endpoint(metrics: Registry, settings: Listening) -> Endpoint | None:
    """The `/metrics` endpoint when `--metrics-port` asks for one."""
    return Endpoint(metrics, settings.host, settings.metrics_port) if settings.metrics_port else None


async def until_stopped(running: StartedServer, settings: Listening) -> None:
    """Serve until SIGTERM/SIGINT, drain within the grace, then close (servicekit.server.serve)."""
    native_logs.route()  # gRPC core's lines (TLS handshake failures) into the JSON log from here on
    health_port = settings.security.health_port
    probes = (settings.host, health_port) if health_port is not None else None
    await serve(
        running.server, running.lifecycle, grace_s=settings.shutdown_grace_s, on_stop=running.close, probes=probes
    )


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed, for both services.

    Both are I/O servers whose CPU goes largely to the event loop and its transports: the gateway's chat
    streams (bench/watchdog.py measures the loop's share) and the schema service's asyncpg connections
    (asyncpg is written for uvloop and measured on it). One loop for both means one set of loop behaviours
    (signals, transports, subprocesses) to know. In-process use (the tests) runs on the caller's loop.
    """
    try:
        import uvloop
    except ImportError:  # not built for this platform: the standard loop serves the same way
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Both services' `main`: parse the command line, point the logs at stderr at its --log-level, run the
    command's handler; a bad setting (SettingsError: a flag, a variable, the gateway's file) or a set-up that
    cannot work (SetupError: TLS files, the callers file) is one line `<prog>: <what and where>`, exit code 2."""
    args = parser.parse_args(argv)
    try:
        logs.configure(build(LogSettings, args).log_level)
        return int(args.handler(args))
    except (SettingsError, SetupError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2


def run_forever(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's `run(...)` to its end on the loop both services use."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main)
