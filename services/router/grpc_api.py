"""gRPC RoutingService: explain a route without writing anything; replace the rule set at run time."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import grpc
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.apikeys import actor
from civicflow.eventstore import EventStore
from civicflow.grpc_errors import abort_with, invalid_argument
from civicflow.plain_text import control_character_problem, coordinate_problem
from civicflow.v1 import routing_pb2, routing_pb2_grpc
from services.router.decide import facts_of
from services.router.engine import CaseFacts, Routed
from services.router.rulebook import RuleBook
from services.router.rules import RuleSetError

log = structlog.get_logger(__name__)
_SERVICE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# What intake would take: a draft it would refuse has no route to explain.
_TEXT_LIMITS = {"description": 4000, "channel": 16}
_MAX_ATTRIBUTES, _MAX_KEY, _MAX_VALUE, _MAX_FLAGS, _MAX_FLAG = 50, 64, 500, 10, 40
_MAX_TRACKING_NUMBER_CHARS = 32
_MAX_PATH_CHARS = 1024
_MAX_PROBLEMS_SHOWN = 20
# submitted_at between 2000 and 2100: due dates are counted on calendars from there, and a year 9999
# would overflow the date arithmetic rather than explain anything.
_EARLIEST, _LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def draft_violations(draft: routing_pb2.DraftRequest) -> list[tuple[str, str]]:
    """Every (field, what is wrong) with a draft request, as intake would say it."""
    found: list[tuple[str, str]] = []
    if not _SERVICE_CODE.fullmatch(draft.service_code):
        found.append(("draft.service_code", "give the service code: 1 to 64 letters, digits, _ . or -"))
    for name, limit in _TEXT_LIMITS.items():
        value = getattr(draft, name)
        if len(value) > limit:
            found.append((f"draft.{name}", f"has {len(value)} characters; at most {limit} are taken"))
        elif problem := control_character_problem(value, "\n\t\r" if name == "description" else ""):
            found.append((f"draft.{name}", problem))
    location = draft.location
    if location.HasField("lat") != location.HasField("long"):
        found.append(("draft.location", "give both lat and long, or neither"))
    for name, degrees in (("lat", 90.0), ("long", 180.0)):
        if location.HasField(name) and (problem := coordinate_problem(getattr(location, name), degrees)):
            found.append((f"draft.location.{name}", problem))
    if len(draft.attributes) > _MAX_ATTRIBUTES:
        found.append(("draft.attributes", f"at most {_MAX_ATTRIBUTES} answers are taken"))
    elif any(
        len(k) > _MAX_KEY or len(v) > _MAX_VALUE or control_character_problem(k + v)
        for k, v in draft.attributes.items()
    ):
        limits = f"keys of at most {_MAX_KEY} and answers of at most {_MAX_VALUE} characters"
        found.append(("draft.attributes", f"{limits}, plain text"))
    if len(draft.flags) > _MAX_FLAGS or any(len(f) > _MAX_FLAG or control_character_problem(f) for f in draft.flags):
        found.append(("draft.flags", f"at most {_MAX_FLAGS} flags of at most {_MAX_FLAG} characters, plain text"))
    if draft.HasField("submitted_at"):
        seconds = draft.submitted_at.seconds
        if not _EARLIEST.timestamp() <= seconds < _LATEST.timestamp() or not 0 <= draft.submitted_at.nanos < 10**9:
            found.append(("draft.submitted_at", "give a time between 2000 and 2100, or leave it out for now"))
    return found


def draft_facts(draft: routing_pb2.DraftRequest) -> CaseFacts:
    location = draft.location
    return CaseFacts(
        service_code=draft.service_code,
        description=draft.description,
        submitted_at=draft.submitted_at.ToDatetime(tzinfo=UTC) if draft.HasField("submitted_at") else datetime.now(UTC),
        lat=location.lat if location.HasField("lat") else None,
        long=location.long if location.HasField("long") else None,
        attributes=dict(draft.attributes),
        flags=frozenset(draft.flags),
        channel=draft.channel or None,
    )


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, rules: RuleBook, engine: AsyncEngine, store: EventStore) -> None:
        self._rules = rules
        self._engine = engine
        self._store = store

    async def ExplainRoute(
        self, request: routing_pb2.ExplainRouteRequest, context: grpc.aio.ServicerContext
    ) -> routing_pb2.ExplainRouteResponse:
        if request.HasField("draft"):
            violations = draft_violations(request.draft)
            if violations:
                await abort_with(context, invalid_argument(violations))
            facts = draft_facts(request.draft)
        elif request.tracking_number:
            if len(request.tracking_number) > _MAX_TRACKING_NUMBER_CHARS:
                await abort_with(
                    context,
                    invalid_argument([("tracking_number", "a tracking number is 7 letters and digits, like 4K7Q-M2D")]),
                )
            try:
                number = tracking.parse(request.tracking_number)
            except tracking.InvalidTrackingNumber as exc:
                await abort_with(context, invalid_argument([("tracking_number", str(exc))]))
                raise
            facts_or_none = await self._facts_of_case(number)
            if facts_or_none is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no request with tracking number {number}")
            assert facts_or_none is not None
            facts = facts_or_none
        else:
            await abort_with(context, invalid_argument([("subject", "give a draft request or a tracking number")]))
            raise AssertionError("unreachable")
        rules = self._rules.current
        decision, trace = rules.explain(facts)
        descriptions = {r.id: r.description for r in rules.rule_set.rules}
        response = routing_pb2.ExplainRouteResponse(
            rule_set_version=decision.rule_set_version,
            evaluations=[
                routing_pb2.RuleEvaluation(
                    rule_id=t.rule_id,
                    description=descriptions[t.rule_id],
                    matched=t.matched,
                    reasons=list(t.reasons),
                    skipped=t.skipped or "",
                    conditions_held=t.held,  # None leaves it unset
                    conditions=t.conditions,
                )
                for t in trace
            ],
        )
        if isinstance(decision, Routed):
            response.routed = True
            response.department_id = decision.department_id
            response.department_name = decision.department_name
            response.queue = decision.queue or ""
            response.priority = decision.priority
            if decision.due_at is not None:  # unset: no SLA
                response.due_at.FromDatetime(decision.due_at)
            response.time_zone = decision.time_zone
            response.sla = decision.sla
            response.rule_id = decision.rule_id
            response.reasons.extend(decision.explanation)
            response.tags.extend(decision.tags)
        else:
            response.triage_reason = decision.reason
        return response

    async def ReloadRules(
        self, request: routing_pb2.ReloadRulesRequest, context: grpc.aio.ServicerContext
    ) -> routing_pb2.ReloadRulesResponse:
        target: Path | None = None
        if request.path:
            target, problem = self._rule_set_file(request.path)
            if problem:
                await abort_with(context, invalid_argument([("path", problem)]))
        try:
            previous, version = self._rules.replace(target)
        except RuleSetError as exc:
            log.warning("rule set reload refused", by=actor("router"))
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"rule set refused; the old one stays:\n{self._without_folders(exc)}",
            )
            raise
        log.info("rule set reloaded", by=actor("router"), rule_set_version=version, previous_version=previous)
        return routing_pb2.ReloadRulesResponse(rule_set_version=version, previous_version=previous)

    def _rule_set_file(self, path: str) -> tuple[Path | None, str | None]:
        """The file a reload request names (relative paths are read in the rules folder), or what is wrong
        with the name. Errors never show where the rules folder is on the server."""
        if len(path) > _MAX_PATH_CHARS:
            return None, f"has {len(path)} characters; a rule-set path is at most {_MAX_PATH_CHARS}"
        if problem := control_character_problem(path):
            return None, problem
        folder = self._rules.rules_dir
        try:
            resolved = (folder / path).resolve()  # an absolute path replaces the folder
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a name the system cannot take
            return None, "cannot be read as a file name; give the rule-set file's path in the rules folder"
        if not resolved.is_relative_to(folder):
            return None, (
                "only rule sets under the router's rules folder (setting CIVICFLOW_RULES_DIR) can be loaded;"
                " copy the file there and give its name"
            )
        if resolved.suffix not in (".yaml", ".yml"):
            return None, "give a rule-set file ending in .yaml or .yml"
        return resolved, None

    def _without_folders(self, error: RuleSetError) -> str:
        """The problems with file names shown relative to the rules folder, never the server's own paths;
        the first 20, so a reply stays within what clients read (`civicflow rules check` lists them all)."""
        text = str(error)
        for folder in sorted({self._rules.rules_dir, self._rules.path.parent}, key=lambda p: -len(str(p))):
            text = text.replace(f"{folder}/", "").replace(str(folder), ".")
        problems = [line[:300] for line in text.splitlines()]
        if len(problems) > _MAX_PROBLEMS_SHOWN:
            more = len(problems) - _MAX_PROBLEMS_SHOWN
            problems = [*problems[:_MAX_PROBLEMS_SHOWN], f"… and {more} more: `civicflow rules check` lists them all"]
        return "\n".join(problems)

    async def _facts_of_case(self, number: str) -> CaseFacts | None:
        async with self._engine.connect() as conn:
            case_id = (
                await conn.execute(
                    text(
                        "SELECT case_id FROM events.case_events"
                        " WHERE type = 'CaseSubmitted' AND data->>'tracking_number' = :t"
                    ),
                    {"t": number},
                )
            ).scalar_one_or_none()
            if case_id is None:
                return None
            stream = await self._store.read_stream(conn, case_id)
        return facts_of([e.data for e in stream], stream[0].metadata.channel)
