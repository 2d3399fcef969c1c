"""`python -m bench.notify_channels`: stage notifications/s per channel through the notifier's delivery path and
the sample providers.

    python -m bench.notify_channels [--cases 200] [--channels email,sms,voice] [--json bench-results/x.json]

Each notification is one CaseSubmitted, sealed with a fictional contact who chose the channel, handled by the
notifier's NotificationHandler (the real SmtpSender, TextDelivery and CallDelivery on TwilioTelephony) in the
consumer's unit of work on the embedded PostgreSQL: decide, commit 'sending', call the provider, record 'sent'
and NotificationSent. Kafka is left out: the handler is what the consumer calls, and the bus has its own floor
in bench.submit_load. The SMTP sink and the sample telephony provider run as processes of their own, as
`civicflow dev` runs them, so this process holds only the notifier's path (profile it with py-spy).

Floors, measured in the same run against the same processes: the provider alone (the same number of SMTP sends
to the sink, and of POSTs to the sample provider's Messages.json and Calls.json with httpx), and PostgreSQL
single-row commits/s (bench.floors). Notifications go one after another, as one consumer's events of one case
do. It measures; it never asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import aiosmtplib
import httpx
from cryptography.fernet import Fernet
from sqlalchemy import text

from bench.floors import postgres_commits
from bench.report import machine, percentile, write_json
from civicflow.db import make_engine
from civicflow.events import CaseSubmitted, EventMetadata, Location, RecordedEvent
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.infra import free_ports, provide, wait_for_port
from civicflow.logging import configure_logging
from civicflow.pii import ContactVault, ResidentContact
from civicflow.sandbox import scratch_database
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.calls import CallDelivery
from services.notifier.domain import MessageTemplates
from services.notifier.mail import SmtpSender
from services.notifier.main import NotificationHandler
from services.notifier.sms import TextTemplates
from services.notifier.telephony import DEV_ACCOUNT_SID, DEV_CITY_NUMBER
from services.notifier.texting import TextDelivery
from services.notifier.twilio_telephony import TwilioTelephony
from services.notifier.voice import CallScripts

ROOT = Path(__file__).resolve().parents[1]
STORE = PostgresEventStore()
CHANNELS = ("email", "sms", "voice")
ZONE = ZoneInfo("America/Chicago")
MAIL_FROM = "311 <no-reply@civicflow.local>"
SAMPLE_TWIML = "<Response><Say>Your request 4K7Q-M2D was received.</Say></Response>"


def fictional_phone(n: int) -> str:
    return f"+1312555{100 + n % 100:04d}"  # 555-0100..0199, the range kept for fiction


def fictional_contact(channel: str, n: int) -> ResidentContact:
    if channel == "email":
        return ResidentContact(email=f"resident{n}@example.com")
    return ResidentContact(phone=fictional_phone(n))


@dataclass(frozen=True)
class Providers:
    """The SMTP sink and the sample telephony provider, each its own process on a free port."""

    smtp_port: int
    phone_url: str
    token: str


@contextmanager
def sample_providers(state_dir: Path) -> Iterator[Providers]:
    smtp_port, phone_port = free_ports(2)
    token = secrets.token_urlsafe(32)
    env = dict(os.environ)
    env.update(
        {
            "CIVICFLOW_STATE_DIR": str(state_dir),
            "CIVICFLOW_SMTP_PORT": str(smtp_port),
            "CIVICFLOW_MAIL_DIR": str(state_dir / "mail"),
            "CIVICFLOW_SAMPLE_PHONE_PORT": str(phone_port),
            "CIVICFLOW_PHONE_DIR": str(state_dir / "phone"),
            "CIVICFLOW_TELEPHONY_AUTH_TOKEN": token,
            # statuses move at once, so the provider's own pacing is not in the figure
            "CIVICFLOW_SAMPLE_PHONE_STEP_SECONDS": "0",
            "CIVICFLOW_LOG_LEVEL": "WARNING",
        }
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    with (state_dir / "providers.log").open("ab") as log_file:
        for module in ("samples.smtp_sink", "samples.telephony"):
            processes.append(
                subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log_file, stderr=subprocess.STDOUT)
            )
    try:
        wait_for_port("127.0.0.1", smtp_port, 60)
        wait_for_port("127.0.0.1", phone_port, 60)
        yield Providers(smtp_port, f"http://127.0.0.1:{phone_port}", token)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


async def cases_choosing(url: str, vault: ContactVault, channel: str, count: int) -> list[RecordedEvent]:
    """`count` submitted cases whose fictional resident chose `channel`; not timed."""
    engine = make_engine(url)
    submitted = []
    try:
        for n in range(count):
            case_id = uuid7()
            async with engine.begin() as tx:
                sealed = await vault.seal(tx, case_id, fictional_contact(channel, n))
                event = CaseSubmitted(
                    tracking_number=f"N{channel[0].upper()}{n:05d}",
                    service_code="POTHOLE",
                    description="a deep hole",
                    location=Location(address=f"{100 + n} W Alder St"),
                    submitted_at=datetime.now(UTC),
                    sealed_contact=sealed,
                    preferred_channel=channel,
                )
                [recorded] = await STORE.append(
                    tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="bench")
                )
            submitted.append(recorded)
    finally:
        await engine.dispose()
    return submitted


async def seconds_per_notification(
    url: str, vault: ContactVault, providers: Providers, channel: str, cases: list[RecordedEvent]
) -> tuple[list[float], float]:
    """Each case's stage notification through the notifier's handler, one after another; the times of each and
    the wall time of them all. Every one must end 'sent', or the figure would count something else."""
    engine = make_engine(url)
    telephony = TwilioTelephony(providers.phone_url, DEV_ACCOUNT_SID, providers.token, DEV_CITY_NUMBER)
    key = uuid4().bytes
    try:
        texts = TextDelivery(engine, telephony, TextTemplates(ZONE), key)  # no quiet hours: the clock stays out
        # no status callbacks and nobody at public_url: the provider's later requests do not reach this process
        calls = CallDelivery(engine, telephony, CallScripts(ZONE, "http://127.0.0.1:9"), key, texts=texts)
        sender = SmtpSender("127.0.0.1", providers.smtp_port, 15.0)
        handler = NotificationHandler(engine, vault, sender, MessageTemplates(ZONE), MAIL_FROM, texts, calls)
        unit = UnitOfWork(engine, "notifier", STORE)
        took = []
        began = time.perf_counter()
        for case in cases:
            started = time.perf_counter()
            await unit.run([case], in_order({case.type: handler}))
            took.append(time.perf_counter() - started)
        wall = time.perf_counter() - began
        async with engine.connect() as conn:
            sent = await conn.scalar(
                text("SELECT count(*) FROM notifier.deliveries WHERE channel = :ch AND status = 'sent'"),
                {"ch": channel},
            )
    finally:
        await telephony.aclose()
        await engine.dispose()
    if sent != len(cases):
        raise RuntimeError(f"{channel}: {sent} of {len(cases)} notifications ended 'sent'; see the providers' log")
    return took, wall


async def provider_alone(providers: Providers, channel: str, count: int) -> tuple[list[float], float]:
    """The floor: `count` sends straight to the provider, one after another, as the adapters send them (a new
    SMTP connection per message, as SmtpSender; one kept HTTP connection, as the twilio client)."""
    send: Callable[[int], Awaitable[Any]]
    client = httpx.AsyncClient(base_url=providers.phone_url, auth=(DEV_ACCOUNT_SID, providers.token), timeout=10)
    account = f"/2010-04-01/Accounts/{DEV_ACCOUNT_SID}"
    if channel == "email":

        async def send(n: int) -> Any:
            message = EmailMessage()
            message["From"], message["To"] = MAIL_FROM, f"floor{n}@example.com"
            message["Subject"], message["Message-ID"] = "Your request", f"<floor.{uuid4().hex}@civicflow.local>"
            message.set_content("Your request 4K7Q-M2D was received.")
            return await aiosmtplib.send(message, hostname="127.0.0.1", port=providers.smtp_port, timeout=15)

    elif channel == "sms":

        async def send(n: int) -> Any:
            form = {"To": fictional_phone(n), "From": DEV_CITY_NUMBER, "Body": "Your request 4K7Q-M2D was received."}
            return (await client.post(f"{account}/Messages.json", data=form)).raise_for_status()

    else:

        async def send(n: int) -> Any:
            form = {"To": fictional_phone(n), "From": DEV_CITY_NUMBER, "Twiml": SAMPLE_TWIML}
            return (await client.post(f"{account}/Calls.json", data=form)).raise_for_status()

    try:
        took = []
        began = time.perf_counter()
        for n in range(count):
            started = time.perf_counter()
            await send(n)
            took.append(time.perf_counter() - started)
        return took, time.perf_counter() - began
    finally:
        await client.aclose()


def channel_figures(
    took: list[float], wall: float, floor_took: list[float], floor_wall: float, commits_per_s: float
) -> dict[str, float]:
    """One channel's line of the report: rates, p50/p99 in ms, and the ratios to the floors of the same run."""
    rate, floor_rate = len(took) / wall, len(floor_took) / floor_wall
    p50, p99 = percentile(took, 50) or 0.0, percentile(took, 99) or 0.0
    floor_p50, floor_p99 = percentile(floor_took, 50) or 0.0, percentile(floor_took, 99) or 0.0
    return {
        "notifications_per_s": rate,
        "p50_ms": p50 * 1000,
        "p99_ms": p99 * 1000,
        "provider_alone_per_s": floor_rate,
        "provider_alone_p50_ms": floor_p50 * 1000,
        "provider_alone_p99_ms": floor_p99 * 1000,
        "ratio_to_provider_alone": rate / floor_rate,
        "ratio_to_postgres_commits": rate / commits_per_s,
    }


