"""How a consumer retries: transient failures until they pass, others a bounded number of times."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from civicflow.consumer import CaseEventConsumer, Reactions, TryLater, is_transient
from civicflow.events import RecordedEvent, WorkOrderStatusChanged
from civicflow.ids import uuid7
from civicflow.secrets import event_signing_key
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import BatchPolicy, UnitOfWork
from civicflow.wire import to_message
from tests.factories import recorded

SETTINGS = KernelSettings(
    handler_attempts=3,
    handler_retry_base_seconds=0.001,
    handler_max_backoff_seconds=0.002,
    event_signing_key="a key for the unit tests only",
)
AN_HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)
EVENT = recorded(WorkOrderStatusChanged(external_id="WO-1", status="open"), case_id=uuid7(), version=1, at=AN_HOUR_AGO)


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


METRICS = (
    ("civicflow_events_handled_total", {"outcome": "handled", "event_type": EVENT.type}),
    ("civicflow_events_handled_total", {"outcome": "dead_lettered", "event_type": EVENT.type}),
    ("civicflow_handler_retries_total", {"transient": "false"}),
    ("civicflow_handler_seconds_count", {"event_type": EVENT.type}),
    ("civicflow_consumer_lag_seconds_count", {}),
    ("civicflow_consumer_lag_seconds_sum", {}),
)


def samples(service: str) -> list[float]:
    """The metrics above for one service (the registry is the process's: tests compare before and after)."""
    return [sample(name, service=service, **labels) for name, labels in METRICS]


async def test_what_a_handler_did_is_counted_timed_and_aged() -> None:
    consumer = CaseEventConsumer("metrics-test", SETTINGS, {})
    before = samples("metrics-test")
    _, handler = failing(0, RuntimeError("never"))
    await consumer.dispatch(EVENT, handler)  # type: ignore[arg-type]
    _, poison = failing(10, RuntimeError("a bug"))
    await consumer.dispatch(EVENT, poison)  # type: ignore[arg-type]

    after = samples("metrics-test")
    handled, dead_lettered, retries, timed, aged, age = (a - b for a, b in zip(after, before, strict=True))
    assert (handled, dead_lettered, retries, timed, aged) == (1, 1, 2, 2, 2)
    # EVENT was recorded an hour ago: the lag is measured from when the store recorded it
    assert age >= 2 * 3600


class RecordingBroker:
    """Stands in for the Kafka broker: takes the subscription."""

    def subscriber(self, *args: object, **kwargs: object) -> Any:
        return lambda handler: handler


class RecordingDeadLetters:
    """Stands in for the dead-letter topic: keeps what is sent to it."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def send(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> None:
        self.published.append({"key": key, "value": value, "headers": headers})

    async def close(self) -> None:
        pass


async def test_a_record_whose_type_is_not_even_text_is_dead_lettered_and_counted() -> None:
    dead_letters = RecordingDeadLetters()
    handlers = {EVENT.type: failing(0, RuntimeError())[1]}
    consumer = CaseEventConsumer("unreadable-test", SETTINGS, handlers, dead_letters)  # type: ignore[arg-type]
    consumer.register(RecordingBroker())  # type: ignore[arg-type]
    counted = {"service": "unreadable-test", "event_type": "(unreadable)", "outcome": "dead_lettered"}
    before = sample("civicflow_events_handled_total", **counted)
    record = SimpleNamespace(
        headers=[("ce_type", b"\xff\xfe")], value=b"{}", key=b"k", topic="case-events", partition=0, offset=7
    )

    await consumer._on_batch(SimpleNamespace(raw_message=(record,)))  # type: ignore[arg-type]

    assert consumer.dead_lettered == 1 and dead_letters.published[0]["value"] == b"{}"
    sent = dead_letters.published[0]["headers"]
    assert sent[0] == ("ce_type", b"\xff\xfe"), "the original header, byte for byte"
    assert ("dlq_original_offset", b"7") in sent
    assert sample("civicflow_events_handled_total", **counted) == before + 1


class SplittingUnit:
    """Stands in for the unit of work: a batch holding the poison event fails; one event at a time, only
    the poison one does."""

    def __init__(self, poison: RecordedEvent) -> None:
        self.poison = poison
        self.runs: list[list[RecordedEvent]] = []

    async def run(self, events: Sequence[RecordedEvent], policy: object) -> int:
        self.runs.append(list(events))
        if self.poison in events:
            raise RuntimeError("a bug")
        return len(events)


async def test_a_failed_batch_is_handled_one_event_at_a_time_and_only_its_poison_event_is_dead_lettered() -> None:
    key = event_signing_key(SETTINGS)
    case_id = uuid7()
    events = [
        recorded(WorkOrderStatusChanged(external_id="WO-1", status=s), case_id=case_id, version=v, at=AN_HOUR_AGO)
        for v, s in enumerate(["open", "in_progress", "done"], 1)
    ]
    unit = SplittingUnit(poison=events[1])
    dead_letters = RecordingDeadLetters()
    reactions = Reactions(frozenset({EVENT.type}), cast(BatchPolicy, None), cast(UnitOfWork, unit))
    consumer = CaseEventConsumer("batch-test", SETTINGS, reactions, dead_letters)
    records = []
    for offset, event in enumerate(events):
        k, value, headers = to_message(event, key)
        records.append(
            SimpleNamespace(key=k, value=value, headers=list(headers), topic="t", partition=0, offset=offset)
        )

    await consumer._on_batch(SimpleNamespace(raw_message=tuple(records)))  # type: ignore[arg-type]

    assert unit.runs[0] == events, "first the whole batch in one unit of work"
    assert unit.runs[1:] == [[events[0]], *[[events[1]]] * SETTINGS.handler_attempts, [events[2]]]
    assert consumer.dead_lettered == 1
    assert ("dlq_original_offset", b"1") in dead_letters.published[0]["headers"]
