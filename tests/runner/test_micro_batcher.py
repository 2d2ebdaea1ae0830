"""The micro-batcher under failure and shutdown (issue 10: paths no test reached)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from worker.batching import MicroBatcher


class Refused(Exception):
    """What the batch call raised."""


async def test_a_batch_call_that_raises_fails_every_item_of_the_batch() -> None:
    """Each waiter gets the error and decides (the runner logs and keeps the message)."""

    async def flush(items: Sequence[int]) -> list[bool]:
        raise Refused(f"{len(items)} items refused")

    batcher: MicroBatcher[int, bool] = MicroBatcher(flush, max_size=3, linger=0)

    results = await asyncio.gather(
        *(batcher.submit(item) for item in range(3)), return_exceptions=True
    )

    assert [str(result) for result in results] == ["3 items refused"] * 3
    assert all(isinstance(result, Refused) for result in results)
    assert batcher.backlog == 0


async def test_close_waits_for_a_flush_already_under_way() -> None:
    """Shutdown does not leave a delete half sent: aclose returns after the flush has landed."""
    release = asyncio.Event()
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[bool]:
        await release.wait()
        flushed.append(list(items))
        return [True] * len(items)

    batcher: MicroBatcher[int, bool] = MicroBatcher(flush, max_size=2, linger=60)
    submitted = asyncio.gather(batcher.submit(1), batcher.submit(2))
    for _ in range(5):  # loop turns, not time: the full batch starts its flush at once
        await asyncio.sleep(0)
    closing = asyncio.create_task(batcher.aclose())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not closing.done()
    assert batcher.backlog == 1  # the flush in progress

    release.set()
    await closing

    assert flushed == [[1, 2]]
    assert list(await submitted) == [True, True]
    assert batcher.backlog == 0


async def test_close_flushes_what_is_still_lingering() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return [item * 10 for item in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(flush, max_size=10, linger=60)
    waiting = asyncio.ensure_future(batcher.submit(4))
    await asyncio.sleep(0)
    assert batcher.backlog == 1

    await batcher.aclose()

    assert await waiting == 40


class Recorded:
    """A flush that answers each item with itself and records every group it was given."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.groups.append(list(items))
        return list(items)


def lingering_an_hour() -> tuple[MicroBatcher[int, int], Recorded]:
    flush = Recorded()
    return MicroBatcher(flush, max_size=10, linger=3_600), flush


async def test_once_hurried_nothing_lingers() -> None:
    batcher, flush = lingering_an_hour()
    waiting = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)

    batcher.hurry()

    assert await waiting == 1  # what was pending goes at once
    later = batcher.add(2)  # and what comes later: within a few loop turns, with no linger
    for _ in range(10):
        await asyncio.sleep(0)
    assert later.done()
    assert later.result() == 2
    assert flush.groups == [[1], [2]]


@pytest.mark.parametrize("answered", [1, 3], ids=["too-few", "too-many"])
async def test_a_batch_call_answering_the_wrong_number_of_items_fails_every_item(
    answered: int,
) -> None:
    """No waiter is left hanging, nor given another item's answer."""

    async def flush(items: Sequence[int]) -> list[int]:
        return list(range(answered))

    batcher: MicroBatcher[int, int] = MicroBatcher(flush, max_size=2, linger=0)

    results = await asyncio.gather(batcher.submit(7), batcher.submit(8), return_exceptions=True)

    assert [str(result) for result in results] == [
        f"a batch call answered {answered} of 2 items"
    ] * 2
    assert all(isinstance(result, ValueError) for result in results)
    assert batcher.backlog == 0


@pytest.mark.parametrize("max_size", [1, 3])
async def test_items_are_flushed_in_groups_of_at_most_max_size(max_size: int) -> None:
    groups: list[int] = []

    async def flush(items: Sequence[int]) -> list[int]:
        groups.append(len(items))
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(flush, max_size=max_size, linger=0)

    assert await asyncio.gather(*(batcher.submit(i) for i in range(7))) == list(range(7))
    assert sum(groups) == 7
    assert max(groups) == max_size


async def test_flush_now_sends_what_waits_without_the_linger() -> None:
    batcher, flush = lingering_an_hour()
    first, second = batcher.add(1), batcher.add(2)

    batcher.flush_now()

    assert list(await asyncio.wait_for(asyncio.gather(first, second), timeout=20)) == [1, 2]
    assert flush.groups == [[1, 2]]
