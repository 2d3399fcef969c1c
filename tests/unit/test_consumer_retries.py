"""How a consumer retries: transient failures until they pass, others a bounded number of times."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from civicflow.consumer import CaseEventConsumer, TryLater, is_transient
from civicflow.events import RecordedEvent, WorkOrderStatusChanged
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings
from tests.factories import recorded

SETTINGS = KernelSettings(handler_attempts=3, handler_retry_base_seconds=0.001, handler_max_backoff_seconds=0.002)
NOW = datetime(2026, 11, 24, tzinfo=UTC)
EVENT = recorded(WorkOrderStatusChanged(external_id="WO-1", status="open"), case_id=uuid7(), version=1, at=NOW)


def failing(times: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    async def handler(event: RecordedEvent) -> None:
        calls.append(1)
        if len(calls) <= times:
            raise error

    return calls, handler


async def test_something_down_for_now_is_waited_for_not_dead_lettered() -> None:
    calls, handler = failing(10, TryLater("the mail relay is down"))
    await CaseEventConsumer("test", SETTINGS, {}).dispatch(EVENT, handler)  # type: ignore[arg-type]
    assert len(calls) == 11  # well past handler_attempts, and it went through in the end


async def test_an_ordinary_failure_is_given_up_after_the_bounded_attempts() -> None:
    calls, handler = failing(10, RuntimeError("a bug"))
    await CaseEventConsumer("test", SETTINGS, {}).dispatch(EVENT, handler)  # type: ignore[arg-type]
    assert len(calls) == SETTINGS.handler_attempts


def test_what_counts_as_transient() -> None:
    assert is_transient(TryLater())
    assert is_transient(OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("bad data")) and not is_transient(RuntimeError("bug"))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_what_a_handler_did_is_counted_timed_and_aged() -> None:
    consumer = CaseEventConsumer("metrics-test", SETTINGS, {})
    labels = {"service": "metrics-test", "event_type": EVENT.type}
    _, handler = failing(0, RuntimeError("never"))
    await consumer.dispatch(EVENT, handler)  # type: ignore[arg-type]
    _, poison = failing(10, RuntimeError("a bug"))
    await consumer.dispatch(EVENT, poison)  # type: ignore[arg-type]

    assert sample("civicflow_events_handled_total", **labels, outcome="handled") == 1
    assert sample("civicflow_events_handled_total", **labels, outcome="dead_lettered") == 1
    assert sample("civicflow_handler_retries_total", service="metrics-test", transient="false") == 2
    assert sample("civicflow_handler_seconds_count", **labels) == 2
    assert sample("civicflow_consumer_lag_seconds_count", service="metrics-test") == 2
    # EVENT was recorded on NOW, a fixed day: the lag is measured from when the store recorded it
    assert sample("civicflow_consumer_lag_seconds_sum", service="metrics-test") > 0
