"""The benchmark's pure parts: percentiles, the open-loop schedule, a case's progress, and the report."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.floors import BatchedInsertFloor, KafkaFloor, PostgresFloor
from bench.load import Lookups, RunPlan, RunResult
from bench.memory import MemoryPeaks
from bench.notify_channels import Providers, case_count, channel_figures, channel_list, provider_alone
from bench.pacing import Pacing, arrival_offsets, arrivals, burst, paced
from bench.progress import CaseProgress, StoredEvent
from bench.report import Floors, document, percentile, summarise, table
from bench.rules_check import measure
from civicflow.infra import free_ports
from samples.smtp_sink.sink import read_messages, start_sink


def test_nearest_rank_percentiles() -> None:
    values = [float(n) for n in range(1, 1001)]
    assert percentile(values, 50) == 500.0
    assert percentile(values, 99) == 990.0
    assert percentile(values, 99.9) == 999.0
    assert percentile([3.0], 99.9) == 3.0
    assert percentile([], 50) is None


def test_arrivals_are_evenly_spaced_at_the_rate() -> None:
    offsets = arrival_offsets(100, 60)
    assert len(offsets) == 6000
    assert offsets[:3] == [0.0, 0.01, 0.02]
    assert offsets[-1] == 59.99
    assert arrival_offsets(0, 10) == []


class StoppedClock:
    """The pacer's clock, moved only by the test: lateness depends on what the test says, not on the machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_open_loop_starts_on_time_however_long_calls_take() -> None:
    started: list[int] = []
    all_started = asyncio.Event()

    async def held(n: int) -> None:  # no call ends before the last has started
        started.append(n)
        if len(started) == 20:
            all_started.set()
        await all_started.wait()

    pacing = await paced(arrival_offsets(200, 0.1), held, max_in_flight=100, clock=StoppedClock())
    assert started == list(range(20))
    assert pacing.planned == 20
    assert pacing.max_in_flight == 20  # none waited for an earlier one to finish
    assert pacing.late_starts() == 0


async def test_a_start_held_by_the_in_flight_bound_counts_late() -> None:
    clock, release, both_running, running = StoppedClock(), asyncio.Event(), asyncio.Event(), []

    async def held(n: int) -> None:
        running.append(n)
        if len(running) == 2:
            both_running.set()
        await release.wait()

    async def free_the_slots_50_ms_later() -> None:
        await both_running.wait()
        clock.now = 0.05
        release.set()

    freeing = asyncio.create_task(free_the_slots_50_ms_later())
    pacing = await paced(arrival_offsets(1000, 0.004), held, max_in_flight=2, clock=clock)
    await freeing
    assert pacing.planned == 4
    assert pacing.late_starts() == 2  # the 3rd and 4th waited ~50 ms for a slot


