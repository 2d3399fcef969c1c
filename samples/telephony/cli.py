"""`civicflow phone …`: be a resident on the SAMPLE telephony provider (development only) — text the city, set
the digits to press on its next call, and list the texts and calls the provider kept."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import typer

from civicflow.reach import dev_file
from samples.telephony.provider import SampleTelephonySettings
from samples.telephony.records import API_VERSION, E164, PhoneFolder
from services.notifier.telephony import DEV_PROVIDER_URL

phone_app = typer.Typer(
    help="Be a resident on the sample telephony provider that `civicflow dev` runs (development only).",
    no_args_is_help=True,
)

Number = Annotated[str, typer.Argument(help="The resident's number, E.164 (e.g. +15555550142, a fictional one)")]


def provider_url(settings: SampleTelephonySettings) -> str:
    """CIVICFLOW_TELEPHONY_BASE_URL, else the sample provider of the system `civicflow dev` runs."""
    configured = os.environ.get("CIVICFLOW_TELEPHONY_BASE_URL", "").strip()
    if configured:
        return configured.rstrip("/")
    running = dev_file(settings)
    if running.exists():
        found = json.loads(running.read_text()).get("phone")
        if found:
            return str(found)
    return DEV_PROVIDER_URL


def _client(settings: SampleTelephonySettings) -> httpx.Client:
    return httpx.Client(
        base_url=provider_url(settings), auth=(settings.telephony_account_sid, settings.auth_token()), timeout=15
    )


def _checked(number: str) -> str:
    if not E164.fullmatch(number):
        raise typer.BadParameter("write the number in E.164: a +, the country code and the number, digits only")
    return number


def _post(client: httpx.Client, path: str, data: dict[str, str]) -> dict[str, Any]:
    try:
        answer = client.post(path, data=data)
    except httpx.HTTPError as exc:
        typer.echo(
            f"the sample telephony provider at {client.base_url} cannot be reached ({type(exc).__name__});"
            " start the system with `civicflow dev`",
            err=True,
        )
        raise typer.Exit(1) from None
    if answer.status_code >= 400:
        problem = (
            answer.json().get("message", answer.text)
            if answer.headers.get("content-type", "").startswith("application/json")
            else answer.text
        )
        typer.echo(f"the sample telephony provider refused it: {problem}", err=True)
        raise typer.Exit(1)
    found: dict[str, Any] = answer.json()
    return found


@phone_app.command("reply")
def reply(
    number: Number,
    text: Annotated[str, typer.Argument(help='What the resident texts, e.g. "STATUS" or "STOP"')],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the city's answer")] = 5.0,
) -> None:
    """Text the city's number as a resident, and print what the city texts back."""
    settings = SampleTelephonySettings()
    resident = _checked(number)
    since = datetime.now(UTC).replace(microsecond=0)
    with _client(settings) as client:
        sent = _post(client, "/sample/inbound", {"From": resident, "Body": text})
        typer.echo(f"texted {settings.telephony_from} from {resident} ({sent['sid']})")
        if sent.get("webhook") is None:
            typer.echo("the city's inbound webhook could not be reached (is the notifier running?)", err=True)
        elif sent["webhook"] >= 400:
            typer.echo(f"the city's inbound webhook answered HTTP {sent['webhook']} (see the notifier's log)", err=True)
        replies = [r["body"] for r in sent["replies"]]
        # The city may answer in the webhook's TwiML (above) or later, through the API: look for both.
        deadline = time.monotonic() + wait
        messages = f"/{API_VERSION}/Accounts/{settings.telephony_account_sid}/Messages.json"
        stamp = (since - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        while not replies and time.monotonic() < deadline:
            listed = client.get(messages, params={"To": resident, "DateSent>": stamp})
            replies = [m["body"] for m in listed.json().get("messages", [])][::-1] if listed.is_success else []
            if not replies:
                time.sleep(0.25)
    if not replies:
        typer.echo(f"no answer from the city within {wait:g}s")
        raise typer.Exit(1)
    for body in replies:
        typer.echo(f"the city answered: {body}")


@phone_app.command("press")
def press(
    number: Number,
    digits: Annotated[str, typer.Argument(help="The digits to press at the next <Gather> of a call to NUMBER")],
) -> None:
    """Queue the digits a resident presses when the city's next call to them asks (one entry per question)."""
    settings = SampleTelephonySettings()
    with _client(settings) as client:
        waiting = _post(client, "/sample/press", {"To": _checked(number), "Digits": digits})
    typer.echo(f"{number} will press {digits} ({waiting['waiting']} answer(s) waiting for calls)")


@phone_app.command("list")
def list_files(
    number: Annotated[str | None, typer.Argument(help="Only this resident's texts and calls")] = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 20,
) -> None:
    """The texts and calls the sample provider kept (files under <state>/phone), newest first."""
    settings = SampleTelephonySettings()
    folder = PhoneFolder(settings.folder())
    files = folder.files(_checked(number) if number else None)
    if not files:
        typer.echo(f"no texts or calls in {folder.path}")
        return
    for file in files[:limit]:
        lines = file.read_text(encoding="utf-8").splitlines()
        last = lines[-1].strip() if lines else ""
        kind = "call" if file.name.endswith(".call.txt") else "text"
        typer.echo(f"{kind:4}  {file.parent.name:16}  {last.split(' ', 1)[-1]:20}  {file}")
