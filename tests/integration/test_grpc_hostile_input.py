"""Hostile input to every gRPC method, on the real servicers and database: each answer is an honest status
(never UNKNOWN or INTERNAL), no error shows SQL, paths or stack traces, and a refused request writes nothing.

One run's answers (2026-11-26; `pytest -s` prints them), never UNKNOWN, INTERNAL or a leak:
  SubmitRequest   (200 generated + 200 raw byte strings + 1 invalid UTF-8): 364 INVALID_ARGUMENT, 36 OK,
                  1 ALREADY_EXISTS (a key reused for another request)
  RecategoriseCase 235: 230 INVALID_ARGUMENT, 3 OK, 2 FAILED_PRECONDITION (already that service)
  GetCase          251: 249 INVALID_ARGUMENT, 2 NOT_FOUND
  ExplainRoute     241: 222 INVALID_ARGUMENT, 19 OK
  ReloadRules      242: 232 INVALID_ARGUMENT, 5 OK, 5 FAILED_PRECONDITION (a broken rule set, refused)
  (the other methods' counts include their share of 200 raw byte strings sent to all five)
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import grpc
import pytest
from cryptography.fernet import Fernet
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.city import load_city
from civicflow.eventstore import PostgresEventStore
from civicflow.grpc_errors import MAX_VIOLATIONS
from civicflow.grpc_guard import MAX_RECEIVE_MESSAGE_BYTES
from civicflow.pii import ContactVault
from civicflow.runtime import build_grpc_server
from civicflow.settings import SAMPLE_CITY, KernelSettings
from civicflow.v1 import (
    common_pb2,
    intake_pb2,
    intake_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)
from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import Intake
from services.query.grpc_api import CaseQueryServicer
from services.router.grpc_api import RoutingServicer
from services.router.rulebook import RuleBook
from tests.grpc_metadata import access_for_tests, call_metadata

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
SUBMIT = "/civicflow.v1.IntakeService/SubmitRequest"
RECATEGORISE = "/civicflow.v1.IntakeService/RecategoriseCase"
GET_CASE = "/civicflow.v1.CaseQueryService/GetCase"
EXPLAIN = "/civicflow.v1.RoutingService/ExplainRoute"
RELOAD = "/civicflow.v1.RoutingService/ReloadRules"
METHODS = (SUBMIT, RECATEGORISE, GET_CASE, EXPLAIN, RELOAD)
# What an error may never show a client (unless the client sent it and it is only echoed back).
FORBIDDEN = ("SELECT", "INSERT", "Traceback", "/work", "sqlalchemy", "asyncpg", "Exception", "Error:", 'File "')
# A line of a file under the rules folder that a refused reload must not quote back.
MARKER = "PRIVATE-LINE-7d1c"
HONEST = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
EXAMPLES = 200


@dataclass
class Outcomes:
    """What each call was answered, for the assertions and the printed tally."""

    by_method: Counter[tuple[str, str]] = field(default_factory=Counter)
    accepted: dict[str, tuple[str, str]] = field(default_factory=dict)  # idempotency key -> (case id, number)
    refused_keys: set[str] = field(default_factory=set)


@dataclass
class Caller:
    """Sends raw bytes to a method over a synchronous channel (hypothesis drives it from a worker thread
    while the server answers on the test's event loop), and checks what comes back."""

    channel: grpc.Channel
    outcomes: Outcomes
    forbidden: tuple[str, ...]

    def call(self, method: str, payload: bytes, sent: str) -> tuple[grpc.StatusCode, bytes]:
        send = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            reply = send(payload, metadata=call_metadata(), timeout=30)
            code, answer = grpc.StatusCode.OK, reply
        except grpc.RpcError as error:
            code, answer = error.code(), b""
            self._check_error(method, error, sent)
        self.outcomes.by_method[(method.rsplit("/", 1)[1], code.name)] += 1
        # grpc-core's own answer to a request over the server's limit, before any of our code reads it
        too_large = code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(payload) > MAX_RECEIVE_MESSAGE_BYTES
        assert code in HONEST or too_large, f"{method} answered {code.name}"
        return code, answer

    def _check_error(self, method: str, error: Any, sent: str) -> None:
        details = error.details() or ""
        try:
            status = rpc_status.from_call(error)
        except ValueError as mismatch:  # the status details and the plain message disagree
            raise AssertionError(f"{method}: {str(mismatch)[:600]!r}") from None
        shown = details + "".join(str(d) for d in status.details) if status else details
        leaked = [w for w in self.forbidden if w.lower() in shown.lower() and w.lower() not in sent.lower()]
        assert not leaked, f"{method} error shows {leaked}: {details[:300]!r}"
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert status is not None, f"{method}: INVALID_ARGUMENT without a google.rpc.Status"
            violations = []
            for detail in status.details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    violations += list(bad_request.field_violations)
            assert 0 < len(violations) <= MAX_VIOLATIONS, f"{method}: {len(violations)} field violations"

    def message(self, method: str, request: Message) -> tuple[grpc.StatusCode, bytes]:
        return self.call(method, request.SerializeToString(), str(request))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(SAMPLE_CITY.parent, folder)
    (folder / "broken.yaml").write_text(f"version: x\nrules: [\n  {MARKER}: [\n")
    (folder / "invalid.yaml").write_text(f"version: x\nrules: {MARKER}\n")  # keys are shown, values never
    (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00" + MARKER.encode())
    (folder / "secret.txt").write_text(MARKER)
    return folder


@pytest.fixture
async def caller(engine: AsyncEngine, rules_dir: Path) -> AsyncIterator[Caller]:
    city = load_city(SAMPLE_CITY)
    intake = IntakeServicer(Intake(engine, STORE, ContactVault(Fernet.generate_key())), engine, STORE, city)
    routing = RoutingServicer(RuleBook(rules_dir / SAMPLE_CITY.name), engine, STORE)
    query = CaseQueryServicer(engine, lambda: city)
    server = await build_grpc_server(
        0,
        [
            ("civicflow.v1.IntakeService", lambda s: intake_pb2_grpc.add_IntakeServiceServicer_to_server(intake, s)),
            (
                "civicflow.v1.RoutingService",
                lambda s: routing_pb2_grpc.add_RoutingServiceServicer_to_server(routing, s),
            ),
            (
                "civicflow.v1.CaseQueryService",
                lambda s: query_pb2_grpc.add_CaseQueryServiceServicer_to_server(query, s),
            ),
        ],
        "hostile",
        KernelSettings(),
        access_for_tests(),
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Caller(channel, Outcomes(), (*FORBIDDEN, str(rules_dir), str(SAMPLE_CITY.parent), MARKER))
    finally:
        channel.close()
        await server.stop(grace=None)


# --- what hostile clients send ----------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)  # NUL, controls, any plane; no surrogates
HUGE_TEXT = st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(4_000, 70_000))


def text_or(*likely: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(likely), ANY_TEXT, HUGE_TEXT) if likely else st.one_of(ANY_TEXT, HUGE_TEXT)


COORDINATE = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 41.0, -87.0, 91.0, -181.0, 41.88, -87.65]),
    st.floats(41.85, 41.92),
    st.floats(-87.7, -87.6),
)


