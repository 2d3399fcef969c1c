"""How a consumer retries: transient failures until they pass, others a bounded number of times."""

from __future__ import annotations

from datetime import UTC, datetime

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
