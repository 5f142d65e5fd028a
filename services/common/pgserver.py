"""Provides PostgreSQL for development mode and tests.

In order: a server URL given in the environment (``CONFIDANT_POSTGRES_URL``);
a Docker engine through testcontainers, where one answers; a throwaway cluster
made with this machine's own PostgreSQL binaries (run as the ``postgres`` user
when we are root, since PostgreSQL refuses root). Otherwise it stops with one
sentence saying what to install.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

INSTALL_HINT = (
    "PostgreSQL is needed: set CONFIDANT_POSTGRES_URL to a server, start a Docker engine, "
    "or install the server binaries (apt-get install postgresql)."
)


class PostgresUnavailable(RuntimeError):
    pass


@dataclass
class PostgresServer:
    """A PostgreSQL server we may create databases on."""

    admin_url: str
    how: str
    _stop: list = field(default_factory=list)

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path="/" + name))

    def create_database(self, name: str, template: str | None = None, exists_ok: bool = False) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found and exists_ok:
                return self.database_url(name)
            if found:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
            conn.execute(sql)
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        for stop in reversed(self._stop):
            stop()
        self._stop.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return False
    try:
        import docker  # installed with testcontainers

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _find_bin(name: str) -> str | None:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    return shutil.which(name)


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """Command prefix and ids to run PostgreSQL binaries as a non-root user."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailable(
            "Running as root needs a 'postgres' user to run PostgreSQL (useradd --system postgres)."
        ) from exc
    return [], entry.pw_uid, entry.pw_gid


def _run_as(cmd: list[str], uid: int | None, gid: int | None, **kwargs) -> subprocess.CompletedProcess:
    def demote() -> None:
        if gid is not None:
            os.setgid(gid)
            os.setgroups([])
        if uid is not None:
            os.setuid(uid)

    return subprocess.run(cmd, preexec_fn=demote if uid is not None else None, check=True, **kwargs)


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def local_cluster(data_dir: Path, port: int, fast: bool = False) -> PostgresServer:
    """Start (creating on first use) a cluster in ``data_dir`` listening on 127.0.0.1:port."""
    initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise PostgresUnavailable(INSTALL_HINT)
    _, uid, gid = _as_postgres_user()
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        # The postgres user must reach the folder; nothing above it is widened beyond traversal.
        for parent in list(data_dir.parents)[::-1]:
            if parent.exists() and not (parent.stat().st_mode & 0o001):
                parent.chmod(parent.stat().st_mode | 0o001)
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            os.chown(data_dir, uid, gid)
        data_dir.chmod(0o700)
        _run_as(
            [initdb, "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
            uid, gid, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
    admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        try:
            _wait_ready(admin_url, timeout=1)
            return PostgresServer(admin_url, f"existing cluster in {data_dir}")
        except psycopg.OperationalError:
            pass
    if _port_in_use(port):
        raise PostgresUnavailable(f"Port {port} is already in use; set CONFIDANT_PG_PORT to a free port.")
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -c max_connections=300"
    if fast:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    _run_as(
        [pg_ctl, "-D", str(data_dir), "-l", str(data_dir / "server.log"), "-o", options, "-w", "-t", "60", "start"],
        uid, gid, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _wait_ready(admin_url)

    def stop() -> None:
        subprocess.run(
            [pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"],
            preexec_fn=(lambda: (os.setgid(gid), os.setgroups([]), os.setuid(uid))) if uid is not None else None,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )

    return PostgresServer(admin_url, f"local cluster in {data_dir} on port {port}", [stop])


def provide(data_dir: Path, port: int | None = None, fast: bool = False) -> PostgresServer:
    """PostgreSQL by the project's order of preference (see the module docstring)."""
    url = os.environ.get("CONFIDANT_POSTGRES_URL")
    if url:
        _wait_ready(url, timeout=10)
        return PostgresServer(url, "CONFIDANT_POSTGRES_URL")
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
        server = PostgresServer(container.get_connection_url(), "testcontainers", [container.stop])
        _wait_ready(server.admin_url)
        return server
    return local_cluster(data_dir, port or free_port(), fast=fast)
