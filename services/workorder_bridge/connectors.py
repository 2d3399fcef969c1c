"""Each department's connector, built once at start from the city file's `connector:` sections.

The city file says which kind of system a department runs (civicflow/department_systems.py); the kinds'
builders (services/workorder_bridge/kinds/) make one connector per department. A department the file does not
name, or names without a connector, gets the default: rest_webhook at the city's work-order base URL, as
before connectors were per department.

One department's broken configuration (a credential reference naming nothing, a kind this bridge was built
without) must not stop every other department's work orders: its connector answers every call with
DepartmentUnavailable saying what is wrong, so its work orders park, its health row says down with the reason,
and `civicflow departments status` shows it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog
import yaml

from civicflow.department_systems import DEFAULT_CONNECTOR, ConnectorSpec, connector_specs
from services.workorder_bridge.connector import (
    Connector,
    ConnectorContext,
    DepartmentUnavailable,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    UpdatesPage,
)
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.kinds import BUILDERS, Builder

log = structlog.get_logger(__name__)

# The kinds whose updates the bridge fetches (poller.py), every spec.poll_seconds; the others push theirs to
# the bridge's endpoints. A kind that polls adds its name here.
POLL_KINDS = frozenset({"open311"})

BuildConnector = Callable[[str, ConnectorSpec], Connector]


class DepartmentLookup(Protocol):
    """What the opener and the canceller need: the connector of a department's system."""

    def for_department(self, department_id: str) -> Connector: ...


class CityFileUnreadable(ValueError):
    """The city file's departments cannot be read; the message says which file and what is wrong."""


def read_connector_specs(city_file: Path) -> dict[str, ConnectorSpec]:
    """Each department's connector as the city file gives it (department_systems.connector_specs);
    CityFileUnreadable naming the file, the department and the field, never the value written there."""
    try:
        raw: Any = yaml.safe_load(city_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CityFileUnreadable(f"{city_file}: cannot be read ({type(exc).__name__})") from exc
    if not isinstance(raw, dict):
        raise CityFileUnreadable(f"{city_file}: not a city file (expected a mapping at the top)")
    try:
        return connector_specs(raw.get("departments") or {})
    except ValueError as exc:
        raise CityFileUnreadable(f"{city_file}: {exc}") from None


class DepartmentSystems:
    """The connectors of the city's departments, by department id: those the city file lists are built at
    start; any other department gets the default connector when first asked for."""

    def __init__(self, build: BuildConnector, specs: Mapping[str, ConnectorSpec]) -> None:
        self._build = build
        self._specs = dict(specs)
        self._connectors: dict[str, Connector] = {}
        for department_id in sorted(self._specs):
            self.for_department(department_id)

    def for_department(self, department_id: str) -> Connector:
        connector = self._connectors.get(department_id)
        if connector is None:
            connector = self._build(department_id, self.spec(department_id))
            self._connectors[department_id] = connector
        return connector

    def spec(self, department_id: str) -> ConnectorSpec:
        return self._specs.get(department_id, DEFAULT_CONNECTOR)

    def specs(self) -> dict[str, ConnectorSpec]:
        """The city file's connectors by department (any other department's is the default)."""
        return dict(self._specs)

    def departments(self) -> list[str]:
        """Every department with a connector so far: the city file's, and any other a case was routed to."""
        return sorted(self._connectors)

    def polled(self) -> list[tuple[Connector, float]]:
        """The connectors whose updates are fetched, each with how often (seconds)."""
        return [
            (self._connectors[d], self.spec(d).poll_seconds)
            for d in self.departments()
            if self._connectors[d].kind in POLL_KINDS
        ]

    async def aclose(self) -> None:
        for department_id, connector in self._connectors.items():
            try:
                await connector.aclose()
            except Exception as exc:  # closing one must not keep the others open
                log.warning("connector did not close cleanly", department_id=department_id, error=type(exc).__name__)


def builder_from(
    builders: Mapping[str, Builder], context_of: Callable[[str, ConnectorSpec], ConnectorContext], settings: Any
) -> BuildConnector:
    """How a department's connector is made: its kind's builder; a failure becomes a MisconfiguredConnector."""

    def build(department_id: str, spec: ConnectorSpec) -> Connector:
        builder = builders.get(spec.kind)
        try:
            if builder is not None:
                return builder(context_of(department_id, spec))
            raise LookupError(f"this bridge has no {spec.kind} connector kind (services/workorder_bridge/kinds)")
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"[:300]
            log.error(
                "department connector cannot be built; its work orders wait",
                department_id=department_id,
                kind=spec.kind,
                error=problem,
            )
            return MisconfiguredConnector(department_id, spec.kind, problem)

    return build


def systems_from_city(
    settings: Any, city_file: Path, callback_url: str, public_url: str, builders: Mapping[str, Builder] = BUILDERS
) -> DepartmentSystems:
    """The bridge's connectors: one per department of the city file, by kind."""

    def context_of(department_id: str, spec: ConnectorSpec) -> ConnectorContext:
        return ConnectorContext(department_id, spec, settings, city_file.parent, callback_url, public_url)

    return DepartmentSystems(builder_from(builders, context_of, settings), read_connector_specs(city_file))


class MisconfiguredConnector:
    """A department whose connector could not be built: every call says why, as an outage would, so its
    work orders and cancellations park until the city file or the secret is put right and the bridge
    restarted. `problem` names the reference or kind, never a secret's value."""

    def __init__(self, department_id: str, kind: str, problem: str) -> None:
        self.department_id = department_id
        self.kind = kind
        self.problem = problem

    def _unavailable(self) -> DepartmentUnavailable:
        return DepartmentUnavailable(f"{self.department_id}: its connector is misconfigured ({self.problem})")

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        raise self._unavailable()

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        raise self._unavailable()

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        raise self._unavailable()

    async def read_work_order(self, external_id: str) -> ExternalUpdate | None:
        raise self._unavailable()

    async def health(self) -> Health:
        return Health(up=False, detail=f"misconfigured: {self.problem}")

    async def aclose(self) -> None:
        return None
