"""router's process: places new cases by the city's rules, reroutes, flags overdue cases, explains."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import structlog

from civicflow.consumer import CaseEventConsumer, Reactions
from civicflow.db import make_engine
from civicflow.eventstore import PostgresEventStore
from civicflow.logging import configure_logging
from civicflow.runtime import ServiceProcess, periodically, serve
from civicflow.settings import SAMPLE_CITY, KernelSettings
from civicflow.unit_of_work import UnitOfWork, in_order
from civicflow.v1 import routing_pb2, routing_pb2_grpc
from services.router.grpc_api import RoutingServicer
from services.router.handlers import Router
from services.router.rulebook import RuleBook

log = structlog.get_logger(__name__)
DEFAULT_CITY = SAMPLE_CITY


class RouterSettings(KernelSettings):
    router_grpc_port: int = 50053
    # where rule sets named by a ReloadRules request must live; empty means the city file's folder
    rules_dir: Path | None = None
    rules_watch_seconds: float = 2.0
    overdue_scan_seconds: float = 30.0


def bootstrap(settings: RouterSettings) -> ServiceProcess:
    engine = make_engine(settings.database_url)
    store = PostgresEventStore()
    rules = RuleBook(settings.city_file, settings.rules_dir)
    router = Router(engine, store, rules)
    policies = router.policies()
    reactions = Reactions(frozenset(policies), in_order(policies), UnitOfWork(engine, "router", store))
    consumer = CaseEventConsumer("router", settings, reactions)
    servicer = RoutingServicer(rules, engine, store)
    service_name = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
    return ServiceProcess(
        "router",
        settings,
        engine,
        settings.router_grpc_port,
        consumer=consumer,
        servicers=[
            (service_name, lambda server: routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server))
        ],
        tasks=[
            lambda stop: rules.watch(stop, settings.rules_watch_seconds),
            periodically(settings.overdue_scan_seconds, lambda: router.mark_overdue(datetime.now(UTC)), "overdue scan"),
        ],
    )


async def run() -> None:
    settings = RouterSettings()
    configure_logging("router", settings.log_level)
    await serve(bootstrap(settings))
