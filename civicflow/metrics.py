"""Prometheus metrics of a service process: what its handlers did, how long they took, how far behind
the store it runs, whether its relay leads, and the gRPC calls it answered. Served over HTTP at /metrics
when CIVICFLOW_METRICS_PORT is set (`civicflow dev` gives each service its own port; deploy/ sets 9100)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from civicflow.grpc_wrapping import answer_of, answered_by

# Seconds: from a few milliseconds (a healthy system) to minutes (a service catching up after an outage).
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

EVENTS_HANDLED = Counter(
    "civicflow_events_handled",
    "Case events a service's handler finished with, by outcome (handled, dead_lettered).",
    ["service", "event_type", "outcome"],
)
EVENTS_REDELIVERED = Counter(
    "civicflow_events_redelivered",
    "Case events a service had already processed, dropped by its inbox (counted as handled as well).",
    ["service"],
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
RELAY_PARKED = Counter(
    "civicflow_relay_parked_events",
    "Events the relay set aside because the broker (or its client) refused them for what they are, e.g. too"
    " large; by error kind. Each is a row in events.relay_parked.",
    ["error"],
)
RELAY_LAG = Gauge(
    "civicflow_relay_lag_seconds",
    "Age of the oldest event in the relay's latest batch when the broker acknowledged it; 0 when caught up.",
)
STORE_OLDEST_TRANSACTION = Gauge(
    "civicflow_store_oldest_transaction_seconds",
    "Age of the oldest running transaction (with a transaction id) in the database cluster, as the leading"
    " relay sees it. The relay and replays read only events of transactions older than it, so this is how"
    " long they may be held back: keep transactions short.",
)
RELAY_LEADER = Gauge("civicflow_relay_leader", "1 while this process's relay is the one publishing.")
GRPC_REQUESTS = Counter(
    "civicflow_grpc_requests",
    "Unary gRPC calls a service answered, by method and status code (OK, INVALID_ARGUMENT, NOT_FOUND, …).",
    ["service", "method", "code"],
)
GRPC_SECONDS = Histogram(
    "civicflow_grpc_request_seconds", "Time a service took to answer one unary gRPC call.", ["service", "method"]
)


class GrpcMetrics(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio has no type hints
    """Counts and times every unary call the server answers; streaming calls (reflection, health Watch)
    pass through uncounted."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        answer, method, service = handler.unary_unary, handler_call_details.method, self._service

        async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"  # an exception the servicer did not turn into a status
            try:
                response = await answer_of(answer, request, context)
                code = _code_name(context.code(), "OK")
                return response
            except grpc.aio.AbortError:
                code = _code_name(context.code(), "UNKNOWN")
                raise
            except asyncio.CancelledError:  # the client went away or its deadline passed
                code = "CANCELLED"
                raise
            finally:
                GRPC_REQUESTS.labels(service, method, code).inc()
                GRPC_SECONDS.labels(service, method).observe(time.perf_counter() - started)

        return answered_by(handler, counted)


def _code_name(code: grpc.StatusCode | int | None, otherwise: str) -> str:
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # some grpcio versions hand back the number
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), otherwise)
    return otherwise


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
