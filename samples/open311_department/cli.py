"""`civicflow open311 …`: be the department's staff on the SAMPLE Open311 server (development only)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import httpx
import typer

from civicflow.reach import dev_file
from samples.open311_department.app import SampleOpen311Settings

open311_app = typer.Typer(
    help="Act as a department's staff on the sample Open311 server that `civicflow dev` runs (development only).",
    no_args_is_help=True,
)


def server_url(settings: SampleOpen311Settings) -> str:
    """CIVICFLOW_SAMPLE_OPEN311_URL, else the sample of the system `civicflow dev` runs, else the default port."""
    configured = os.environ.get("CIVICFLOW_SAMPLE_OPEN311_URL", "").strip()
    if configured:
        return configured.rstrip("/")
    running = dev_file(settings)
    if running.exists():
        found = json.loads(running.read_text()).get("open311")
        if found:
            return str(found)
    return f"http://127.0.0.1:{settings.sample_open311_port}"


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    url = server_url(SampleOpen311Settings())
    try:
        answer = httpx.request(method, url + path, json=body, timeout=10)
    except httpx.HTTPError as exc:
        typer.echo(f"the sample Open311 server at {url} cannot be reached ({type(exc).__name__}); run `civicflow dev`")
        raise typer.Exit(1) from None
    try:
        found: dict[str, Any] = answer.json()
    except ValueError:
        found = {}
    if answer.status_code >= 400 or not isinstance(found, dict) or not found:
        problem = found.get("error") if isinstance(found, dict) else None
        typer.echo(
            f"the sample Open311 server at {url} refused it: {problem or f'HTTP {answer.status_code}'}", err=True
        )
        raise typer.Exit(1)
    return found


@open311_app.command("set")
def set_status(
    request_id: Annotated[str, typer.Argument(help="The service request's id in the sample (e.g. 1A2B-00001)")],
    status: Annotated[str, typer.Argument(help="Their status: investigating, action_scheduled, fixed, closed, …")],
    note: Annotated[str, typer.Option(help="What the staff say about it")] = "",
) -> None:
    """Move a request to a status, as the department's staff would; civicflow reads it at its next poll."""
    moved = _call("POST", f"/sample/requests/{request_id}/status", {"status": status, "note": note})
    typer.echo(f"{request_id} is now {moved['status']} (update {moved['update_id']} at {moved['at']})")


@open311_app.command("show")
def show(request_id: Annotated[str, typer.Argument(help="The service request's id in the sample")]) -> None:
    """The request as the department sees it, with the updates civicflow posted (cancellations)."""
    typer.echo(json.dumps(_call("GET", f"/sample/requests/{request_id}"), indent=2))
