"""`python -m bench.alerts`: how long an urgent case takes to reach every on-call contact of its department,
through the notifier's alert policy on the embedded PostgreSQL with a provider that answers in a set time.

    python -m bench.alerts [--alerts 200] [--contacts 4] [--provider-ms 50] [--json bench-results/alerts.json]

Each alert is a case submitted and routed urgent, then decided by StaffAlerts in the consumer's unit of work
(the 'sending' rows, the texts, each outcome's commit, StaffAlerted). The figure is the time per alert to
`--contacts` contacts, beside the floor measured in the same run the same way: the same alerts to one contact.
Contacts are alerted at once, so the ratio should stay near 1 whatever their number; sent one after another
it would be near `--contacts`. It measures; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from bench.report import machine
from civicflow.city import CityProfile, OnCallContact, ServiceSpec
from civicflow.db import make_engine
from civicflow.events import CaseRouted, CaseSubmitted, EventMetadata, Location, RecordedEvent
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.infra import provide
from civicflow.logging import configure_logging
from civicflow.sandbox import scratch_database
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.alerts import StaffAlerts
from services.notifier.telephony import ProviderCall, ProviderMessage, TelephonyUnavailable

ROOT = Path(__file__).resolve().parents[1]
STORE = PostgresEventStore()


class SlowProvider:
    """A provider that takes every text after a set time (the network and the provider's own work)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self.texts = 0

    async def send_text(self, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        await asyncio.sleep(self._seconds)
        self.texts += 1
        return ProviderMessage(f"SM{uuid4().hex}", to, body, "queued", datetime.now(UTC))

    async def texts_to(self, to: str, since: datetime) -> list[ProviderMessage]:
        return []

    async def text_status(self, sid: str) -> ProviderMessage:
        raise TelephonyUnavailable("the bench's provider keeps no texts")

    async def place_call(self, to: str, twiml: str, status_callback: str | None = None) -> ProviderCall:
        await asyncio.sleep(self._seconds)
        return ProviderCall(f"CA{uuid4().hex}", to, "queued")

    async def calls_to(self, to: str, since: datetime) -> list[ProviderCall]:
        return []

    def signed_by_provider(self, url: str, params: Mapping[str, str], signature: str) -> bool:
        return False


def city_with(contacts: int) -> CityProfile:
    on_call = tuple(OnCallContact(name=f"Crew {n}", phone=f"+1312555{150 + n:04d}") for n in range(contacts))
    return CityProfile(
        "Bench City", None, {"POTHOLE": ServiceSpec(name="Pothole", group="streets")}, on_call={"streets": on_call}
    )


async def urgent_cases(url: str, count: int, prefix: str) -> list[RecordedEvent]:
    engine = make_engine(url)
    decisions = []
    try:
        for n in range(count):
            case_id = uuid7()
            metadata = EventMetadata(correlation_id=uuid7(), actor="bench")
            submitted = CaseSubmitted(
                tracking_number=f"{prefix}{n:06d}",
                service_code="POTHOLE",
                description="a deep hole",
                location=Location(address=f"{100 + n} W Alder St"),
                submitted_at=datetime.now(UTC),
            )
            routed = CaseRouted(
                department_id="streets",
                department_name="Streets",
                priority="urgent",
                due_at=datetime.now(UTC) + timedelta(hours=6),
                rule_id="bench",
                rule_set_version="bench",
            )
            async with engine.begin() as tx:
                [_, decision] = await STORE.append(tx, case_id, 0, [submitted, routed], metadata)
            decisions.append(decision)
    finally:
        await engine.dispose()
    return decisions


async def seconds_per_alert(url: str, decisions: list[RecordedEvent], contacts: int, provider_s: float) -> list[float]:
    engine = make_engine(url)
    provider = SlowProvider(provider_s)
    try:
        policy = StaffAlerts(engine, provider, city_with(contacts), uuid4().bytes)
        unit = UnitOfWork(engine, "notifier", STORE)
        took = []
        for decision in decisions:
            began = time.perf_counter()
            await unit.run([decision], in_order({decision.type: policy}))
            took.append(time.perf_counter() - began)
    finally:
        await engine.dispose()
    assert provider.texts == contacts * len(decisions), "an on-call contact was not texted once"
    return took


async def measure(alerts: int, contacts: int, provider_ms: float) -> dict[str, object]:
    with provide(ROOT / ".civicflow" / "bench-alerts") as infra:
        async with scratch_database(infra, "alerts") as url:
            floor_cases, cases = await urgent_cases(url, alerts, "F"), await urgent_cases(url, alerts, "B")
            floor = await seconds_per_alert(url, floor_cases, 1, provider_ms / 1000)
            many = await seconds_per_alert(url, cases, contacts, provider_ms / 1000)
    return {
        "alerts": alerts,
        "contacts": contacts,
        "provider_ms": provider_ms,
        "median_ms": statistics.median(many) * 1000,
        "p99_ms": sorted(many)[int(len(many) * 0.99) - 1] * 1000,
        "floor_one_contact_median_ms": statistics.median(floor) * 1000,
        "ratio_to_one_contact": statistics.median(many) / statistics.median(floor),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--contacts", type=int, default=4)
    parser.add_argument("--provider-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, default=Path("bench-results/alerts.json"))
    args = parser.parse_args()
    configure_logging("bench", "WARNING")  # one "on-call alerted" line per alert would drown the figure
    result = asyncio.run(measure(args.alerts, args.contacts, args.provider_ms))
    print(
        f"alerts: {result['contacts']} on-call contacts reached in {result['median_ms']:.1f} ms a case (median;"
        f" p99 {result['p99_ms']:.1f} ms) with a provider answering in {args.provider_ms:g} ms; one contact"
        f" {result['floor_one_contact_median_ms']:.1f} ms in the same run: ratio {result['ratio_to_one_contact']:.2f}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
