"""Starts the whole system as separate processes: the five services, the sample department system, the
SAMPLE Open311 server, the SMTP sink and the sample telephony provider. Used by `civicflow dev` and by the
end-to-end tests, so both run the same thing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from civicflow.infra import Infrastructure, free_ports, wait_for_port

SERVICES = ("intake", "router", "workorder_bridge", "notifier", "query")
# the city's outside world
SAMPLES = ("smtp_sink", "sample_department", "sample_telephony", "grpc_department", "sample_open311")
# the sample city's department whose own integration pulls work orders over gRPC (samples/grpc_department)
SAMPLE_GRPC_DEPARTMENT = "water"


@dataclass
class Ports:
    intake: int
    query: int
    router: int
    workorder_bridge: int
    notifier: int
    bridge_http: int
    sample_department: int
    smtp: int
    phone: int  # the sample telephony provider
    notifier_http: int  # the notifier's webhooks (texts and calls coming back from the telephony provider)
    metrics: dict[str, int] = field(default_factory=dict)  # each service's Prometheus /metrics
    open311: int = 8096  # the SAMPLE Open311 server (the sample city's streets and sanitation departments)

    @classmethod
    def defaults(cls) -> Ports:
        metrics = {service: 9101 + n for n, service in enumerate(SERVICES)}
        return cls(50051, 50052, 50053, 50054, 50055, 8081, 8090, 8025, 8095, 8082, metrics)

    @classmethod
    def free(cls) -> Ports:
        drawn = free_ports(10 + len(SERVICES) + 1)
        intake, query, router, bridge, notifier, bridge_http, department, smtp, phone, notifier_http = drawn[:10]
        metrics = dict(zip(SERVICES, drawn[10 : 10 + len(SERVICES)], strict=True))
        servers = (intake, query, router, bridge, notifier, bridge_http, department, smtp, phone, notifier_http)
        return cls(*servers, metrics=metrics, open311=drawn[-1])

    def grpc(self, service: str) -> int:
        port: int = getattr(self, service)
        return port


@dataclass
class SystemProcesses:
    """The system's processes, each with its log file under <state_dir>/logs."""

    infra: Infrastructure
    state_dir: Path
    ports: Ports
    extra_env: dict[str, str] = field(default_factory=dict)
    # a key with every scope that clients of this system send (civicflow.sandbox makes one; dev: cli.key)
    api_key: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    address_points_loaded: str = ""  # what start_all did with the city's address-point file

    @property
    def mail_dir(self) -> Path:
        return self.state_dir / "mail"

    @property
    def phone_dir(self) -> Path:
        """Where the sample telephony provider files every text and call."""
        return self.state_dir / "phone"

    @property
    def grpc_department_dir(self) -> Path:
        """The SAMPLE gRPC department's client key and, per department, a file per work order it pulled."""
        return self.state_dir / "grpc_department"

    @property
    def phone_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.phone}"

    def environment(self) -> dict[str, str]:
        p = self.ports
        env = dict(os.environ)
        env.update(
            {
                "CIVICFLOW_DATABASE_URL": self.infra.database_url,
                "CIVICFLOW_KAFKA_BOOTSTRAP_SERVERS": self.infra.kafka_bootstrap_servers,
                "CIVICFLOW_STATE_DIR": str(self.state_dir),
                "CIVICFLOW_INTAKE_GRPC_PORT": str(p.intake),
                "CIVICFLOW_QUERY_GRPC_PORT": str(p.query),
                "CIVICFLOW_ROUTER_GRPC_PORT": str(p.router),
                "CIVICFLOW_BRIDGE_GRPC_PORT": str(p.workorder_bridge),
                "CIVICFLOW_NOTIFIER_GRPC_PORT": str(p.notifier),
                "CIVICFLOW_BRIDGE_HTTP_PORT": str(p.bridge_http),
                "CIVICFLOW_WORKORDER_BASE_URL": f"http://127.0.0.1:{p.sample_department}",
                "CIVICFLOW_SAMPLE_DEPT_PORT": str(p.sample_department),
                "CIVICFLOW_SMTP_PORT": str(p.smtp),
                "CIVICFLOW_BRIDGE_SMTP_PORT": str(p.smtp),  # email departments' inboxes are the sink too
                "CIVICFLOW_MAIL_DIR": str(self.mail_dir),
                "CIVICFLOW_SAMPLE_PHONE_PORT": str(p.phone),
                "CIVICFLOW_PHONE_DIR": str(self.phone_dir),
                "CIVICFLOW_TELEPHONY_BASE_URL": self.phone_url,
                "CIVICFLOW_NOTIFIER_HTTP_PORT": str(p.notifier_http),
                "CIVICFLOW_TELEPHONY_INBOUND_URL": f"http://127.0.0.1:{p.notifier_http}/telephony/inbound",
                "CIVICFLOW_SAMPLE_GRPC_DEPARTMENT": SAMPLE_GRPC_DEPARTMENT,
                "CIVICFLOW_SAMPLE_GRPC_KEY_FILE": str(self.grpc_department_dir / "client.key"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.open311_environment(env))
        env.update(self.extra_env)
        return env

    def open311_environment(self, env: dict[str, str]) -> dict[str, str]:
        """The SAMPLE Open311 server's port; where the bridge finds it (the sample city names the sample's default
        address, which the open311 kind sends here in development); and the api key both share: the operator's,
        else one kept in the state folder (civicflow.secrets; in production a missing one is refused)."""
        from civicflow.secrets import shared_secret
        from civicflow.settings import KernelSettings

        kernel = KernelSettings(state_dir=self.state_dir)
        configured = env.get("CIVICFLOW_OPEN311_API_KEY", "")
        return {
            "CIVICFLOW_SAMPLE_OPEN311_PORT": str(self.ports.open311),
            "CIVICFLOW_OPEN311_SAMPLE_URL": f"http://127.0.0.1:{self.ports.open311}",
            "CIVICFLOW_OPEN311_API_KEY": shared_secret(kernel, configured, "CIVICFLOW_OPEN311_API_KEY", "open311.key"),
        }

    def command(self, name: str) -> list[str]:
        if name in SERVICES:
            return [sys.executable, "-m", "civicflow.cli", "run", name]
        module = {
            "sample_department": "samples.department_workorders",
            "smtp_sink": "samples.smtp_sink",
            "sample_telephony": "samples.telephony",
            "grpc_department": "samples.grpc_department",
            "sample_open311": "samples.open311_department",
        }[name]
        return [sys.executable, "-m", module]

    def start(self, name: str) -> None:
        if name == "grpc_department":
            self.keep_grpc_department_key()
            self.grpc_department_connected().unlink(missing_ok=True)
        log_path = self.state_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        if name in self.ports.metrics:
            env["CIVICFLOW_METRICS_PORT"] = str(self.ports.metrics[name])
        with log_path.open("ab") as log_file:
            self.processes[name] = subprocess.Popen(
                self.command(name), env=env, stdout=log_file, stderr=subprocess.STDOUT
            )

    def start_all(self) -> None:
        self.address_points_loaded = self.load_address_points()
        for name in SAMPLES + SERVICES:
            self.start(name)
        self.wait_ready()

    def load_address_points(self) -> str:
        """Before intake starts: the city file's address points into the database, unless that very file is
        loaded already (its digest). Says what it did."""
        import asyncio

        from civicflow.address_file import AddressFileError, load_if_changed
        from civicflow.city import load_city
        from civicflow.settings import SAMPLE_CITY

        city = load_city(Path(self.environment().get("CIVICFLOW_CITY_FILE") or SAMPLE_CITY))
        if city.address_points is None:
            return "the city file names no address-point file; addresses will not be placed"
        try:
            loaded = asyncio.run(load_if_changed(self.infra.database_url, city.address_points, city.service_area))
        except (AddressFileError, OSError) as exc:  # the system still starts; addresses are placed as before
            return f"address points: {city.address_points.name} was not loaded: {exc}"
        if loaded.found is None:
            return f"address points: {city.address_points.name} is loaded already"
        if not loaded.replaced:
            kept = f"address points: {city.address_points.name} has no usable rows; the points loaded before are kept"
            return f"{kept}\n{loaded.found.report()}"
        return f"address points: {loaded.found.report()} from {city.address_points.name}"

    def wait_ready(self, names: tuple[str, ...] = SAMPLES + SERVICES, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            if name == "smtp_sink":
                wait_for_port("127.0.0.1", self.ports.smtp, timeout)
            elif name == "sample_department":
                wait_for_port("127.0.0.1", self.ports.sample_department, timeout)
            elif name == "sample_telephony":
                wait_for_port("127.0.0.1", self.ports.phone, timeout)
            elif name == "grpc_department":  # a client: ready once the bridge let it pull (the bridge starts too)
                wait_for_file(self.grpc_department_connected(), deadline, self.processes.get(name))
            elif name == "sample_open311":
                wait_for_port("127.0.0.1", self.ports.open311, timeout)
            else:
                wait_serving(f"127.0.0.1:{self.ports.grpc(name)}", deadline, self.processes.get(name))

    def grpc_department_connected(self) -> Path:
        return self.grpc_department_dir / SAMPLE_GRPC_DEPARTMENT / ".connected"

    def keep_grpc_department_key(self) -> None:
        """The SAMPLE gRPC department's client key (scope workorders:water), made once per database and kept in
        its folder as the CLI's is; named for the state folder, so systems sharing a database keep their own."""
        import asyncio
        import hashlib

        from civicflow.api_clients import local_key, read_key_file, write_key_file
        from civicflow.apikeys import department_scope
        from civicflow.db import make_engine

        path = self.grpc_department_dir / "client.key"
        folder_digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:6]
        name = f"sample-{SAMPLE_GRPC_DEPARTMENT}-system-{folder_digest}"

        async def ensure() -> str:
            engine = make_engine(self.infra.database_url, pool_size=1)
            try:
                scopes = frozenset({department_scope(SAMPLE_GRPC_DEPARTMENT)})
                return await local_key(engine, read_key_file(path), name, scopes)
            finally:
                await engine.dispose()

        key = asyncio.run(ensure())
        if key != read_key_file(path):
            write_key_file(path, key)

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self, timeout: float = 10) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def exited(self) -> dict[str, int]:
        return {name: code for name, p in self.processes.items() if (code := p.poll()) is not None}


def wait_for_file(path: Path, deadline: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until a sample that serves no port says it is ready by writing `path`."""
    while not path.exists():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{path.parent.name}: the sample exited with code {process.returncode}; see its log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in time; see the sample's log")
        time.sleep(0.1)


def wait_serving(address: str, deadline: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until the gRPC health check at address says SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the service at {address} exited with code {process.returncode}; see its log")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not report SERVING in time")
            time.sleep(0.1)