async def test_burst_keeps_the_in_flight_bound() -> None:
    running = peak = 0

    async def call(_: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1

    pacing = await burst(50, call, max_in_flight=8)
    assert peak == 8 and pacing.planned == 50 and pacing.late_starts() == 0


async def test_paced_stops_when_told() -> None:
    stop = asyncio.Event()

    async def call(n: int) -> None:
        if n == 4:
            stop.set()

    pacing = await paced(arrivals(1000), call, max_in_flight=10, stop=stop, clock=StoppedClock())
    assert pacing.planned == 5  # the fifth call said stop; nothing was planned after it


def _case(with_email: bool = True) -> CaseProgress:
    return CaseProgress("c1", "ABCD-EFG", with_email, submit_started_at=99.9)


def _events(*rows: tuple[str, float, str | None, str | None]) -> list[StoredEvent]:
    return [StoredEvent(n, "c1", kind, at, stage, status) for n, (kind, at, stage, status) in enumerate(rows)]


def test_a_case_is_fully_processed_when_resolved_done_told_and_visible() -> None:
    case = _case()
    for event in _events(
        ("CaseSubmitted", 100.0, None, None),
        ("NotificationSent", 100.2, "submitted", None),
        ("CaseRouted", 100.1, None, None),
        ("WorkOrderOpened", 100.3, None, None),
        ("NotificationSent", 100.4, "routed", None),
        ("WorkOrderStatusChanged", 102.0, None, "in_progress"),
        ("WorkOrderStatusChanged", 103.0, None, "done"),
        ("CaseResolved", 103.0, None, None),
    ):
        case.apply(event)
    case.seen_in_read_model("routed", 100.5)
    assert case.submit_to_routed_s is not None and abs(case.submit_to_routed_s - 0.1) < 1e-9
    assert case.fully_processed_at is None  # the resolved email is not sent yet
    case.apply(StoredEvent(9, "c1", "NotificationFailed", 103.5, "resolved", None))
    assert case.fully_processed_at is None  # nor is it visible as resolved
    case.seen_in_read_model("resolved", 103.7)
    assert case.fully_processed_at == 103.7
    assert case.notifications_failed == 1 and case.visible_placed_at == 100.5 and case.finished


def test_a_case_without_email_expects_no_notification() -> None:
    case = _case(with_email=False)
    for event in _events(
        ("CaseSubmitted", 1.0, None, None),
        ("CaseRouted", 2.0, None, None),
        ("WorkOrderStatusChanged", 3.0, None, "done"),
        ("CaseResolved", 3.0, None, None),
    ):
        case.apply(event)
    case.seen_in_read_model("resolved", 3.2)
    assert case.fully_processed_at == 3.2
    assert case.submit_to_resolved_s == 2.0


def test_a_triage_case_is_finished_once_placed_and_visible() -> None:
    case = _case(with_email=False)
    for event in _events(("CaseSubmitted", 1.0, None, None), ("CaseNeedsTriage", 1.5, None, None)):
        case.apply(event)
    assert not case.finished
    case.seen_in_read_model("triage", 2.0)
    assert case.triage and case.finished and case.fully_processed_at is None


def _run() -> RunResult:
    plan = RunPlan.open_loop(2, 1, 10, 5, 30)
    done = _case(with_email=False)
    for event in _events(
        ("CaseSubmitted", 100.0, None, None),
        ("CaseRouted", 100.2, None, None),
        ("WorkOrderStatusChanged", 101.0, None, "done"),
        ("CaseResolved", 101.0, None, None),
    ):
        done.apply(event)
    done.seen_in_read_model("resolved", 101.5)
    waiting = CaseProgress("c2", "ABCD-EFH", False, 100.5)
    waiting.apply(StoredEvent(9, "c2", "CaseSubmitted", 100.5, None, None))
    return RunResult(
        plan,
        started_at=99.9,
        submit_finished_at=100.9,
        drain_finished_at=130.0,
        submit_latencies_s=[0.01, 0.03],
        pacing=Pacing(2, [0.0, 0.02], 1),
        lookups=Lookups(5, [0.002, 0.004], seconds=1.0),
        cases=[done, waiting],
    )


def test_summary_rates_count_from_the_first_submit() -> None:
    summary = summarise(_run())
    assert summary["accepted"] == 2 and summary["accepted_per_s"] == 2.0
    assert summary["fully_processed"] == 1 and summary["unfinished_at_drain_deadline"] == 1
    assert abs(summary["fully_processed_per_s"] - 1 / 1.6) < 1e-9
    assert summary["late_starts"] == 1
    assert summary["submit_p99_s"] == 0.03 and summary["get_case_p50_s"] == 0.002


def test_the_table_prints_each_target_beside_its_measurement() -> None:
    floors = Floors(
        PostgresFloor(100, 1.0, 100.0, "on", "on"),
        BatchedInsertFloor(5000, 500, 400, 0.5, 10_000.0),
        KafkaFloor(1000, 100, 6, 0.1, 10_000.0, 0.2, 5000.0),
    )
    memory = MemoryPeaks()
    memory.add({"intake": 100 * 2**20, "query": 50 * 2**20})
    doc = document(
        {"open": summarise(_run())},
        {"events": 5, "seconds": 0.001, "events_per_s": 5000.0},
        memory,
        floors,
        "embedded",
        3.0,
    )
    text = table(doc)
    assert "storm: GetCase p99" in text and "≤ 5 ms" in text and "4.0 ms" in text
    assert "replay events/s" in text and "≥ 20,000" in text and "not met" in text
    assert "intake" in text and "150 MiB" in text
    assert "not measured" in text  # no burst in this run
    burst_targets = [t for t in doc["targets"] if t["target"].startswith("burst")]
    assert all(t["met"] is None for t in burst_targets)


def test_the_rules_check_bench_runs_on_a_tiny_city() -> None:
    line = measure(services=12, groups=3, rules=12, area_count=15, runs=1)
    assert line.startswith("rules check, 12 services in 3 groups, 12 rules, 15 areas (")
    assert "target 5 s" in line


def test_a_channel_is_reported_as_rates_percentiles_and_ratios_to_its_floors() -> None:
    took = [0.010] * 98 + [0.030, 0.050]  # 100 notifications in 2 s
    floor = [0.004] * 100  # the provider alone: 100 in 0.5 s
    figures = channel_figures(took, 2.0, floor, 0.5, commits_per_s=1000.0)
    assert figures["notifications_per_s"] == 50.0 and figures["provider_alone_per_s"] == 200.0
    assert figures["p50_ms"] == 10.0 and figures["p99_ms"] == 30.0 and figures["provider_alone_p99_ms"] == 4.0
    assert figures["ratio_to_provider_alone"] == 0.25 and figures["ratio_to_postgres_commits"] == 0.05


async def test_the_email_floor_sends_straight_to_the_smtp_sink(tmp_path: Path) -> None:
    [port] = free_ports(1)
    sink = await start_sink(tmp_path, port=port)
    try:
        took, wall = await provider_alone(Providers(port, "http://127.0.0.1:9", "unused"), "email", 3)
    finally:
        sink.close()
        await sink.wait_closed()
    assert len(took) == 3 and wall >= sum(took)
    assert len(read_messages(tmp_path)) == 3  # three messages, each filed once


def test_the_channels_are_read_from_a_comma_separated_list() -> None:
    assert channel_list("email") == ("email",)
    assert channel_list(" SMS , voice") == ("sms", "voice")
    assert case_count("200") == 200


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("fax", "'fax' is not a channel"),
        ("", "'' is not a channel"),
        ("email,,sms", "'' is not a channel"),
        ("sms,sms", "each may be named once"),
        ("email\x00", "is not a channel"),
        ("x" * 1_000_000, "'xxxxxxxxxxxxxxxxxxxx'"),
    ],
)
def test_a_channel_list_that_is_not_one_says_what_to_write(value: str, problem: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        channel_list(value)
    assert problem in str(raised.value)
    assert "email, sms, voice" in str(raised.value) and len(str(raised.value)) < 200


def _a_count_in_range(value: str) -> bool:
    try:
        return 1 <= int(value) <= 100_000
    except ValueError:
        return False


@given(st.one_of(st.text(max_size=30), st.integers().map(str)).filter(lambda v: not _a_count_in_range(v)))
def test_a_case_count_that_is_not_a_whole_number_in_range_says_what_to_write(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        case_count(value)
    assert str(raised.value).startswith("write a whole number from 1 to 100000")