@st.composite
def locations(draw: st.DrawFn, hostile: bool = True) -> common_pb2.Location | None:
    if hostile and draw(st.integers(0, 9)) == 0:
        return None
    address = text_or("", "1200 W Madison St") if hostile else st.sampled_from(["", "1200 W Madison St"])
    location = common_pb2.Location(address=draw(address))
    lat, long = (draw(COORDINATE), draw(COORDINATE)) if hostile else (41.88, -87.65)
    if lat is not None:
        location.lat = lat
    if long is not None:
        location.long = long
    return location


CHANNELS = [
    intake_pb2.CONTACT_CHANNEL_UNSPECIFIED,
    intake_pb2.CONTACT_CHANNEL_EMAIL,
    intake_pb2.CONTACT_CHANNEL_SMS,
    intake_pb2.CONTACT_CHANNEL_VOICE,
    intake_pb2.CONTACT_CHANNEL_NONE,
]
SUBMIT_FIELDS = ("service_code", "description", "channel", "key", "location", "contact", "attributes", "flags")


@st.composite
def submit_requests(draw: st.DrawFn, run: str) -> intake_pb2.SubmitRequestRequest:
    """A third well-formed (so the happy path and its writes are checked too), a third with one hostile
    field (so each field's own checks are reached), a third hostile throughout."""
    mode = draw(st.sampled_from(["valid", "one", "all"]))
    target = draw(st.sampled_from(SUBMIT_FIELDS))

    def hostile(name: str) -> bool:
        return mode == "all" or (mode == "one" and name == target)

    def pick(name: str, valid: list[str], invalid: list[str]) -> str:
        return draw(text_or(*valid, *invalid) if hostile(name) else st.sampled_from(valid))

    request = intake_pb2.SubmitRequestRequest(
        service_code=pick("service_code", ["POTHOLE", "NOISE_COMPLAINT"], ["", "POT HOLE"]),
        description=pick("description", ["Deep pothole", "two holes\r\n\t- one"], ["", " "]),
        channel=pick("channel", ["phone", "web", ""], ["fax", "PHONE"]),
        # a key of this run's own, so what it wrote can be found; its tail may make it invalid
        idempotency_key=f"{run}-{draw(st.integers(0, 10**9))}{draw(ANY_TEXT) if hostile('key') else ''}",
    )
    location = draw(locations(hostile("location")))
    if location is not None:
        request.location.CopyFrom(location)
    if hostile("contact"):
        request.contact.CopyFrom(
            intake_pb2.ResidentContact(
                name=draw(text_or("Ada Resident", "")),
                email=draw(text_or("ada@example.org", "a@exämple.org", "ü@exämple.org", "not-an-email", "")),
                phone=draw(text_or("+1 312 555 0100", "")),
                preferred_channel=draw(st.sampled_from(CHANNELS)),
            )
        )
    elif draw(st.booleans()):
        request.contact.CopyFrom(intake_pb2.ResidentContact(name="Ada Resident", email="ada@exämple.org"))
    if hostile("attributes"):
        request.attributes.update(draw(st.dictionaries(text_or("dog_behaviour"), ANY_TEXT, max_size=60)))
    if hostile("flags"):
        request.flags.extend(draw(st.lists(text_or("hazard", "blocking_traffic"), max_size=12)))
    return request


