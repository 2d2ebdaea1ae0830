"""Publishing verdicts with few SNS calls: ``BatchingSink`` fills batches of ten per topic.

The real SNS adapter talks to moto; botocore's event hooks on the real client count the calls.
The tests of when a verdict stops waiting count the calls of the in-memory sink instead.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from test_sns_sink_contract import PublishCalls, drain, make_verdict

from devstack.fakes import InMemorySink
from worker.adapters.sns import SnsSink
from worker.batching import BatchingSink
from worker.core.verdict import sns_message
from worker.ports import Publication

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

    from devstack.moto_stack import LocalResources

LINGER = 0.01


def publication(
    number: int, *, unsafe: bool = False, conversation: str | None = None
) -> Publication:
    return Publication(make_verdict(f"v-{number}", unsafe=unsafe, conversation_id=conversation))


def sink_on(sns_client: SNSClient, resources: LocalResources) -> BatchingSink:
    return BatchingSink(
        SnsSink(sns_client, resources.safe_topic_arn, resources.unsafe_topic_arn), linger=LINGER
    )


def topic_of(entries: list[dict[str, object]]) -> set[str]:
    return {json.loads(str(entry["Message"]))["verdict"] for entry in entries}


async def test_one_unsafe_verdict_in_ten_costs_one_call_per_ten_verdicts(
    sns_client: SNSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    sink = sink_on(sns_client, local_resources)
    publications = [publication(n, unsafe=n % 10 == 9) for n in range(100)]

    results = await asyncio.gather(*(sink.publish([p]) for p in publications))

    assert results == [[None]] * 100
    assert calls.singles == []
    assert [len(batch) for batch in calls.batches] == [10] * 10


async def test_every_batch_holds_verdicts_of_one_topic(
    sns_client: SNSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    sink = sink_on(sns_client, local_resources)

    await asyncio.gather(*(sink.publish([publication(n, unsafe=n % 3 == 0)]) for n in range(30)))

    assert all(len(topic_of(batch)) == 1 for batch in calls.batches)
    assert sorted(len(batch) for batch in calls.batches) == [10, 10, 10]


async def test_a_lone_verdict_is_published_without_waiting_for_nine_more(
    sns_client: SNSClient, sqs_client: SQSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    sink = sink_on(sns_client, local_resources)

    (error,) = await sink.publish([publication(1, unsafe=True)])

    assert error is None
    assert len(calls.singles) == 1
    delivered = await drain(sqs_client, local_resources.unsafe_subscriber_queue_url)
    assert [json.loads(message["Body"])["id"] for message in delivered] == ["v-1"]


async def test_what_does_not_fill_a_batch_is_published_after_the_linger(
    sns_client: SNSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    sink = sink_on(sns_client, local_resources)

    await asyncio.gather(*(sink.publish([publication(n)]) for n in range(13)))

    assert sorted(len(batch) for batch in calls.batches) == [3, 10]


async def test_close_publishes_what_is_waiting(
    sns_client: SNSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    sink = BatchingSink(
        SnsSink(sns_client, local_resources.safe_topic_arn, local_resources.unsafe_topic_arn),
        linger=3_600,  # only the close can flush it
    )
    waiting = asyncio.create_task(sink.publish([publication(1), publication(2, unsafe=True)]))
    await asyncio.sleep(0)  # both are now waiting for their batches

    await sink.aclose()

    assert await waiting == [None, None]
    assert len(calls.singles) == 2


async def test_the_prebuilt_sns_message_is_sent_as_it_is(
    sns_client: SNSClient, sqs_client: SQSClient, local_resources: LocalResources
) -> None:
    verdict = make_verdict("v-1")
    built = sns_message(verdict, traceparent=None)
    sink = sink_on(sns_client, local_resources)

    await sink.publish([Publication(verdict, sns=built)])

    (delivered,) = await drain(sqs_client, local_resources.safe_subscriber_queue_url)
    assert delivered["Body"] == built.body


async def test_awaited_publishes_of_one_fifo_group_reach_sns_in_order(
    sns_client: SNSClient, sqs_client: SQSClient, fifo_resources: LocalResources
) -> None:
    """The runner awaits a message's publish before the next of its group: order holds."""
    calls = PublishCalls(sns_client)
    sink = sink_on(sns_client, fifo_resources)

    for number in range(3):
        await sink.publish([publication(number, unsafe=number == 1, conversation="room-1")])

    sent = [json.loads(single["Message"])["id"] for single in calls.singles]
    assert sent == ["v-0", "v-1", "v-2"]


