"""How `civicflow rules explain` words the router's ExplainRoute reply for a person."""

from __future__ import annotations

from civicflow.localtime import wall_clock
from civicflow.v1 import routing_pb2


def explanation_lines(reply: routing_pb2.ExplainRouteResponse) -> list[str]:
    """An ExplainRouteResponse as `rules explain` prints it: the decision, then the rules looked at in
    order (routed) or the rules that came closest (triage), each with how many of its conditions held."""
    lines = []
    if reply.routed:
        due = (
            f"due {wall_clock(reply.due_at.ToDatetime(), reply.time_zone or None)} ({reply.sla})"
            if reply.HasField("due_at")
            else "no SLA"
        )
        lines.append(f"-> {reply.department_name} ({reply.department_id}), priority {reply.priority}, {due}")
        lines.append(f"   rule {reply.rule_id} of rule set {reply.rule_set_version}: " + "; ".join(reply.reasons))
        lines.append("rules looked at, in order:")
    else:
        lines.append(f"-> triage: {reply.triage_reason} (rule set {reply.rule_set_version})")
        lines.append("rules that came closest:")
    width = max((len(ev.rule_id) for ev in reply.evaluations), default=0)
    for ev in reply.evaluations:
        mark = "MATCH" if ev.matched else ("skip " if ev.skipped else "no   ")
        held = f"{ev.conditions_held}/{ev.conditions}" if ev.HasField("conditions_held") else ""
        why = "; ".join(part for part in (ev.skipped, *ev.reasons) if part)
        lines.append(f"  {mark} {ev.rule_id:<{width}}  {held:>5}  {why}")
    return lines
