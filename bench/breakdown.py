"""Where the time went: each service's own Prometheus counters, scraped at the end of a run.

A load run says how fast cases got through; this says which service spent its time on what, and how far
behind the events it handled were (recorded by the store → handled), so the slowest stage is named, not
guessed."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def _samples(body: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body) for s in f.samples]


async def scrape(ports: dict[str, int]) -> dict[str, Any]:
    """Per service: CPU seconds of its process, events handled (by type: count and handler seconds, wall
    clock), the mean consumer lag, and what its relay published if it led."""

    def get(port: int) -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    bodies = {service: await asyncio.to_thread(get, port) for service, port in ports.items()}
    out: dict[str, Any] = {}
    for service, body in bodies.items():
        by_type: dict[str, dict[str, float]] = defaultdict(lambda: {"handled": 0.0, "handler_s": 0.0})
        lag_sum = lag_count = published = cpu = 0.0
        for name, labels, value in _samples(body):
            if name == "civicflow_events_handled_total":
                by_type[labels["event_type"]]["handled"] += value
            elif name == "civicflow_handler_seconds_sum":
                by_type[labels["event_type"]]["handler_s"] += value
            elif name == "civicflow_consumer_lag_seconds_sum":
                lag_sum += value
            elif name == "civicflow_consumer_lag_seconds_count":
                lag_count += value
            elif name == "civicflow_relay_published_events_total":
                published += value
            elif name == "process_cpu_seconds_total":
                cpu = value
        handled = sum(t["handled"] for t in by_type.values())
        handler_s = sum(t["handler_s"] for t in by_type.values())
        out[service] = {
            "process_cpu_seconds": cpu,
            "events_handled": int(handled),
            "handler_seconds": handler_s,
            "mean_handler_ms": handler_s / handled * 1000 if handled else None,
            "mean_consumer_lag_s": lag_sum / lag_count if lag_count else None,
            "relay_published": int(published),
            "by_event_type": {
                k: {"handled": int(v["handled"]), "handler_s": v["handler_s"]} for k, v in by_type.items()
            },
        }
    return out


def table(breakdown: dict[str, Any]) -> str:
    rows = [("service", "CPU s", "events", "handler s", "ms/event", "mean lag s", "relayed")]
    for service, b in breakdown.items():
        rows.append(
            (
                service,
                f"{b['process_cpu_seconds']:.1f}",
                f"{b['events_handled']:,}",
                f"{b['handler_seconds']:.1f}",
                "-" if b["mean_handler_ms"] is None else f"{b['mean_handler_ms']:.1f}",
                "-" if b["mean_consumer_lag_s"] is None else f"{b['mean_consumer_lag_s']:.2f}",
                f"{b['relay_published']:,}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    return "where the time went (each service's /metrics at the end of the run)\n" + "\n".join(lines)
