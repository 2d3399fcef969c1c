"""How the command line reaches a system: its database, the services' addresses, the CLI's API key."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, NoReturn

import grpc
import typer

from civicflow.settings import KernelSettings


def dev_file(settings: KernelSettings) -> Path:
    return settings.state_dir / "dev.json"


def cli_key_file(settings: KernelSettings) -> Path:
    """Where `civicflow dev` keeps the key this machine's CLI calls with (every scope, mode 0600)."""
    return settings.state_dir / "cli.key"


def require_infrastructure(kafka: bool = True) -> KernelSettings:
    settings = KernelSettings()
    if not settings.database_url or (kafka and not settings.kafka_bootstrap_servers):
        raise typer.BadParameter(
            "set CIVICFLOW_DATABASE_URL and CIVICFLOW_KAFKA_BOOTSTRAP_SERVERS, or use `civicflow dev` to run everything"
        )
    return settings


def service_address(service: str) -> str:
    configured = os.environ.get(f"CIVICFLOW_{service.upper()}_ADDRESS")
    if configured:
        return configured
    running = dev_file(KernelSettings())
    if running.exists():
        return str(json.loads(running.read_text())[service])
    return {
        "intake": "127.0.0.1:50051",
        "query": "127.0.0.1:50052",
        "router": "127.0.0.1:50053",
        "notifier": "127.0.0.1:50055",
    }[service]


def database_url() -> str:
    """CIVICFLOW_DATABASE_URL, or the database of the system `civicflow dev` is running."""
    settings = KernelSettings()
    if settings.database_url:
        return settings.database_url
    running = dev_file(settings)
    if running.exists():
        return str(json.loads(running.read_text())["database_url"])
    raise typer.BadParameter("set CIVICFLOW_DATABASE_URL, or start the system with `civicflow dev`")


def api_key() -> str | None:
    """CIVICFLOW_API_KEY, else the key `civicflow dev` made for this machine's CLI."""
    configured = os.environ.get("CIVICFLOW_API_KEY", "").strip()
    if configured:
        return configured
    kept = cli_key_file(KernelSettings())
    return kept.read_text().strip() if kept.exists() else None


def open_channel(service: str) -> grpc.Channel:
    """Plain text, or TLS when CIVICFLOW_GRPC_TLS_CA_FILE names the CA to trust."""
    from civicflow.grpc_tls import TlsMisconfigured, channel_credentials

    try:
        credentials = channel_credentials(KernelSettings())
    except TlsMisconfigured as exc:
        raise typer.BadParameter(str(exc)) from exc
    address = service_address(service)
    return grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)


def call(service: str, stub: Any, method: str, request: Any, timeout: float = 10) -> Any:
    """One gRPC call to a running service with the CLI's API key; a refusal is printed as the service
    explained it, exit 1."""
    from civicflow.apikeys import call_metadata

    key = api_key()
    metadata = call_metadata(key) if key else None
    with open_channel(service) as channel:
        try:
            return getattr(stub(channel), method)(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            fail(error)


def fail(error: grpc.RpcError) -> NoReturn:
    from civicflow.grpc_errors import field_violations

    assert isinstance(error, grpc.Call)
    violations = field_violations(error)
    if not violations:
        typer.echo(f"error: {error.details()}", err=True)
    for field, description in violations:
        typer.echo(f"error: {field}: {description}", err=True)
    raise typer.Exit(1)


def with_engine(work: Any) -> Any:
    """Run `work(engine)` on the configured database (or the running `civicflow dev` system's)."""
    from civicflow.db import make_engine

    async def go() -> Any:
        engine = make_engine(database_url(), pool_size=1)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())
