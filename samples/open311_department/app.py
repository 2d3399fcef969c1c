"""The SAMPLE Open311 server as a Starlette app: GeoReport v2 (JSON and XML) with mySociety's updates, and the
sample's own routes for a person or a test to act as the department's staff. See the package docstring."""

from __future__ import annotations

import asyncio
import hmac
import json
import xml.etree.ElementTree as ElementTree
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import structlog
import uvicorn
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from civicflow.secrets import UnsafeSecret, shared_secret
from civicflow.settings import KernelSettings
from samples.open311_department.store import FINAL, Clock, Open311Store, ServiceRequest, now_to_the_second

log = structlog.get_logger(__name__)

# The sample's services: GeoReport codes as a department numbers them (the city file maps ours to these).
SERVICES = {
    "4": ("Pothole", "Roads"),
    "5": ("Street light out", "Roads"),
    "6": ("Damaged pavement or curb", "Roads"),
    "7": ("Road surface collapse", "Roads"),
    "8": ("Snow or ice on the road", "Roads"),
    "9": ("Street cleaning", "Roads"),
    "20": ("Missed bin collection", "Waste"),
    "21": ("Bulky waste collection", "Waste"),
    "22": ("Fly-tipping", "Waste"),
    "23": ("Bin request or repair", "Waste"),
}
PROGRESSION = (
    ("investigating", "An inspector will look at it"),
    ("action_scheduled", "A crew is scheduled"),
    ("fixed", "Repaired by the crew"),
)
MAX_BODY = 64 * 1024
KEY_ATTRIBUTE = "civicflow_key"


class SampleOpen311Settings(KernelSettings):
    """Read from CIVICFLOW_SAMPLE_OPEN311_* and CIVICFLOW_OPEN311_API_KEY (the state folder decides where a
    development key is kept: the launcher hands the same one to the bridge)."""

    sample_open311_port: int = 8096
    sample_open311_jurisdiction: str = "sample-city"
    # each request moves open -> investigating -> action_scheduled -> fixed, one step every N seconds; 0: never
    sample_open311_step_seconds: float = Field(default=4.0, ge=0)
    # answer a POST with a token; the id shows at tokens/{token} after this many seconds (negative: no tokens)
    sample_open311_token_seconds: float = -1.0
    # false: no servicerequestupdates (404), as a plain GeoReport server (the client then polls GET requests)
    sample_open311_updates_endpoint: bool = True
    # the dialects of servers that get GeoReport wrong, for tests: JSON objects where lists belong (wrapped, and one
    # record as an object), times without a zone (written in this IANA zone), and XML only (.json is not served)
    sample_open311_objects: bool = False
    sample_open311_naive_zone: str = ""
    sample_open311_xml_only: bool = False
    open311_api_key: str = ""

    def api_key(self) -> str:
        return shared_secret(self, self.open311_api_key, "CIVICFLOW_OPEN311_API_KEY", "open311.key")


class GeoReportError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def render(
    fmt: str,
    root: str,
    item: str,
    rows: list[dict[str, Any]],
    status: int = 200,
    bare: bool = True,
    objects: bool = False,
) -> Response:
    """GeoReport's shapes: JSON a bare list (mySociety's updates wrapped in `root`), XML <root><item>…</root>;
    `objects`: JSON always wrapped, and a single record as an object instead of a list of one."""
    if fmt == "json":
        if objects:
            return JSONResponse({root: rows[0] if len(rows) == 1 else rows}, status_code=status)
        return JSONResponse(rows if bare else {root: rows}, status_code=status)
    top = ElementTree.Element(root)
    for row in rows:
        _xml_fields(ElementTree.SubElement(top, item), row)
    body = ElementTree.tostring(top, encoding="utf-8", xml_declaration=True)
    return Response(body, status_code=status, media_type="text/xml; charset=utf-8")


def _xml_fields(parent: ElementTree.Element, row: dict[str, Any]) -> None:
    for name, value in row.items():
        child = ElementTree.SubElement(parent, name)
        if isinstance(value, dict):
            _xml_fields(child, value)
        elif value is not None:
            child.text = str(value)


