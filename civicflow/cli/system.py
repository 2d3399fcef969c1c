"""Running the system: everything at once for development, one service, or the schema migrations."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from civicflow.reach import cli_key_file, dev_file, require_infrastructure
from civicflow.settings import KernelSettings


def _service_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="civicflow.services")}


def dev(
    default_ports: Annotated[bool, typer.Option(help="Use the documented ports (50051 intake, 50052 query…).")] = True,
) -> None:
    """Start embedded PostgreSQL and Kafka, migrate, and run every service until Ctrl-C."""
    from civicflow.infra import provide
    from civicflow.kafka import ensure_topics
    from civicflow.launcher import Ports, SystemProcesses
    from civicflow.logging import configure_logging
    from civicflow.migrate import all_migration_sets, migrate
    from civicflow.pii import load_master_key

    settings = KernelSettings()
    configure_logging("dev", settings.log_level)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops everything as Ctrl-C does
    state_dir = settings.state_dir.resolve()
    os.environ.setdefault("CIVICFLOW_USE_TESTCONTAINERS", "no")
    with provide(state_dir) as infra:
        typer.echo(f"infrastructure: {infra.kind}; Kafka at {infra.kafka_bootstrap_servers}")
        asyncio.run(migrate(infra.database_url, all_migration_sets()))
        _keep_local_key(infra.database_url, cli_key_file(settings))
        asyncio.run(
            ensure_topics(settings.model_copy(update={"kafka_bootstrap_servers": infra.kafka_bootstrap_servers}))
        )
        ports = Ports.defaults() if default_ports else Ports.free()
        master_key = load_master_key(settings.pii_master_key, state_dir).decode()
        system = SystemProcesses(infra, state_dir, ports, extra_env={"CIVICFLOW_PII_MASTER_KEY": master_key})
        try:
            system.start_all()
            typer.echo(system.address_points_loaded)
            dev_file(settings).write_text(
                json.dumps(
                    {
                        "intake": f"127.0.0.1:{ports.intake}",
                        "query": f"127.0.0.1:{ports.query}",
                        "router": f"127.0.0.1:{ports.router}",
                        "phone": system.phone_url,
                        "open311": f"http://127.0.0.1:{ports.open311}",
                        "notifier": f"127.0.0.1:{ports.notifier}",
                        "bridge": f"http://127.0.0.1:{ports.bridge_http}",
                        "database_url": infra.database_url,
                    }
                )
            )
            metrics = ", ".join(f"{name} {port}" for name, port in ports.metrics.items())
            typer.echo(
                "\ncivicflow is running (Ctrl-C stops it):\n"
                f"  intake    gRPC  127.0.0.1:{ports.intake}   (civicflow submit …)\n"
                f"  query     gRPC  127.0.0.1:{ports.query}   (civicflow track TRACKING-NUMBER)\n"
                f"  router    gRPC  127.0.0.1:{ports.router}   (civicflow rules explain / reload)\n"
                f"  bridge    gRPC  127.0.0.1:{ports.workorder_bridge}, webhooks http://127.0.0.1:{ports.bridge_http}\n"
                f"  notifier  gRPC  127.0.0.1:{ports.notifier}   (civicflow preferences TRACKING-NUMBER …)\n"
                f"  sample department work-order system  http://127.0.0.1:{ports.sample_department}\n"
                f"  sample Open311 server http://127.0.0.1:{ports.open311} (streets, sanitation), requests in"
                f" {state_dir / 'open311'}\n            (civicflow open311 set ID STATUS / show ID)\n"
                f"  SMTP sink 127.0.0.1:{ports.smtp}, mail saved in {system.mail_dir}\n"
                f'            (departments on email: civicflow mail work-orders / reply EM-… "done: …")\n'
                f"  SAMPLE gRPC department ({ports.workorder_bridge} WorkOrderSync) keeps its work orders in"
                f" {system.grpc_department_dir}\n"
                f"  sample telephony provider {system.phone_url}, texts and calls saved in {system.phone_dir}\n"
                f'            (civicflow phone reply NUMBER "TEXT" / press NUMBER DIGITS / list)\n'
                f"  metrics   http://127.0.0.1:<port>/metrics, port by service: {metrics}\n"
                f"  logs in {state_dir / 'logs'}\n"
                f"  the CLI calls with the API key in {cli_key_file(settings)} (every scope; `civicflow keys`)\n"
            )
            while True:
                for name, code in system.exited().items():
                    typer.echo(f"{name} exited with code {code}; restarting it (see its log)", err=True)
                    system.start(name)
                time.sleep(1)
        except KeyboardInterrupt:
            typer.echo("stopping…")
        finally:
            system.stop_all()


def _keep_local_key(database_url: str, path: Path) -> None:
    from civicflow.api_clients import local_key, read_key_file, write_key_file
    from civicflow.db import make_engine

    async def ensure() -> str:
        engine = make_engine(database_url, pool_size=1)
        try:
            return await local_key(engine, read_key_file(path))
        finally:
            await engine.dispose()

    key = asyncio.run(ensure())
    if key != read_key_file(path):
        write_key_file(path, key)


def run(service: Annotated[str, typer.Argument(help="intake, router, workorder_bridge, notifier or query")]) -> None:
    """Run one service against the configured PostgreSQL and Kafka (CIVICFLOW_* settings)."""
    found = _service_entry_points().get(service)
    if found is None:
        raise typer.BadParameter(f"no service {service!r}; choose one of {', '.join(sorted(_service_entry_points()))}")
    require_infrastructure()
    asyncio.run(found.load()())


def migrate_command() -> None:
    """Apply every pending schema migration (kernel and services). Safe to repeat."""
    from civicflow.migrate import all_migration_sets, migrate

    settings = require_infrastructure(kafka=False)
    applied = asyncio.run(migrate(settings.database_url, all_migration_sets()))
    typer.echo("\n".join(applied) if applied else "schema is up to date")
