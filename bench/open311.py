"""`python -m bench.open311`: work orders opened/s and status updates read/s through the open311 connector and the
SAMPLE Open311 server, in JSON and XML.

    python -m bench.open311 [--work-orders 300] [--formats json,xml] [--json bench-results/open311.json]

The sample runs as a process of its own (as `civicflow dev` runs it), so this process holds only the connector.
Opening is one after another, as one department's opener does: each is a look-up by our key and a POST (two
calls); then the same without the look-up (`lookup_by_key: false`), its price. Updates: staff move every request
once more, then one `updates_since` from no cursor hands them all on, and a second from its cursor hands on none
but reads the same window again (the steady cost of a poll).

Floors, in the same run against the same process: bare httpx GET services.{fmt} and bare POST requests.{fmt}
per second, one after another, and GET servicerequestupdates.{fmt} of the same window with no reading at all.
It measures; it never asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from bench.report import machine, write_json
from civicflow.department_systems import ConnectorSpec
from civicflow.infra import free_ports, wait_for_port
from civicflow.logging import configure_logging
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.kinds.open311 import Open311Connector


def _request(n: int) -> WorkOrderRequest:
    return WorkOrderRequest(
        case_id=str(uuid4()),
        tracking_number=f"BENCH-{n:06d}",
        service_code="POTHOLE",
        summary=f"311 case BENCH-{n:06d}: POTHOLE for streets, priority normal",
        callback_url="http://127.0.0.1:9/unused",
        due_at=None,
        lat=41.88,
        long=-87.63,
    )


async def _floor(count: int, call: Any) -> float:
    started = time.perf_counter()
    for n in range(count):
        await call(n)
    return count / (time.perf_counter() - started)


async def run_format(url: str, api_key: str, key_file: Path, fmt: str, count: int) -> dict[str, Any]:
    spec = ConnectorSpec.model_validate(
        {"kind": "open311", "endpoint": url, "credentials": {"file": str(key_file)}, "format": fmt,
         "jurisdiction_id": "sample-city", "services": {"POTHOLE": "4"}, "catch_up_minutes": 600}
    )  # fmt: skip
    connector = Open311Connector("streets", spec)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        try:
            await _floor(20, lambda _: client.get(f"/services.{fmt}"))  # warm both ends up
            services_per_s = await _floor(count, lambda _: client.get(f"/services.{fmt}"))
            form = {"api_key": api_key, "service_code": "4", "description": "floor", "lat": "41.88", "long": "-87.63"}
            posts_per_s = await _floor(count, lambda _: client.post(f"/requests.{fmt}", data=form))

            started = time.perf_counter()
            ids = [(await connector.open_work_order(_request(n), str(uuid4()))).external_id for n in range(count)]
            opened_per_s = count / (time.perf_counter() - started)
            # the price of the look-up by our key before each POST: the same without it (a second may open on retry)
            blind = Open311Connector("streets", spec.model_copy(update={"lookup_by_key": False}))
            try:
                started = time.perf_counter()
                for n in range(count):
                    await blind.open_work_order(_request(n), str(uuid4()))
                blind_per_s = count / (time.perf_counter() - started)
            finally:
                await blind.aclose()

            for external_id in ids:
                await client.post(f"/sample/requests/{external_id}/status", json={"status": "fixed", "note": "done"})
            started = time.perf_counter()
            first = await connector.updates_since(None)
            first_seconds = time.perf_counter() - started
            started = time.perf_counter()
            again = await connector.updates_since(first.cursor)
            again_seconds = time.perf_counter() - started
            started = time.perf_counter()
            raw = await client.get(f"/servicerequestupdates.{fmt}")
            raw_seconds = time.perf_counter() - started
        finally:
            await connector.aclose()
    handed = len(first.updates)
    assert raw.status_code == 200
    return {
        "work_orders": count,
        "opened_per_s": round(opened_per_s, 1),
        "floor_get_services_per_s": round(services_per_s, 1),
        "floor_post_requests_per_s": round(posts_per_s, 1),
        "opened_to_bare_get": round(opened_per_s / services_per_s, 3),
        "opened_to_bare_post": round(opened_per_s / posts_per_s, 3),
        "opened_without_lookup_per_s": round(blind_per_s, 1),
        "updates_handed_on": handed,
        "updates_read_per_s": round(handed / first_seconds, 1),
        "repeat_poll_seconds": round(again_seconds, 4),
        "repeat_poll_handed_on": len(again.updates),
        "floor_feed_get_seconds": round(raw_seconds, 4),
        "updates_read_to_bare_feed_get": round(raw_seconds / first_seconds, 3),
    }


def with_a_sample(fmt: str, count: int) -> dict[str, Any]:
    """One format's run against a SAMPLE server of its own (a fresh feed), started as `civicflow dev` starts it."""
    api_key = secrets.token_urlsafe(24)
    (port,) = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="bench-open311-") as folder:
        key_file = Path(folder) / "open311.key"
        key_file.write_text(api_key)
        env = os.environ | {
            "CIVICFLOW_STATE_DIR": folder,
            "CIVICFLOW_SAMPLE_OPEN311_PORT": str(port),
            "CIVICFLOW_SAMPLE_OPEN311_STEP_SECONDS": "0",
            "CIVICFLOW_OPEN311_API_KEY": api_key,
            "CIVICFLOW_LOG_LEVEL": "WARNING",
        }
        with (Path(folder) / "sample.log").open("wb") as log_file:
            sample = subprocess.Popen(
                [sys.executable, "-m", "samples.open311_department"], env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port("127.0.0.1", port, 60)
            return asyncio.run(run_format(f"http://127.0.0.1:{port}", api_key, key_file, fmt, count))
        finally:
            sample.terminate()
            sample.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--work-orders", type=int, default=300)
    parser.add_argument("--formats", default="json,xml")
    parser.add_argument("--json", type=Path, default=Path("bench-results/open311.json"))
    args = parser.parse_args()
    configure_logging("bench", "WARNING")
    results = {fmt: with_a_sample(fmt, args.work_orders) for fmt in args.formats.split(",")}
    doc = {"machine": machine(), "open311": results}
    write_json(doc, args.json)
    for fmt, found in results.items():
        print(
            f"{fmt}: opened {found['opened_per_s']}/s ({found['opened_to_bare_get']}x a bare GET services,"
            f" {found['opened_to_bare_post']}x a bare POST requests;"
            f" {found['opened_without_lookup_per_s']}/s without the look-up);"
            f" updates read {found['updates_read_per_s']}/s"
            f" ({found['updates_handed_on']} in one poll, {found['updates_read_to_bare_feed_get']}x a bare GET);"
            f" a repeated poll {found['repeat_poll_seconds']}s handing on {found['repeat_poll_handed_on']}"
        )


if __name__ == "__main__":
    main()
