"""`serve` of both services: secure by default, loud when told to be insecure, and alone on its port."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from gateway_service.__main__ import main as gateway_main
from schema_service.__main__ import main as schema_main
from servicekit.procs import ServiceProcess, free_port
from tests.servicekit.certs import Authority

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
MAINS: dict[str, Callable[[Sequence[str]], int]] = {"gateway-service": gateway_main, "schema-service": schema_main}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points the root logger at stderr; the other tests' capture wants it back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def tls_args(tmp_path: Path) -> list[str]:
    cert, key = Authority().issue("server", server=True).write(tmp_path, "server")
    return ["--tls-cert", str(cert), "--tls-key", str(key)]


@pytest.mark.parametrize("command", MAINS)
@pytest.mark.parametrize(
    ("given", "missing"),
    [((), "TLS and a callers file"), (("tls",), "a callers file"), (("callers",), "TLS")],
    ids=["nothing", "tls only", "callers only"],
)
def test_serve_refuses_to_start_insecure_without_the_flag(
    command: str,
    given: tuple[str, ...],
    missing: str,
    tls_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "CALLERS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    callers = tmp_path / "callers.yaml"
    callers.write_text("callers: []\n...\n")
    args = ["serve", "--port", str(free_port())]
    args += tls_args if "tls" in given else []
    args += ["--callers", str(callers)] if "callers" in given else []
    assert MAINS[command](args) == 2
    err = capsys.readouterr().err
    assert f"{command}: refusing to serve without {missing}" in err
    assert "--insecure-dev" in err


def test_the_environment_names_the_files_like_the_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gateway_service.__main__ import build_parser
    from servicekit.security import Security
    from servicekit.settings import build

    for variable, name in [
        ("TLS_CERT_FILE", "c"),
        ("TLS_KEY_FILE", "k"),
        ("TLS_CLIENT_CA_FILE", "ca"),
        ("CALLERS_FILE", "callers"),
    ]:
        monkeypatch.setenv(variable, str(tmp_path / name))
    settings = build(Security, build_parser().parse_args(["serve"]))
    assert settings.tls is not None
    assert (settings.tls.cert.name, settings.tls.key.name, settings.tls.client_ca) == ("c", "k", tmp_path / "ca")
    assert settings.callers == tmp_path / "callers"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--tls-cert", "x"], "--tls-cert and --tls-key go together"), (["--tls-client-ca", "x"], "needs --tls-cert")],
)
@pytest.mark.parametrize("command", MAINS)
def test_half_a_tls_setting_is_refused(
    command: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert MAINS[command](["serve", "--insecure-dev", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", MAINS)
def test_a_port_in_use_fails_at_once_naming_it(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/unused")  # never reached
    # A listener with SO_REUSEPORT, as gRPC's default leaves it: a server with the default would share it.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert MAINS[command](["serve", "--insecure-dev", "--host", "127.0.0.1", "--port", str(port)]) == 2
    assert f"{command}: port {port} is in use" in capsys.readouterr().err


async def test_a_second_gateway_on_the_port_exits_and_the_first_keeps_serving() -> None:
    with ServiceProcess("gateway-service") as first:
        await first.wait_serving()
        assert "INSECURE DEV MODE" in first.output()  # --insecure-dev is loud about it
        assert '"level": "WARNING"' in next(line for line in first.output().splitlines() if "INSECURE" in line)
        with ServiceProcess("gateway-service", port=first.port) as second:
            assert await second.wait_exit(timeout_s=30) == 2
            assert f"port {first.port} is in use" in second.output()
        await first.wait_serving(timeout_s=5)


def test_make_run_says_an_instance_is_already_running() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = ["--schema-port", str(free_port()), "--simulator-port", str(free_port())]
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "run_local.py"), "--gateway-port", str(port), *ports],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"already in use: gateway 127.0.0.1:{port}" in done.stderr
    assert "an instance is probably running already" in done.stderr


def test_make_run_names_only_the_metrics_endpoints_that_are_on() -> None:
    spec = importlib.util.spec_from_file_location("run_local", ROOT / "scripts" / "run_local.py")
    assert spec is not None and spec.loader is not None
    run_local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_local)
    both = argparse.Namespace(gateway_metrics_port=9464, schema_metrics_port=9465)
    assert run_local._metrics_urls(both) == (
        "http://127.0.0.1:9464/metrics (gateway), http://127.0.0.1:9465/metrics (schema service)"
    )
    one = argparse.Namespace(gateway_metrics_port=0, schema_metrics_port=9465)
    assert run_local._metrics_urls(one) == "http://127.0.0.1:9465/metrics (schema service)"
    assert ":0/" not in run_local._metrics_urls(argparse.Namespace(gateway_metrics_port=0, schema_metrics_port=0))


@pytest.mark.timeout(180)
def test_kill_int_of_the_make_process_stops_make_run_and_all_three() -> None:
    """A terminal's Ctrl-C reaches the whole process group; `kill -INT <make>` reaches make alone, which waits
    for its recipe without passing SIGINT on: run_local.py notices and stops everything, so make ends."""
    import os
    import signal
    import time

    ports = {name: free_port() for name in ("gateway", "schema", "simulator", "openai")}
    flags = " ".join(f"--{name}-port {port}" for name, port in ports.items())
    flags += " --gateway-metrics-port 0 --schema-metrics-port 0"
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"RUN_FLAGS={flags}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group, as in a terminal: nothing else gets the signal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job's SIGINT is ignored
    )
    try:
        assert make.stdout is not None
        lines = []
        for line in make.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        os.kill(make.pid, signal.SIGINT)
        rest = make.communicate(timeout=90)[0]
        assert make.returncode != 0  # make reports the interrupted recipe
        assert "make was interrupted: stopping" in rest, rest
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_answers(p) for p in ports.values()):
            time.sleep(0.1)
        assert [name for name, port in ports.items() if _answers(port)] == []
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
