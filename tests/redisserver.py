"""The Redis the tests use: REDIS_URL when set, else the one on 127.0.0.1:6379, else a private redis-server.

Like the PostgreSQL fixtures, this lets `make test` run on a machine where Redis is installed but
not running: a `redis-server` on PATH is started on a free port (nothing saved to disk) and
stopped when the run ends.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import time

from servicekit.procs import free_port


@functools.cache
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    if _accepts(6379):
        return "redis://127.0.0.1:6379/0"
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no Redis for the tests: set REDIS_URL, run one on 127.0.0.1:6379 or install redis-server")
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, proc)
    deadline = time.monotonic() + 10
    while not _accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.02)  # a child process's port: nothing to await outside an event loop
    return f"redis://127.0.0.1:{port}/0"


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)