def drafts() -> st.SearchStrategy[routing_pb2.DraftRequest]:
    @st.composite
    def draft(draw: st.DrawFn) -> routing_pb2.DraftRequest:
        if draw(st.integers(0, 2)) == 0:  # a well-formed draft now and then, so explaining is reached
            return routing_pb2.DraftRequest(
                service_code=draw(st.sampled_from(["POTHOLE", "TREE_TRIM", "UFO_SIGHTING"])),
                description="branches",
                location=draw(locations(hostile=False)),
                flags=draw(st.lists(st.sampled_from(["hazard", "blocking_traffic"]), max_size=2)),
            )
        message = routing_pb2.DraftRequest(
            service_code=draw(text_or("POTHOLE", "TREE_TRIM", "")),
            description=draw(text_or("branches", "")),
            channel=draw(text_or("phone", "")),
        )
        location = draw(locations())
        if location is not None:
            message.location.CopyFrom(location)
        message.attributes.update(draw(st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=60)))
        message.flags.extend(draw(st.lists(ANY_TEXT, max_size=12)))
        if draw(st.booleans()):
            message.submitted_at.seconds = draw(st.integers(-(2**62), 2**62))
            message.submitted_at.nanos = draw(st.integers(-(2**31), 2**31 - 1))
        return message

    return draft()


PATHS = st.one_of(
    st.sampled_from(
        [
            "",
            "sample_city.yaml",
            "broken.yaml",
            "invalid.yaml",
            "binary.yaml",
            "secret.txt",
            "areas",
            "../rules/broken.yaml",
            "../../etc/passwd",
            "/etc/passwd",
            "/work",
            "missing.yaml",
            "a\x00b.yaml",
        ]
    ),
    ANY_TEXT,
    HUGE_TEXT,
    st.builds(lambda p: f"../{p}", ANY_TEXT),
)
SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no example database left in the worktree; each run explores afresh
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def run_in_thread(test: Callable[[], None]) -> Any:
    """Hypothesis drives synchronous calls from a worker thread; the event loop keeps serving them."""
    return asyncio.to_thread(test)


