"""`make bench`: load a running civicflow open loop and in bursts, and measure it without loading it further.

    python -m bench.submit_load [--mode suite|burst|open] [--burst-requests N] [--rate R --duration S]
                                [--lookups-per-s L] [--json PATH] [--intake ADDR --query ADDR]

suite (the default): a burst (2,000 requests, 64 in flight), then an open-loop storm (100 requests/s for
60 s with GetCase at 500/s), each followed until every case is done or 60 s (--drain) after its last
submit; then the query read model is replayed from the store. Progress is read from the event store and
query.cases by read-only SQL, never by GetCase; GetCase is measured on its own at a fixed rate.

Without --intake/--query it starts everything itself on fresh infrastructure (embedded PostgreSQL and
Tansu unless CIVICFLOW_* variables point elsewhere), measures the floors on it first, samples every
process's memory during the runs, and stops it all again, also on Ctrl-C or an error. It measures; it
never asserts. A system already running is called with the key in CIVICFLOW_API_KEY (scopes submit and
track) and followed through CIVICFLOW_DATABASE_URL (read only); it is never replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.breakdown import scrape
from bench.breakdown import table as breakdown_table
from bench.floors import kafka_produce_consume, postgres_batched_inserts, postgres_commits
from bench.load import RunPlan, run_load
from bench.memory import MemoryPeaks, MemorySampler
from bench.report import Floors, document, summarise, table, write_json
from bench.system import STATE_DIR, Endpoints, fresh_database, running_system, use_embedded_by_default
from civicflow.db import make_engine
from civicflow.eventstore import PostgresEventStore
from civicflow.infra import Infrastructure, provide
from services.query.readmodel import replay

MODES = ("suite", "burst", "open")


@dataclass(frozen=True)
class Options:
    mode: str
    burst_requests: int
    burst_in_flight: int
    rate_per_s: float
    duration_s: float
    open_in_flight: int
    lookups_per_s: float
    drain_s: float
    json_path: Path
    intake: str | None
    query: str | None
    skip_floors: bool
    skip_replay: bool

    def plans(self) -> list[RunPlan]:
        burst = RunPlan.burst(self.burst_requests, self.burst_in_flight, 0.0, self.drain_s)
        storm = RunPlan.open_loop(
            self.rate_per_s, self.duration_s, self.open_in_flight, self.lookups_per_s, self.drain_s
        )
        return {"suite": [burst, storm], "burst": [burst], "open": [storm]}[self.mode]


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.submit_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default="suite", help="what to run (default suite: burst, open)")
    parser.add_argument("--burst-requests", type=int, default=2000, help="requests in the burst (default 2000)")
    parser.add_argument("--burst-in-flight", type=int, default=64, help="submits in flight in the burst (default 64)")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: requests per second (default 100)")
    parser.add_argument("--duration", type=float, default=60.0, help="open loop: seconds of arrivals (default 60)")
    parser.add_argument(
        "--open-in-flight", type=int, default=1000, help="open loop: bound on submits in flight (default 1000)"
    )
    parser.add_argument(
        "--lookups-per-s", type=float, default=500.0, help="open loop: GetCase calls per second (default 500; 0: none)"
    )
    parser.add_argument(
        "--drain", type=float, default=60.0, help="seconds after the last submit to wait for every case (default 60)"
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/system_load.json"), help="results file")
    parser.add_argument("--intake", help="intake gRPC address of an already running system (host:port)")
    parser.add_argument("--query", help="query gRPC address of an already running system (host:port)")
    parser.add_argument("--skip-floors", action="store_true", help="do not measure the PostgreSQL and Kafka floors")
    parser.add_argument("--skip-replay", action="store_true", help="do not time the read model's replay")
    args = parser.parse_args(argv)
    if bool(args.intake) != bool(args.query):
        parser.error("give both --intake and --query, or neither")
    if args.intake and not os.environ.get("CIVICFLOW_DATABASE_URL"):
        parser.error("an external system is followed through its database: set CIVICFLOW_DATABASE_URL")
    if min(args.burst_requests, args.burst_in_flight, args.open_in_flight) < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("request counts, in-flight bounds, --rate and --duration must be positive")
    return Options(
        args.mode,
        args.burst_requests,
        args.burst_in_flight,
        args.rate,
        args.duration,
        args.open_in_flight,
        args.lookups_per_s,
        args.drain,
        args.json,
        args.intake,
        args.query,
        args.skip_floors,
        args.skip_replay or bool(args.intake),  # replay rebuilds the live read model: never on a system not ours
    )


@contextlib.contextmanager
def infrastructure(options: Options) -> Iterator[Infrastructure | None]:
    """What to start (and later stop): the infrastructure for a self-started system, or for the floors of an
    external one when the environment names it; None when an external system leaves nothing to measure."""
    if options.intake is None:
        use_embedded_by_default()
        with provide(STATE_DIR.resolve()) as infra:
            yield infra
    elif os.environ.get("CIVICFLOW_DATABASE_URL") and os.environ.get("CIVICFLOW_KAFKA_BOOTSTRAP_SERVERS"):
        with provide(STATE_DIR.resolve()) as infra:
            yield infra
    else:
        yield None


async def measure_floors(infra: Infrastructure | None, database_url: str | None, skip: bool) -> Floors:
    if skip or infra is None or database_url is None:
        return Floors(None, None, None)
    print("floors: PostgreSQL single-writer commits …", flush=True)
    postgres = await postgres_commits(database_url)
    print("floors: PostgreSQL batched inserts …", flush=True)
    batched = await postgres_batched_inserts(database_url)
    print("floors: Kafka produce → consume …", flush=True)
    kafka = await kafka_produce_consume(infra.kafka_bootstrap_servers)
    return Floors(postgres, batched, kafka)


async def run_all(options: Options, endpoints: Endpoints, database_url: str) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for plan in options.plans():
        print(f"{plan.name}: {plan.requests} requests …", flush=True)
        runs[plan.name] = summarise(await run_load(endpoints, database_url, plan))
        done = runs[plan.name]
        print(
            f"{plan.name}: accepted {done['accepted']}, fully processed {done['fully_processed']},"
            f" unfinished {done['unfinished_at_drain_deadline']}",
            flush=True,
        )
        if done["services_exited_mid_run"]:
            break  # the next run would only measure the missing process
    return runs


async def time_replay(database_url: str) -> dict[str, Any]:
    """Rebuild the query read model from the store, with the system stopped (replay truncates it first)."""
    print("replay: rebuilding the query read model from the store …", flush=True)
    engine = make_engine(database_url, pool_size=1)
    try:
        started = time.perf_counter()
        events = await replay(engine, PostgresEventStore())
        seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds if seconds > 0 else None}


async def bench(options: Options, infra: Infrastructure | None) -> dict[str, Any]:
    if options.intake is not None and options.query is not None:
        database_url = os.environ["CIVICFLOW_DATABASE_URL"]
        floors = await measure_floors(infra, infra.database_url if infra else None, options.skip_floors)
        endpoints = Endpoints(options.intake, options.query, api_key=os.environ.get("CIVICFLOW_API_KEY", ""))
        runs = await run_all(options, endpoints, database_url)
        kind = f"external system ({infra.kind} infrastructure for floors)" if infra else "external system"
        return document(runs, None, None, floors, kind, None)
    assert infra is not None
    async with fresh_database(infra) as database_url:
        floors = await measure_floors(infra, database_url, options.skip_floors)
        print("starting the system …", flush=True)
        started = time.perf_counter()
        async with running_system(infra, database_url, STATE_DIR.resolve()) as endpoints:
            startup_s = time.perf_counter() - started
            print(f"system up in {startup_s:.1f} s (logs in {STATE_DIR / 'system' / 'logs'})", flush=True)
            sampler = MemorySampler(endpoints.pids)
            sampler.start()
            memory = MemoryPeaks()
            try:
                runs = await run_all(options, endpoints, database_url)
                where = await scrape(endpoints.metrics)
            finally:
                memory = sampler.stop()
        print("system stopped", flush=True)
        replayed = None if options.skip_replay else await time_replay(database_url)
    return document(runs, replayed, memory, floors, infra.kind, startup_s) | {"breakdown": where}


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        with infrastructure(options) as infra:
            doc = asyncio.run(bench(options, infra))
    except KeyboardInterrupt:
        print("interrupted: everything this run started has been stopped", file=sys.stderr)
        return 130
    write_json(doc, options.json_path)
    print()
    print(table(doc))
    where = doc.get("breakdown")
    if isinstance(where, dict) and where:
        print()
        print(breakdown_table(where))
    print(f"\nresults written to {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
