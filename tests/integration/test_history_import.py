"""`civicflow import` against real PostgreSQL: original times kept, a second run and a run after an
interruption import nothing twice, refusals are written without residents' data."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
import typer
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from civicflow.city import load_city
from civicflow.db import make_engine
from civicflow.events import CaseResolved, CaseSubmitted, RecordedEvent
from civicflow.eventstore import PostgresEventStore
from civicflow.geocode import NoGeocoder
from civicflow.history import HistoryMapping, parse_mapping
from civicflow.history_export import RowRefused, read_export, refused_row_cells
from civicflow.pii import ContactVault
from civicflow.settings import SAMPLE_CITY, KernelSettings
from services.intake.cli import import_history
from services.intake.handlers import CaseWriter
from services.intake.importer import HistoryImport, ImportSummary
from tests.conftest import eventually

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
CITY = load_city(SAMPLE_CITY)
STARTED = datetime(2026, 11, 2, 9, tzinfo=UTC)  # when a run began, for a row closed since without a closing time
HEADER = ["ID", "Type", "Text", "Address", "Opened", "Closed", "Status", "Email"]


def mapping_text(source: str) -> str:
    return f"""
source: {source}
timezone: America/Chicago
columns: {{external_id: ID, service: Type, description: Text, address: Address, submitted_at: Opened,
          closed_at: Closed, status: Status, contact_email: Email}}
