"""What settling records besides the source calls: the outcome metrics by label, the dead-letter
logs with their error code and reason, and which releases count as made on shutdown."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from support.builders import make_verdict
from test_runner import ScriptedHandler, ack, run

from devstack.fakes import InMemorySource
from worker.pipeline import Ack, DeadLetter, Outcome, RetryLater
from worker.ports import ReceivedMessage
from worker.runner import RunnerConfig

CODE = "schema_violation"


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def dead_letter(message: ReceivedMessage) -> Outcome:
    return DeadLetter(CODE, "the field 'id' is required")


async def retry_later(message: ReceivedMessage) -> Outcome:
    return RetryLater("classifier: down")


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [(ack, "ack"), (retry_later, "retry_later"), (dead_letter, "dead_letter")],
)
async def test_each_settled_message_is_counted_under_its_outcome(
    behaviour: Any, outcome: str
) -> None:
    labels = ("ack", "retry_later", "dead_letter")
    before = {label: sample("moderation_outcomes_total", outcome=label) for label in labels}
    source = InMemorySource()
    source.send("x")

    await run(source, ScriptedHandler(behaviour))

    after = {label: sample("moderation_outcomes_total", outcome=label) for label in labels}
    assert {label: after[label] - before[label] for label in labels} == {
        label: 1.0 if label == outcome else 0.0 for label in labels
    }


async def test_a_dead_lettered_message_is_counted_and_logged_under_its_error_code() -> None:
    before = sample("moderation_dead_letters_total", code=CODE)
    source = InMemorySource()
    source.send('{"bad": true}')

    with capture_logs() as logs:
        await run(source, ScriptedHandler(dead_letter))

    assert sample("moderation_dead_letters_total", code=CODE) - before == 1.0
    assert events(logs, "message_dead_lettered") == [
        {"event": "message_dead_lettered", "log_level": "info", "error_code": CODE}
    ]


async def test_a_failed_dead_letter_copy_is_logged_with_the_source_error() -> None:
    source = InMemorySource()
    source.send('{"bad": true}')
    source.fail_next("dead_letter")

    with capture_logs() as logs:
        await run(source, ScriptedHandler(dead_letter), release_delay_base=9)

    assert events(logs, "dead_letter_failed") == [
        {
            "event": "dead_letter_failed",
            "log_level": "warning",
            "error": "SQS SendMessage (dead-letter queue) failed: injected failure",
            "visible_in_seconds": 9,
        }
    ]
    assert events(logs, "message_dead_lettered") == []


async def test_without_a_dead_letter_queue_the_error_code_is_logged_and_nothing_deleted() -> None:
    source = InMemorySource(dead_letter_queue=False)
    message_id = source.send('{"bad": true}')

    with capture_logs() as logs:
        await run(source, ScriptedHandler(dead_letter))

    assert events(logs, "dead_letter_queue_not_configured") == [
        {"event": "dead_letter_queue_not_configured", "log_level": "warning", "error_code": CODE}
    ]
    assert not source.is_deleted(message_id)


async def test_the_rest_of_a_fifo_group_released_after_a_failure_is_not_a_shutdown_release() -> (
    None
):
    """Only the messages after the failed one are released, and not counted as on shutdown."""
    source = InMemorySource()
    ids = [source.send(f"g{index}", group_id="g") for index in range(4)]

    async def second_fails_once(message: ReceivedMessage) -> Outcome:
        if message.body == "g1" and message.receive_count == 1:
            return await retry_later(message)
        return await ack(message)

    with capture_logs() as logs:
        stats = await run(source, ScriptedHandler(second_fails_once), release_delay_base=0)

    assert [entry["group_size"] for entry in events(logs, "fifo_group_released")] == [2]
    # g1 by its retry, g2 and g3 as the rest of the group; g0 was acked, never released.
    assert sorted(source.visibility_changes) == [(message_id, 0) for message_id in ids[1:]]
    assert stats.released_on_shutdown == 0
    assert stats.acked == 4


def test_the_release_delay_stops_doubling_at_two_to_the_thirtieth() -> None:
    """The exponent is capped, so a huge receive count neither overflows nor keeps growing."""
    config = RunnerConfig(release_delay_base=1.0, release_delay_max=2.0**40)

    assert config.release_delay(31) == 2**30
    assert config.release_delay(32) == 2**30
    assert config.release_delay(10**6) == 2**30


async def test_an_acked_verdict_is_counted_under_its_verdict() -> None:
    before = {v: sample("moderation_verdicts_total", verdict=v) for v in ("safe", "unsafe")}
    source = InMemorySource()
    source.send("x")

    async def unsafe(message: ReceivedMessage) -> Outcome:
        return Ack(make_verdict(message.body, unsafe=True))

    await run(source, ScriptedHandler(unsafe))

    after = {v: sample("moderation_verdicts_total", verdict=v) for v in ("safe", "unsafe")}
    assert {v: after[v] - before[v] for v in after} == {"safe": 0.0, "unsafe": 1.0}


async def test_each_release_for_a_retry_is_counted_and_logged_with_its_reason_and_delay() -> None:
    source = InMemorySource()
    for index in range(2):
        source.send(f"m{index}")

    with capture_logs() as logs:
        stats = await run(source, ScriptedHandler(retry_later), release_delay_base=7)

    assert stats.retried == 2
    assert events(logs, "message_released") == 2 * [
        {
            "event": "message_released",
            "log_level": "info",
            "reason": "classifier: down",
            "visible_in_seconds": 7,
        }
    ]
