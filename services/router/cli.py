"""`civicflow rules …`: check, try out, explain and load a city's routing rules (added through an entry point)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from civicflow.cli.reach import call, database_url

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
    from_csv: Annotated[
        Path | None, typer.Option("--from-csv", help="Backtest on an old system's export instead (with --mapping)")
    ] = None,
    mapping: Annotated[Path | None, typer.Option(help="The `civicflow import` mapping that reads --from-csv")] = None,
) -> None:
    """Replay past cases through a candidate rule set and report what would change. Writes nothing."""
    from datetime import UTC, datetime

    from rich.progress import Progress

    from civicflow.db import make_engine
    from services.router.dryrun import dry_run

    rules = _load_rules_or_exit(path)
    try:
        start = datetime.fromisoformat(since).replace(tzinfo=UTC)
    except ValueError as exc:
        raise typer.BadParameter(f"--since {since!r} is not a date like 2026-11-01") from exc
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
    typer.echo(
        f"rule set {report.rule_set_version} on {report.cases} cases submitted since {since}:"
        f" {len(report.changed)} would go to a different department;"
        f" {report.same_department_other_rule} would stay but be decided by another rule"
    )
    typer.echo("\nby service type (changed / cases):")
    for code, total in sorted(report.by_service.items()):
        typer.echo(f"  {code:<24} {report.changed_by_service[code]:>6} / {total}")
    if report.moves:
        typer.echo("\nby department (from -> to: cases):")
        for (old, new), count in report.moves.most_common():
            typer.echo(f"  {old} -> {new}: {count}")
    typer.echo("\nrules that would fire:")
    for rule_id, count in report.rules_fired.most_common():
        typer.echo(f"  {rule_id:<32} {count}")
    typer.echo(f"\nchanged cases written to {csv_path}")


def _backtest_export(rules: Any, export: Path, mapping: Path | None, since: Any, csv_path: Path) -> None:
    """`rules dry-run --from-csv`: the candidate against the old system's departments (services/router/backtest.py)."""
    from civicflow.history import MappingError, load_mapping
    from civicflow.history_export import ExportProblem, read_export
    from services.router.backtest import backtest

    if mapping is None:
        raise typer.BadParameter("give the import mapping that reads the export", param_hint="--mapping")
    try:
        with export.open("rb") as rows:
            report = backtest(rules, read_export(rows, load_mapping(mapping)), since)
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

    from civicflow.localtime import wall_clock
    from civicflow.v1 import common_pb2, routing_pb2, routing_pb2_grpc

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
    if reply.routed:
        typer.echo(
            f"-> {reply.department_name} ({reply.department_id}), priority {reply.priority},"
            f" due {wall_clock(reply.due_at.ToDatetime(), reply.time_zone or None)} ({reply.sla})"
        )
        typer.echo(f"   rule {reply.rule_id} of rule set {reply.rule_set_version}: " + "; ".join(reply.reasons))
    else:
        typer.echo(f"-> triage: {reply.triage_reason} (rule set {reply.rule_set_version})")
    typer.echo("rules looked at, in order:")
    for ev in reply.evaluations:
        mark = "MATCH" if ev.matched else ("skip " if ev.skipped else "no   ")
        typer.echo(f"  {mark} {ev.rule_id:<28} {ev.skipped or '; '.join(ev.reasons)}")
