"""The group committer on its own: who shares a transaction, when callers hear back, and what one bad item costs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.intake.group_commit import CommitterClosed, GroupCommitter


class Ledger:
    """A commit function that records each group and can be held open or made to fail."""

    def __init__(self, bad: frozenset[str] = frozenset()) -> None:
        self.groups: list[list[str]] = []
        self.committed: list[str] = []
        self.bad = bad
        self.release = asyncio.Event()
        self.release.set()
        self.began = asyncio.Event()

    async def __call__(self, items: Sequence[str]) -> list[str | Exception]:
        self.groups.append(list(items))
        self.began.set()
        await self.release.wait()
        if self.bad & set(items):
            raise RuntimeError("the transaction failed")
        self.committed += items
        return [ValueError(f"{item} refused") if item.startswith("refused") else item.upper() for item in items]


async def test_callers_arriving_together_share_one_commit_and_hear_back_only_after_it() -> None:
    ledger = Ledger()
    ledger.release.clear()
    committer: GroupCommitter[str, str] = GroupCommitter(ledger, window_s=0.05, max_group=64)
    calls = [asyncio.create_task(committer.submit(name)) for name in ("a", "b", "c")]
    await asyncio.wait_for(ledger.began.wait(), 5)
    assert not any(call.done() for call in calls), "nobody is answered before the commit"
    ledger.release.set()
    assert await asyncio.gather(*calls) == ["A", "B", "C"]
    assert ledger.groups == [["a", "b", "c"]]


async def test_a_group_holds_at_most_max_group_items() -> None:
    ledger = Ledger()
    committer: GroupCommitter[str, str] = GroupCommitter(ledger, window_s=0.05, max_group=2)
    answers = await asyncio.gather(*(committer.submit(str(n)) for n in range(5)))
    assert answers == [str(n) for n in range(5)]
    assert [len(group) for group in ledger.groups] == [2, 2, 1]


async def test_a_refused_item_gets_its_error_and_the_rest_of_the_group_commits() -> None:
    ledger = Ledger()
    committer: GroupCommitter[str, str] = GroupCommitter(ledger, window_s=0.05)
    answers = await asyncio.gather(*(committer.submit(s) for s in ("a", "refused-b", "c")), return_exceptions=True)
    assert answers[0] == "A" and answers[2] == "C"
    assert isinstance(answers[1], ValueError) and str(answers[1]) == "refused-b refused"
    assert len(ledger.groups) == 1


async def test_when_the_group_transaction_fails_each_item_is_committed_alone_and_only_the_bad_one_fails() -> None:
    ledger = Ledger(bad=frozenset({"poison"}))
    committer: GroupCommitter[str, str] = GroupCommitter(ledger, window_s=0.05)
    answers = await asyncio.gather(*(committer.submit(s) for s in ("a", "poison", "c")), return_exceptions=True)
    assert answers[0] == "A" and answers[2] == "C"
    assert isinstance(answers[1], RuntimeError)
    assert ledger.groups == [["a", "poison", "c"], ["a"], ["poison"], ["c"]]
    assert ledger.committed == ["a", "c"]


async def test_close_answers_what_was_queued_then_refuses_more_and_leaves_no_task() -> None:
    ledger = Ledger()
    committer: GroupCommitter[str, str] = GroupCommitter(ledger, window_s=0.05)
    queued = asyncio.create_task(committer.submit("last"))
    await asyncio.sleep(0)
    await committer.close()
    assert queued.done() and queued.result() == "LAST"
    with pytest.raises(CommitterClosed, match="shutting down"):
        await committer.submit("late")


async def test_an_idle_committer_holds_no_task_and_starts_one_for_the_next_item() -> None:
    committer: GroupCommitter[str, str] = GroupCommitter(Ledger(), window_s=0)
    assert await committer.submit("one") == "ONE"
    for _ in range(5):  # let the flusher see the empty queue and end
        await asyncio.sleep(0)
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "intake-group-commit"]
    assert await committer.submit("two") == "TWO"


def test_a_window_below_zero_or_an_empty_group_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        GroupCommitter(Ledger(), window_s=0.001, max_group=0)
