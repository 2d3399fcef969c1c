"""Routing decisions: which department owns a case and by when. Pure: no framework, no I/O."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from civicflow.events import CaseNeedsTriage, CaseRouted, CaseSubmitted


class Department(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    email: str | None = None


class ServiceRoute(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    department: str
    sla_days: float = Field(gt=0)
    priority: str = "normal"


class CityCatalogue(BaseModel):
    """A city's service codes and the departments that own them, as written in its YAML file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    jurisdiction: str
    triage_queue: str = "call-centre-triage"
    departments: dict[str, Department]
    services: dict[str, ServiceRoute]

    @model_validator(mode="after")
    def _departments_exist(self) -> CityCatalogue:
        missing = sorted({r.department for r in self.services.values()} - set(self.departments))
        if missing:
            raise ValueError(f"services name departments that are not defined: {', '.join(missing)}")
        return self


class CatalogueError(ValueError):
    pass


def load_catalogue(path: Path) -> CityCatalogue:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path}: cannot read the city catalogue: {exc}") from exc
    try:
        return CityCatalogue.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise CatalogueError(f"{path}: {problems}") from exc


def route_case(catalogue: CityCatalogue, case: CaseSubmitted) -> CaseRouted | CaseNeedsTriage:
    """The department and due date for a new case, or triage when the city has no route for it."""
    route = catalogue.services.get(case.service_code)
    if route is None:
        return CaseNeedsTriage(
            queue=catalogue.triage_queue,
            reason=f"no route for service code {case.service_code!r}",
            rule_set_version=catalogue.version,
        )
    department = catalogue.departments[route.department]
    return CaseRouted(
        department_id=route.department,
        department_name=department.name,
        priority=route.priority,
        due_at=case.submitted_at + timedelta(days=route.sla_days),
        rule_id=f"service:{case.service_code}",
        rule_set_version=catalogue.version,
        explanation=[f"service code {case.service_code} ({route.name}) belongs to {department.name}"],
    )
