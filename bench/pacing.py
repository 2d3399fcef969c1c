"""Open-loop pacing: start each call at its planned time, however long the earlier ones take, and say how late."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

# A start this much after its planned time counts as late: past it the client, not the system, shaped the load.
LATE_AFTER_S = 0.005


def arrival_offsets(rate_per_s: float, duration_s: float) -> list[float]:
    """Planned start of each call, seconds after the run's start, evenly spaced at rate_per_s."""
    if rate_per_s <= 0 or duration_s <= 0:
        return []
    count = round(rate_per_s * duration_s)
    return list(itertools.islice(arrivals(rate_per_s), count))


def arrivals(rate_per_s: float) -> Iterator[float]:
    """The same plan without an end, for a load that runs until told to stop."""
    return (n / rate_per_s for n in itertools.count())


@dataclass
class Pacing:
    """What happened to the plan: how late each call started (seconds; 0 for a burst, which has no plan)."""

    planned: int = 0
    lateness_s: list[float] = field(default_factory=list)
    max_in_flight: int = 0

    def late_starts(self, after_s: float = LATE_AFTER_S) -> int:
        return sum(late > after_s for late in self.lateness_s)


async def paced(
    offsets: Iterable[float],
    call: Callable[[int], Awaitable[None]],
    max_in_flight: int,
    *,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Pacing:
    """Start call(n) at offsets[n] after now, never waiting for earlier calls, with at most max_in_flight
    running: a start held back by that bound, or by a busy event loop, is counted late rather than skipped.
    Stops planning when `stop` is set, then waits for the calls still running."""
    pacing = Pacing()
    gate = asyncio.Semaphore(max_in_flight)
    running: set[asyncio.Task[None]] = set()
    start = clock()

    active = 0  # started and not finished (a finished task can linger in `running` until its callback)

    async def one(n: int) -> None:
        nonlocal active
        try:
            await call(n)
        finally:
            active -= 1
            gate.release()

    for n, offset in enumerate(offsets):
        wait = start + offset - clock()
        if stop is not None:
            if stop.is_set():
                break
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    break
        elif wait > 0:
            await asyncio.sleep(wait)
        await gate.acquire()
        pacing.planned += 1
        pacing.lateness_s.append(max(0.0, clock() - (start + offset)))
        task = asyncio.create_task(one(n))
        running.add(task)
        task.add_done_callback(running.discard)
        active += 1
        pacing.max_in_flight = max(pacing.max_in_flight, active)
    if running:
        await asyncio.gather(*running)
    return pacing


async def burst(count: int, call: Callable[[int], Awaitable[None]], max_in_flight: int) -> Pacing:
    """count calls as fast as the client can issue them, max_in_flight at a time (no plan, so never late)."""
    pacing = await paced([0.0] * count, call, max_in_flight)
    pacing.lateness_s = [0.0] * count
    return pacing