services: {{"Pothole in Street": POTHOLE, "Noise - Street/Sidewalk": NOISE_COMPLAINT}}
"""


def export(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def good_rows(count: int) -> list[list[str]]:
    return [
        [
            f"SR-{n}",
            "Pothole in Street",
            f"Deep pothole number {n}",
            f"{100 * n} N Main St",
            f"2019-03-{1 + n % 28:02d} 23:{n % 60:02d}:00",
            f"2019-04-{1 + n % 28:02d} 09:00:00" if n % 2 else "",
            "closed" if n % 2 else "open",
            f"resident{n}@example.org",
        ]
        for n in range(1, count + 1)
    ]


async def run_import(
    engine: AsyncEngine,
    mapping: HistoryMapping,
    data: bytes,
    batch_size: int = 500,
    stop_after_batches: int | None = None,
) -> tuple[ImportSummary, list[RowRefused]]:
    refused: list[RowRefused] = []
    batches = 0

    def count(_: ImportSummary) -> None:
        nonlocal batches
        batches += 1

    writer = CaseWriter(STORE, ContactVault(Fernet.generate_key()))
    importer = HistoryImport(engine, writer, mapping, CITY, NoGeocoder(), batch_size, STARTED)
    summary = await importer.run(
        read_export(io.BytesIO(data), mapping),
        on_refused=refused.append,
        on_batch=count,
        stop=lambda: stop_after_batches is not None and batches >= stop_after_batches,
    )
    return summary, refused


async def imported_streams(engine: AsyncEngine, source: str) -> dict[str, list[RecordedEvent]]:
    """Each imported case of this source by its external id (this test's own cases only)."""
    async with engine.connect() as conn:
        case_ids = (
            await conn.execute(
                text("SELECT case_id FROM intake.requests WHERE idempotency_key LIKE :k"), {"k": f"import:{source}:%"}
            )
        ).scalars()
        streams = {}
        for case_id in list(case_ids):
            stream = await STORE.read_stream(conn, case_id)
            first = stream[0].data
            assert isinstance(first, CaseSubmitted) and first.imported is not None
            streams[first.imported.external_id] = stream
    return streams


def a_source() -> str:
    return f"t{uuid4().hex[:10]}"


async def test_imported_cases_keep_their_original_times_and_closing(engine: AsyncEngine) -> None:
    source = a_source()
    mapping = parse_mapping(mapping_text(source))

    summary, refused = await run_import(engine, mapping, export(good_rows(4)))

    assert (summary.read, summary.accepted, summary.closed, summary.refused_rows) == (4, 4, 2, 0) and refused == []
    streams = await imported_streams(engine, source)
    assert sorted(streams) == ["SR-1", "SR-2", "SR-3", "SR-4"]
    closed = streams["SR-1"]
    submitted_at = datetime(2019, 3, 3, 5, 1, tzinfo=UTC)  # 2019-03-02 23:01 in Chicago (CST)
    assert [e.type for e in closed] == ["CaseSubmitted", "CaseResolved"]
    assert closed[0].occurred_at == submitted_at and closed[0].data.submitted_at == submitted_at  # type: ignore[attr-defined]
    assert closed[0].metadata.actor == f"import:{source}"
    resolved = closed[1].data
    assert isinstance(resolved, CaseResolved) and resolved.resolved_at == datetime(2019, 4, 2, 14, 0, tzinfo=UTC)
    assert closed[1].occurred_at == resolved.resolved_at
    assert [e.type for e in streams["SR-2"]] == ["CaseSubmitted"]
    async with engine.connect() as conn:
        # what `rules dry-run --since` reads: streams opened since a date, by their first event's time
        since = [
            case[0].case_id
            async for case in STORE.streams_opened_since(conn, datetime(2019, 3, 4, 12, tzinfo=UTC), ["CaseSubmitted"])
        ]
        kept = await conn.scalar(
            text("SELECT submitted_at FROM intake.requests WHERE idempotency_key = :k"), {"k": f"import:{source}:SR-1"}
        )
    assert kept == submitted_at
    mine = {stream[0].case_id: external for external, stream in streams.items()}
    assert sorted(mine[c] for c in since if c in mine) == ["SR-3", "SR-4"]  # SR-2: 2019-03-04 05:02 UTC, before noon


async def test_a_second_run_imports_nothing_again(engine: AsyncEngine) -> None:
    source = a_source()
    mapping = parse_mapping(mapping_text(source))
    data = export(good_rows(7))
    await run_import(engine, mapping, data, batch_size=3)

    again, _ = await run_import(engine, mapping, data, batch_size=3)

    assert (again.accepted, again.already_imported) == (0, 7)
    streams = await imported_streams(engine, source)
    assert len(streams) == 7 and all(len(s) == (2 if int(x[3:]) % 2 else 1) for x, s in streams.items())


async def test_a_row_changed_since_an_earlier_import_is_refused_not_skipped(engine: AsyncEngine) -> None:
    source = a_source()
    mapping = parse_mapping(mapping_text(source))
    rows = good_rows(3)
    await run_import(engine, mapping, export(rows))
    rows[1][2] = "the old system's text, edited since"

    again, refused = await run_import(engine, mapping, export(rows))

    assert (again.accepted, again.already_imported, again.refused_rows) == (0, 2, 1)
    [changed] = refused
    assert (changed.external_id, changed.field) == ("SR-2", "row") and "already imported" in changed.reason


async def test_a_row_the_old_system_closed_since_an_earlier_import_is_closed_once(engine: AsyncEngine) -> None:
    source = a_source()
    mapping = parse_mapping(mapping_text(source))
    trial = good_rows(4)  # SR-2 and SR-4 open
    await run_import(engine, mapping, export(trial))
    cut_over = [list(row) for row in trial]
    cut_over[1][5:7] = ["2019-05-01 08:00:00", "Closed"]  # SR-2 closed since, with its closing time
    cut_over[3][6] = "closed"  # SR-4 closed since, the export without its closing time

    again, refused = await run_import(engine, mapping, export(cut_over))

    assert (again.accepted, again.already_imported, again.closed_since, refused) == (0, 4, 2, [])
    streams = await imported_streams(engine, source)
    assert [e.type for e in streams["SR-2"]] == ["CaseSubmitted", "CaseResolved"]
    closing = streams["SR-2"][1]
    assert isinstance(closing.data, CaseResolved) and closing.occurred_at == datetime(2019, 5, 1, 13, tzinfo=UTC)
    assert closing.data.resolved_at == closing.occurred_at and closing.metadata.actor == f"import:{source}"
    assert streams["SR-4"][1].occurred_at == STARTED
    assert [e.type for e in streams["SR-1"]] == ["CaseSubmitted", "CaseResolved"]  # closed all along: untouched

    third, _ = await run_import(engine, mapping, export(cut_over))

    assert (third.already_imported, third.closed_since, third.refused_rows) == (4, 0, 0)
    after = await imported_streams(engine, source)
    assert {external: len(stream) for external, stream in after.items()} == {"SR-1": 2, "SR-2": 2, "SR-3": 2, "SR-4": 2}


async def test_a_row_changed_otherwise_since_says_what_changed(engine: AsyncEngine) -> None:
    source = a_source()
    mapping = parse_mapping(mapping_text(source))
    rows = good_rows(2)
    await run_import(engine, mapping, export(rows))
    rows[0][4] = "2019-03-02 23:59:00"  # SR-1's submitted time edited
    rows[1][5:7] = ["2019-05-01 08:00:00", "closed"]  # SR-2 closed since, and its text edited
    rows[1][2] = "edited"

    again, refused = await run_import(engine, mapping, export(rows))

    assert (again.already_imported, again.closed_since, again.refused_rows) == (0, 0, 2)
    reasons = {r.external_id: r.reason for r in refused}
    assert "already imported with other details: submitted time;" in reasons["SR-1"]
    assert (
        "other details: the request (type, description, place, channel, answers), status or closing time"
        in (reasons["SR-2"])
    )
    streams = await imported_streams(engine, source)
    assert [len(streams[x]) for x in ("SR-1", "SR-2")] == [2, 1]


async def test_a_questions_address_is_left_out_and_counted(engine: AsyncEngine) -> None:
    source = a_source()
    mapping = parse_mapping(
        mapping_text(source).replace("NOISE_COMPLAINT}", "NOISE_COMPLAINT, Question: INFO_QUESTION}")
    )
    question = ["SR-1", "Question", "when is bulk pickup?", "1 N Main St", "2019-03-01 10:00:00", "", "", ""]

    summary, refused = await run_import(engine, mapping, export([question]))

    assert (summary.accepted, summary.place_left_out, refused) == (1, 1, [])
    submitted = (await imported_streams(engine, source))["SR-1"][0].data
    assert isinstance(submitted, CaseSubmitted) and submitted.location is None


async def test_a_run_stopped_midway_goes_on_where_it_stopped(engine: AsyncEngine) -> None:
    source = a_source()
    mapping = parse_mapping(mapping_text(source))
    data = export(good_rows(10))

    first, _ = await run_import(engine, mapping, data, batch_size=4, stop_after_batches=1)
    assert first.stopped and first.accepted == 4 and first.last_row == 4
    assert len(await imported_streams(engine, source)) == 4

    rest, _ = await run_import(engine, mapping, data, batch_size=4)

    assert not rest.stopped and (rest.accepted, rest.already_imported) == (6, 4)
    assert sorted(await imported_streams(engine, source), key=lambda x: int(x[3:])) == [f"SR-{n}" for n in range(1, 11)]


async def test_refused_rows_say_field_and_reason_and_the_rest_go_in(engine: AsyncEngine) -> None:
    source = a_source()
    mapping = parse_mapping(mapping_text(source))
    rows = good_rows(3)
    rows.append(
        ["SR-90", "Pothole in Street", "bell\x07 in the words", "1 N Main St", "2019-03-01 10:00:00", "", "", ""]
    )
    rows.append(["SR-91", "Unheard-of Type", "words", "1 N Main St", "2019-03-01 10:00:00", "", "", ""])
    rows.append(["SR-92", "Pothole in Street", "words", "", "2019-03-01 10:00:00", "", "", "secret@example.org"])
    rows.append(["SR-93", "Pothole in Street", "words", "1 N Main St", "yesterday", "", "", ""])
    rows.append(
        [
            "SR-2",
            "Noise - Street/Sidewalk",
            "another request, same id",
            "1 N Main St",
            "2019-03-01 10:00:00",
            "",
            "",
            "",
        ]
    )

    summary, refused = await run_import(engine, mapping, export(rows))

    assert (summary.accepted, summary.refused_rows) == (3, 5)
    lines = [refused_row_cells(r) for r in refused]
    by_id = {line[1]: line for line in lines}
    assert by_id["SR-90"][2] == "description" and "U+0007" in by_id["SR-90"][3]
    assert by_id["SR-91"][2] == "service" and "'UNHEARD_OF_TYPE'" in by_id["SR-91"][3]
    assert by_id["SR-92"][2] == "location" and "column 'Address'" in by_id["SR-92"][3]
    assert by_id["SR-93"][2] == "submitted_at"
    assert by_id["SR-2"][2] == "row" and "already imported with other details" in by_id["SR-2"][3]
    assert by_id["SR-90"][0] == "4"
    assert not any("secret@" in cell or "bell" in cell or "words" in cell for line in lines for cell in line)


def test_the_command_imports_prints_a_summary_and_writes_the_refused_rows(
    settings: KernelSettings, tmp_path: Path
) -> None:
    source = a_source()
    (tmp_path / "map.yaml").write_text(mapping_text(source))
    rows = [*good_rows(5), ["SR-99", "Pothole in Street", "words", "1 N Main St", "not a date", "", "", ""]]
    (tmp_path / "old.csv").write_bytes(export(rows))
    refused_csv = tmp_path / "refused.csv"
    env = {"CIVICFLOW_DATABASE_URL": settings.database_url, "CIVICFLOW_STATE_DIR": str(tmp_path)}
    args = [str(tmp_path / "old.csv"), "--mapping", str(tmp_path / "map.yaml"), "--refused", str(refused_csv)]

    app = typer.Typer()
    app.command()(import_history)
    result = CliRunner().invoke(app, args, env=env)

    assert result.exit_code == 0, result.output
    assert (
        "6 rows read: 5 imported (3 of them closed), 0 already imported before (0 of them closed since the last"
        " import), 1 refused" in result.output
    )
    assert "submitted_at: 'not a date' is not a time" in result.output
    with refused_csv.open(newline="") as handle:
        header, *lines = list(csv.reader(handle))
    assert header == ["row", "external_id", "field", "reason"]
    assert [line[:3] for line in lines] == [["6", "SR-99", "submitted_at"]]
    assert "timestamp_formats" in lines[0][3]
    again = CliRunner().invoke(app, args, env=env)
    assert (
        "0 imported (0 of them closed), 5 already imported before (0 of them closed since the last import), 1 refused"
        in again.output
    )


async def test_ctrl_c_stops_after_a_batch_and_the_same_command_goes_on(
    settings: KernelSettings, tmp_path: Path
) -> None:
    source = a_source()
    (tmp_path / "map.yaml").write_text(mapping_text(source))
    (tmp_path / "old.csv").write_bytes(export(good_rows(3000)))
    env = {**os.environ, "CIVICFLOW_DATABASE_URL": settings.database_url, "CIVICFLOW_STATE_DIR": str(tmp_path)}
    args = [str(tmp_path / "old.csv"), "--mapping", str(tmp_path / "map.yaml"), "--refused", str(tmp_path / "r.csv")]
    command = [str(Path(sys.executable).with_name("civicflow")), "import", *args, "--batch-size", "1"]
    engine = make_engine(settings.database_url)

    async def imported() -> int:
        async with engine.connect() as conn:
            count = await conn.scalar(
                text("SELECT count(*) FROM intake.requests WHERE idempotency_key LIKE :k"), {"k": f"import:{source}:%"}
            )
        return int(count or 0)

    try:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        await eventually(imported, timeout=60, what="the first rows in")
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        printed = output.decode()
        assert process.returncode == 130, printed
        assert "Run the same command again to go on" in printed
        stopped_at = await imported()
        assert 0 < stopped_at < 3000, "the run stopped midway"
        assert f"stopped after row {stopped_at}:" in printed  # every batch before the stop is in, and only those

        again = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(again.communicate(), timeout=300)
        assert again.returncode == 0, output.decode()
        assert f"{3000 - stopped_at} imported" in output.decode()
        assert f"{stopped_at} already imported before" in output.decode()
        assert await imported() == 3000
    finally:
        await engine.dispose()