async def test_each_topic_waits_for_its_own_linger(
    sns_client: SNSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    sink = BatchingSink(
        SnsSink(sns_client, local_resources.safe_topic_arn, local_resources.unsafe_topic_arn),
        linger=0,
        unsafe_linger=3_600,  # only the close can flush the unsafe batch
    )
    unsafe = asyncio.create_task(sink.publish([publication(1, unsafe=True)]))

    assert await sink.publish([publication(2)]) == [None]

    assert [topic_of([entry]) for entry in calls.singles] == [{"safe"}]
    assert not unsafe.done()
    await sink.aclose()
    assert await unsafe == [None]
    assert [topic_of([entry]) for entry in calls.singles] == [{"safe"}, {"unsafe"}]


async def test_a_verdict_does_not_wait_when_too_few_messages_are_being_moderated(
    sns_client: SNSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    handling = 3  # three messages in the pipeline, this one included
    sink = BatchingSink(
        SnsSink(sns_client, local_resources.safe_topic_arn, local_resources.unsafe_topic_arn),
        linger=3_600,
        handling=lambda: handling,
    )

    assert await asyncio.wait_for(sink.publish([publication(1)]), timeout=20) == [None]

    assert len(calls.singles) == 1  # published at once, although the linger is an hour


async def _history(sink: BatchingSink, *, unsafe: bool, count: int = 60) -> None:
    """Verdicts published one at a time, so the sink's share of safe verdicts follows them."""
    for n in range(count):
        await sink.publish([publication(1000 + n, unsafe=unsafe)])


async def test_a_verdict_waits_while_those_being_moderated_are_expected_to_fill_its_batch() -> None:
    inner = InMemorySink()
    handling = 0
    sink = BatchingSink(inner, linger=3_600, unsafe_linger=0, handling=lambda: handling)
    await _history(sink, unsafe=False)  # nothing else being moderated: each one goes at once
    calls_before = inner.calls

    handling = 12  # all recent verdicts were safe: the other eleven should fill the batch
    first = [asyncio.create_task(sink.publish([publication(n)])) for n in range(9)]
    for _ in range(5):  # loop turns: every one has reached its batch
        await asyncio.sleep(0)
    assert not any(task.done() for task in first)

    assert await sink.publish([publication(9)]) == [None]

    assert inner.calls == calls_before + 1  # the ten in one call
    assert [await task for task in first] == [[None]] * 9


async def test_a_safe_verdict_does_not_wait_when_recent_verdicts_were_unsafe() -> None:
    inner = InMemorySink()
    handling = 0
    sink = BatchingSink(inner, linger=3_600, unsafe_linger=0, handling=lambda: handling)
    await _history(sink, unsafe=True)

    handling = 12  # eleven others being moderated, but few of them are expected to be safe

    assert await asyncio.wait_for(sink.publish([publication(1)]), timeout=20) == [None]


async def test_an_unsafe_verdict_waits_its_linger_even_on_a_quiet_worker(
    sns_client: SNSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    sink = BatchingSink(
        SnsSink(sns_client, local_resources.safe_topic_arn, local_resources.unsafe_topic_arn),
        linger=3_600,
        unsafe_linger=3_600,
        handling=lambda: 1,  # only this message is being moderated
    )
    unsafe = asyncio.create_task(sink.publish([publication(1, unsafe=True)]))
    for _ in range(5):  # loop turns: it has reached its batch
        await asyncio.sleep(0)

    assert not unsafe.done()
    assert calls.singles == []
    await sink.aclose()
    assert await unsafe == [None]
