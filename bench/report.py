"""Turning runs into figures: percentiles, rates, the issue's targets, a JSON document and an aligned table."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.floors import BatchedInsertFloor, KafkaFloor, PostgresFloor
from bench.load import RunResult
from bench.memory import MemoryPeaks
from bench.progress import CaseProgress

NOTE = (
    "Absolute figures are noisy on a small shared machine (2 cores here, other work may be running, and the "
    "benchmark client runs on the same cores); compare the ratios against the floors, measured on the same "
    "infrastructure in the same run. An open-loop run cannot process more than it is offered: its rates are "
    "capped by its arrival rate, so the capacity targets are read on the burst, which leaves a backlog."
)
GIB = 1024**3


@dataclass(frozen=True)
class Floors:
    postgres: PostgresFloor | None
    batched: BatchedInsertFloor | None
    kafka: KafkaFloor | None


@dataclass(frozen=True)
class Target:
    """One of issue 7's targets: `key` of a run (or of the document's top level, run None) against a bound."""

    label: str
    run: str | None
    key: str
    at_least: bool  # True: measured >= bound; False: measured <= bound
    bound: float

    @property
    def is_time(self) -> bool:
        return self.key.endswith("_s") and not self.key.endswith("_per_s")

    def text(self) -> str:
        sign = "≥" if self.at_least else "≤"
        if self.is_time:
            return f"{sign} {self.bound * 1000:g} ms"
        if self.key.endswith("_bytes"):
            return f"{sign} {self.bound / GIB:g} GiB"
        return f"{sign} {self.bound:,.0f}"

    def met(self, measured: float | None) -> bool | None:
        if measured is None:
            return None
        return measured >= self.bound if self.at_least else measured <= self.bound


TARGETS = (
    Target("burst: accepted/s", "burst", "accepted_per_s", True, 1000),
    Target("burst: submit p99", "burst", "submit_p99_s", False, 0.100),
    Target("sustained: routed and visible/s", "burst", "routed_visible_per_s", True, 400),
    Target("sustained: fully processed/s", "burst", "fully_processed_per_s", True, 150),
    Target("storm: submit → routed p99", "open", "submit_to_routed_p99_s", False, 0.250),
    Target("storm: GetCase p99", "open", "get_case_p99_s", False, 0.005),
    Target("replay events/s", None, "replay_events_per_s", True, 20_000),
    Target("largest process RSS", None, "largest_process_rss_bytes", False, 1.5 * GIB),
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    # rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, whose ceiling is one rank too far
    rank = max(1, math.ceil(round(q / 100 * len(ordered), 9)))
    return ordered[rank - 1]


def rate(count: int, seconds: float | None) -> float | None:
    return count / seconds if seconds is not None and seconds > 0 and count > 0 else None


def _spread(prefix: str, values: Sequence[float]) -> dict[str, float | None]:
    return {f"{prefix}_p{name}_s": percentile(values, q) for name, q in (("50", 50), ("99", 99), ("999", 99.9))}


def _finished_by(times: Sequence[float], start: float) -> float | None:
    """Seconds from the run's first submit to the last of `times`."""
    return max(times) - start if times else None


def _times(cases: Sequence[CaseProgress], when: Callable[[CaseProgress], float | None]) -> list[float]:
    return [t for c in cases if (t := when(c)) is not None]


def _routed_visible_at(case: CaseProgress) -> float | None:
    if case.routed_at is None or case.visible_placed_at is None:
        return None
    return max(case.routed_at, case.visible_placed_at)


def summarise(run: RunResult) -> dict[str, Any]:
    """The figures of one load run: rates from its first submit, latencies in seconds."""
    cases, plan, lookups = run.cases, run.plan, run.lookups
    start = run.started_at
    routed_visible = _times(cases, _routed_visible_at)
    processed = _times(cases, lambda c: c.fully_processed_at)
    routed_visible_span, processed_span = _finished_by(routed_visible, start), _finished_by(processed, start)
    submit_phase = run.submit_finished_at - start
    return {
        "mode": plan.name,
        "requests": plan.requests,
        "arrival_rate_per_s": plan.rate_per_s,
        "duration_s": plan.duration_s,
        "max_in_flight": plan.max_in_flight,
        "accepted": len(cases),
        "submit_errors": len(run.submit_errors),
        "submit_error_samples": run.submit_errors[:5],
        "late_starts": run.pacing.late_starts(),
        "start_lateness_p99_s": percentile(run.pacing.lateness_s, 99),
        "in_flight_peak": run.pacing.max_in_flight,
        "submit_phase_s": submit_phase,
        "accepted_per_s": rate(len(cases), submit_phase),
        "routed": sum(c.routed_at is not None for c in cases),
        "triage": sum(c.triage for c in cases),
        "routed_visible": len(routed_visible),
        "first_submit_to_last_routed_visible_s": routed_visible_span,
        "routed_visible_per_s": rate(len(routed_visible), routed_visible_span),
        "resolved": sum(c.resolved_at is not None for c in cases),
        "fully_processed": len(processed),
        "first_submit_to_last_fully_processed_s": processed_span,
        "fully_processed_per_s": rate(len(processed), processed_span),
        "unfinished_at_drain_deadline": sum(not c.finished for c in cases),
        "with_email": sum(c.with_email for c in cases),
        "notifications_recorded": sum(len(c.notified) for c in cases),
        "notifications_failed": sum(c.notifications_failed for c in cases),
        **_spread("submit", run.submit_latencies_s),
        **_spread("submit_to_routed", _times(cases, lambda c: c.submit_to_routed_s)),
        **_spread("submit_to_resolved", _times(cases, lambda c: c.submit_to_resolved_s)),
        "get_case_rate_per_s": lookups.rate_per_s,
        "get_case_calls": len(lookups.latencies_s),
        "get_case_achieved_per_s": rate(len(lookups.latencies_s) + lookups.not_found, lookups.seconds),
        "get_case_not_found": lookups.not_found,
        "get_case_unused_slots": lookups.unused_slots,
        "get_case_errors": sum(lookups.errors.values()),
        "get_case_errors_by_code": lookups.errors,
        "get_case_late_starts": lookups.pacing.late_starts(),
        **_spread("get_case", lookups.latencies_s),
        "observer_polls": run.observer_polls,
        "observer_poll_mean_s": run.observer_poll_seconds / run.observer_polls if run.observer_polls else None,
        "services_exited_mid_run": run.exited_services,
    }