async def measure(cases: int, channels: tuple[str, ...], state_dir: Path) -> dict[str, object]:
    vault = ContactVault(Fernet.generate_key())
    with provide(ROOT / ".civicflow" / "bench-notify") as infra, sample_providers(state_dir) as providers:
        async with scratch_database(infra, "notify") as url:
            commits = await postgres_commits(url)
            figures = {}
            for channel in channels:
                submitted = await cases_choosing(url, vault, channel, cases)
                floor_took, floor_wall = await provider_alone(providers, channel, cases)
                took, wall = await seconds_per_notification(url, vault, providers, channel, submitted)
                figures[channel] = channel_figures(took, wall, floor_took, floor_wall, commits.commits_per_s)
    return {
        "cases_per_channel": cases,
        "path": "NotificationHandler in the consumer's UnitOfWork, scratch PostgreSQL, providers as processes",
        "postgres_commits_per_s": commits.commits_per_s,
        "synchronous_commit": commits.synchronous_commit,
        "channels": figures,
        "machine": machine(),
    }


def channel_list(value: str) -> tuple[str, ...]:
    """--channels: some of email, sms, voice, comma-separated, each once."""
    channels = tuple(part.strip().lower() for part in value.split(","))
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or not channels or len(set(channels)) != len(channels):
        what = f"{unknown[0][:20]!r} is not a channel" if unknown else "each may be named once"
        raise argparse.ArgumentTypeError(
            f"{what}; write some of {', '.join(CHANNELS)} separated by commas, e.g. 'email,sms'"
        )
    return channels


