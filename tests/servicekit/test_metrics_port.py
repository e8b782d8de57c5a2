"""A `--metrics-port` that cannot be had stops `serve` of both services with one line and exit 2, as the gRPC
port does (it was a 40-line traceback)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator, Sequence

import pytest

from gateway_service.__main__ import main as gateway_main
from schema_service.__main__ import main as schema_main
from servicekit.procs import free_port

pytestmark = pytest.mark.timeout(60)
MAINS: dict[str, Callable[[Sequence[str]], int]] = {"gateway-service": gateway_main, "schema-service": schema_main}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points the root logger at stderr; the other tests' capture wants it back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("command", MAINS)
def test_a_metrics_port_in_use_is_one_line_and_exit_2(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/unused")  # never reached
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        args = ["serve", "--insecure-dev", "--host", "127.0.0.1", "--port", str(free_port())]
        assert MAINS[command]([*args, "--metrics-port", str(taken)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert err == [f"{command}: metrics port {taken} is in use (another server listens on 127.0.0.1:{taken})"]
