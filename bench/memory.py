"""Peak resident memory of every process of the system, sampled with psutil in a thread while a run goes on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil


@dataclass
class MemoryPeaks:
    """Peak RSS (bytes) per process name, and the peak of their sum at one sample (not the sum of peaks)."""

    per_process: dict[str, int] = field(default_factory=dict)
    total: int = 0
    samples: int = 0

    def add(self, sample: dict[str, int]) -> None:
        for name, rss in sample.items():
            self.per_process[name] = max(self.per_process.get(name, 0), rss)
        self.total = max(self.total, sum(sample.values()))
        self.samples += 1


def rss_of(pid: int) -> int | None:
    """RSS of a process and all its children (a service may fork helpers); None once it has gone."""
    try:
        process = psutil.Process(pid)
        rss: int = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                pass  # a child that ended between the listing and the reading
        return rss
    except psutil.Error:
        return None


class MemorySampler:
    """Samples every `interval_s` in a daemon thread between start() and stop()."""

    def __init__(self, pids: Callable[[], dict[str, int]], interval_s: float = 0.5) -> None:
        self._pids = pids
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self.peaks = MemoryPeaks()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> MemoryPeaks:
        self._stopped.set()
        self._thread.join(timeout=5)
        return self.peaks

    def sample(self) -> None:
        readings = {name: rss_of(pid) for name, pid in self._pids().items()}
        self.peaks.add({name: rss for name, rss in readings.items() if rss is not None})

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.sample()
            self._stopped.wait(self._interval_s)
