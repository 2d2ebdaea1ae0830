"""What the in-memory fakes add beyond the port contract: time control and injected failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from support.clocks import ManualClock

from devstack.fakes import InMemorySink, InMemorySource
from worker.core.errors import SinkError, SourceError
from worker.core.verdict import ModelRef, Verdict
from worker.ports import Publication

MOMENT = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)


def verdict(verdict_id: str, *, unsafe: bool = False) -> Verdict:
    return Verdict(
        id=verdict_id,
        conversation_id=None,
        verdict="unsafe" if unsafe else "safe",
        categories=(),
        unknown_codes=(),
        score=None,
        assessed_role="user",
        model=ModelRef(backend="tgi", endpoint="http://tgi", prompt_format="llama-guard-3"),
        flags=(),
        attributes={},
        received_at=MOMENT,
        decided_at=MOMENT,
    )


class TestInMemorySource:
    async def test_message_reappears_when_its_visibility_timeout_passes(self) -> None:
        clock = ManualClock(1_000.0)
        source = InMemorySource(visibility_timeout=30, clock=clock)
        source.send("body")
        await source.receive(10, 0)

        clock.now += 30
        [again] = await source.receive(10, 0)

        assert again.receive_count == 2

    async def test_each_receive_hands_out_a_new_receipt_handle(self) -> None:
        clock = ManualClock(1_000.0)
        source = InMemorySource(visibility_timeout=30, clock=clock)
        source.send("body")
        [first] = await source.receive(10, 0)
        clock.now += 30

        [second] = await source.receive(10, 0)

        assert first.receipt_handle != second.receipt_handle

    async def test_waiting_receive_returns_as_soon_as_a_message_is_sent(self) -> None:
        source = InMemorySource()
        poll = asyncio.create_task(source.receive(10, 20))
        await asyncio.sleep(0)

        source.send("body")
        messages = await asyncio.wait_for(poll, timeout=1)

        assert [m.body for m in messages] == ["body"]

    async def test_in_flight_lists_received_messages_until_deleted(self) -> None:
        source = InMemorySource()
        message_id = source.send("body")
        received = await source.receive(10, 0)
        in_flight_before = source.in_flight()

        await source.delete(received)

        assert (in_flight_before, source.in_flight()) == ([message_id], [])

    async def test_visibility_changes_are_recorded(self) -> None:
        source = InMemorySource()
        source.send("body")
        [message] = await source.receive(10, 0)

        await source.change_visibility([(message, 45)])

        assert source.visibility_changes == [(message.message_id, 45)]

    async def test_injected_receive_failure_raises_once(self) -> None:
        source = InMemorySource()
        source.send("body")
        source.fail_next("receive")

        with pytest.raises(SourceError):
            await source.receive(10, 0)
        assert len(await source.receive(10, 0)) == 1

    async def test_injected_delete_failure_fails_the_whole_call(self) -> None:
        source = InMemorySource()
        source.send("body")
        received = await source.receive(10, 0)
        source.fail_next("delete")

        failed = await source.delete(received)

        assert (list(failed), source.remaining()) == (list(received), 1)

    async def test_injected_visibility_failure_fails_the_whole_call(self) -> None:
        source = InMemorySource()
        source.send("body")
        received = await source.receive(10, 0)
        source.fail_next("change_visibility")

        failed = await source.change_visibility([(m, 0) for m in received])

        assert (list(failed), source.visibility_changes) == (list(received), [])

    async def test_injected_dead_letter_failure_raises_and_copies_nothing(self) -> None:
        source = InMemorySource()
        source.send("body")
        [message] = await source.receive(10, 0)
        source.fail_next("dead_letter")

        with pytest.raises(SourceError):
            await source.dead_letter(message, "invalid_json", "not JSON")
        assert source.dead_letters == []

    async def test_dead_letter_records_code_detail_and_body(self) -> None:
        source = InMemorySource()
        source.send("{oops")
        [message] = await source.receive(10, 0)

        await source.dead_letter(message, "invalid_json", "not JSON")

        [letter] = source.dead_letters
        assert (letter.body, letter.error_code, letter.detail) == (
            "{oops",
            "invalid_json",
            "not JSON",
        )


class TestInMemorySink:
    async def test_injected_failures_hit_only_the_next_publications(self) -> None:
        sink = InMemorySink()
        sink.fail_next(2)

        results = await sink.publish([Publication(verdict(str(i))) for i in range(3)])

        assert [type(r) for r in results] == [SinkError, SinkError, type(None)]
        assert [p.verdict.id for p in sink.all_published] == ["2"]

    async def test_publications_are_recorded_per_topic(self) -> None:
        sink = InMemorySink(safe_topic="safe-topic", unsafe_topic="unsafe-topic")

        await sink.publish([Publication(verdict("a")), Publication(verdict("b", unsafe=True))])

        ids = {topic: [p.verdict.id for p in found] for topic, found in sink.published.items()}
        assert ids == {"safe-topic": ["a"], "unsafe-topic": ["b"]}

    async def test_each_publish_call_is_counted(self) -> None:
        sink = InMemorySink()

        await sink.publish([Publication(verdict("a")), Publication(verdict("b"))])
        await sink.publish([Publication(verdict("c"))])

        assert sink.calls == 2
