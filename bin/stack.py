"""Runs the five services as real processes: used by `make run`, the
end-to-end tests and the benchmark.

Each service is its own process (`python -m services.<name>`) with its own
database on the PostgreSQL that ``services.common.pgserver`` provides. The
stack waits until every gRPC health service says SERVING and the web edge's
/healthz answers, and stops them with SIGTERM (SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.pgserver import PostgresServer, free_port
from services.common.tokens import ensure_dev_keys

REPO = Path(__file__).resolve().parent.parent
GRPC_SERVICES = ("auth", "messaging", "consent", "notify")
ALL_SERVICES = (*GRPC_SERVICES, "web")
DEV_PORTS = {"auth": 50051, "messaging": 50052, "consent": 50053, "notify": 50054, "web": 8080}
COLOURS = {"auth": 35, "messaging": 34, "consent": 33, "notify": 36, "web": 32}


class PortInUse(RuntimeError):
    pass


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Stack:
    pg: PostgresServer
    keys_dir: Path
    ports: dict[str, int]
    extra_env: dict[str, str] = field(default_factory=dict)
    # Where each process's output goes: a callable(service, line).
    sink: Callable[[str, str], None] | None = None
    database_prefix: str = "confidant"
    # gRPC services that answer health on a separate plaintext port (CONFIDANT_<SERVICE>_HEALTH_LISTEN),
    # as they must when their gRPC port speaks TLS (CONFIDANT_GRPC_TLS_* in extra_env).
    health_ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def ephemeral(cls, pg: PostgresServer, keys_dir: Path, health_ports: bool = False, **kwargs) -> Stack:
        """Every port free and chosen now; ``health_ports``: a plaintext health port per gRPC service."""
        health = {s: free_port() for s in GRPC_SERVICES} if health_ports else {}
        return cls(pg=pg, keys_dir=keys_dir, ports={s: free_port() for s in ALL_SERVICES}, health_ports=health,
                   **kwargs)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}"

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def health_address(self, service: str) -> str:
        """Where the service's health answers in plain text (its gRPC port unless it has a health port)."""
        port = self.health_ports.get(service)
        return f"127.0.0.1:{port}" if port else self.address(service)

    def database_url(self, service: str) -> str:
        return self.pg.database_url(f"{self.database_prefix}_{service}")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDANT_")}
        env.update(
            {
                "CONFIDANT_MODE": "development",
                "CONFIDANT_KEYS_DIR": str(self.keys_dir),
                "CONFIDANT_PUBLIC_URL": self.web_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        for service in ALL_SERVICES:
            upper = service.upper()
            env[f"CONFIDANT_{upper}_LISTEN"] = self.address(service)
            env[f"CONFIDANT_{upper}_ADDR"] = self.address(service)
            if service in GRPC_SERVICES:
                env[f"CONFIDANT_{upper}_DATABASE_URL"] = self.database_url(service)
            if service in self.health_ports:
                env[f"CONFIDANT_{upper}_HEALTH_LISTEN"] = self.health_address(service)
        env.update(self.extra_env)
        return env

    def prepare(self) -> None:
        """Keys and one database per service (kept when they exist)."""
        ensure_dev_keys(self.keys_dir)
        for service in GRPC_SERVICES:
            self.pg.create_database(f"{self.database_prefix}_{service}", exists_ok=True)

    def start(self, timeout: float = 60.0) -> None:
        busy = [f"{s} ({p})" for s, p in self.ports.items() if port_in_use(p)]
        if busy:
            raise PortInUse(
                "These ports are already in use: " + ", ".join(busy) + ". Stop whatever holds them "
                "(perhaps another `make run`) or set CONFIDANT_PORT_BASE to move every port."
            )
        self.prepare()
        env = self.env()
        try:
            for service in ALL_SERVICES:
                self.start_one(service, env)
            self.wait_ready(timeout)
        except BaseException:
            # The services run in their own sessions: never leave them behind.
            self.stop()
            raise

    def start_one(self, service: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            cwd=REPO,
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # a terminal's Ctrl-C reaches the runner, which stops us in order
        )
        self.processes[service] = proc
        thread = threading.Thread(target=self._pump, args=(service, proc), daemon=True)
        thread.start()
        self._threads.append(thread)
        return proc

    def _pump(self, service: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if self.sink:
                self.sink(service, line.rstrip("\n"))

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(ALL_SERVICES)
        while pending:
            for service in list(pending):
                proc = self.processes.get(service)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"The {service} service exited with code {proc.returncode} while starting.")
                if self._ready(service):
                    pending.discard(service)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("Not ready in time: " + ", ".join(sorted(pending)))
            time.sleep(0.1)

    def _ready(self, service: str) -> bool:
        if service == "web":
            try:
                with urllib.request.urlopen(self.web_url + "/healthz", timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                return False
        return asyncio.run(health_check(self.health_address(service))) == health_pb2.HealthCheckResponse.SERVING

    def stop(self, grace: float = 15.0) -> dict[str, int | None]:
        """SIGTERM every process, wait for them, SIGKILL stragglers; return exit codes."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + grace
        for service, proc in self.processes.items():
            try:
                codes[service] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[service] = None
        for thread in self._threads:
            thread.join(timeout=2)
        self.processes.clear()
        return codes


async def health_check(address: str, service: str = "") -> int | None:
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
            return reply.status
    except grpc.aio.AioRpcError:
        return None
