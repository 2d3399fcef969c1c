"""One load run: submit over gRPC open loop (a fixed arrival rate) or as a burst, look cases up with GetCase
at a fixed rate meanwhile, and follow every case through the store and the read model until it is done."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from uuid import uuid4

import grpc

from bench.observer import Observer
from bench.pacing import Pacing, arrival_offsets, arrivals, burst, paced
from bench.progress import CaseProgress
from bench.system import Endpoints
from civicflow.access import SendsApiKey
from civicflow.v1 import common_pb2, intake_pb2, intake_pb2_grpc, query_pb2, query_pb2_grpc

# departments whose sample system finishes work orders by itself (Code Enforcement, graffiti's, works from its inbox)
SERVICE_CODES = ("POTHOLE", "STREETLIGHT", "MISSED_PICKUP", "SIGN_DAMAGED")
CHANNELS = ("phone", "web", "app")


@dataclass(frozen=True)
class RunPlan:
    """A burst of `requests` (rate_per_s None), or rate_per_s for duration_s, open loop."""

    name: str
    requests: int
    rate_per_s: float | None
    duration_s: float | None
    max_in_flight: int
    lookups_per_s: float
    drain_deadline_s: float  # after the last submit, how long to wait for every case to finish

    @classmethod
    def burst(cls, requests: int, max_in_flight: int, lookups_per_s: float, drain_s: float) -> RunPlan:
        return cls("burst", requests, None, None, max_in_flight, lookups_per_s, drain_s)

    @classmethod
    def open_loop(
        cls, rate_per_s: float, duration_s: float, max_in_flight: int, lookups_per_s: float, drain_s: float
    ) -> RunPlan:
        requests = len(arrival_offsets(rate_per_s, duration_s))
        return cls("open", requests, rate_per_s, duration_s, max_in_flight, lookups_per_s, drain_s)


@dataclass
class Lookups:
    """GetCase at a fixed rate, open loop, over the run's own tracking numbers."""

    rate_per_s: float
    latencies_s: list[float] = field(default_factory=list)
    not_found: int = 0
    unused_slots: int = 0  # planned lookups skipped because no case of the run was visible yet
    errors: dict[str, int] = field(default_factory=dict)  # status code name → count
    pacing: Pacing = field(default_factory=Pacing)
    seconds: float = 0.0


@dataclass
class RunResult:
    plan: RunPlan
    started_at: float = 0.0  # epoch seconds, this client
    submit_finished_at: float = 0.0
    drain_finished_at: float = 0.0
    submit_latencies_s: list[float] = field(default_factory=list)
    submit_errors: list[str] = field(default_factory=list)
    pacing: Pacing = field(default_factory=Pacing)
    lookups: Lookups = field(default_factory=lambda: Lookups(0.0))
    cases: list[CaseProgress] = field(default_factory=list)
    observer_polls: int = 0
    observer_poll_seconds: float = 0.0
    exited_services: dict[str, int] = field(default_factory=dict)


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


async def run_load(endpoints: Endpoints, database_url: str, plan: RunPlan) -> RunResult:
    """Submit per the plan while the observer follows the store; then wait for every case to finish (or the
    drain deadline, or a process of the system exiting), and refold all cases from the store."""
    result = RunResult(plan, lookups=Lookups(plan.lookups_per_s))
    observer = Observer(database_url)
    keyed = [SendsApiKey(endpoints.api_key)] if endpoints.api_key else []
    async with (
        grpc.aio.insecure_channel(endpoints.intake, interceptors=keyed) as intake_channel,
        grpc.aio.insecure_channel(endpoints.query, interceptors=keyed) as query_channel,
    ):
        await asyncio.wait_for(intake_channel.channel_ready(), timeout=30)
        await asyncio.wait_for(query_channel.channel_ready(), timeout=30)
        intake = intake_pb2_grpc.IntakeServiceStub(intake_channel)
        query = query_pb2_grpc.CaseQueryServiceStub(query_channel)
        stop_observing, stop_lookups = asyncio.Event(), asyncio.Event()
        await observer.start()  # fixes its cursor before anything is submitted
        following = asyncio.create_task(observer.follow(stop_observing))
        looking_up = asyncio.create_task(_look_up(query, result.lookups, observer.visible, stop_lookups))
        result.started_at = time.time()
        try:
            result.pacing = await _submit(intake, plan, result, observer)
        finally:
            result.submit_finished_at = time.time()
            stop_lookups.set()
        await looking_up
        deadline = time.monotonic() + plan.drain_deadline_s
        while time.monotonic() < deadline:  # the observer's polls decide; they set no event to wait on
            if not observer.unfinished or endpoints.exited():
                break
            await asyncio.sleep(0.2)
        result.drain_finished_at = time.time()
        result.exited_services = endpoints.exited()
        stop_observing.set()
        await following
    await observer.reconcile()
    result.cases = list(observer.cases.values())
    result.observer_polls, result.observer_poll_seconds = observer.polls, observer.poll_seconds
    return result


async def _submit(
    intake: intake_pb2_grpc.IntakeServiceStub,
    plan: RunPlan,
    result: RunResult,
    observer: Observer,
) -> Pacing:
    run_id = uuid4().hex[:8]

    async def submit(n: int) -> None:
        request = make_request(run_id, n)
        started_wall, started = time.time(), time.perf_counter()
        try:
            reply = await intake.SubmitRequest(request, timeout=30)
        except grpc.aio.AioRpcError as error:
            result.submit_errors.append(f"{error.code().name}: {error.details()}")
            return
        result.submit_latencies_s.append(time.perf_counter() - started)
        observer.register(CaseProgress(reply.case_id, reply.tracking_number, bool(request.contact.email), started_wall))

    if plan.rate_per_s is None:
        return await burst(plan.requests, submit, plan.max_in_flight)
    return await paced(arrival_offsets(plan.rate_per_s, plan.duration_s or 0.0), submit, plan.max_in_flight)


async def _look_up(
    query: query_pb2_grpc.CaseQueryServiceStub,
    lookups: Lookups,
    visible: list[str],
    stop: asyncio.Event,
    max_in_flight: int = 256,
) -> None:
    """GetCase at lookups.rate_per_s until stop is set, each of a random case of the run that the read model
    already shows (as the observer saw it): a lookup of a case not projected yet would time a NOT_FOUND."""
    if lookups.rate_per_s <= 0:
        return
    chooser = random.Random(311)

    async def look_up(_: int) -> None:
        if not visible:
            lookups.unused_slots += 1  # nothing to look up yet
            return
        number = visible[chooser.randrange(len(visible))]
        started = time.perf_counter()
        try:
            await query.GetCase(query_pb2.GetCaseRequest(tracking_number=number), timeout=10)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                lookups.not_found += 1
            else:
                code = error.code().name
                lookups.errors[code] = lookups.errors.get(code, 0) + 1
            return
        lookups.latencies_s.append(time.perf_counter() - started)

    started = time.perf_counter()
    lookups.pacing = await paced(arrivals(lookups.rate_per_s), look_up, max_in_flight, stop=stop)
    lookups.seconds = time.perf_counter() - started