def error(fmt: str, status: int, description: str, objects: bool = False) -> Response:
    rows = [{"code": status, "description": description}]
    return render(fmt if fmt in ("json", "xml") else "json", "errors", "error", rows, status, objects=objects)


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "+") if "T" in value else value)
    except ValueError:
        raise GeoReportError(400, f"{name} is not a W3C date-time (e.g. 2026-11-26T15:00:00Z)") from None
    if moment.tzinfo is None:
        raise GeoReportError(400, f"{name} needs a zone (Z or +hh:mm)")
    return moment


class Crews:
    """The automatic progression: each new request moves one step every step_seconds, until staff take it over."""

    def __init__(self, store: Open311Store, step_seconds: float) -> None:
        self._store = store
        self._step = step_seconds
        self._running: set[asyncio.Task[None]] = set()

    def dispatch(self, request: ServiceRequest) -> None:
        if self._step <= 0:
            return
        task = asyncio.create_task(self._work(request), name=f"open311-crew-{request.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _work(self, request: ServiceRequest) -> None:
        for status, note in PROGRESSION:
            await asyncio.sleep(self._step)
            if request.by_staff or request.status in FINAL:
                return
            self._store.move(request, status, note)

    async def stop(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def create_app(settings: SampleOpen311Settings | None = None, *, clock: Clock = now_to_the_second) -> Starlette:
    settings = settings or SampleOpen311Settings()
    api_key = settings.api_key()
    store = Open311Store(settings.state_dir, clock)
    crews = Crews(store, settings.sample_open311_step_seconds)
    faults = {"lose_next_answers": 0}
    objects = settings.sample_open311_objects
    naive_zone = ZoneInfo(settings.sample_open311_naive_zone) if settings.sample_open311_naive_zone else None

    def reply(fmt: str, root: str, item: str, rows: list[dict[str, Any]], bare: bool = True) -> Response:
        return render(fmt, root, item, rows, bare=bare, objects=objects)

    def stamp(moment: datetime) -> str:
        """A time as this server writes them: with its offset, or (a naive dialect) in its zone without one."""
        if naive_zone is None:
            return moment.isoformat()
        return moment.astimezone(naive_zone).replace(tzinfo=None).isoformat()

    async def form_of(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise GeoReportError(400, f"the body is larger than {MAX_BODY} bytes")
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
        except (UnicodeDecodeError, ValueError):
            raise GeoReportError(400, "the body is not a form (application/x-www-form-urlencoded, UTF-8)") from None

    def check(fields: Any, *, key_needed: bool) -> None:
        jurisdiction = fields.get("jurisdiction_id")
        if jurisdiction and jurisdiction != settings.sample_open311_jurisdiction:
            raise GeoReportError(404, "jurisdiction_id not found")
        if key_needed and not hmac.compare_digest(str(fields.get("api_key", "")).encode(), api_key.encode()):
            raise GeoReportError(403, "api_key was not provided or is not valid")

    def geo_report(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            fmt = request.path_params.get("fmt", "json")
            if fmt not in ("json", "xml") or (fmt == "json" and settings.sample_open311_xml_only):
                served = "xml" if settings.sample_open311_xml_only else "json or xml"
                return error("xml" if settings.sample_open311_xml_only else "json", 404, f"use {served}", objects)
            try:
                response: Response = await handler(request, fmt)
                return response
            except GeoReportError as exc:
                return error(fmt, exc.status, exc.description, objects)

        return endpoint

    def record(found: ServiceRequest) -> dict[str, Any]:
        return found.as_record(SERVICES.get(found.service_code, ("", ""))[0], stamp)

    def pending(found: ServiceRequest) -> bool:
        """A request taken under a token whose id the token does not show yet."""
        return (
            found.token is not None
            and settings.sample_open311_token_seconds > 0
            and store.clock() < found.requested_at + timedelta(seconds=settings.sample_open311_token_seconds)
        )

    async def services(request: Request, fmt: str) -> Response:
        check(request.query_params, key_needed=False)
        rows = [
            {"service_code": code, "service_name": name, "description": name, "metadata": "false",
             "type": "realtime", "keywords": "", "group": group}
            for code, (name, group) in SERVICES.items()
        ]  # fmt: skip
        return reply(fmt, "services", "service", rows)

    async def post_request(request: Request, fmt: str) -> Response:
        fields = await form_of(request)
        check(fields, key_needed=True)
        code = fields.get("service_code", "")
        if code not in SERVICES:
            raise GeoReportError(400, "service_code was not provided or is not a service of this jurisdiction")
        try:
            lat = float(fields["lat"]) if fields.get("lat") else None
            long = float(fields["long"]) if fields.get("long") else None
        except ValueError:
            raise GeoReportError(400, "lat and long must be numbers") from None
        if (lat is None) != (long is None):
            raise GeoReportError(400, "give both lat and long, or neither")
        if lat is not None and long is not None and not (-90 <= lat <= 90 and -180 <= long <= 180):
            raise GeoReportError(400, "lat and long must be numbers within -90..90 and -180..180")
        attributes = {k[10:-1]: v for k, v in fields.items() if k.startswith("attribute[") and k.endswith("]")}
        opened = store.open(
            service_code=code,
            description=fields.get("description", "")[:4000],
            lat=lat,
            long=long,
            address=fields.get("address_string") or None,
            attributes=attributes,
            key=attributes.get(KEY_ATTRIBUTE) or None,
        )
        crews.dispatch(opened)
        log.info("service request opened", service_request_id=opened.id, service_code=code)
        if faults["lose_next_answers"] > 0:  # taken, but the answer is lost on the way (a proxy's 502)
            faults["lose_next_answers"] -= 1
            return Response("bad gateway", status_code=502)
        if settings.sample_open311_token_seconds >= 0:
            return reply(fmt, "service_requests", "request", [{"token": store.with_token(opened)}])
        notice = "The department will look at it within five working days"
        row = {"service_request_id": opened.id, "service_notice": notice, "account_id": None}
        return reply(fmt, "service_requests", "request", [row])

    async def get_requests(request: Request, fmt: str) -> Response:
        params = request.query_params
        check(params, key_needed=False)
        if ids := params.get("service_request_id"):
            found = [store.requests[i] for i in ids.split(",") if i in store.requests]
        elif key := params.get(f"attribute[{KEY_ATTRIBUTE}]"):  # the sample's search by our key
            matches = store.by_key(key)
            rows = [{"token": f.token, **({} if pending(f) else record(f))} for f in matches]
            return reply(fmt, "service_requests", "request", rows)
        else:
            start, end = _time(params.get("start_date"), "start_date"), _time(params.get("end_date"), "end_date")
            status = params.get("status")
            found = [
                r for r in store.requests.values()
                if (start is None or r.requested_at >= start) and (end is None or r.requested_at <= end)
                and (status is None or (status == "closed") == (r.status in FINAL))
            ][-1000:]  # fmt: skip
        return reply(fmt, "service_requests", "request", [record(f) for f in found if not pending(f)])

    async def get_request(request: Request, fmt: str) -> Response:
        check(request.query_params, key_needed=False)
        found = store.requests.get(request.path_params["id"])
        if found is None or pending(found):
            raise GeoReportError(404, "service_request_id not found")
        return reply(fmt, "service_requests", "request", [record(found)])

    async def get_token(request: Request, fmt: str) -> Response:
        check(request.query_params, key_needed=False)
        found = store.by_token(request.path_params["token"])
        if found is None:
            raise GeoReportError(404, "token not found")
        row = {"token": found.token} if pending(found) else {"token": found.token, "service_request_id": found.id}
        return reply(fmt, "service_requests", "request", [row])

    async def get_updates(request: Request, fmt: str) -> Response:
        if not settings.sample_open311_updates_endpoint:
            raise GeoReportError(404, "this server has no servicerequestupdates")
        params = request.query_params
        check(params, key_needed=False)
        start, end = _time(params.get("start_date"), "start_date"), _time(params.get("end_date"), "end_date")
        rows = [
            {"update_id": u.update_id, "service_request_id": u.request_id, "status": u.status,
             "updated_datetime": stamp(u.at), "description": u.description, "media_url": "",
             **({"external_status_code": u.external_status_code} if u.external_status_code else {})}
            for u in store.updates_between(start, end)
        ]  # fmt: skip
        return reply(fmt, "service_request_updates", "request_update", rows, bare=False)

    async def post_update(request: Request, fmt: str) -> Response:
        if not settings.sample_open311_updates_endpoint:
            raise GeoReportError(404, "this server has no servicerequestupdates")
        fields = await form_of(request)
        check(fields, key_needed=True)
        missing = [n for n in ("service_request_id", "update_id", "status", "updated_datetime") if not fields.get(n)]
        if missing:
            raise GeoReportError(400, f"{', '.join(missing)} not provided")
        _time(fields["updated_datetime"], "updated_datetime")
        found = store.requests.get(fields["service_request_id"])
        if found is None:
            raise GeoReportError(400, "service_request_id not found")
        if store.posted_update(fields["update_id"], found, fields["status"][:64], fields.get("description", "")[:2000]):
            log.info("update posted", service_request_id=found.id, status=fields["status"][:64])
        rows = [{"update_id": fields["update_id"]}]
        return reply(fmt, "service_request_updates", "request_update", rows, bare=False)

    # -- the sample's own routes: staff moving a request, faults for tests --------------------------------

    async def staff_move(request: Request) -> Response:
        found = store.requests.get(request.path_params["id"])
        if found is None:
            return JSONResponse({"error": "no such service request"}, status_code=404)
        try:
            body = json.loads(await request.body())
            status = str(body["status"]).strip()
            note = str(body.get("note") or "")[:2000]
            code = body.get("external_status_code")
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send JSON {"status": "…", "note": "…"}'}, status_code=400)
        if not 0 < len(status) <= 64 or not status.isprintable():
            return JSONResponse({"error": "status: 1 to 64 printable characters"}, status_code=400)
        found.by_staff = True
        update = store.move(found, status, note, str(code)[:64] if code else None)
        return JSONResponse({"update_id": update.update_id, "status": status, "at": update.at.isoformat()})

    async def staff_show(request: Request) -> Response:
        found = store.requests.get(request.path_params["id"])
        if found is None:
            return JSONResponse({"error": "no such service request"}, status_code=404)
        return JSONResponse(record(found) | {"posted": found.posted, "key": found.key})

    async def set_faults(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            faults["lose_next_answers"] = max(0, int(body.get("lose_next_answers", 0)))
        except (ValueError, TypeError, AttributeError):
            return JSONResponse({"error": 'send JSON {"lose_next_answers": N}'}, status_code=400)
        return JSONResponse(faults)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        yield
        await crews.stop()

    app = Starlette(
        routes=[
            Route("/services.{fmt}", geo_report(services), methods=["GET"]),
            Route("/requests.{fmt}", geo_report(post_request), methods=["POST"]),
            Route("/requests.{fmt}", geo_report(get_requests), methods=["GET"]),
            Route("/requests/{id}.{fmt}", geo_report(get_request), methods=["GET"]),
            Route("/tokens/{token}.{fmt}", geo_report(get_token), methods=["GET"]),
            Route("/servicerequestupdates.{fmt}", geo_report(get_updates), methods=["GET"]),
            Route("/servicerequestupdates.{fmt}", geo_report(post_update), methods=["POST"]),
            Route("/sample/requests/{id}/status", staff_move, methods=["POST"]),
            Route("/sample/requests/{id}", staff_show, methods=["GET"]),
            Route("/sample/faults", set_faults, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    return app


def main() -> None:
    """Serve the SAMPLE Open311 server on 127.0.0.1:$CIVICFLOW_SAMPLE_OPEN311_PORT (default 8096)."""
    settings = SampleOpen311Settings()
    try:
        app = create_app(settings)
    except UnsafeSecret as exc:
        raise SystemExit(f"sample Open311 server: {exc}") from None
    uvicorn.run(app, host="127.0.0.1", port=settings.sample_open311_port, log_level="info")
