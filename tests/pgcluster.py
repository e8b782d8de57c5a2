"""A private PostgreSQL primary and a streaming standby, from the binaries the `pgserver` wheel ships
(initdb, pg_ctl, pg_basebackup, postgres), on 127.0.0.1 ports of their own.

Replication is synchronous (`synchronous_standby_names = '*'`), so a commit is acknowledged only once the
standby has it: killing the primary and promoting the standby loses no acknowledged write. Run as root
(CI), the servers run as pgserver's own OS user `pgserver`, as the embedded server does.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path


def _pgserver_bin() -> Path:
    # Found without importing pgserver, whose import warns when XDG_RUNTIME_DIR is unset (warnings are errors).
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.submodule_search_locations, "the pgserver wheel is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


BIN = _pgserver_bin()
SYSTEM_USER = "pgserver"


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/false", name], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Node:
    data: Path
    port: int
    user: str | None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def ctl(self, *args: str) -> None:
        await run(self.user, str(BIN / "pg_ctl"), "-D", str(self.data), *args)


async def run(user: str | None, *args: str) -> None:
    # runuser rather than subprocess's user=: that forces a fork() whose child runs grpc's fork handlers,
    # which crash with a server running; without it CPython spawns with vfork.
    command = ["runuser", "-u", user, "--", *args] if user else list(args)
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd="/"
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} {' '.join(args[1:3])} failed ({proc.returncode}): {out.decode()[-2000:]}")


@dataclass
class Cluster:
    primary: Node
    standby: Node

    @property
    def dsn(self) -> str:
        """Both hosts, primary first, as an operator would write it."""
        return f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/postgres"

    async def kill_primary(self) -> None:
        await self.primary.ctl("stop", "-m", "immediate", "-w")

    async def promote_standby(self) -> None:
        await self.standby.ctl("promote", "-w")


_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = off
full_page_writes = off
synchronous_commit = on
synchronous_standby_names = '*'
wal_level = replica
max_wal_senders = 4
hot_standby = on
wal_receiver_status_interval = 1s
logging_collector = off
"""


@asynccontextmanager
async def primary_and_standby() -> AsyncIterator[Cluster]:
    user = None
    if os.geteuid() == 0:
        user = SYSTEM_USER
        _ensure_user(user)
    root = Path(tempfile.mkdtemp(prefix="pgcluster-", dir="/tmp"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    primary = Node(root / "primary", free_port(), user)
    standby = Node(root / "standby", free_port(), user)
    started: list[Node] = []
    try:
        await run(user, str(BIN / "initdb"), "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-N")
        with (primary.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(_CONF.format(port=primary.port, sockets=root))
        await primary.ctl("start", "-w", "-l", str(root / "primary.log"))
        started.append(primary)
        await run(
            user,
            str(BIN / "pg_basebackup"),
            "-D",
            str(standby.data),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "--no-sync",
        )
        with (standby.data / "postgresql.auto.conf").open("a") as conf:
            # Promoted, it has no standby of its own to wait for.
            conf.write(f"port = {standby.port}\nsynchronous_standby_names = ''\n")
        await standby.ctl("start", "-w", "-l", str(root / "standby.log"))
        started.append(standby)
        yield Cluster(primary, standby)
    finally:
        for node in started:
            try:
                await node.ctl("stop", "-m", "immediate", "-w")
            except RuntimeError:
                pass  # already stopped (the killed primary)
        shutil.rmtree(root, ignore_errors=True)
