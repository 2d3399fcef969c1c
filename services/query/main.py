"""query's process: projects every case event into the read model and serves CaseQueryService."""

from __future__ import annotations

from civicflow.consumer import CaseEventConsumer, Reactions
from civicflow.db import make_engine
from civicflow.events import CATALOGUE
from civicflow.eventstore import PostgresEventStore
from civicflow.logging import configure_logging
from civicflow.runtime import ServiceProcess, serve
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import UnitOfWork
from civicflow.v1 import query_pb2, query_pb2_grpc
from services.query.cityfile import CityFile
from services.query.grpc_api import CaseQueryServicer
from services.query.readmodel import Projector


class QuerySettings(KernelSettings):
    query_grpc_port: int = 50052


def bootstrap(settings: QuerySettings) -> ServiceProcess:
    engine = make_engine(settings.database_url, pool_size=20)
    reactions = Reactions(frozenset(CATALOGUE), Projector(), UnitOfWork(engine, "query", PostgresEventStore()))
    consumer = CaseEventConsumer("query", settings, reactions)
    # The city file says how precisely each service's cases are located in public (services/query/public.py).
    servicer = CaseQueryServicer(engine, CityFile(settings.city_file).current)
    service_name = query_pb2.DESCRIPTOR.services_by_name["CaseQueryService"].full_name
    return ServiceProcess(
        "query",
        settings,
        engine,
        settings.query_grpc_port,
        consumer=consumer,
        servicers=[
            (service_name, lambda server: query_pb2_grpc.add_CaseQueryServiceServicer_to_server(servicer, server))
        ],
    )


async def run() -> None:
    settings = QuerySettings()
    configure_logging("query", settings.log_level)
    await serve(bootstrap(settings))
