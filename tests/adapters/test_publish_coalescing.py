"""Publishing verdicts with few SNS calls: ``BatchingSink`` fills batches of ten per topic.

The real SNS adapter talks to moto; botocore's event hooks on the real client count the calls.
The tests of when a verdict stops waiting count the calls of the in-memory sink instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
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


def sink_on(
    sns_client: SNSClient,
    resources: LocalResources,
    *,
    linger: float = LINGER,
    unsafe_linger: float | None = None,
    handling: Callable[[], int] | None = None,
) -> BatchingSink:
    return BatchingSink(
        SnsSink(sns_client, resources.safe_topic_arn, resources.unsafe_topic_arn),
        linger=linger,
        unsafe_linger=unsafe_linger,
        handling=handling,
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
    sink = sink_on(
        sns_client,
        local_resources,
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
    sink = sink_on(
        sns_client,
        local_resources,
        linger=0,
        unsafe_linger=3_600,  # only the close can flush the unsafe batch
        handling=lambda: 5,  # others are being moderated: no burst's end flushes it either
    )
    unsafe = asyncio.create_task(sink.publish([publication(1, unsafe=True)]))

    assert await sink.publish([publication(2)]) == [None]

    assert [topic_of([entry]) for entry in calls.singles] == [{"safe"}]
    assert not unsafe.done()
    await sink.aclose()
    assert await unsafe == [None]
    assert [topic_of([entry]) for entry in calls.singles] == [{"safe"}, {"unsafe"}]


async def test_a_verdict_does_not_wait_when_no_other_message_is_being_moderated(
    sns_client: SNSClient, local_resources: LocalResources
) -> None:
    calls = PublishCalls(sns_client)
    sink = sink_on(
        sns_client,
        local_resources,
        linger=3_600,
        handling=lambda: 1,  # only this message is being moderated
    )

    assert await asyncio.wait_for(sink.publish([publication(1)]), timeout=20) == [None]

    assert len(calls.singles) == 1  # published at once, although the linger is an hour


async def test_the_last_verdict_of_a_burst_sends_every_waiting_batch() -> None:
    inner = InMemorySink()
    sink = BatchingSink(inner, linger=3_600, unsafe_linger=3_600, handling=lambda: 3)
    # Three messages being moderated: the first two verdicts wait for the third.
    waiting = [
        asyncio.create_task(sink.publish([publication(1)])),
        asyncio.create_task(sink.publish([publication(2, unsafe=True)])),
    ]
    for _ in range(5):  # loop turns: both have reached their batches
        await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)
    assert inner.calls == 0

    assert await asyncio.wait_for(sink.publish([publication(3)]), timeout=20) == [None]

    assert [await task for task in waiting] == [[None], [None]]
    assert inner.calls == 2  # one per topic
    assert [p.verdict.id for p in inner.published["safe"]] == ["v-1", "v-3"]
