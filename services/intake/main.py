"""intake's process: the gRPC IntakeService over the event store."""

from __future__ import annotations

import asyncio

from pydantic import Field

from civicflow.address_points import address_geocoder
from civicflow.city import load_city
from civicflow.db import make_engine
from civicflow.eventstore import PostgresEventStore
from civicflow.geocode import Geocoder
from civicflow.logging import configure_logging
from civicflow.pii import ContactVault, load_master_key
from civicflow.runtime import ServiceProcess, Task, serve
from civicflow.settings import KernelSettings
from civicflow.v1 import intake_pb2, intake_pb2_grpc
from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import Intake


class IntakeSettings(KernelSettings):
    intake_grpc_port: int = 50051
    intake_group_commit_ms: float = Field(
        default=2.0,
        ge=0,
        description="How long a request waits for others to share its transaction; 0: only those already queued.",
    )
    intake_group_commit_max: int = Field(default=64, ge=1, description="At most this many requests per transaction.")


def bootstrap(settings: IntakeSettings, geocoder: Geocoder | None = None) -> ServiceProcess:
    engine = make_engine(settings.database_url, pool_size=20)
    vault = ContactVault(load_master_key(settings.pii_master_key, settings.state_dir))
    store = PostgresEventStore()
    # the city file names the service area; a point outside it is refused at intake
    city = load_city(settings.city_file)
    intake = Intake(
        engine,
        store,
        vault,
        group_window_s=settings.intake_group_commit_ms / 1000,
        max_group=settings.intake_group_commit_max,
    )
    servicer = IntakeServicer(intake, engine, store, city, geocoder)
    service_name = intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name
    return ServiceProcess(
        "intake",
        settings,
        engine,
        settings.intake_grpc_port,
        servicers=[
            (service_name, lambda server: intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, server))
        ],
        tasks=[answered_before_exit(intake)],
    )


def answered_before_exit(intake: Intake) -> Task:
    """The process cancels its tasks after the gRPC server stopped and before the engine goes: the last
    group commits (or fails) while the database is still there."""

    async def wait_then_close(stop: asyncio.Event) -> None:
        try:
            await asyncio.Future()  # until cancelled
        finally:
            await intake.close()

    return wait_then_close


async def run() -> None:
    settings = IntakeSettings()
    configure_logging("intake", settings.log_level)
    await serve(bootstrap(settings, await address_geocoder(settings.database_url)))
