"""intake's process: the gRPC IntakeService over the event store."""

from __future__ import annotations

from civicflow.city import load_city
from civicflow.db import make_engine
from civicflow.eventstore import PostgresEventStore
from civicflow.logging import configure_logging
from civicflow.pii import ContactVault, load_master_key
from civicflow.runtime import ServiceProcess, serve
from civicflow.settings import KernelSettings
from civicflow.v1 import intake_pb2, intake_pb2_grpc
from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import Intake


class IntakeSettings(KernelSettings):
    intake_grpc_port: int = 50051


def bootstrap(settings: IntakeSettings) -> ServiceProcess:
    engine = make_engine(settings.database_url, pool_size=20)
    vault = ContactVault(load_master_key(settings.pii_master_key, settings.state_dir))
    store = PostgresEventStore()
    # the city file names the service area; a point outside it is refused at intake
    city = load_city(settings.city_file)
    servicer = IntakeServicer(Intake(engine, store, vault), engine, store, city.service_area)
    service_name = intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name
    return ServiceProcess(
        "intake",
        settings,
        engine,
        settings.intake_grpc_port,
        servicers=[
            (service_name, lambda server: intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, server))
        ],
    )


async def run() -> None:
    settings = IntakeSettings()
    configure_logging("intake", settings.log_level)
    await serve(bootstrap(settings))
