"""Turning a run into figures: percentiles, an aligned text table for the terminal, and a JSON document."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.floors import KafkaFloor, PostgresFloor
from bench.load import LoadResult

NOTE = (
    "Absolute figures are noisy on a small shared machine (2 cores here, other work may be running); "
    "compare the ratios against the floors, measured on the same infrastructure in the same run."
)


@dataclass(frozen=True)
class Floors:
    postgres: PostgresFloor | None
    kafka: KafkaFloor | None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 and count > 0 else None


def summarise(load: LoadResult) -> dict[str, Any]:
    """The headline figures of a load run, in seconds and per-second rates."""
    submit_s = load.submit_finished_at - load.started_at
    last_routed = max((r.observed_at for r in load.routed.values()), default=load.started_at)
    to_routed = load.submit_to_routed_s
    server_span = load.server_span_s
    submit_latencies = [s.latency_s for s in load.submitted]
    return {
        "requests": load.requests,
        "concurrency": load.concurrency,
        "accepted": len(load.submitted),
        "submit_errors": len(load.submit_errors),
        "submit_error_samples": load.submit_errors[:5],
        "routed": len(load.routed),
        "not_routed_in_time": len(load.unrouted),
        "triage": sum(r.status == "triage" for r in load.routed.values()),
        "submit_phase_s": submit_s,
        "first_submit_to_last_routed_s": last_routed - load.started_at,
        "accepted_per_s": _rate(len(load.submitted), submit_s),
        "fully_processed_per_s": _rate(len(load.routed), last_routed - load.started_at),
        "server_first_submitted_to_last_routed_s": server_span,
        "fully_processed_per_s_server_clock": _rate(len(load.routed), server_span or 0.0),
        "submit_latency_p50_s": percentile(submit_latencies, 50),
        "submit_latency_p99_s": percentile(submit_latencies, 99),
        "submit_to_routed_p50_s": percentile(to_routed, 50),
        "submit_to_routed_p99_s": percentile(to_routed, 99),
        "poll_rounds": len(load.poll_rounds_s),
        "poll_round_p50_s": percentile(load.poll_rounds_s, 50),
        "poll_round_max_s": max(load.poll_rounds_s, default=None),
        "get_case_samples": len(load.get_case_latencies_s),
        "get_case_not_found": load.get_case_not_found,
        "get_case_errors": sum(load.get_case_errors.values()),
        "get_case_errors_by_code": load.get_case_errors,
        "services_exited_mid_run": load.exited_services,
        "get_case_p50_s": percentile(load.get_case_latencies_s, 50),
        "get_case_p99_s": percentile(load.get_case_latencies_s, 99),
    }


def ratios(summary: dict[str, Any], floors: Floors) -> dict[str, float | None]:
    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        return numerator / denominator if numerator and denominator else None

    pg = floors.postgres.commits_per_s if floors.postgres else None
    kafka = floors.kafka.end_to_end_msgs_per_s if floors.kafka else None
    return {
        "accepted_per_s_vs_pg_commits_per_s": ratio(summary["accepted_per_s"], pg),
        "fully_processed_per_s_vs_pg_commits_per_s": ratio(summary["fully_processed_per_s"], pg),
        "fully_processed_per_s_vs_kafka_end_to_end_msgs_per_s": ratio(summary["fully_processed_per_s"], kafka),
    }


def machine() -> dict[str, Any]:
    load_average = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_1_5_15": load_average,
    }


def document(
    summary: dict[str, Any], floors: Floors, infrastructure: str, startup_s: float | None, deadline_s: float
) -> dict[str, Any]:
    return {
        "benchmark": "submit_load",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "requests": summary["requests"],
            "concurrency": summary["concurrency"],
            "deadline_s": deadline_s,
        },
        "infrastructure": infrastructure,
        "system_startup_s": startup_s,
        "load": summary,
        "floors": {
            "postgres": asdict(floors.postgres) if floors.postgres else None,
            "kafka": asdict(floors.kafka) if floors.kafka else None,
        },
        "ratios": ratios(summary, floors),
        "note": NOTE,
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pair(p50: float | None, p99: float | None) -> str:
    return f"{_ms(p50)} / {_ms(p99)}"


def table(doc: dict[str, Any]) -> str:
    """The run as an aligned two-column table, with the noise note at the end."""
    load, floors, ratio = doc["load"], doc["floors"], doc["ratios"]
    pg, kafka = floors["postgres"], floors["kafka"]
    m = doc["machine"]
    rows: list[tuple[str, str]] = [
        ("accepted/s (submit phase)", _num(load["accepted_per_s"])),
        ("fully processed/s (first submit → last routed)", _num(load["fully_processed_per_s"])),
        ("  same, server clock (first submitted_at → last routed)", _num(load["fully_processed_per_s_server_clock"])),
        ("submit latency p50 / p99", _pair(load["submit_latency_p50_s"], load["submit_latency_p99_s"])),
        (
            "submit → routed p50 / p99 (server clock)",
            _pair(load["submit_to_routed_p50_s"], load["submit_to_routed_p99_s"]),
        ),
        (
            f"GetCase p50 / p99 under load ({load['get_case_samples']} calls)",
            _pair(load["get_case_p50_s"], load["get_case_p99_s"]),
        ),
        (
            "accepted / routed / not routed in time",
            f"{load['accepted']} / {load['routed']} / {load['not_routed_in_time']}",
        ),
        ("submit errors / GetCase errors", f"{load['submit_errors']} / {load['get_case_errors']}"),
        ("floor: PostgreSQL single-writer commits/s", _num(pg["commits_per_s"]) if pg else "skipped"),
        ("floor: Kafka produce msgs/s (acks=all)", _num(kafka["produce_msgs_per_s"]) if kafka else "skipped"),
        ("floor: Kafka produce→consume msgs/s", _num(kafka["end_to_end_msgs_per_s"]) if kafka else "skipped"),
        ("ratio: accepted/s ÷ PG commits/s", _num(ratio["accepted_per_s_vs_pg_commits_per_s"], 3)),
        ("ratio: processed/s ÷ PG commits/s", _num(ratio["fully_processed_per_s_vs_pg_commits_per_s"], 3)),
        (
            "ratio: processed/s ÷ Kafka end-to-end msgs/s",
            _num(ratio["fully_processed_per_s_vs_kafka_end_to_end_msgs_per_s"], 4),
        ),
    ]
    width = max(len(label) for label, _ in rows)
    header = (
        f"civicflow submit_load  N={doc['parameters']['requests']} C={doc['parameters']['concurrency']}  "
        f"infrastructure={doc['infrastructure']}  cpus={m['cpu_count']}  python={m['python']}  {doc['timestamp']}"
    )
    lines = [header, "-" * len(header)]
    lines += [f"{label:<{width}}  {value:>21}" for label, value in rows]
    if load["services_exited_mid_run"]:
        lines += ["", f"WARNING: system processes exited mid-run (name: exit code): {load['services_exited_mid_run']}"]
    lines += ["", f"note: {NOTE}"]
    return "\n".join(lines)
