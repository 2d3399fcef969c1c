"""`civicflow import`: a city's past requests from its old system's CSV export (added through an entry point)."""

from __future__ import annotations

import asyncio
import csv
import itertools
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO, TextIO

import typer

from civicflow.reach import database_url
from civicflow.settings import KernelSettings

if TYPE_CHECKING:
    from civicflow.history import HistoryMapping
    from services.intake.importer import ImportSummary


def import_history(
    file: Annotated[Path, typer.Argument(help="The old system's export (CSV, UTF-8, first line naming the columns)")],
    mapping: Annotated[Path, typer.Option(help="The mapping YAML: which column gives what, and how names translate")],
    refused: Annotated[
        Path, typer.Option(help="Where to write the refused rows (row, external id, field, reason)")
    ] = Path("refused.csv"),
    batch_size: Annotated[int, typer.Option(min=1, max=5000, help="Rows per transaction")] = 500,
) -> None:
    """Bring a city's past requests in with their original submitted (and closed) times, through intake's own
    validation. Run it again after an interruption, or twice: requests already imported are skipped."""
    from sqlalchemy.exc import DBAPIError

    from civicflow.history import MappingError, load_mapping
    from civicflow.history_export import ExportProblem

    try:
        history_mapping = load_mapping(mapping)
    except MappingError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    if not file.is_file():
        raise typer.BadParameter(f"{file} is not a file", param_hint="FILE")
    url = database_url()
    with refused.open("w", newline="", encoding="utf-8") as refused_out, file.open("rb") as export:
        try:
            summary = asyncio.run(_import(export, file.stat().st_size, history_mapping, url, refused_out, batch_size))
        except ExportProblem as exc:
            typer.echo(f"{file}: {exc}; nothing was imported", err=True)
            raise typer.Exit(1) from exc
        except (DBAPIError, OSError) as exc:
            typer.echo(
                f"the database stopped the import ({type(exc).__name__}): whole batches before it are in. Check that"
                " the system is running and migrated (civicflow migrate), then run the same command again to go on.",
                err=True,
            )
            raise typer.Exit(1) from exc
    typer.echo(
        f"{file}: {summary.read} rows read: {summary.accepted} imported ({summary.closed} of them closed),"
        f" {summary.already_imported} already imported before ({summary.closed_since} of them closed since the"
        f" last import), {summary.refused_rows} refused"
    )
    if summary.place_left_out:
        typer.echo(f"address left out: the service takes no place: {summary.place_left_out} rows")
    if summary.refused:
        typer.echo("refused, by field and reason:")
        for reason, count in summary.refused.most_common(15):
            typer.echo(f"  {count:>6}  {reason}")
        typer.echo(f"each refused row, with why: {refused}")
    if summary.stopped:
        typer.echo(
            f"stopped after row {summary.last_row}: what was read so far is in. Run the same command again to go"
            " on; rows already imported are skipped."
        )
        raise typer.Exit(130)


async def _import(
    export: BinaryIO, size: int, mapping: HistoryMapping, url: str, refused_out: TextIO, batch_size: int
) -> ImportSummary:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from civicflow.address_points import address_geocoder
    from civicflow.city import load_city
    from civicflow.db import make_engine
    from civicflow.eventstore import PostgresEventStore
    from civicflow.history_export import ExportReader, refused_row_cells, refused_rows_header
    from civicflow.pii import ContactVault, load_master_key
    from services.intake.handlers import CaseWriter
    from services.intake.importer import HistoryImport

    started_at = datetime.now(UTC)  # no row's time may be more than a day after it
    settings = KernelSettings()
    city = load_city(settings.city_file)
    vault = ContactVault(load_master_key(settings.pii_master_key, settings.state_dir))
    writer = csv.writer(refused_out)
    writer.writerow(refused_rows_header())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        # the first Ctrl-C stops after the batch under way; a second one stops at once (that batch is not recorded)
        stopping.set()
        loop.remove_signal_handler(signal.SIGINT)
        progress_console.print("stopping after this batch… (Ctrl-C again to stop at once)")

    progress_console = Console(stderr=True)
    loop.add_signal_handler(signal.SIGINT, interrupted)
    engine = make_engine(url)
    try:
        reader = ExportReader(export, mapping, started_at)
        rows = reader.rows()
        first = next(rows, None)  # reads the header first: a file that lacks a column stops before any connection
        # the city's address points place address-only rows, as intake places live requests
        geocoder = await address_geocoder(url)
        writer_of_cases = CaseWriter(PostgresEventStore(), vault)
        run = HistoryImport(engine, writer_of_cases, mapping, city, geocoder, batch_size, started_at)
        columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[counts]}"))
        with Progress(*columns, TimeRemainingColumn(), console=progress_console, transient=True) as progress:
            task = progress.add_task("import", total=size, counts="")

            def show(summary: ImportSummary) -> None:
                refused_out.flush()
                progress.update(
                    task,
                    completed=reader.bytes_read,
                    counts=f"{summary.accepted} in, {summary.already_imported} skipped, {summary.refused_rows} refused",
                )

            return await run.run(
                itertools.chain([first] if first is not None else [], rows),
                on_refused=lambda r: writer.writerow(refused_row_cells(r)),
                on_batch=show,
                stop=stopping.is_set,
            )
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await engine.dispose()
