"""The open311 connector: a department whose system speaks Open311 GeoReport v2 with mySociety's extensions.

- Opening: POST {endpoint}/requests.{fmt}, form-encoded (api_key, jurisdiction_id, service_code, description,
  lat/long or address_string, attribute[...] for the mapped attributes). GeoReport has no idempotency key, so
  ours travels as attribute[civicflow_key] (`key_attribute`), and before every POST the request is looked for
  with GET requests.{fmt}?attribute[civicflow_key]=KEY (`lookup_by_key`): a retry after an answer that was
  lost (a timeout, a 502 from a proxy, the bridge killed mid-call) finds the request instead of opening a
  second one. The look-up is before *every* POST, not only after a failure this process saw, because the
  bridge may have died between sending and recording. A real server needs to keep the attribute and search by
  it (the SAMPLE does); one that ignores the search answers with requests none of which echoes our key, so the
  connector opens one, and a lost answer there can still mean a second request: set `lookup_by_key: false` for
  such a server to spare it the search, and know retries may duplicate. An answer with a `token` instead of
  an id is followed with GET tokens/{token}.{fmt} for up to the timeout; a token that never resolves is
  DepartmentUnavailable (the bridge tries again later, and the look-up, or the token remembered here, finds it).
- Cancelling: POST {endpoint}/servicerequestupdates.{fmt} (mySociety), status = theirs for `cancelled`
  (upper case, as mySociety's schema takes statuses), update_id = our key so a resend is the same update.
- Updates: GET servicerequestupdates.{fmt}?start_date=…&end_date=… (mySociety), from the cursor (open311_wire.Cursor)
  reaching back catch_up_minutes for late arrivals; where a server has no such endpoint (404 or 501), GET
  requests.{fmt}?service_request_id=a,b,c for the department's open work orders (`open_work_orders`, given by
  the bridge: its external ids not yet finished) turns each request's status into an update.
- Health: GET services.{fmt}, the cheapest GeoReport call.

Answers: 400/409/422 (GeoReport's [{code, description}]) are WorkOrderRefused; 401/403/404 and redirects are
DepartmentUnavailable saying to check the endpoint and api key; 5xx, 408, 429, timeouts and answers that are
not GeoReport are DepartmentUnavailable. Their error descriptions are never repeated (they may echo what was
sent); their codes are logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import structlog

from civicflow.department_systems import ConnectorSpec, MissingSecret, their_status_key
from services.workorder_bridge.connector import (
    REFUSALS,
    CannotCancel,
    ConnectorContext,
    DepartmentUnavailable,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    UpdatesPage,
    WorkOrderRefused,
)
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.kinds.open311_wire import (
    Cursor,
    MalformedAnswer,
    Record,
    error_codes,
    identifier,
    nested,
    parse_time,
    records,
    text,
    w3c,
)

log = structlog.get_logger(__name__)

# The department's open work orders (their ids), for polling requests where the server has no updates endpoint.
OpenWorkOrders = Callable[[], Awaitable[list[str]]]
Clock = Callable[[], datetime]

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a GeoReport answer larger than this is not one we asked for
IDS_PER_LOOKUP = 50  # service_request_id=a,b,c: kept short enough for any server's URL limit
CHECK_SETTINGS = "; check the connector's endpoint and api key (credentials) in the city file"
NO_UPDATES_ENDPOINT = frozenset({404, 405, 501})
RECHECK_UPDATES_ENDPOINT = timedelta(hours=1)


class Open311Connector:
    """One department's Open311 system. See the module docstring for what each call sends."""

    kind = "open311"

    def __init__(
        self,
        department_id: str,
        spec: ConnectorSpec,
        *,
        city_dir: Path | None = None,
        client: httpx.AsyncClient | None = None,
        open_work_orders: OpenWorkOrders | None = None,
        clock: Clock | None = None,
    ) -> None:
        assert spec.endpoint, "an open311 connector needs an endpoint (ConnectorSpec checks it)"
        self.department_id = department_id
        self.spec = spec
        # The bridge's hook for the fallback poll (see module docstring); may be set after building.
        self.open_work_orders = open_work_orders
        self._endpoint = spec.endpoint
        self._fmt = spec.format
        self._city_dir = city_dir
        self._client = client or httpx.AsyncClient(timeout=spec.timeout_seconds, follow_redirects=False)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._naive_zone: tzinfo = ZoneInfo(spec.timezone) if spec.timezone else UTC
        self._tokens: dict[str, str] = {}  # our key -> the token a POST answered with, until it resolves
        # when their system last said it has no servicerequestupdates (404/501): requests are polled instead, and
        # the endpoint is asked again after RECHECK_UPDATES_ENDPOINT (a proxy's passing 404 is not for ever)
        self._no_updates_endpoint_at: datetime | None = None

    # -- opening --------------------------------------------------------------------------------------------

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        api_key = self._api_key()
        token = self._tokens.get(idempotency_key)
        if token is not None:
            return await self._resolved(token, idempotency_key)
        if self.spec.key_attribute and self.spec.lookup_by_key:
            found = await self._find_by_key(idempotency_key)
            if found is not None:
                return found
        form = self._form(request, idempotency_key, api_key)
        status, body = await self._call("POST", f"requests.{self._fmt}", data=form)
        if status in REFUSALS:
            log.warning("open311 refused a work order", department_id=self.department_id, codes=self._codes(body))
            raise WorkOrderRefused(self.department_id, status)
        self._raise_unless_ok(status, "requests")
        first = self._first(body, "requests")
        if (opened := identifier(first, "service_request_id")) is not None:
            return OpenedWorkOrder(external_id=opened, status="open")
        if (token := identifier(first, "token")) is not None:
            self._tokens[idempotency_key] = token
            return await self._resolved(token, idempotency_key)
        raise DepartmentUnavailable(
            f"{self.department_id}: {self._url('requests')} answered with neither a service_request_id nor a token"
        )

    def _form(self, request: WorkOrderRequest, key: str, api_key: str) -> dict[str, str]:
        form = {"api_key": api_key, "service_code": self.spec.their_service(request.service_code)}
        if self.spec.jurisdiction_id:
            form["jurisdiction_id"] = self.spec.jurisdiction_id
        form["description"] = request.summary
        # Where: WorkOrderRequest carries the case's place for systems that need one (GeoReport requires it).
        lat, long, address = request.lat, request.long, request.address
        if lat is not None and long is not None:
            form["lat"], form["long"] = str(lat), str(long)
        if address:
            form["address_string"] = str(address)
        # The service's answers, under their field names; only the attributes the city file maps are sent.
        answers = request.attributes
        for ours, theirs in self.spec.attributes.items():
            if answers.get(ours):
                form[f"attribute[{theirs}]"] = str(answers[ours])
        if self.spec.key_attribute:
            form[f"attribute[{self.spec.key_attribute}]"] = key
        return form

    async def find_by_key(self, idempotency_key: str) -> OpenedWorkOrder | None:
        """The request our key opened, where this server can be searched by it (connector.FindsByKey); None when
        it shows none, or the connector is set not to search (`key_attribute` null or `lookup_by_key: false`)."""
        if not (self.spec.key_attribute and self.spec.lookup_by_key):
            return None
        return await self._find_by_key(idempotency_key)

    async def _find_by_key(self, key: str) -> OpenedWorkOrder | None:
        """The request our key opened before, if their system shows one echoing the key; None when it shows none
        (or cannot search). A server that ignores the search lists other requests: only one echoing our key is
        ours, never the first one listed."""
        assert self.spec.key_attribute
        params = {f"attribute[{self.spec.key_attribute}]": key, **self._jurisdiction()}
        status, body = await self._call("GET", f"requests.{self._fmt}", params=params)
        if status in (400, 404, 405, 501):  # cannot search by it: open, and say so
            log.info("open311 cannot look requests up by our key", department_id=self.department_id, http=status)
            return None
        self._raise_unless_ok(status, "requests")
        for found in self._records(body, "requests"):
            echoed = identifier(found, self.spec.key_attribute) or identifier(
                nested(found, "extended_attributes"), self.spec.key_attribute
            )
            if echoed != key:
                continue
            if (external_id := identifier(found, "service_request_id")) is not None:
                return OpenedWorkOrder(external_id=external_id, status=identifier(found, "status", 64) or "open")
            if (token := identifier(found, "token")) is not None:
                self._tokens[key] = token
                return await self._resolved(token, key)
        return None

    async def _resolved(self, token: str, key: str) -> OpenedWorkOrder:
        """Follow a token until their system names the request, for up to the connector's timeout."""
        deadline = asyncio.get_running_loop().time() + self.spec.timeout_seconds
        pause = 0.05
        while True:
            status, body = await self._call("GET", f"tokens/{token}.{self._fmt}", params=self._jurisdiction())
            if status == 200:
                for found in self._records(body, "tokens"):
                    if (external_id := identifier(found, "service_request_id")) is not None:
                        self._tokens.pop(key, None)
                        return OpenedWorkOrder(external_id=external_id, status="open")
            elif status != 404:  # 404: not known yet, as some servers answer for a fresh token
                self._raise_unless_ok(status, "tokens")
            if asyncio.get_running_loop().time() + pause > deadline:
                raise DepartmentUnavailable(
                    f"{self.department_id}: their system took the work order under a token that named no request"
                    f" within {self.spec.timeout_seconds:g}s; it is asked again later"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    # -- cancelling -----------------------------------------------------------------------------------------

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        form = {
            "api_key": self._api_key(),
            **self._jurisdiction(),
            "service_request_id": external_id,
            "update_id": idempotency_key,
            "status": self.spec.theirs("cancelled").upper(),
            "description": reason,
            "updated_datetime": w3c(self._clock()),
        }
        status, body = await self._call("POST", f"servicerequestupdates.{self._fmt}", data=form)
        if status in NO_UPDATES_ENDPOINT:
            raise CannotCancel(f"{self.department_id}: their Open311 system takes no servicerequestupdates")
        if status in REFUSALS:
            log.warning("open311 refused a cancellation", department_id=self.department_id, codes=self._codes(body))
            raise CannotCancel(f"{self.department_id}: their Open311 system refused the cancellation (HTTP {status})")
        self._raise_unless_ok(status, "servicerequestupdates")

    # -- updates --------------------------------------------------------------------------------------------

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        """The updates after `cursor` (see open311_wire.Cursor), oldest first, and the cursor to ask with next."""
        state = Cursor.load(cursor)
        now = self._clock()
        catch_up = timedelta(minutes=self.spec.catch_up_minutes)
        start = state.window_start(now, catch_up)
        learnt = self._no_updates_endpoint_at
        ask = learnt is None or now - learnt >= RECHECK_UPDATES_ENDPOINT
        end = max(now, start)
        found = await self._updates_endpoint(start, end) if ask else None
        if found is None:
            if ask:
                self._no_updates_endpoint_at = now
                log.warning(
                    "open311 system has no servicerequestupdates; polling its open requests instead",
                    department_id=self.department_id,
                )
            found = await self._requests_now()
        else:
            self._no_updates_endpoint_at = None
        fresh, following = state.take(((k, u.changed_at, u) for k, u in found), start, catch_up, end)
        return UpdatesPage(updates=fresh, cursor=following.dump())

    async def _updates_endpoint(self, start: datetime, end: datetime) -> list[tuple[str, ExternalUpdate]] | None:
        """mySociety's servicerequestupdates in [start, end]; None when their system has no such endpoint."""
        params = {"start_date": w3c(start), "end_date": w3c(end), **self._jurisdiction()}
        status, body = await self._call("GET", f"servicerequestupdates.{self._fmt}", params=params)
        if status in NO_UPDATES_ENDPOINT:
            return None
        self._raise_unless_ok(status, "servicerequestupdates")
        found, skipped = [], 0
        for record in self._records(body, "servicerequestupdates"):
            update = self._update(record, text(record, "updated_datetime", 64))
            if update is None:
                skipped += 1
                continue
            # the request's id too: some servers number updates per request
            seen_as = update.update_id or f"{update.status}|{update.changed_at.isoformat()}"
            key = f"{update.external_id}|{seen_as}"
            found.append((key[:200], update))
        if skipped:
            log.warning(
                "open311 updates left out: no request id, status or time",
                department_id=self.department_id,
                count=skipped,
            )
        return found

    async def _requests_now(self) -> list[tuple[str, ExternalUpdate]]:
        """The fallback: each open work order's request as it stands, as an update keyed by its status and time."""
        if self.open_work_orders is None:
            raise DepartmentUnavailable(
                f"{self.department_id}: their Open311 system has no servicerequestupdates endpoint, and the bridge"
                " gave this connector no list of open work orders to poll GET requests for"
            )
        ids = [i for i in await self.open_work_orders() if i]
        found: list[tuple[str, ExternalUpdate]] = []
        skipped = 0
        for first in range(0, len(ids), IDS_PER_LOOKUP):
            batch = ",".join(ids[first : first + IDS_PER_LOOKUP])
            params = {"service_request_id": batch, **self._jurisdiction()}
            status, body = await self._call("GET", f"requests.{self._fmt}", params=params)
            self._raise_unless_ok(status, "requests")
            for record in self._records(body, "requests"):
                moment = text(record, "updated_datetime", 64) or text(record, "requested_datetime", 64)
                update = self._update(record, moment, from_request=True)
                if update is None:
                    skipped += 1
                    continue
                key = f"request|{update.external_id}|{update.status}|{update.changed_at.isoformat()}"
                found.append((key[:200], update))
        if skipped:
            log.warning(
                "open311 requests left out: no id, status or time", department_id=self.department_id, count=skipped
            )
        return found

    def _update(self, record: Record, moment: str | None, from_request: bool = False) -> ExternalUpdate | None:
        """One update in their words, or None when it lacks what an update needs.

        `status` stays theirs: it is the GeoReport / mySociety status the reverse mapping is written for.
        `external_status_code` is their back-office's own finer code (mySociety's adapters send it beside
        the status, and FixMyStreet maps some of them to another state): it is taken as the status only
        where the city file's reverse mapping names that code, so a city can map e.g. "CANC" without every
        unmapped code turning a known status into an unmapped one. It never goes into the note, which residents
        may read. The description is the note (residents may read it; the bridge makes it plain text)."""
        external_id = identifier(record, "service_request_id")
        status = identifier(record, "status", 64)
        code = identifier(record, "external_status_code")
        if code and self._city_maps(code):
            status = code
        changed_at = parse_time(moment, self._naive_zone)
        if not external_id or not status or changed_at is None:
            return None
        return ExternalUpdate(
            external_id=external_id,
            status=status,
            changed_at=changed_at,
            note=text(record, "status_notes" if from_request else "description", 2000),
            update_id=None if from_request else identifier(record, "update_id"),
        )

    def _city_maps(self, code: str) -> bool:
        return their_status_key(code) in {their_status_key(k) for k in self.spec.statuses.reverse}

    # -- reading one back -----------------------------------------------------------------------------------

    async def read_work_order(self, external_id: str) -> ExternalUpdate | None:
        """The work order as their system shows it now (GET requests/{id}), as an update in their words, for the
        bridge's reconciliation of a work order with no news for too long (reconcile.py); None when their system
        does not know it (404, or an answer that lists no request with that id). A request it lists without a
        status or a time is not a lost one: DepartmentUnavailable, so nothing is opened again on a bad answer."""
        path = f"requests/{quote(external_id, safe='')}.{self._fmt}"
        status, body = await self._call("GET", path, params=self._jurisdiction())
        if status == 404:
            return None
        self._raise_unless_ok(status, "requests")
        for record in self._records(body, "requests"):
            if identifier(record, "service_request_id") != external_id:
                continue
            moment = text(record, "updated_datetime", 64) or text(record, "requested_datetime", 64)
            update = self._update(record, moment, from_request=True)
            if update is None:
                raise DepartmentUnavailable(
                    f"{self.department_id}: {self._url('requests')} showed the request without a status or a time"
                )
            return update
        return None

    # -- health ---------------------------------------------------------------------------------------------

    async def health(self) -> Health:
        try:
            status, body = await self._call("GET", f"services.{self._fmt}", params=self._jurisdiction())
            self._raise_unless_ok(status, "services")
            listed = self._records(body, "services")
        except DepartmentUnavailable as exc:
            return Health(up=False, detail=str(exc))
        return Health(up=True, detail=f"{self._url('services')} lists {len(listed)} services")

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the wire -------------------------------------------------------------------------------------------

    def _url(self, what: str) -> str:
        return f"{self._endpoint}/{what}.{self._fmt}"

    def _jurisdiction(self) -> dict[str, str]:
        return {"jurisdiction_id": self.spec.jurisdiction_id} if self.spec.jurisdiction_id else {}

    def _api_key(self) -> str:
        if self.spec.credentials is None:
            raise DepartmentUnavailable(f"{self.department_id}: the open311 connector has no credentials (api key)")
        try:
            return self.spec.credentials.resolve(self._city_dir)
        except MissingSecret as exc:
            raise DepartmentUnavailable(f"{self.department_id}: the open311 api key: {exc}") from None

    async def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, data: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One call, its status and at most MAX_ANSWER_BYTES of its body; DepartmentUnavailable when no answer."""
        url = shown = f"{self._endpoint}/{path}"
        try:
            async with self._client.stream(method, url, params=params, data=data) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise DepartmentUnavailable(
                            f"{self.department_id}: {shown} answered with more than {MAX_ANSWER_BYTES} bytes"
                        )
                return response.status_code, bytes(body)
        except httpx.HTTPError as exc:
            raise DepartmentUnavailable(f"{self.department_id}: {shown} did not answer ({type(exc).__name__})") from exc

    def _raise_unless_ok(self, status: int, what: str) -> None:
        if status in (200, 201):
            return
        hint = "" if status >= 500 or status in (408, 429) else CHECK_SETTINGS
        raise DepartmentUnavailable(f"{self.department_id}: {self._url(what)} answered HTTP {status}{hint}")

    def _records(self, body: bytes, what: str) -> list[Record]:
        try:
            return records(body, self._fmt)
        except MalformedAnswer as exc:
            raise DepartmentUnavailable(
                f"{self.department_id}: {self._url(what)} answered with {exc}, not GeoReport {self._fmt.upper()}"
            ) from None

    def _first(self, body: bytes, what: str) -> Record:
        found = self._records(body, what)
        if not found:
            raise DepartmentUnavailable(f"{self.department_id}: {self._url(what)} answered with no request")
        return found[0]

    def _codes(self, body: bytes) -> list[str]:
        return error_codes(body, self._fmt)


SAMPLE_ENDPOINT = "http://127.0.0.1:8096"  # the SAMPLE Open311 server's default address (samples/open311_department)


def build(context: ConnectorContext, open_work_orders: OpenWorkOrders | None = None) -> Open311Connector:
    """The department's Open311 connector. `open_work_orders` is the bridge's list of the department's open
    external ids, used only where their system has no servicerequestupdates (it can be set later too).

    In development a city file naming the SAMPLE server's default address reaches the sample wherever the launcher
    started it (CIVICFLOW_OPEN311_SAMPLE_URL: a system on free ports, as the tests and the benchmark run)."""
    spec = context.spec
    moved = getattr(context.settings, "open311_sample_url", "")
    development = getattr(context.settings, "environment", "production") == "development"
    if moved and development and spec.endpoint == SAMPLE_ENDPOINT:
        spec = spec.model_copy(update={"endpoint": moved.rstrip("/")})
    return Open311Connector(context.department_id, spec, city_dir=context.city_dir, open_work_orders=open_work_orders)
