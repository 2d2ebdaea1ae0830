"""``BatchingSink`` forgets publications once they are answered: what counts as "still on its
way" is only what waits now, so a later burst is judged on its own."""

from __future__ import annotations

import asyncio

from support.builders import make_verdict

from devstack.fakes import InMemorySink
from worker.batching import BatchingSink
from worker.ports import Publication


def publication(number: int) -> Publication:
    return Publication(make_verdict(f"v-{number}"))


async def test_answered_publications_no_longer_count_as_on_their_way() -> None:
    inner = InMemorySink()
    handling = 1
    sink = BatchingSink(inner, linger=3_600, handling=lambda: handling)

    # One message with two publications: nothing else is coming, so they go at once.
    first_burst = sink.publish([publication(1), publication(2)])
    assert await asyncio.wait_for(first_burst, timeout=20) == [None, None]
    assert inner.calls == 1

    # Two messages being moderated: the first one's verdict waits for the second's, then both
    # go in one call (the publications already answered must not count as still waiting).
    handling = 2
    second_burst = asyncio.gather(sink.publish([publication(3)]), sink.publish([publication(4)]))

    assert list(await asyncio.wait_for(second_burst, timeout=20)) == [[None], [None]]
    assert inner.calls == 2
    assert [p.verdict.id for p in inner.all_published] == ["v-1", "v-2", "v-3", "v-4"]
