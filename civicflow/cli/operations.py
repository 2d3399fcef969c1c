"""Operating a system: API keys of its clients, the event catalogue, rebuilding read models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from civicflow.reach import with_engine
from civicflow.settings import KernelSettings

keys_app = typer.Typer(help="API keys of the systems that call civicflow (call centre, portal…).", no_args_is_help=True)
# Each service that keeps a read model adds its command here (entry point `replay.<name>`).
replay_app = typer.Typer(help="Rebuild read models from the event store.", no_args_is_help=True)


def asyncapi(
    out: Annotated[Path | None, typer.Option(help="Write the document here instead of printing it")] = None,
) -> None:
    """The AsyncAPI document of civicflow's topics (the event catalogue other city systems read)."""
    from civicflow.asyncapi import render

    document = render()
    if out is None:
        typer.echo(document, nl=False)
    else:
        out.write_text(document, encoding="utf-8")
        typer.echo(f"wrote {out}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="The calling system, e.g. callcentre or web-portal")],
    scope: Annotated[
        list[str],
        typer.Option(
            help="What it may do, repeatable: submit, track, recategorise, preferences (set a resident's"
            " channel), rules-read, rules-admin, status-report, or all; a department's own system:"
            " workorders:<department_id> (WorkOrderSync for that department only)"
        ),
    ],
) -> None:
    """Make an API key for a client system; the key is printed once and stored only as a hash."""
    from civicflow.api_clients import ClientRefused, create_client
    from civicflow.apikeys import parse_scopes

    try:
        scopes = parse_scopes(scope)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        key = with_engine(lambda engine: create_client(engine, name, scopes))
    except ClientRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"API key for {name} (scopes: {', '.join(sorted(scopes))}); shown only now, keep it secret:")
    typer.echo(key.reveal())
    typer.echo("clients send it as the gRPC metadata `authorization: Bearer <key>` (the CLI: CIVICFLOW_API_KEY)")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: client, id, scopes, when made, last used and revoked (never the secret)."""
    from civicflow.api_clients import list_clients

    def when(value: Any) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value else "-"

    clients = with_engine(list_clients)
    if not clients:
        typer.echo("no API keys yet; `civicflow keys create NAME --scope …` makes one")
        return
    typer.echo(f"{'name':<20} {'id':<12}  {'created':<16}  {'last used':<16}  {'revoked':<16}  scopes")
    for c in clients:
        typer.echo(
            f"{c.name:<20} {c.key_id:<12}  {when(c.created_at):<16}  {when(c.last_used_at):<16}"
            f"  {when(c.revoked_at):<16}  {','.join(sorted(c.scopes))}"
        )


@keys_app.command("revoke")
def keys_revoke(name_or_id: Annotated[str, typer.Argument(help="A client's name (its live key) or a key id")]) -> None:
    """Revoke a key; servers refuse it within CIVICFLOW_API_KEY_CACHE_SECONDS (default 5 s)."""
    from civicflow.api_clients import ClientRefused, revoke_client

    try:
        revoked = with_engine(lambda engine: revoke_client(engine, name_or_id))
    except ClientRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    seconds = KernelSettings().api_key_cache_seconds
    typer.echo(f"revoked the key {revoked.key_id} of {revoked.name}; servers refuse it within {seconds:g} s")