async def test_hostile_submissions_get_honest_answers_and_leave_no_half_written_case(
    caller: Caller, engine: AsyncEngine
) -> None:
    run = f"hostile-{uuid4().hex[:12]}"
    outcomes = caller.outcomes

    @SETTINGS
    @given(request=submit_requests(run))
    def submit(request: intake_pb2.SubmitRequestRequest) -> None:
        code, answer = caller.message(SUBMIT, request)
        key = request.idempotency_key
        if code == grpc.StatusCode.OK:
            reply = intake_pb2.SubmitRequestResponse.FromString(answer)
            outcomes.accepted[key] = (reply.case_id, reply.tracking_number)
        else:
            outcomes.refused_keys.add(key)

    @SETTINGS
    @given(payload=st.binary(max_size=2000))
    def corrupt_bytes(payload: bytes) -> None:
        caller.call(SUBMIT, payload, "")

    await run_in_thread(submit)
    await run_in_thread(corrupt_bytes)
    # The well-formed ones, corrupted: a byte in a text field that is not UTF-8.
    well_formed = intake_pb2.SubmitRequestRequest(service_code="POTHOLE", description="é").SerializeToString()
    code, _ = await asyncio.to_thread(caller.call, SUBMIT, well_formed.replace("é".encode(), b"\xc3\x28"), "")
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    print(f"hostile input outcomes: {sorted(outcomes.by_method.items())}")
    assert outcomes.accepted, "no generated request was accepted: the strategies no longer reach the happy path"
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT r.idempotency_key, r.case_id, r.tracking_number,"
                    " (SELECT array_agg(e.type || ':' || e.version ORDER BY e.version)"
                    "  FROM events.case_events e WHERE e.case_id = r.case_id) AS events"
                    " FROM intake.requests r WHERE r.idempotency_key LIKE :run"
                ),
                {"run": f"{run}-%"},
            )
        ).all()
    stored = {r.idempotency_key: r for r in rows}
    # a key may be refused (another request under it, or a bad field) and accepted in another example
    only_refused = outcomes.refused_keys - outcomes.accepted.keys()
    assert not only_refused & stored.keys(), "a refused request left a row behind"
    assert set(outcomes.accepted) == set(stored), "an accepted request has no intake.requests row"
    for key, (case_id, number) in outcomes.accepted.items():
        row = stored[key]
        assert (str(row.case_id), row.tracking_number) == (case_id, number)
        assert row.events == ["CaseSubmitted:1"], f"case {case_id} is half written: {row.events}"


async def test_hostile_calls_to_every_other_method_get_honest_answers(caller: Caller, engine: AsyncEngine) -> None:
    # One case of this test's own to correct, so RecategoriseCase also gets past its checks.
    own = intake_pb2.SubmitRequestRequest(
        service_code="POTHOLE",
        description="Deep pothole",
        location=common_pb2.Location(lat=41.88, long=-87.65),
        idempotency_key=f"hostile-{uuid4().hex}",
    )
    code, answer = await asyncio.to_thread(caller.message, SUBMIT, own)
    assert code == grpc.StatusCode.OK
    reply = intake_pb2.SubmitRequestResponse.FromString(answer)
    numbers = st.one_of(st.just(reply.tracking_number), text_or("4K7Q-M2D", "QGPE-J5T", ""))

    @SETTINGS
    @given(number=numbers, code=text_or("NOISE_COMPLAINT", "POTHOLE"), reason=text_or("caller meant it", ""))
    def recategorise(number: str, code: str, reason: str) -> None:
        request = intake_pb2.RecategoriseCaseRequest(tracking_number=number, service_code=code, reason=reason)
        caller.message(RECATEGORISE, request)

    @SETTINGS
    @given(number=numbers)
    def get_case(number: str) -> None:
        caller.message(GET_CASE, query_pb2.GetCaseRequest(tracking_number=number))

    @SETTINGS
    @given(subject=st.one_of(drafts(), numbers))
    def explain(subject: routing_pb2.DraftRequest | str) -> None:
        if isinstance(subject, str):
            request = routing_pb2.ExplainRouteRequest(tracking_number=subject)
        else:
            request = routing_pb2.ExplainRouteRequest(draft=subject)
        caller.message(EXPLAIN, request)

    @SETTINGS
    @given(path=PATHS)
    def reload(path: str) -> None:
        caller.message(RELOAD, routing_pb2.ReloadRulesRequest(path=path))

    @SETTINGS
    @given(method=st.sampled_from(METHODS), payload=st.binary(max_size=2000))
    def corrupt_bytes(method: str, payload: bytes) -> None:
        code, _ = caller.call(method, payload, "")
        assert code != grpc.StatusCode.ALREADY_EXISTS or method == SUBMIT

    for test in (recategorise, get_case, explain, reload, corrupt_bytes):
        await run_in_thread(test)
    print(f"hostile input outcomes: {sorted(caller.outcomes.by_method.items())}")
    assert caller.outcomes.by_method[("ReloadRules", "OK")] > 0, "no reload got through: the paths miss the folder"


