"""Intake against real PostgreSQL: a drawn tracking number that is already taken is drawn again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.eventstore import PostgresEventStore
from civicflow.pii import ContactVault, load_master_key
from services.intake.domain import ReportedLocation, ServiceRequest
from services.intake.handlers import Intake, NoFreeTrackingNumber

pytestmark = pytest.mark.integration


def request() -> ServiceRequest:
    return ServiceRequest(
        service_code="POTHOLE", description="a deep one", location=ReportedLocation(lat=41.88, long=-87.63)
    )


def intake(engine: AsyncEngine, tmp_path: Path, numbers: Iterator[str]) -> Intake:
    vault = ContactVault(load_master_key("", tmp_path))
    return Intake(engine, PostgresEventStore(), vault, issue_number=lambda: next(numbers))


async def test_a_taken_number_is_drawn_again_and_the_case_gets_a_free_one(engine: AsyncEngine, tmp_path: Path) -> None:
    first = await intake(engine, tmp_path, iter([tracking.issue()])).submit(request(), None)
    draws = iter([first.tracking_number, first.tracking_number, tracking.issue()])

    second = await intake(engine, tmp_path, draws).submit(request(), None)

    assert second.tracking_number != first.tracking_number and not second.replayed
    assert next(draws, None) is None, "drew three times: two collisions, then a free number"
    async with engine.connect() as conn:
        owners = await conn.scalar(
            text("SELECT count(*) FROM intake.requests WHERE tracking_number = :t"), {"t": first.tracking_number}
        )
    assert owners == 1


async def test_a_known_key_replays_its_answer_rather_than_drawing_again(engine: AsyncEngine, tmp_path: Path) -> None:
    key = f"tracking-replay-{tracking.issue()}"
    accepted = await intake(engine, tmp_path, iter([tracking.issue()])).submit(request(), key)

    again = await intake(engine, tmp_path, iter([tracking.issue()])).submit(request(), key)

    assert again.replayed and (again.case_id, again.tracking_number) == (accepted.case_id, accepted.tracking_number)


async def test_drawing_only_taken_numbers_gives_up_with_a_clear_error(engine: AsyncEngine, tmp_path: Path) -> None:
    taken = (await intake(engine, tmp_path, iter([tracking.issue()])).submit(request(), None)).tracking_number

    with pytest.raises(NoFreeTrackingNumber, match="drawn in a row were all taken"):
        await intake(engine, tmp_path, iter([taken] * 20)).submit(request(), None)