def case_count(value: str) -> int:
    """--cases: a whole number of notifications per channel, 1 to 100,000."""
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 100_000:
        raise argparse.ArgumentTypeError(f"write a whole number from 1 to 100000, e.g. 200 (got {value[:20]!r})")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=case_count, default=200, help="notifications per channel")
    parser.add_argument("--channels", type=channel_list, default=CHANNELS, help="comma-separated: email, sms, voice")
    parser.add_argument("--json", type=Path, default=Path("bench-results/notify_channels.json"))
    args = parser.parse_args()
    channels: tuple[str, ...] = args.channels
    configure_logging("bench", "WARNING")  # a line per notification would drown the figures
    state_dir = ROOT / ".civicflow" / "bench-notify" / "providers"
    shutil.rmtree(state_dir, ignore_errors=True)  # the last run's mail and phone files; its log stays till now
    result = asyncio.run(measure(args.cases, channels, state_dir))
    print(f"notifications, {args.cases} a channel; PostgreSQL {result['postgres_commits_per_s']:.0f} commits/s alone")
    figures: dict[str, dict[str, float]] = result["channels"]  # type: ignore[assignment]
    for channel, f in figures.items():
        print(
            f"  {channel:<5} {f['notifications_per_s']:7.1f}/s  p50 {f['p50_ms']:6.1f} ms  p99 {f['p99_ms']:6.1f} ms"
            f"  | provider alone {f['provider_alone_per_s']:7.1f}/s (p50 {f['provider_alone_p50_ms']:.1f} ms):"
            f" ratio {f['ratio_to_provider_alone']:.2f}; to PostgreSQL commits {f['ratio_to_postgres_commits']:.3f}"
        )
    write_json(result, args.json)


if __name__ == "__main__":
    main()
