"""The system under benchmark: embedded (or environment) infrastructure, a fresh database, unique topics,
and every service started as a process — the same recipe as the end-to-end tests (civicflow.sandbox)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from civicflow.infra import Infrastructure
from civicflow.sandbox import isolated_system, scratch_database

STATE_DIR = Path(".civicflow/bench")


def nothing_exited() -> dict[str, int]:
    return {}


def no_processes() -> dict[str, int]:
    return {}


@dataclass(frozen=True)
class Endpoints:
    """Where the benchmark client finds the system's gRPC services, and how to tell if any of its processes
    has exited (name → exit code; always empty for a system this run did not start)."""

    intake: str
    query: str
    exited: Callable[[], dict[str, int]] = nothing_exited
    metrics: dict[str, int] = field(default_factory=dict)  # service → its /metrics port, when this run started it
    # the key every call sends (submit + track): made by this run, or CIVICFLOW_API_KEY for an external system
    api_key: str = ""
    # name → pid of each process of the system (services, sample department system, SMTP sink), to watch
    # their memory; always empty for a system this run did not start
    pids: Callable[[], dict[str, int]] = no_processes


def use_embedded_by_default() -> None:
    """Benchmarks run on the embedded pair unless the caller asks otherwise."""
    os.environ.setdefault("CIVICFLOW_USE_TESTCONTAINERS", "no")


def fresh_database(infra: Infrastructure) -> contextlib.AbstractAsyncContextManager[str]:
    """A new, migrated database of the bench's own, dropped afterwards."""
    return scratch_database(infra, "bench")


@contextlib.asynccontextmanager
async def running_system(infra: Infrastructure, database_url: str, state_dir: Path) -> AsyncIterator[Endpoints]:
    """Every service as a process on its own topics and the given database; all stopped on the way out.

    Logs and mail go to <state_dir>/system, emptied first."""
    run_dir = state_dir / "system"  # never state_dir itself: the embedded PostgreSQL keeps its data there
    shutil.rmtree(run_dir, ignore_errors=True)  # logs and mail of the previous run
    own = Infrastructure(database_url, infra.kafka_bootstrap_servers, infra.kind)
    settings = {
        "CIVICFLOW_SAMPLE_DEPT_STEP_SECONDS": "1.0",
        # the benchmark measures the system, not the per-key rate limit (50 calls/s by default)
        "CIVICFLOW_API_KEY_RATE_PER_SECOND": "1000000",
        "CIVICFLOW_API_KEY_BURST": "1000000",
    }
    async with isolated_system(own, run_dir, "bench", settings) as system:
        yield Endpoints(
            f"127.0.0.1:{system.ports.intake}",
            f"127.0.0.1:{system.ports.query}",
            system.exited,
            system.ports.metrics,
            system.api_key,
            lambda: {name: process.pid for name, process in system.processes.items()},
        )
