"""`make bench`: submit N requests to a running civicflow and measure how fast they are accepted and routed.

    python -m bench.submit_load [--requests N] [--concurrency C] [--json PATH] [--intake ADDR --query ADDR]

Without --intake/--query it starts everything itself on fresh infrastructure (embedded PostgreSQL and
Tansu unless CIVICFLOW_* variables point elsewhere), measures the floors on that infrastructure first,
runs the load, and stops it all again, also on Ctrl-C or an error. It measures; it never asserts.
A system already running is called with the API key in CIVICFLOW_API_KEY (scopes submit and track;
its per-key rate limit, 50 calls/s by default, caps what can be measured).
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

from bench.breakdown import scrape
from bench.breakdown import table as breakdown_table
from bench.floors import kafka_produce_consume, postgres_commits
from bench.load import run_load
from bench.report import Floors, document, summarise, table, write_json
from bench.system import STATE_DIR, Endpoints, fresh_database, running_system, use_embedded_by_default
from civicflow.infra import Infrastructure, provide


@dataclass(frozen=True)
class Options:
    requests: int
    concurrency: int
    poll_concurrency: int
    deadline_s: float
    json_path: Path
    intake: str | None
    query: str | None
    skip_floors: bool


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.submit_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="requests to submit (default 500)")
    parser.add_argument("--concurrency", type=int, default=16, help="submits in flight (default 16)")
    parser.add_argument("--poll-concurrency", type=int, default=4, help="GetCase calls in flight (default 4)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds to wait for routing (default 300)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/submit_load.json"), help="results file")
    parser.add_argument("--intake", help="intake gRPC address of an already running system (host:port)")
    parser.add_argument("--query", help="query gRPC address of an already running system (host:port)")
    parser.add_argument("--skip-floors", action="store_true", help="do not measure the PostgreSQL and Kafka floors")
    args = parser.parse_args(argv)
    if bool(args.intake) != bool(args.query):
        parser.error("give both --intake and --query, or neither")
    if args.requests < 1 or args.concurrency < 1 or args.poll_concurrency < 1:
        parser.error("--requests, --concurrency and --poll-concurrency must be at least 1")
    return Options(
        args.requests,
        args.concurrency,
        args.poll_concurrency,
        args.deadline,
        args.json,
        args.intake,
        args.query,
        args.skip_floors,
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
        return Floors(None, None)
    print("floors: PostgreSQL single-writer commits …", flush=True)
    postgres = await postgres_commits(database_url)
    print("floors: Kafka produce → consume …", flush=True)
    kafka = await kafka_produce_consume(infra.kafka_bootstrap_servers)
    return Floors(postgres, kafka)


async def bench(options: Options, infra: Infrastructure | None) -> dict[str, object]:
    if options.intake is not None and options.query is not None:
        floors = await measure_floors(infra, infra.database_url if infra else None, options.skip_floors)
        endpoints = Endpoints(options.intake, options.query, api_key=os.environ.get("CIVICFLOW_API_KEY", ""))
        summary = await _load(options, endpoints)
        kind = f"external system ({infra.kind} infrastructure for floors)" if infra else "external system"
        return document(summary, floors, kind, None, options.deadline_s)
    assert infra is not None
    async with fresh_database(infra) as database_url:
        floors = await measure_floors(infra, database_url, options.skip_floors)
        print("starting the system …", flush=True)
        started = time.perf_counter()
        async with running_system(infra, database_url, STATE_DIR.resolve()) as endpoints:
            startup_s = time.perf_counter() - started
            print(f"system up in {startup_s:.1f} s (logs in {STATE_DIR / 'system' / 'logs'})", flush=True)
            summary = await _load(options, endpoints)
            where = await scrape(endpoints.metrics)
        print("system stopped", flush=True)
    return document(summary, floors, infra.kind, startup_s, options.deadline_s) | {"breakdown": where}


async def _load(options: Options, endpoints: Endpoints) -> dict[str, object]:
    print(f"submitting {options.requests} requests at concurrency {options.concurrency} …", flush=True)
    load = await run_load(
        endpoints, options.requests, options.concurrency, options.poll_concurrency, options.deadline_s
    )
    return summarise(load)


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
