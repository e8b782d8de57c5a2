"""The embedded PostgreSQL (the `pgserver` wheel), held by a small helper process that never loads gRPC.

Why a helper: run as root, pgserver starts and stops PostgreSQL with `pg_ctl` as its OS user `pgserver`
through subprocess's `user=`, and a change of user makes CPython fork() instead of vfork(). In a process
where gRPC's threads run, that fork runs gRPC's fork handlers, which print fork_posix.cc's "Other threads
are currently calling into gRPC, skipping fork() handlers" (and the stop came at exit, after the server).
The helper, `python -m schema_service.embedded DATA_DIR`, imports pgserver and nothing of gRPC; it prints
the server's URI and holds its handle until its stdin closes: when the process that started it stops it,
or exits in any way (SIGKILL included, so a killed service no longer leaves its PostgreSQL running).
pgserver counts the handles of all processes on one data folder: the server stops with the last.

pgserver is the optional extra `embedded` (`pip install 'llm-platform[embedded]'`; make installs it, the image
does not): without it, --embedded is one line naming the extra (NOT_INSTALLED), checked before anything starts.

The server listens on a Unix socket only. Run as root, pgserver creates an OS user `pgserver` and opens
read/execute permissions on the data folder's parent directories, so keep the data folder somewhere that
is harmless (the default `./.data/postgres` inside the checkout is).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import signal
import subprocess
import sys
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 60.0

_helpers: dict[Path, tuple[subprocess.Popen[bytes], str]] = {}

NOT_INSTALLED = (
    "--embedded needs the embedded PostgreSQL (pgserver), which is not installed here: "
    "pip install 'llm-platform[embedded]', or give a database URL (DATABASE_URL or --database-url)"
)


def installed() -> bool:
    """Whether pgserver can be imported here (located, not imported: its import warns without XDG_RUNTIME_DIR)."""
    try:
        return importlib.util.find_spec("pgserver") is not None
    except (ImportError, ValueError):
        return False


def start_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under `data_dir`; returns a DSN to database `postgres`."""
    data_dir = data_dir.resolve()
    if data_dir not in _helpers:
        data_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded postgresql", extra={"data_dir": str(data_dir)})
        # No user= or preexec_fn: CPython spawns with vfork, so no fork handlers run here.
        command = [sys.executable, "-m", __name__, str(data_dir)]
        helper = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # stderr: ours
        assert helper.stdout is not None
        uri = helper.stdout.readline().decode().strip()
        if not uri:
            code = helper.wait()
            raise RuntimeError(f"the embedded PostgreSQL under {data_dir} did not start (exit {code}; see above)")
        _helpers[data_dir] = (helper, uri)
        atexit.register(stop_postgres, data_dir)
    return _helpers[data_dir][1]


def stop_postgres(data_dir: Path) -> None:
    """Let go of the server under `data_dir`; it stops unless another process still holds it."""
    helper, _ = _helpers.pop(data_dir.resolve(), (None, ""))
    if helper is None:
        return
    assert helper.stdin is not None
    helper.stdin.close()
    try:
        helper.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("the embedded postgresql did not stop in time", extra={"data_dir": str(data_dir)})


def _hold(data_dir: Path) -> None:
    # A terminal's Ctrl-C reaches the whole process group; the service decides when its database goes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with warnings.catch_warnings():
        # pgserver keeps its lock file in the user runtime dir; without XDG_RUNTIME_DIR (containers,
        # CI) platformdirs warns and falls back to /tmp, which is fine for a lock file.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    # cleanup_mode="stop": pgserver's exit handler stops the server if this was the last handle.
    server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    print(server.get_uri("postgres"), flush=True)
    sys.stdin.buffer.read()  # until the owner closes the pipe or is gone


if __name__ == "__main__":
    _hold(Path(sys.argv[1]))
