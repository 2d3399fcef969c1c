"""router's process: consumes CaseSubmitted, appends CaseRouted or CaseNeedsTriage."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from civicflow.consumer import CaseEventConsumer, Inbox
from civicflow.db import make_engine
from civicflow.events import CaseSubmitted, RecordedEvent
from civicflow.eventstore import EventStore, PostgresEventStore
from civicflow.logging import configure_logging
from civicflow.runtime import ServiceProcess, serve
from civicflow.settings import KernelSettings
from services.router.domain import CityCatalogue, load_catalogue, route_case

DEFAULT_CITY = Path(__file__).resolve().parents[2] / "samples" / "city" / "sample_city.yaml"


class RouterSettings(KernelSettings):
    router_grpc_port: int = 50053
    city_file: Path = DEFAULT_CITY


class CaseSubmittedHandler:
    def __init__(self, inbox: Inbox, store: EventStore, catalogue: CityCatalogue) -> None:
        self._inbox = inbox
        self._store = store
        self._catalogue = catalogue

    async def __call__(self, event: RecordedEvent) -> None:
        assert isinstance(event.data, CaseSubmitted)
        decision = route_case(self._catalogue, event.data)

        async def record(tx: AsyncConnection) -> None:
            await self._store.append(tx, event.case_id, None, [decision], event.caused("router"))

        await self._inbox.process_once(event, record)


def bootstrap(settings: RouterSettings) -> ServiceProcess:
    engine = make_engine(settings.database_url)
    handler = CaseSubmittedHandler(Inbox(engine, "router"), PostgresEventStore(), load_catalogue(settings.city_file))
    consumer = CaseEventConsumer("router", settings, {CaseSubmitted.event_type: handler})
    return ServiceProcess("router", settings, engine, settings.router_grpc_port, consumer=consumer)


async def run() -> None:
    settings = RouterSettings()
    configure_logging("router", settings.log_level)
    await serve(bootstrap(settings))
