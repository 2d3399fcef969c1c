"""The civicflow command line: run the system, one service, or act as a call-taker at a terminal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, NoReturn

import grpc
import typer

from civicflow.settings import KernelSettings

app = typer.Typer(help="civicflow: an open 311 case-routing platform.", no_args_is_help=True)
replay_app = typer.Typer(help="Rebuild read models from the event store.", no_args_is_help=True)
app.add_typer(replay_app, name="replay")
rules_app = typer.Typer(help="Check, try out, explain and load a city's routing rules.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
keys_app = typer.Typer(help="API keys of the systems that call civicflow (call centre, portal…).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _service_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="civicflow.services")}


def _dev_file(settings: KernelSettings) -> Path:
    return settings.state_dir / "dev.json"


def _cli_key_file(settings: KernelSettings) -> Path:
    """Where `civicflow dev` keeps the key this machine's CLI calls with (every scope, mode 0600)."""
    return settings.state_dir / "cli.key"


@app.command()
def dev(
    default_ports: Annotated[bool, typer.Option(help="Use the documented ports (50051 intake, 50052 query…).")] = True,
) -> None:
    """Start embedded PostgreSQL and Kafka, migrate, and run every service until Ctrl-C."""
    from civicflow.infra import provide
    from civicflow.kafka import ensure_topics
    from civicflow.launcher import Ports, SystemProcesses
    from civicflow.logging import configure_logging
    from civicflow.migrate import all_migration_sets, migrate
    from civicflow.pii import load_master_key

    settings = KernelSettings()
    configure_logging("dev", settings.log_level)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops everything as Ctrl-C does
    state_dir = settings.state_dir.resolve()
    os.environ.setdefault("CIVICFLOW_USE_TESTCONTAINERS", "no")
    with provide(state_dir) as infra:
        typer.echo(f"infrastructure: {infra.kind}; Kafka at {infra.kafka_bootstrap_servers}")
        asyncio.run(migrate(infra.database_url, all_migration_sets()))
        _keep_local_key(infra.database_url, _cli_key_file(settings))
        asyncio.run(
            ensure_topics(settings.model_copy(update={"kafka_bootstrap_servers": infra.kafka_bootstrap_servers}))
        )
        ports = Ports.defaults() if default_ports else Ports.free()
        master_key = load_master_key(settings.pii_master_key, state_dir).decode()
        system = SystemProcesses(infra, state_dir, ports, extra_env={"CIVICFLOW_PII_MASTER_KEY": master_key})
        try:
            system.start_all()
            _dev_file(settings).write_text(
                json.dumps(
                    {
                        "intake": f"127.0.0.1:{ports.intake}",
                        "query": f"127.0.0.1:{ports.query}",
                        "router": f"127.0.0.1:{ports.router}",
                        "database_url": infra.database_url,
                    }
                )
            )
            metrics = ", ".join(f"{name} {port}" for name, port in ports.metrics.items())
            typer.echo(
                "\ncivicflow is running (Ctrl-C stops it):\n"
                f"  intake    gRPC  127.0.0.1:{ports.intake}   (civicflow submit …)\n"
                f"  query     gRPC  127.0.0.1:{ports.query}   (civicflow track TRACKING-NUMBER)\n"
                f"  router    gRPC  127.0.0.1:{ports.router}   (civicflow rules explain / reload)\n"
                f"  bridge    gRPC  127.0.0.1:{ports.workorder_bridge}, webhooks http://127.0.0.1:{ports.bridge_http}\n"
                f"  notifier  gRPC  127.0.0.1:{ports.notifier}   (health)\n"
                f"  sample department work-order system  http://127.0.0.1:{ports.sample_department}\n"
                f"  SMTP sink 127.0.0.1:{ports.smtp}, mail saved in {system.mail_dir}\n"
                f"  metrics   http://127.0.0.1:<port>/metrics, port by service: {metrics}\n"
                f"  logs in {state_dir / 'logs'}\n"
                f"  the CLI calls with the API key in {_cli_key_file(settings)} (every scope; `civicflow keys`)\n"
            )
            while True:
                for name, code in system.exited().items():
                    typer.echo(f"{name} exited with code {code}; restarting it (see its log)", err=True)
                    system.start(name)
                time.sleep(1)
        except KeyboardInterrupt:
            typer.echo("stopping…")
        finally:
            system.stop_all()


def _keep_local_key(database_url: str, path: Path) -> None:
    from civicflow.api_clients import local_key, read_key_file, write_key_file
    from civicflow.db import make_engine

    async def ensure() -> str:
        engine = make_engine(database_url, pool_size=1)
        try:
            return await local_key(engine, read_key_file(path))
        finally:
            await engine.dispose()

    key = asyncio.run(ensure())
    if key != read_key_file(path):
        write_key_file(path, key)


@app.command()
def run(service: Annotated[str, typer.Argument(help="intake, router, workorder_bridge, notifier or query")]) -> None:
    """Run one service against the configured PostgreSQL and Kafka (CIVICFLOW_* settings)."""
    found = _service_entry_points().get(service)
    if found is None:
        raise typer.BadParameter(f"no service {service!r}; choose one of {', '.join(sorted(_service_entry_points()))}")
    _require_infrastructure()
    asyncio.run(found.load()())


@app.command("migrate")
def migrate_command() -> None:
    """Apply every pending schema migration (kernel and services). Safe to repeat."""
    from civicflow.migrate import all_migration_sets, migrate

    settings = _require_infrastructure(kafka=False)
    applied = asyncio.run(migrate(settings.database_url, all_migration_sets()))
    typer.echo("\n".join(applied) if applied else "schema is up to date")


@app.command()
def asyncapi(
    out: Annotated[Path | None, typer.Option(help="Write the document here instead of printing it")] = None,
) -> None:
    """The AsyncAPI document of civicflow's topics (the event catalogue other city systems read)."""
    from civicflow.asyncapi import render

    document = render()
    if out is None:
        typer.echo(document, nl=False)
    else:
        out.write_text(document, encoding="utf-8")
        typer.echo(f"wrote {out}")


@replay_app.command("query")
def replay_query() -> None:
    """Rebuild the query service's read model from the event store."""
    from services.query.main import rebuild

    _require_infrastructure(kafka=False)
    count = asyncio.run(rebuild())
    typer.echo(f"read model rebuilt from {count} events")


def _require_infrastructure(kafka: bool = True) -> KernelSettings:
    settings = KernelSettings()
    if not settings.database_url or (kafka and not settings.kafka_bootstrap_servers):
        raise typer.BadParameter(
            "set CIVICFLOW_DATABASE_URL and CIVICFLOW_KAFKA_BOOTSTRAP_SERVERS, or use `civicflow dev` to run everything"
        )
    return settings


def _address(service: str) -> str:
    configured = os.environ.get(f"CIVICFLOW_{service.upper()}_ADDRESS")
    if configured:
        return configured
    dev_file = _dev_file(KernelSettings())
    if dev_file.exists():
        return str(json.loads(dev_file.read_text())[service])
    return {"intake": "127.0.0.1:50051", "query": "127.0.0.1:50052", "router": "127.0.0.1:50053"}[service]


def _database_url() -> str:
    """CIVICFLOW_DATABASE_URL, or the database of the system `civicflow dev` is running."""
    settings = KernelSettings()
    if settings.database_url:
        return settings.database_url
    dev_file = _dev_file(settings)
    if dev_file.exists():
        return str(json.loads(dev_file.read_text())["database_url"])
    raise typer.BadParameter("set CIVICFLOW_DATABASE_URL, or start the system with `civicflow dev`")


def _api_key() -> str | None:
    """CIVICFLOW_API_KEY, else the key `civicflow dev` made for this machine's CLI."""
    configured = os.environ.get("CIVICFLOW_API_KEY", "").strip()
    if configured:
        return configured
    kept = _cli_key_file(KernelSettings())
    return kept.read_text().strip() if kept.exists() else None


def _channel(service: str) -> grpc.Channel:
    """Plain text, or TLS when CIVICFLOW_GRPC_TLS_CA_FILE names the CA to trust."""
    from civicflow.grpc_tls import TlsMisconfigured, channel_credentials

    try:
        credentials = channel_credentials(KernelSettings())
    except TlsMisconfigured as exc:
        raise typer.BadParameter(str(exc)) from exc
    address = _address(service)
    return grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)