def ratios(runs: dict[str, dict[str, Any]], replay_per_s: float | None, floors: Floors) -> dict[str, float | None]:
    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        return numerator / denominator if numerator and denominator else None

    pg = floors.postgres.commits_per_s if floors.postgres else None
    batched = floors.batched.rows_per_s if floors.batched else None
    kafka = floors.kafka.end_to_end_msgs_per_s if floors.kafka else None
    out: dict[str, float | None] = {}
    for name, run in runs.items():
        out[f"{name}_accepted_per_s_vs_pg_commits_per_s"] = ratio(run["accepted_per_s"], pg)
        out[f"{name}_routed_visible_per_s_vs_pg_commits_per_s"] = ratio(run["routed_visible_per_s"], pg)
        out[f"{name}_fully_processed_per_s_vs_kafka_msgs_per_s"] = ratio(run["fully_processed_per_s"], kafka)
    out["replay_events_per_s_vs_pg_batched_rows_per_s"] = ratio(replay_per_s, batched)
    return out


def machine() -> dict[str, Any]:
    load_average = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_1_5_15": load_average,
    }


def document(
    runs: dict[str, dict[str, Any]],
    replay: dict[str, Any] | None,
    memory: MemoryPeaks | None,
    floors: Floors,
    infrastructure: str,
    startup_s: float | None,
) -> dict[str, Any]:
    replay_per_s = replay["events_per_s"] if replay else None
    doc: dict[str, Any] = {
        "benchmark": "system_load",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "infrastructure": infrastructure,
        "system_startup_s": startup_s,
        "runs": runs,
        "replay": replay,
        "replay_events_per_s": replay_per_s,
        "memory": asdict(memory) if memory else None,
        "largest_process_rss_bytes": max(memory.per_process.values(), default=None) if memory else None,
        "floors": {
            "postgres": asdict(floors.postgres) if floors.postgres else None,
            "postgres_batched": asdict(floors.batched) if floors.batched else None,
            "kafka": asdict(floors.kafka) if floors.kafka else None,
        },
        "ratios": ratios(runs, replay_per_s, floors),
        "note": NOTE,
    }
    doc["targets"] = [
        {"target": t.label, "bound": t.text(), "measured": measured(doc, t), "met": t.met(measured(doc, t))}
        for t in TARGETS
    ]
    return doc


def measured(doc: dict[str, Any], target: Target) -> float | None:
    where = doc if target.run is None else doc["runs"].get(target.run)
    value = where.get(target.key) if where else None
    return float(value) if isinstance(value, int | float) else None


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _three(run: dict[str, Any], prefix: str) -> str:
    return " / ".join(_ms(run[f"{prefix}_p{q}_s"]) for q in ("50", "99", "999"))


def _mib(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**20:,.0f} MiB"


