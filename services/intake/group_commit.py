"""Group commit: requests arriving together are written in one transaction, each caller answered after it commits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

Item = TypeVar("Item")
Answer = TypeVar("Answer")

# What a group's commit returns for each of its items, in order: the answer, or the exception that caller gets
# (an outcome of that item alone, such as a reused idempotency key; it must have written nothing).
CommitGroup = Callable[[Sequence[Item]], Awaitable[Sequence[Answer | Exception]]]


class CommitterClosed(RuntimeError):
    """The process is shutting down and takes no more requests."""


@dataclass
class _Waiting(Generic[Item, Answer]):
    item: Item
    answer: asyncio.Future[Answer]


class GroupCommitter(Generic[Item, Answer]):
    """One flusher task takes what callers queued, waits up to `window_s` for more (at most `max_group`
    in all) and hands the group to `commit_group`, which writes it in one transaction. If that raises,
    the transaction is gone, so each item is committed alone: only an item that fails alone fails.

    The flusher runs while there is work and ends when the queue is empty, so an idle process holds no
    task; `close` refuses new items and waits for the last group to be answered."""

    def __init__(self, commit_group: CommitGroup[Item, Answer], window_s: float = 0.002, max_group: int = 64) -> None:
        if window_s < 0 or max_group < 1:
            raise ValueError("a group commit needs a window of 0 s or more and room for at least one item")
        self._commit_group = commit_group
        self._window_s = window_s
        self._max_group = max_group
        self._queue: list[_Waiting[Item, Answer]] = []
        self._more = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: Item) -> Answer:
        """Queue the item; returns its answer once the transaction that wrote it has committed."""
        if self._closed:
            raise CommitterClosed("intake is shutting down; send the request again (same idempotency key)")
        waiting: _Waiting[Item, Answer] = _Waiting(item, asyncio.get_running_loop().create_future())
        waiting.answer.add_done_callback(_retrieve)  # a caller that gave up leaves its error unread
        self._queue.append(waiting)
        self._more.set()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="intake-group-commit")
        # shielded: a caller that gives up must not cancel a commit that other callers share
        return await asyncio.shield(waiting.answer)

    async def close(self) -> None:
        """Take no more items; wait until every queued one is answered."""
        self._closed = True
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        group: list[_Waiting[Item, Answer]] = []
        try:
            # no await between the last look at the queue and clearing _flusher, so no item is left behind
            while self._queue:
                group = await self._gather()
                await self._commit(group)
        except BaseException:
            # cancelled with the event loop: whether the group committed is unknown, so its callers retry
            # with their idempotency keys and are answered from what was stored
            for waiting in [*group, *self._queue]:
                _answer(waiting, CommitterClosed("intake stopped before answering; send the request again"))
            self._queue = []
            raise
        finally:
            self._flusher = None

    async def _gather(self) -> list[_Waiting[Item, Answer]]:
        deadline = time.monotonic() + self._window_s
        while len(self._queue) < self._max_group and (left := deadline - time.monotonic()) > 0:
            self._more.clear()
            try:
                await asyncio.wait_for(self._more.wait(), left)
            except TimeoutError:
                break
        group, self._queue = self._queue[: self._max_group], self._queue[self._max_group :]
        return group

    async def _commit(self, group: list[_Waiting[Item, Answer]]) -> None:
        try:
            answers = await self._commit_group([w.item for w in group])
            if len(answers) != len(group):
                raise RuntimeError(f"a group of {len(group)} was answered {len(answers)} times")
        except Exception as exc:
            if len(group) == 1:
                _answer(group[0], exc)
                return
            log.warning("group commit failed; committing each request alone", size=len(group), error=type(exc).__name__)
            for waiting in group:
                await self._commit([waiting])
            return
        for waiting, answer in zip(group, answers, strict=True):
            _answer(waiting, answer)


def _answer(waiting: _Waiting[Item, Answer], answer: Answer | Exception) -> None:
    if waiting.answer.done():
        return
    if isinstance(answer, Exception):
        waiting.answer.set_exception(answer)
    else:
        waiting.answer.set_result(answer)


def _retrieve(answer: asyncio.Future[Answer]) -> None:
    if not answer.cancelled():
        answer.exception()
