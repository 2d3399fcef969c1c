"""`python -m bench.email_kind`: the email kind's work orders opened/s and status updates/s through the sample
systems.

    python -m bench.email_kind [--work-orders 300] [--in-flight 1,16] [--json bench-results/email_kind.json]

Work orders: EmailConnector.open_work_order (built by kinds/email.py from BridgeSettings) into the SMTP sink, which
runs as a process of its own as `civicflow dev` runs it; the floor is the same number of plain aiosmtplib sends of
a message of the same size. Updates: a department's reply per work order, written by the sample reply command's
functions (samples/smtp_sink/reply.py) from the sink's file and posted signed to the bridge's reply endpoint
(email_http.py on uvicorn, in this process) whose recorder only counts: reading, checking and parsing, not the
bridge's database write (services/workorder_bridge/updates.py has its own). It measures; it never asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from starlette.applications import Starlette

from civicflow.department_systems import ConnectorSpec
from civicflow.http_server import InProcessHttpServer
from civicflow.infra import free_ports, wait_for_port
from samples.smtp_sink.reply import compose_reply, find_work_order, post_reply_async
from services.workorder_bridge.connector import ConnectorContext, ExternalUpdate, Outcome
from services.workorder_bridge.email_http import EmailDepartments, email_routes
from services.workorder_bridge.kinds import BUILDERS
from services.workorder_bridge.main import BridgeSettings
from tests.connector_contract import a_request


class Counting:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        self.count += 1
        return Outcome.RECORDED


async def timed(jobs: list[Callable[[], Awaitable[Any]]], in_flight: int) -> float:
    """Per second, running the jobs with at most in_flight at once."""
    gate = asyncio.Semaphore(in_flight)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await job()

    started = time.perf_counter()
    await asyncio.gather(*(one(job) for job in jobs))
    return len(jobs) / (time.perf_counter() - started)


async def one_run(
    connector: Any, mail: Path, smtp_port: int, url: str, secret: str, work_orders: int, in_flight: int
) -> dict[str, Any]:
    references: list[str] = []

    async def open_one() -> None:
        opened = await connector.open_work_order(a_request("GRAFFITI"), str(uuid.uuid4()))
        references.append(opened.external_id)

    opened_per_second = await timed([open_one for _ in range(work_orders)], in_flight)
    sample = find_work_order(mail, references[0])
    raw = sample.path.read_bytes()
    message_id = (sample.message_id or "").encode()

    async def floor_one() -> None:  # the same message, a new Message-ID each time, so the sink files every one
        fresh = raw.replace(message_id, f"<{uuid.uuid4()}@bench.example>".encode())
        await aiosmtplib.send(
            fresh, sender="w@civicflow.local", recipients=["code@sample-city.example"], port=smtp_port
        )

    floor = await timed([floor_one for _ in range(work_orders)], in_flight)
    replies = [compose_reply(find_work_order(mail, r), "done: bench") for r in references]
    async with httpx.AsyncClient(timeout=30) as client:

        def post(reply: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: post_reply_async(client, url, secret, reply)

        updates_per_second = await timed([post(r) for r in replies], in_flight)
    return {
        "in_flight": in_flight,
        "work_orders_opened_per_second": round(opened_per_second, 1),
        "smtp_sends_per_second_floor": round(floor, 1),
        "replies_recorded_per_second": round(updates_per_second, 1),
    }


async def measure(
    state: Path, smtp_port: int, http_port: int, work_orders: int, in_flights: list[int]
) -> dict[str, Any]:
    settings = BridgeSettings(state_dir=state, bridge_smtp_port=smtp_port)
    spec = ConnectorSpec(kind="email", inbox="code@sample-city.example")
    url = f"http://127.0.0.1:{http_port}"
    connector = BUILDERS["email"](ConnectorContext("code", spec, settings, None, url, url))
    recorder = Counting()
    secret = settings.signing_secret()
    app = Starlette(routes=email_routes(EmailDepartments.of({"code": spec}, secret, None), recorder, secret))
    stop = asyncio.Event()
    server = asyncio.create_task(InProcessHttpServer(app, "127.0.0.1", http_port, "bench endpoint", "-")(stop))
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", http_port, 30)
        runs = [await one_run(connector, state / "mail", smtp_port, url, secret, work_orders, n) for n in in_flights]
        return {"work_orders": work_orders, "runs": runs, "replies_counted": recorder.count}
    finally:
        stop.set()
        await server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-orders", type=int, default=300)
    parser.add_argument("--in-flight", default="1,16")
    parser.add_argument("--json", type=Path, default=Path("bench-results/email_kind.json"))
    args = parser.parse_args()
    smtp_port, http_port = free_ports(2)
    state = Path(tempfile.mkdtemp(prefix="bench-email-"))
    env = dict(os.environ, CIVICFLOW_SMTP_PORT=str(smtp_port), CIVICFLOW_MAIL_DIR=str(state / "mail"))
    sink = subprocess.Popen([sys.executable, "-m", "samples.smtp_sink"], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", smtp_port, 30)
        in_flights = [int(n) for n in args.in_flight.split(",")]
        results = asyncio.run(measure(state, smtp_port, http_port, args.work_orders, in_flights))
    finally:
        sink.terminate()
        sink.wait(10)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
