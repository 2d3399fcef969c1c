"""gRPC RoutingService: explain a route without writing anything; replace the rule set at run time."""

from __future__ import annotations

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
from civicflow.v1 import routing_pb2, routing_pb2_grpc
from services.router.decide import facts_of
from services.router.engine import CaseFacts, Routed
from services.router.rulebook import RuleBook
from services.router.rules import RuleSetError

log = structlog.get_logger(__name__)


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
            if not request.draft.service_code:
                await abort_with(context, invalid_argument([("draft.service_code", "give the service code")]))
            facts = draft_facts(request.draft)
        elif request.tracking_number:
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
        try:
            previous, version = self._rules.replace(Path(request.path) if request.path else None)
        except RuleSetError as exc:
            log.warning("rule set reload refused", by=actor("router"))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"rule set refused; the old one stays:\n{exc}")
            raise
        log.info("rule set reloaded", by=actor("router"), rule_set_version=version, previous_version=previous)
        return routing_pb2.ReloadRulesResponse(rule_set_version=version, previous_version=previous)

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
