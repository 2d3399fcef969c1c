"""`civicflow departments …`: how each department's own system is doing, as the workorder bridge sees it
(added through an entry point)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from civicflow.reach import with_engine

departments_app = typer.Typer(
    help="Departments' own work-order systems, as the bridge sees them.", no_args_is_help=True
)


@departments_app.command("status")
def departments_status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per department, in a list")] = False,
    city_file: Annotated[
        Path | None,
        typer.Option(help="The city file naming the departments and their connectors (default: CIVICFLOW_CITY_FILE)"),
    ] = None,
) -> None:
    """Each department's connector kind, whether its system answered last time (up or down), its last success
    and last error, the work orders parked for it and how long the oldest has waited, and its parked
    cancellations."""
    from civicflow.settings import KernelSettings
    from services.workorder_bridge.connectors import CityFileUnreadable, read_connector_specs
    from services.workorder_bridge.health import department_statuses

    path = city_file or KernelSettings().city_file
    try:
        kinds: dict[str, str] = {d: spec.kind for d, spec in read_connector_specs(path).items()}
    except CityFileUnreadable as exc:  # what the database knows is still worth showing
        typer.echo(f"warning: {exc}; showing only the departments the bridge has recorded", err=True)
        kinds = {}

    async def read(engine: Any) -> Any:
        async with engine.connect() as conn:
            return await department_statuses(conn, kinds)

    statuses = with_engine(read)
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps([_as_json(s, now) for s in statuses], indent=2))
        return
    if not statuses:
        typer.echo("no departments: the city file names none and the bridge has recorded none")
        return
    rows = [_as_row(s, now) for s in statuses]
    header = ("DEPARTMENT", "KIND", "STATE", "LAST SUCCESS", "LAST ERROR", "PARKED", "OLDEST", "CANCELS")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        typer.echo("  ".join([*cells, str(row[-1])]).rstrip())
    errors = [s for s in statuses if s.last_error and s.up is False]
    for status in errors:
        typer.echo(f"{status.department_id}: {status.last_error}")


def _state(up: bool | None) -> str:
    return "unknown" if up is None else ("up" if up else "DOWN")


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    seconds = max(int((now - at).total_seconds()), 0)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _as_row(status: Any, now: datetime) -> tuple[str, ...]:
    oldest = _ago(status.oldest_parked_at, now).removesuffix(" ago") if status.parked_work_orders else "-"
    return (
        status.department_id,
        status.kind or "?",
        _state(status.up),
        _ago(status.last_success_at, now),
        _ago(status.last_error_at, now),
        str(status.parked_work_orders),
        oldest,
        str(status.parked_cancellations),
    )


def _as_json(status: Any, now: datetime) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.astimezone(UTC).isoformat() if at else None

    return {
        "department": status.department_id,
        "kind": status.kind,
        "up": status.up,
        "last_success_at": iso(status.last_success_at),
        "last_error_at": iso(status.last_error_at),
        "last_error": status.last_error,
        "checked_at": iso(status.checked_at),
        "parked_work_orders": status.parked_work_orders,
        "oldest_parked_seconds": round(status.oldest_parked_seconds(now), 1),
        "parked_cancellations": status.parked_cancellations,
    }


@departments_app.command("secret")
def departments_secret(
    department: Annotated[str, typer.Argument(help="The department's id, as in the city file")],
    city_file: Annotated[
        Path | None,
        typer.Option(help="The city file naming the departments and their connectors (default: CIVICFLOW_CITY_FILE)"),
    ] = None,
) -> None:
    """Print the webhook secret of a rest_webhook department: what to configure in that department's own system,
    which signs its status reports with it. It is derived from the bridge's signing secret (read as the bridge
    reads it: CIVICFLOW_WEBHOOK_SECRET, or in development the state folder's) for this department alone, so it
    signs nothing for another department. Run it where the bridge runs; the output is a secret: hand it over as
    one."""
    from civicflow.department_systems import department_webhook_secret
    from civicflow.secrets import UnsafeSecret
    from services.workorder_bridge.connectors import CityFileUnreadable, read_connector_specs
    from services.workorder_bridge.main import BridgeSettings

    settings = BridgeSettings()
    path = city_file or settings.city_file
    try:
        specs = read_connector_specs(path)
    except CityFileUnreadable as exc:
        typer.echo(f"{exc}; give the city file with --city-file", err=True)
        raise typer.Exit(1) from None
    spec = specs.get(department)
    if spec is not None and spec.kind != "rest_webhook":
        typer.echo(f"{department} does not report by webhook (its connector is {spec.kind}): it has no webhook secret")
        raise typer.Exit(1)
    if spec is not None and spec.webhook_secret is not None:
        where = spec.webhook_secret.env or spec.webhook_secret.file
        typer.echo(
            f"{department}'s connector names its own webhook_secret ({where}): configure that value in its system",
            err=True,
        )
        raise typer.Exit(1)
    if spec is None:
        typer.echo(f"note: {department} is not in {path}; it would be a rest_webhook department by default", err=True)
    try:
        signing_secret = settings.signing_secret()
    except UnsafeSecret as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(department_webhook_secret(signing_secret, department))
