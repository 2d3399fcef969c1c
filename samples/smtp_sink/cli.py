"""`civicflow mail …`: be a department that works from its inbox, on the SAMPLE SMTP sink (development only): list
the work orders it was mailed and answer one as its staff would."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from civicflow.reach import dev_file
from samples.smtp_sink.reply import NoSuchWorkOrder, compose_reply, find_work_order, post_reply
from samples.smtp_sink.sink import read_messages
from services.workorder_bridge.main import BridgeSettings

mail_app = typer.Typer(
    help="Answer the work orders mailed to departments on email, in the SMTP sink of `civicflow dev` (development).",
    no_args_is_help=True,
)


def mail_folder(settings: BridgeSettings) -> Path:
    return Path(os.environ.get("CIVICFLOW_MAIL_DIR", "") or settings.state_dir / "mail")


def bridge_url(settings: BridgeSettings) -> str:
    """CIVICFLOW_BRIDGE_PUBLIC_URL, else the bridge of the system `civicflow dev` runs, else its default port."""
    if settings.bridge_public_url:
        return settings.bridge_public_url
    running = dev_file(settings)
    if running.exists():
        found = json.loads(running.read_text()).get("bridge")
        if found:
            return str(found)
    return f"http://127.0.0.1:{settings.bridge_http_port}"


@mail_app.command("reply")
def reply(
    work_order: Annotated[str, typer.Argument(help="The work order's reference (EM-…) or its .eml file in the sink")],
    text: Annotated[str, typer.Argument(help='The reply, status word first, e.g. "done: filled the pothole"')],
) -> None:
    """Reply to a work-order email as the department (From its inbox), and post it to the bridge as the city's
    inbound-mail relay would."""
    settings = BridgeSettings()
    folder = mail_folder(settings)
    try:
        original = find_work_order(folder, work_order)
    except NoSuchWorkOrder as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    message = compose_reply(original, text)
    url = bridge_url(settings)
    try:
        posted = post_reply(url, settings.signing_secret(), message)
    except Exception as exc:  # httpx's errors: the bridge is not running
        typer.echo(
            f"the bridge at {url} cannot be reached ({type(exc).__name__}); is `civicflow dev` running?", err=True
        )
        raise typer.Exit(1) from None
    typer.echo(f"replied to {original.subject!r} as {message['From']}")
    if posted.status_code >= 300:
        typer.echo(f"the bridge refused the reply (HTTP {posted.status_code}): {posted.answer}", err=True)
        raise typer.Exit(1)
    typer.echo(f"the bridge took it: {posted.answer}")


@mail_app.command("work-orders")
def work_orders(limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 20) -> None:
    """The work-order emails (and cancellation notices) in the sink, newest first."""
    folder = mail_folder(BridgeSettings())
    found = [m for m in read_messages(folder) if "[EM-" in m.subject][::-1]
    if not found:
        typer.echo(f"no work-order mail in {folder}")
        return
    for stored in found[:limit]:
        typer.echo(f"{stored.message['To']}  {stored.subject}")
