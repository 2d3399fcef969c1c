"""What a SAMPLE department's staff do by hand: move a work order to any status in the running sample system.

`python -m samples.department_workorders set-status DEPARTMENT WORK_ORDER STATUS [--note …] [--refers-to …]`
"""

from __future__ import annotations

import argparse
import sys

import httpx

DEFAULT_URL = "http://127.0.0.1:8090"


def set_status_by_hand(argv: list[str]) -> int:
    """`python -m samples.department_workorders set-status DEPARTMENT WORK_ORDER STATUS [--note …] [--refers-to …]`:
    what a department's staff would do in their own system (the running sample on --url)."""
    parser = argparse.ArgumentParser(prog="python -m samples.department_workorders set-status")
    parser.add_argument("department")
    parser.add_argument("work_order")
    parser.add_argument("status", help="any status in the department's words: resolved, in_progress, awaiting parts...")
    parser.add_argument("--note")
    parser.add_argument("--refers-to", help="a duplicate's other tracking number, or the department referred to")
    parser.add_argument("--url", default=DEFAULT_URL, help="the sample system (CIVICFLOW_SAMPLE_DEPT_PORT)")
    args = parser.parse_args(argv)
    change = {"status": args.status, "note": args.note, "refers_to": args.refers_to}
    url = f"{args.url.rstrip('/')}/departments/{args.department}/work-orders/{args.work_order}/status"
    try:
        response = httpx.post(url, json={k: v for k, v in change.items() if v is not None}, timeout=10)
    except httpx.HTTPError as exc:
        print(f"the sample department system at {args.url} did not answer ({type(exc).__name__})", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"HTTP {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    shown = response.json()
    print(f"{shown['id']} is now {shown['status']}")
    return 0