def _run_rows(name: str, run: dict[str, Any]) -> list[tuple[str, str]]:
    if run["arrival_rate_per_s"] is None:
        shape = f"{run['requests']} requests, {run['max_in_flight']} in flight"
    else:
        shape = f"{run['arrival_rate_per_s']:g} requests/s for {run['duration_s']:g} s, open loop"
    lookups = f"GetCase at {run['get_case_rate_per_s']:g}/s" if run["get_case_rate_per_s"] else "no GetCase"
    rows = [
        (f"[{name}] {shape}; {lookups}", ""),
        ("  accepted/s", _num(run["accepted_per_s"])),
        ("  routed and visible/s (first submit → last)", _num(run["routed_visible_per_s"])),
        ("  fully processed/s (first submit → last)", _num(run["fully_processed_per_s"])),
        ("  submit p50 / p99 / p999", _three(run, "submit")),
        ("  submit → routed p50 / p99 / p999 (store clock)", _three(run, "submit_to_routed")),
        ("  submit → resolved p50 / p99 / p999 (store clock)", _three(run, "submit_to_resolved")),
        (
            "  accepted / routed+visible / fully processed / triage / unfinished",
            f"{run['accepted']} / {run['routed_visible']} / {run['fully_processed']} / {run['triage']}"
            f" / {run['unfinished_at_drain_deadline']}",
        ),
        ("  submit errors / late starts (> 5 ms)", f"{run['submit_errors']} / {run['late_starts']}"),
    ]
    if run["get_case_rate_per_s"]:
        rows += [
            ("  GetCase p50 / p99 / p999 under load", _three(run, "get_case")),
            (
                "  GetCase calls / achieved/s / not found / errors / late",
                f"{run['get_case_calls']} / {_num(run['get_case_achieved_per_s'])} / {run['get_case_not_found']}"
                f" / {run['get_case_errors']} / {run['get_case_late_starts']}",
            ),
        ]
    return rows


def table(doc: dict[str, Any]) -> str:
    """Every run, replay, memory and floors as an aligned table; then the targets, measured beside each."""
    floors, ratio = doc["floors"], doc["ratios"]
    pg, batched, kafka = floors["postgres"], floors["postgres_batched"], floors["kafka"]
    rows: list[tuple[str, str]] = []
    for name, run in doc["runs"].items():
        rows += _run_rows(name, run)
    replay = doc["replay"]
    rows.append(
        (
            "replay (query read model from the store)",
            f"{replay['events']:,} events in {replay['seconds']:.2f} s" if replay else "skipped",
        )
    )
    rows.append(("  replay events/s", _num(doc["replay_events_per_s"])))
    memory = doc["memory"]
    if memory:
        rows.append((f"peak RSS ({memory['samples']} samples)", ""))
        rows += [(f"  {name}", _mib(rss)) for name, rss in sorted(memory["per_process"].items())]
        rows.append(("  all of them at once (peak of the sum)", _mib(memory["total"])))
    rows += [
        ("floor: PostgreSQL single-writer commits/s", _num(pg["commits_per_s"]) if pg else "skipped"),
        ("floor: PostgreSQL batched insert rows/s (500/INSERT)", _num(batched["rows_per_s"]) if batched else "skipped"),
        ("floor: Kafka produce→consume msgs/s", _num(kafka["end_to_end_msgs_per_s"]) if kafka else "skipped"),
    ]
    rows += [(f"ratio: {_ratio_label(key)}", "-" if v is None else f"{v:.3g}") for key, v in ratio.items()]
    width = max(len(label) for label, _ in rows)
    m = doc["machine"]
    header = (
        f"civicflow system_load  infrastructure={doc['infrastructure']}  cpus={m['cpu_count']}  "
        f"load={m['load_average_1_5_15']}  python={m['python']}  {doc['timestamp']}"
    )
    lines = [header, "-" * len(header)]
    lines += [f"{label:<{width}}  {value:>32}" for label, value in rows]
    lines += ["", targets_table(doc["targets"])]
    exited = {name: run["services_exited_mid_run"] for name, run in doc["runs"].items()}
    exited = {name: codes for name, codes in exited.items() if codes}
    if exited:
        lines += ["", f"WARNING: system processes exited mid-run (run: name → exit code): {exited}"]
    backlog = {name: run["unfinished_at_drain_deadline"] for name, run in doc["runs"].items()}
    backlog = {name: count for name, count in backlog.items() if count}
    if backlog:
        lines += [
            "",
            f"WARNING: cases unfinished at the drain deadline (run: count): {backlog}; a run after one of these"
            " started on its backlog (raise --drain to let it clear)",
        ]
    lines += ["", f"note: {NOTE}"]
    return "\n".join(lines)


def _ratio_label(key: str) -> str:
    """burst_accepted_per_s_vs_pg_commits_per_s → burst: accepted/s ÷ pg commits/s"""
    run, _, rest = key.partition("_")
    return f"{run}: " + rest.replace("_per_s", "/s").replace("_vs_", " ÷ ").replace("_", " ")


def targets_table(targets: list[dict[str, Any]]) -> str:
    """Issue 7's targets, each with what this run measured; a measurement, never a pass/fail of the run."""
    by_label = {t.label: t for t in TARGETS}
    rows = [("target (issue 7)", "bound", "measured", "")]
    for t in targets:
        spec = by_label[t["target"]]
        value = t["measured"]
        if value is None:
            shown = "-"
        elif spec.is_time:
            shown = _ms(value)
        elif spec.key.endswith("_bytes"):
            shown = _mib(int(value))
        else:
            shown = _num(value)
        mark = {True: "met", False: "not met", None: "not measured"}[t["met"]]
        rows.append((t["target"], t["bound"], shown, mark))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )
