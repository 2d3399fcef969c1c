"""The call-taker's commands: submit a request, correct its service type, track it."""

from __future__ import annotations

from typing import Annotated

import typer

from civicflow.reach import call


def submit(
    service_code: Annotated[str, typer.Option("--service-code", "-s", help="e.g. POTHOLE, STREETLIGHT")],
    description: Annotated[str, typer.Option("--description", "-d", help="Required by some services")] = "",
    address: Annotated[
        str, typer.Option(help="Street address, cross streets (Oak St & Example Ave) or a listed place (City Hall)")
    ] = "",
    lat: Annotated[float | None, typer.Option()] = None,
    long: Annotated[float | None, typer.Option()] = None,
    name: Annotated[str, typer.Option(help="Resident's name (kept private)")] = "",
    email: Annotated[str, typer.Option(help="Resident's email for updates (kept private)")] = "",
    phone: Annotated[str, typer.Option(help="Resident's phone, +country code or local form (kept private)")] = "",
    prefer: Annotated[
        str, typer.Option(help="How the resident wants to hear back: email, sms or voice (default: email if given)")
    ] = "",
    language: Annotated[str, typer.Option(help="The resident's language for updates: en or es")] = "",
    updates: Annotated[str, typer.Option(help="all (every stage) or outcome (only when resolved)")] = "",
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
    channels = {
        "email": intake_pb2.CONTACT_CHANNEL_EMAIL,
        "sms": intake_pb2.CONTACT_CHANNEL_SMS,
        "text": intake_pb2.CONTACT_CHANNEL_SMS,
        "voice": intake_pb2.CONTACT_CHANNEL_VOICE,
    }
    stages = {"all": intake_pb2.CONTACT_UPDATES_ALL, "outcome": intake_pb2.CONTACT_UPDATES_OUTCOME}
    if prefer and prefer.lower() not in channels:
        raise typer.BadParameter("give email, sms or voice", param_hint="--prefer")
    if updates and updates.lower() not in stages:
        raise typer.BadParameter("give all or outcome", param_hint="--updates")
    unchosen = intake_pb2.CONTACT_CHANNEL_EMAIL if email else intake_pb2.CONTACT_CHANNEL_UNSPECIFIED
    preferred = channels.get(prefer.lower(), unchosen)
    request = intake_pb2.SubmitRequestRequest(
        service_code=service_code,
        description=description,
        location=location,
        contact=intake_pb2.ResidentContact(
            name=name,
            email=email,
            phone=phone,
            preferred_channel=preferred,
            language=language.lower(),
            updates=stages.get(updates.lower(), intake_pb2.CONTACT_UPDATES_UNSPECIFIED),
        ),
        idempotency_key=idempotency_key,
        channel=channel,
        attributes=dict(a.split("=", 1) for a in attribute or [] if "=" in a),
        flags=flag or [],
    )
    reply = call("intake", intake_pb2_grpc.IntakeServiceStub, "SubmitRequest", request)
    typer.echo(f"tracking number: {reply.tracking_number}" + (" (already accepted earlier)" if reply.replayed else ""))


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
    reply = call("intake", intake_pb2_grpc.IntakeServiceStub, "RecategoriseCase", request)
    typer.echo(f"{tracking_number}: {reply.previous_service_code} -> {service_code}; the router will place it again")


def preferences(
    tracking_number: Annotated[str, typer.Argument(help="e.g. QGPE-J5T")],
    prefer: Annotated[str, typer.Option(help="email, sms, voice or none")] = "",
    language: Annotated[str, typer.Option(help="en or es")] = "",
    updates: Annotated[str, typer.Option(help="all (every stage) or outcome (only when resolved)")] = "",
) -> None:
    """Change how a resident hears back about a case (on their behalf); later stages follow it."""
    from civicflow.v1 import intake_pb2, notifier_pb2, notifier_pb2_grpc

    channels = {
        "email": intake_pb2.CONTACT_CHANNEL_EMAIL,
        "sms": intake_pb2.CONTACT_CHANNEL_SMS,
        "text": intake_pb2.CONTACT_CHANNEL_SMS,
        "voice": intake_pb2.CONTACT_CHANNEL_VOICE,
        "none": intake_pb2.CONTACT_CHANNEL_NONE,
    }
    stages = {"all": intake_pb2.CONTACT_UPDATES_ALL, "outcome": intake_pb2.CONTACT_UPDATES_OUTCOME}
    if prefer and prefer.lower() not in channels:
        raise typer.BadParameter("give email, sms, voice or none", param_hint="--prefer")
    if updates and updates.lower() not in stages:
        raise typer.BadParameter("give all or outcome", param_hint="--updates")
    request = notifier_pb2.SetPreferencesRequest(
        tracking_number=tracking_number,
        preferred_channel=channels.get(prefer.lower(), intake_pb2.CONTACT_CHANNEL_UNSPECIFIED),
        language=language.lower(),
        updates=stages.get(updates.lower(), intake_pb2.CONTACT_UPDATES_UNSPECIFIED),
    )
    reply = call("notifier", notifier_pb2_grpc.NotifierServiceStub, "SetPreferences", request)
    channel = reply.preferred_channel or "as given (email if any)"
    typer.echo(f"{tracking_number}: hears by {channel}, in {reply.language}, {reply.updates} updates")


def track(tracking_number: Annotated[str, typer.Argument(help="e.g. QGPE-J5T")]) -> None:
    """Show where a request is: status, department, due date and every stage so far."""
    from civicflow.v1 import query_pb2, query_pb2_grpc

    view = call(
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
    if line := _point_line(view.point_source, view.unplaced):
        typer.echo(line)
    if line := satisfaction_line(view.satisfaction):
        typer.echo(line)
    for entry in view.timeline:
        typer.echo(f"  {local(entry.at.ToDatetime(), zone):%Y-%m-%d %H:%M:%S %Z}  {entry.stage:<22} {entry.detail}")


def satisfaction_line(score: int) -> str:
    """The resident's survey answer, for a call-taker; empty before one."""
    return f"satisfaction: {score} of 5 (the resident's survey answer)" if score else ""


def _point_line(point_source: str, unplaced: str) -> str:
    """What the case view says of its point, for a call-taker."""
    if point_source == "geocoded":
        return "point: geocoded from the address"
    if point_source == "given":
        return "point: given with the request"
    if unplaced:
        return f"point: could not be placed: {unplaced}"
    return ""