def _call(service: str, stub: Any, method: str, request: Any, timeout: float = 10) -> Any:
    """One gRPC call to a running service with the CLI's API key; a refusal is printed as the service
    explained it, exit 1."""
    from civicflow.apikeys import call_metadata

    key = _api_key()
    metadata = call_metadata(key) if key else None
    with _channel(service) as channel:
        try:
            return getattr(stub(channel), method)(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            _fail(error)


def _fail(error: grpc.RpcError) -> NoReturn:
    from civicflow.grpc_errors import field_violations

    assert isinstance(error, grpc.Call)
    violations = field_violations(error)
    if not violations:
        typer.echo(f"error: {error.details()}", err=True)
    for field, description in violations:
        typer.echo(f"error: {field}: {description}", err=True)
    raise typer.Exit(1)


@app.command()
def submit(
    service_code: Annotated[str, typer.Option("--service-code", "-s", help="e.g. POTHOLE, STREETLIGHT")],
    description: Annotated[str, typer.Option("--description", "-d")],
    address: Annotated[str, typer.Option(help="Street address of the problem")] = "",
    lat: Annotated[float | None, typer.Option()] = None,
    long: Annotated[float | None, typer.Option()] = None,
    name: Annotated[str, typer.Option(help="Resident's name (kept private)")] = "",
    email: Annotated[str, typer.Option(help="Resident's email for updates (kept private)")] = "",
    phone: Annotated[str, typer.Option(help="Resident's phone (kept private)")] = "",
    channel: Annotated[str, typer.Option(help="phone, web, app or system")] = "phone",
    idempotency_key: Annotated[str, typer.Option(help="Retrying with the same key never opens a second case")] = "",
    attribute: Annotated[list[str] | None, typer.Option(help="question=answer, repeatable")] = None,
    flag: Annotated[list[str] | None, typer.Option(help="hazard, blocking_traffic…, repeatable")] = None,
) -> None:
    """Submit a request as a call-taker would; prints its tracking number."""
    from civicflow.v1 import common_pb2, intake_pb2, intake_pb2_grpc

    location = common_pb2.Location(address=address)
    if lat is not None:
        location.lat = lat
    if long is not None:
        location.long = long
    preferred = intake_pb2.CONTACT_CHANNEL_EMAIL if email else intake_pb2.CONTACT_CHANNEL_UNSPECIFIED
    request = intake_pb2.SubmitRequestRequest(
        service_code=service_code,
        description=description,
        location=location,
        contact=intake_pb2.ResidentContact(name=name, email=email, phone=phone, preferred_channel=preferred),
        idempotency_key=idempotency_key,
        channel=channel,
        attributes=dict(a.split("=", 1) for a in attribute or [] if "=" in a),
        flags=flag or [],
    )
    reply = _call("intake", intake_pb2_grpc.IntakeServiceStub, "SubmitRequest", request)
    typer.echo(f"tracking number: {reply.tracking_number}" + (" (already accepted earlier)" if reply.replayed else ""))


@app.command()
def recategorise(
    tracking_number: Annotated[str, typer.Argument(help="e.g. QGPE-J5T")],
    service_code: Annotated[str, typer.Option("--service-code", "-s", help="The service it really is")],
    reason: Annotated[str, typer.Option(help="Why, for the case's history")],
) -> None:
    """Correct a case's service type as a call-taker; the router places it again."""
    from civicflow.v1 import intake_pb2, intake_pb2_grpc

    request = intake_pb2.RecategoriseCaseRequest(
        tracking_number=tracking_number, service_code=service_code, reason=reason
    )
    reply = _call("intake", intake_pb2_grpc.IntakeServiceStub, "RecategoriseCase", request)
    typer.echo(f"{tracking_number}: {reply.previous_service_code} -> {service_code}; the router will place it again")


@app.command()
def track(tracking_number: Annotated[str, typer.Argument(help="e.g. QGPE-J5T")]) -> None:
    """Show where a request is: status, department, due date and every stage so far."""
    from civicflow.v1 import query_pb2, query_pb2_grpc

    view = _call(
        "query",
        query_pb2_grpc.CaseQueryServiceStub,
        "GetCase",
        query_pb2.GetCaseRequest(tracking_number=tracking_number),
    )
    from civicflow.localtime import local, wall_clock

    zone = view.time_zone or None  # the department's: times as the city reads them (UTC until routed)
    typer.echo(f"{view.tracking_number}  {view.service_code}  status: {view.status}")
    if view.department_name:
        due = f", due {wall_clock(view.due_at.ToDatetime(), zone)}" if view.HasField("due_at") else ""
        typer.echo(f"department: {view.department_name}{due}  (rule {view.rule_id or '-'})")
    if view.work_order_id:
        typer.echo(f"work order: {view.work_order_id}")
    for entry in view.timeline:
        typer.echo(f"  {local(entry.at.ToDatetime(), zone):%Y-%m-%d %H:%M:%S %Z}  {entry.stage:<22} {entry.detail}")


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

    async def replay() -> Any:
        engine = make_engine(_database_url())
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


@rules_app.command("reload")
def rules_reload(
    path: Annotated[str, typer.Argument(help="A rule-set file; empty reloads the router's own file")] = "",
) -> None:
    """Replace the running router's rule set; a broken file is refused and the old rules stay."""
    from civicflow.v1 import routing_pb2, routing_pb2_grpc

    reply = _call(
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
    reply = _call("router", routing_pb2_grpc.RoutingServiceStub, "ExplainRoute", request)
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


def _with_engine(work: Any) -> Any:
    """Run `work(engine)` on the configured database (or the running `civicflow dev` system's)."""
    from civicflow.db import make_engine

    async def go() -> Any:
        engine = make_engine(_database_url(), pool_size=1)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="The calling system, e.g. callcentre or web-portal")],
    scope: Annotated[
        list[str],
        typer.Option(
            help="What it may do, repeatable: submit, track, recategorise, rules-read, rules-admin, status-report,"
            " or all"
        ),
    ],
) -> None:
    """Make an API key for a client system; the key is printed once and stored only as a hash."""
    from civicflow.api_clients import ClientRefused, create_client
    from civicflow.apikeys import parse_scopes

    try:
        scopes = parse_scopes(scope)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        key = _with_engine(lambda engine: create_client(engine, name, scopes))
    except ClientRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"API key for {name} (scopes: {', '.join(sorted(scopes))}); shown only now, keep it secret:")
    typer.echo(key.reveal())
    typer.echo("clients send it as the gRPC metadata `authorization: Bearer <key>` (the CLI: CIVICFLOW_API_KEY)")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: client, id, scopes, when made, last used and revoked (never the secret)."""
    from civicflow.api_clients import list_clients

    def when(value: Any) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value else "-"

    clients = _with_engine(list_clients)
    if not clients:
        typer.echo("no API keys yet; `civicflow keys create NAME --scope …` makes one")
        return
    typer.echo(f"{'name':<20} {'id':<12}  {'created':<16}  {'last used':<16}  {'revoked':<16}  scopes")
    for c in clients:
        typer.echo(
            f"{c.name:<20} {c.key_id:<12}  {when(c.created_at):<16}  {when(c.last_used_at):<16}"
            f"  {when(c.revoked_at):<16}  {','.join(sorted(c.scopes))}"
        )


@keys_app.command("revoke")
def keys_revoke(name_or_id: Annotated[str, typer.Argument(help="A client's name (its live key) or a key id")]) -> None:
    """Revoke a key; servers refuse it within CIVICFLOW_API_KEY_CACHE_SECONDS (default 5 s)."""
    from civicflow.api_clients import ClientRefused, revoke_client

    try:
        revoked = _with_engine(lambda engine: revoke_client(engine, name_or_id))
    except ClientRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    seconds = KernelSettings().api_key_cache_seconds
    typer.echo(f"revoked the key {revoked.key_id} of {revoked.name}; servers refuse it within {seconds:g} s")


if __name__ == "__main__":
    app()
