"""The load itself: submit N requests over gRPC at concurrency C, and poll the query service until each
case is visible past "submitted" (routed, or further along), timing every call."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from uuid import uuid4

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.system import Endpoints
from civicflow.access import SendsApiKey
from civicflow.v1 import common_pb2, intake_pb2, intake_pb2_grpc, query_pb2, query_pb2_grpc

SERVICE_CODES = ("POTHOLE", "STREETLIGHT", "MISSED_PICKUP", "GRAFFITI")
CHANNELS = ("phone", "web", "app")
# The stage whose timeline time marks "routed"; a case no rule can place shows "triage" instead.
ROUTED_STAGES = ("routed", "triage")


@dataclass(frozen=True)
class Submitted:
    tracking_number: str
    latency_s: float
    accepted_at: float  # perf_counter() when the reply arrived


@dataclass(frozen=True)
class Routed:
    status: str
    observed_at: float  # perf_counter() when this client first saw it past "submitted"
    submitted_at_s: float | None  # server clock, seconds since the epoch
    routed_at_s: float | None  # the timeline's routed (or triage) entry, server clock


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    started_at: float = 0.0
    submit_finished_at: float = 0.0
    submitted: list[Submitted] = field(default_factory=list)
    submit_errors: list[str] = field(default_factory=list)
    routed: dict[str, Routed] = field(default_factory=dict)
    get_case_latencies_s: list[float] = field(default_factory=list)
    get_case_not_found: int = 0
    get_case_errors: dict[str, int] = field(default_factory=dict)  # status code name -> count
    poll_rounds_s: list[float] = field(default_factory=list)  # how long each polling round took
    exited_services: dict[str, int] = field(default_factory=dict)  # name -> exit code, if any died mid-run

    @property
    def submit_to_routed_s(self) -> list[float]:
        """Per case: routed entry time - submitted_at, both server clock."""
        return [
            r.routed_at_s - r.submitted_at_s
            for r in self.routed.values()
            if r.routed_at_s is not None and r.submitted_at_s is not None
        ]

    @property
    def server_span_s(self) -> float | None:
        """Server clock: first submitted_at to last routed entry, over the cases seen routed."""
        submitted = [r.submitted_at_s for r in self.routed.values() if r.submitted_at_s is not None]
        routed = [r.routed_at_s for r in self.routed.values() if r.routed_at_s is not None]
        return max(routed) - min(submitted) if submitted and routed else None

    @property
    def unrouted(self) -> list[str]:
        return [s.tracking_number for s in self.submitted if s.tracking_number not in self.routed]


def make_request(run_id: str, n: int) -> intake_pb2.SubmitRequestRequest:
    """A valid request, varied across service codes, channels and places; every third has an email contact."""
    email = f"resident{n}@example.org" if n % 3 == 0 else ""
    service_code = SERVICE_CODES[n % len(SERVICE_CODES)]
    return intake_pb2.SubmitRequestRequest(
        service_code=service_code,
        description=f"bench request {n}: {service_code.lower().replace('_', ' ')} reported by a resident",
        location=common_pb2.Location(
            # inside Sample City's service area (lat 41.85..41.92, long -87.70..-87.60): intake refuses others
            lat=41.86 + (n % 50) * 0.001,
            long=-87.65 + (n % 37) * 0.001,
            address=f"{100 + n} W Madison St",
        ),
        contact=intake_pb2.ResidentContact(
            name=f"Resident {n}",
            email=email,
            preferred_channel=intake_pb2.CONTACT_CHANNEL_EMAIL if email else intake_pb2.CONTACT_CHANNEL_UNSPECIFIED,
        ),
        idempotency_key=f"bench-{run_id}-{n}",
        channel=CHANNELS[n % len(CHANNELS)],
    )


async def run_load(
    endpoints: Endpoints, requests: int, concurrency: int, poll_concurrency: int, deadline_s: float
) -> LoadResult:
    """Submit while polling; stop polling when every accepted case is routed or the deadline passes."""
    result = LoadResult(requests, concurrency)
    keyed = [SendsApiKey(endpoints.api_key)] if endpoints.api_key else []
    async with (
        grpc.aio.insecure_channel(endpoints.intake, interceptors=keyed) as intake_channel,
        grpc.aio.insecure_channel(endpoints.query, interceptors=keyed) as query_channel,
    ):
        await asyncio.wait_for(intake_channel.channel_ready(), timeout=30)
        await asyncio.wait_for(query_channel.channel_ready(), timeout=30)
        intake = intake_pb2_grpc.IntakeServiceStub(intake_channel)
        query = query_pb2_grpc.CaseQueryServiceStub(query_channel)
        pending: dict[str, None] = {}  # accepted, not yet seen routed; insertion-ordered
        submitting_done = asyncio.Event()
        result.started_at = time.perf_counter()
        poller = asyncio.create_task(
            _poll_until_routed(query, result, pending, submitting_done, endpoints, poll_concurrency, deadline_s)
        )
        try:
            await _submit_all(intake, result, pending, concurrency)
        finally:
            result.submit_finished_at = time.perf_counter()
            submitting_done.set()
        await poller
    return result


async def _submit_all(
    intake: intake_pb2_grpc.IntakeServiceStub, result: LoadResult, pending: dict[str, None], concurrency: int
) -> None:
    run_id = uuid4().hex[:8]
    numbers = iter(range(result.requests))  # shared by the workers: each takes the next number

    async def worker() -> None:
        for n in numbers:
            start = time.perf_counter()
            try:
                reply = await intake.SubmitRequest(make_request(run_id, n), timeout=30)
            except grpc.aio.AioRpcError as error:
                result.submit_errors.append(f"{error.code().name}: {error.details()}")
                continue
            now = time.perf_counter()
            result.submitted.append(Submitted(reply.tracking_number, now - start, now))
            pending[reply.tracking_number] = None

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _poll_until_routed(
    query: query_pb2_grpc.CaseQueryServiceStub,
    result: LoadResult,
    pending: dict[str, None],
    submitting_done: asyncio.Event,
    endpoints: Endpoints,
    poll_concurrency: int,
    deadline_s: float,
    min_round_s: float = 0.2,
) -> None:
    """Rounds over every pending case (at most poll_concurrency calls in flight) until none is left, the
    deadline passes, or a process of the system exits (then waiting longer would only measure its absence)."""
    deadline = result.started_at + deadline_s
    gate = asyncio.Semaphore(poll_concurrency)

    async def poll(number: str) -> None:
        async with gate:
            routed = await _get_case(query, result, number)
        if routed is not None:
            result.routed[number] = routed
            pending.pop(number, None)

    while time.perf_counter() < deadline and not (submitting_done.is_set() and not pending):
        round_started = time.perf_counter()
        await asyncio.gather(*(poll(number) for number in list(pending)))
        result.poll_rounds_s.append(time.perf_counter() - round_started)
        result.exited_services = endpoints.exited()
        if result.exited_services:
            return
        await asyncio.sleep(max(0.0, min_round_s - (time.perf_counter() - round_started)))


async def _get_case(query: query_pb2_grpc.CaseQueryServiceStub, result: LoadResult, number: str) -> Routed | None:
    """One timed GetCase; the case's routing if it is past "submitted", else None."""
    start = time.perf_counter()
    try:
        view = await query.GetCase(query_pb2.GetCaseRequest(tracking_number=number), timeout=30)
    except grpc.aio.AioRpcError as error:
        result.get_case_latencies_s.append(time.perf_counter() - start)
        if error.code() == grpc.StatusCode.NOT_FOUND:
            result.get_case_not_found += 1  # not projected yet: a normal answer, timed like any other
        else:
            code = error.code().name
            result.get_case_errors[code] = result.get_case_errors.get(code, 0) + 1
        return None
    now = time.perf_counter()
    result.get_case_latencies_s.append(now - start)
    if view.status in ("submitted", "unknown", ""):
        return None
    routed_at = next((entry.at for entry in view.timeline if entry.stage in ROUTED_STAGES), None)
    return Routed(
        view.status,
        now,
        _seconds(view.submitted_at) if view.HasField("submitted_at") else None,
        _seconds(routed_at) if routed_at is not None else None,
    )


def _seconds(timestamp: Timestamp) -> float:
    nanoseconds: int = timestamp.ToNanoseconds()
    return nanoseconds / 1e9
