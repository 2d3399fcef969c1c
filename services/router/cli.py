"""`civicflow rules …`: check, try out, explain and load a city's routing rules (added through an entry point)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from civicflow.reach import call, database_url

rules_app = typer.Typer(help="Check, try out, explain and load a city's routing rules.", no_args_is_help=True)


def _load_rules_or_exit(path: Path) -> Any:
    from services.router.rulebook import load_rules
    from services.router.rules import RuleSetError

    try:
        return load_rules(path)
    except RuleSetError as exc:
        typer.echo(f"{path}: refused; nothing was loaded.", err=True)
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


@rules_app.command("check")
def rules_check(path: Annotated[Path, typer.Argument(help="The rule-set YAML file")]) -> None:
    """Validate a rule set and point out likely mistakes: unreachable rules, idle departments, unrouted
    services, overlapping areas. Exits 1 when something is certainly wrong."""
    from services.router.lint import lint

    rules = _load_rules_or_exit(path)
    rule_set = rules.rule_set
    typer.echo(
        f"{path}: version {rule_set.version}: {len(rule_set.rules)} rules, {len(rule_set.departments)} departments,"
        f" {len(rule_set.services)} services, {len(rules.area_geometries)} areas"
    )
    findings = lint(rules)
    for finding in findings:
        typer.echo(f"  {finding}")
    if any(f.level == "error" for f in findings):
        raise typer.Exit(1)
    typer.echo("OK" if not findings else f"OK with {len(findings)} warnings")


@rules_app.command("dry-run")
def rules_dry_run(
    path: Annotated[Path, typer.Argument(help="The candidate rule-set YAML file")],
    since: Annotated[str, typer.Option(help="Replay cases submitted from this date (YYYY-MM-DD, UTC)")],
    csv_path: Annotated[Path, typer.Option("--csv", help="Where to write the changed cases")] = Path(
        "rules-dry-run.csv"
    ),
    show_all: Annotated[
        bool, typer.Option("--all", help="List every service type, not only those whose cases change")
    ] = False,
    from_csv: Annotated[
        Path | None, typer.Option("--from-csv", help="Backtest on an old system's export instead (with --mapping)")
    ] = None,
    mapping: Annotated[Path | None, typer.Option(help="The `civicflow import` mapping that reads --from-csv")] = None,
) -> None:
    """Replay past cases through a candidate rule set and report what would change. Writes nothing but
    the CSV of changed cases (tracking number, submitted time, old and new department and rule)."""
    from datetime import UTC, datetime

    from rich.progress import Progress

    from civicflow.db import make_engine
    from services.router.dryrun import dry_run
    from services.router.dryrun_report import render_report

    rules = _load_rules_or_exit(path)
    try:
        start = datetime.fromisoformat(since)
    except ValueError as exc:
        raise typer.BadParameter(f"--since {since[:40]!r} is not a date like 2026-11-01") from exc
    start = start if start.tzinfo else start.replace(tzinfo=UTC)  # a date alone is read in UTC
    if from_csv is not None:
        _backtest_export(rules, from_csv, mapping, start, csv_path)
        return

    async def replay() -> Any:
        engine = make_engine(database_url())
        try:
            with Progress(transient=True) as progress:
                task = progress.add_task("replaying cases", total=None)
                return await dry_run(
                    engine,
                    rules,
                    start,
                    on_total=lambda n: progress.update(task, total=n),
                    on_case=lambda: progress.advance(task),
                )
        finally:
            await engine.dispose()

    report = asyncio.run(replay())
    report.write_csv(csv_path)
    typer.echo(render_report(report, show_all))
    typer.echo(f"\nchanged cases written to {csv_path}")


def _backtest_export(rules: Any, export: Path, mapping: Path | None, since: Any, csv_path: Path) -> None:
    """`rules dry-run --from-csv`: the candidate against the old system's departments (services/router/backtest.py)."""
    from sqlalchemy.exc import DBAPIError

    from civicflow.address_points import address_geocoder
    from civicflow.history import MappingError, load_mapping
    from civicflow.history_export import ExportProblem, read_export
    from services.router.backtest import backtest

    if mapping is None:
        raise typer.BadParameter("give the import mapping that reads the export", param_hint="--mapping")
    try:
        geocoder = asyncio.run(address_geocoder(database_url()))
    except (OSError, DBAPIError, typer.BadParameter) as exc:  # no system to read the address points from
        typer.echo(
            f"note: the city's address points could not be read ({type(exc).__name__}); rows with an"
            " address and no point are routed without a place",
            err=True,
        )
        geocoder = None
    try:
        with export.open("rb") as rows:
            report = backtest(rules, read_export(rows, load_mapping(mapping)), since, geocoder)
    except (MappingError, ExportProblem, OSError) as exc:
        typer.echo(f"{export}: {exc}; nothing was compared", err=True)
        raise typer.Exit(1) from exc
    report.write_csv(csv_path)
    for line in report.summary_lines():
        typer.echo(line)
    typer.echo(f"\nrows where the candidate differs written to {csv_path}")


@rules_app.command("reload")
def rules_reload(
    path: Annotated[str, typer.Argument(help="A rule-set file; empty reloads the router's own file")] = "",
) -> None:
    """Replace the running router's rule set; a broken file is refused and the old rules stay."""
    from civicflow.v1 import routing_pb2, routing_pb2_grpc

    reply = call(
        "router",
        routing_pb2_grpc.RoutingServiceStub,
        "ReloadRules",
        routing_pb2.ReloadRulesRequest(path=str(Path(path).resolve()) if path else ""),
        timeout=30,
    )
    typer.echo(f"rule set {reply.rule_set_version} in force (was {reply.previous_version})")


@rules_app.command("explain")
def rules_explain(
    tracking_number: Annotated[str, typer.Option(help="Explain an existing case")] = "",
    service_code: Annotated[str, typer.Option("--service-code", "-s")] = "",
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    lat: Annotated[float | None, typer.Option()] = None,
    long: Annotated[float | None, typer.Option()] = None,
    attribute: Annotated[list[str] | None, typer.Option(help="question=answer, repeatable")] = None,
    flag: Annotated[list[str] | None, typer.Option(help="e.g. hazard, repeatable")] = None,
    channel: Annotated[str, typer.Option()] = "phone",
    at: Annotated[
        str, typer.Option(help="When it is submitted (ISO date-time, UTC unless it gives an offset); now by default")
    ] = "",
) -> None:
    """Why would (or did) a request go where it goes? Writes nothing."""
    from datetime import UTC, datetime

    from civicflow.v1 import common_pb2, routing_pb2, routing_pb2_grpc
    from services.router.explanation import explanation_lines

    if tracking_number:
        request = routing_pb2.ExplainRouteRequest(tracking_number=tracking_number)
    else:
        location = common_pb2.Location()
        if lat is not None and long is not None:
            location.lat, location.long = lat, long
        answers = dict(a.split("=", 1) for a in attribute or [] if "=" in a)
        draft = routing_pb2.DraftRequest(
            service_code=service_code,
            description=description,
            location=location,
            attributes=answers,
            flags=flag or [],
            channel=channel,
        )
        if at:
            when = datetime.fromisoformat(at)
            draft.submitted_at.FromDatetime(when if when.tzinfo else when.replace(tzinfo=UTC))
        request = routing_pb2.ExplainRouteRequest(draft=draft)
    reply = call("router", routing_pb2_grpc.RoutingServiceStub, "ExplainRoute", request)
    for line in explanation_lines(reply):
        typer.echo(line)