async def test_a_request_over_the_servers_limit_is_refused_before_any_servicer_reads_it(caller: Caller) -> None:
    request = intake_pb2.SubmitRequestRequest(service_code="POTHOLE", description="x" * (1024 * 1024 + 1))
    send = caller.channel.unary_unary(SUBMIT, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as refused:
        await asyncio.to_thread(send, request.SerializeToString(), metadata=call_metadata(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # grpc-core's own answer
    over_ours = intake_pb2.SubmitRequestRequest(service_code="POTHOLE", description="x" * (65 * 1024))
    code, _ = await asyncio.to_thread(caller.message, SUBMIT, over_ours)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_reload_rules_takes_only_rule_sets_in_its_folder_and_never_shows_where_or_what_is_inside(
    caller: Caller, rules_dir: Path
) -> None:
    async def reload(path: str) -> tuple[grpc.StatusCode, str]:
        send = caller.channel.unary_unary(RELOAD, request_serializer=None, response_deserializer=None)
        payload = routing_pb2.ReloadRulesRequest(path=path).SerializeToString()
        try:
            await asyncio.to_thread(send, payload, metadata=call_metadata(), timeout=30)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return grpc.StatusCode.OK, ""

    expectations = [
        ("rules\x00.yaml", grpc.StatusCode.INVALID_ARGUMENT, "path: contains the control character U+0000"),
        ("x" * 2000, grpc.StatusCode.INVALID_ARGUMENT, "a rule-set path is at most 1024"),
        ("/etc/passwd", grpc.StatusCode.INVALID_ARGUMENT, "only rule sets under the router's rules folder"),
        ("../../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT, "only rule sets under the router's rules folder"),
        ("secret.txt", grpc.StatusCode.INVALID_ARGUMENT, "ending in .yaml or .yml"),
        ("broken.yaml", grpc.StatusCode.FAILED_PRECONDITION, "broken.yaml: not valid YAML: line "),
        ("binary.yaml", grpc.StatusCode.FAILED_PRECONDITION, "binary.yaml: not a rule set: not UTF-8"),
        ("missing.yaml", grpc.StatusCode.FAILED_PRECONDITION, "missing.yaml: cannot read the rule set"),
        (str(rules_dir / "invalid.yaml"), grpc.StatusCode.FAILED_PRECONDITION, "invalid.yaml: rules:"),
        ("sample_city.yaml", grpc.StatusCode.OK, ""),
    ]
    for path, code, says in expectations:
        answered, details = await reload(path)
        assert (answered, path) == (code, path)
        assert says in details, details
        assert str(rules_dir) not in details and MARKER not in details and "/work" not in details, details


async def test_explain_route_checks_a_draft_as_intake_would(caller: Caller) -> None:
    draft = routing_pb2.DraftRequest(
        service_code="TREE TRIM",
        description="branches\x00",
        location=common_pb2.Location(lat=float("nan"), long=-87.65),
    )
    draft.submitted_at.seconds = 2**40
    send = caller.channel.unary_unary(EXPLAIN, request_serializer=None, response_deserializer=None)
    payload = routing_pb2.ExplainRouteRequest(draft=draft).SerializeToString()
    with pytest.raises(grpc.RpcError) as refused:
        await asyncio.to_thread(send, payload, metadata=call_metadata(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    problems = {v.field: v.description for v in bad_request.field_violations}
    assert set(problems) == {"draft.service_code", "draft.description", "draft.location.lat", "draft.submitted_at"}
    assert "must be a number" in problems["draft.location.lat"]
