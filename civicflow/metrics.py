"""Prometheus metrics of a service process: what its handlers did, how long they took, how far behind
the store it runs, and whether its relay leads. Served over HTTP at /metrics when CIVICFLOW_METRICS_PORT
is set (`civicflow dev` gives each service its own port; deploy/ sets 9100)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Seconds: from a few milliseconds (a healthy system) to minutes (a service catching up after an outage).
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

EVENTS_HANDLED = Counter(
    "civicflow_events_handled",
    "Case events a service's handler finished with, by outcome (handled, dead_lettered).",
    ["service", "event_type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "civicflow_handler_seconds",
    "Time a service's handler took for one event, retries included.",
    ["service", "event_type"],
)
HANDLER_RETRIES = Counter(
    "civicflow_handler_retries",
    "Handler failures that were tried again; transient=true for a database or outside system that is down.",
    ["service", "transient"],
)
CONSUMER_LAG = Histogram(
    "civicflow_consumer_lag_seconds",
    "From an event being recorded in the store to a service finishing with it.",
    ["service"],
    buckets=LAG_BUCKETS,
)
RELAY_PUBLISHED = Counter("civicflow_relay_published_events", "Events this process's relay published to Kafka.")
RELAY_LAG = Gauge(
    "civicflow_relay_lag_seconds",
    "Age of the oldest event in the relay's latest batch when the broker acknowledged it; 0 when caught up.",
)
RELAY_LEADER = Gauge("civicflow_relay_leader", "1 while this process's relay is the one publishing.")


def serve_metrics(host: str, port: int) -> Callable[[], None]:
    """Serve /metrics on a background thread; returns the function that stops it."""
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise OSError(f"metrics port {port} is taken; set another with CIVICFLOW_METRICS_PORT") from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
