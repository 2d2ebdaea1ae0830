"""The VerdictSink contract, run against the in-memory fake and the SNS adapter on moto."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest
from sns_stub import Refusal, SnsStub, publish_batch_answer, run_sns_stub
from support.builders import AWS_TRACE_HEADER, TRACEPARENT

from devstack.fakes import InMemorySink
from worker.adapters.aws import QUEUES_ONLY, open_aws_clients
from worker.adapters.sns import MAX_BATCH, SnsSink, batches, fifo_group_id
from worker.core.errors import SinkError
from worker.core.verdict import (
    SNS_MAX_MESSAGE_BYTES,
    CategoryRef,
    ModelRef,
    Verdict,
    format_score,
    sns_message,
)
from worker.ports import Publication, TraceContext, VerdictSink

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from devstack.moto_stack import LocalResources

Topic = Literal["safe", "unsafe"]
CRIMINAL_PLANNING = CategoryRef(code="O3", name="Criminal Planning")
GUNS = CategoryRef(code="O2", name="Guns and Illegal Weapons")
MOMENT = datetime(2026, 11, 26, 14, 0, 0, 120_000, tzinfo=UTC)


def make_verdict(
    verdict_id: str = "post-8f2c",
    *,
    unsafe: bool = False,
    categories: tuple[CategoryRef, ...] = (),
    score: float | None = None,
    conversation_id: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> Verdict:
    return Verdict(
        id=verdict_id,
        conversation_id=conversation_id,
        verdict="unsafe" if unsafe else "safe",
        categories=categories,
        unknown_codes=(),
        score=score,
        assessed_role="user",
        model=ModelRef(
            backend="sagemaker", endpoint="llama-guard-7b", prompt_format="llama-guard-1"
        ),
        flags=(),
        attributes=attributes or {},
        received_at=MOMENT,
        decided_at=MOMENT,
    )


@dataclass(frozen=True)
class Delivered:
    """A verdict as a subscriber of a topic sees it."""

    body: str
    trace: TraceContext


class SinkHarness(Protocol):
    sink: VerdictSink
    failing_sink: VerdictSink

    async def delivered(self, topic: Topic) -> list[Delivered]: ...


class FakeHarness:
    def __init__(self) -> None:
        self.fake = InMemorySink()
        self.sink: VerdictSink = self.fake
        broken = InMemorySink()
        broken.fail_next(1_000)
        self.failing_sink: VerdictSink = broken

    async def delivered(self, topic: Topic) -> list[Delivered]:
        name = self.fake.unsafe_topic if topic == "unsafe" else self.fake.safe_topic
        return [Delivered(p.verdict.to_json(), p.trace) for p in self.fake.published[name]]


class SnsHarness:
    def __init__(self, sns: SNSClient, sqs: SQSClient, resources: LocalResources) -> None:
        self.sqs = sqs
        self.resources = resources
        self.sink: VerdictSink = SnsSink(sns, resources.safe_topic_arn, resources.unsafe_topic_arn)
        self.failing_sink: VerdictSink = SnsSink(
            sns, resources.safe_topic_arn + "-missing", resources.unsafe_topic_arn + "-missing"
        )

    async def delivered(self, topic: Topic) -> list[Delivered]:
        return [
            Delivered(message["Body"], _trace_of(message)) for message in await self.messages(topic)
        ]

    async def messages(self, topic: Topic) -> list[MessageTypeDef]:
        """Everything the topic's raw-delivery subscriber queue holds."""
        return await drain(self.sqs, self.subscriber(topic))

    def subscriber(self, topic: Topic) -> str:
        if topic == "unsafe":
            return self.resources.unsafe_subscriber_queue_url
        return self.resources.safe_subscriber_queue_url


async def drain(sqs: SQSClient, queue_url: str) -> list[MessageTypeDef]:
    # SNS delivers to a moto queue before Publish returns, so empty means nothing more is coming.
    messages: list[MessageTypeDef] = []
    while True:
        response = await sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        batch = response.get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)


def attributes_of(message: MessageTypeDef) -> dict[str, tuple[str, str]]:
    """The SNS message attributes as raw delivery puts them on the SQS message."""
    return {
        name: (value["DataType"], value.get("StringValue", ""))
        for name, value in message.get("MessageAttributes", {}).items()
    }


def _trace_of(message: MessageTypeDef) -> TraceContext:
    attributes = attributes_of(message)
    return TraceContext(
        traceparent=attributes["traceparent"][1] if "traceparent" in attributes else None,
        aws_trace_header=attributes["AWSTraceHeader"][1]
        if "AWSTraceHeader" in attributes
        else None,
    )


class PublishCalls:
    """What the real SNS client was asked to send, recorded by botocore's own event hooks.

    moto does not enforce PublishBatch's 256 KiB total, so the tests check the calls themselves.
    """

    def __init__(self, sns: SNSClient) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.singles: list[dict[str, Any]] = []
        sns.meta.events.register("before-parameter-build.sns.PublishBatch", self._batch)
        sns.meta.events.register("before-parameter-build.sns.Publish", self._single)

    def _batch(self, params: dict[str, Any], **_: object) -> None:
        self.batches.append(copy.deepcopy(params["PublishBatchRequestEntries"]))

    def _single(self, params: dict[str, Any], **_: object) -> None:
        self.singles.append(copy.deepcopy(params))


def sns_size(entry: dict[str, Any]) -> int:
    """An entry's size as SNS documents it: body plus attribute names, types and values."""
    attributes = entry.get("MessageAttributes", {})
    return len(entry["Message"].encode()) + sum(
        len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
        for name, value in attributes.items()
    )


def padded_verdict(verdict_id: str, size: int) -> Verdict:
    """A safe verdict whose SNS message (no score, no trace) is exactly ``size`` bytes."""
    empty = sns_message(make_verdict(verdict_id, attributes={"pad": ""})).size
    return make_verdict(verdict_id, attributes={"pad": "x" * (size - empty)})


# Synchronous on purpose: getfixturevalue can set up the async moto fixtures only from outside
# the running event loop.
@pytest.fixture(params=["fake", "sns"])
def harness(request: pytest.FixtureRequest) -> SinkHarness:
    if request.param == "fake":
        return FakeHarness()
    return SnsHarness(
        request.getfixturevalue("sns_client"),
        request.getfixturevalue("sqs_client"),
        request.getfixturevalue("local_resources"),
    )


@pytest.fixture
def sns_harness(
    sns_client: SNSClient, sqs_client: SQSClient, local_resources: LocalResources
) -> SnsHarness:
    return SnsHarness(sns_client, sqs_client, local_resources)


@pytest.fixture
def fifo_harness(
    sns_client: SNSClient, sqs_client: SQSClient, fifo_resources: LocalResources
) -> SnsHarness:
    return SnsHarness(sns_client, sqs_client, fifo_resources)


class TestVerdictSinkContract:
    async def test_safe_verdict_goes_to_the_safe_topic_only(self, harness: SinkHarness) -> None:
        verdict = make_verdict("post-1")

        await harness.sink.publish([Publication(verdict)])

        assert [d.body for d in await harness.delivered("safe")] == [verdict.to_json()]
        assert await harness.delivered("unsafe") == []

    async def test_unsafe_verdict_goes_to_the_unsafe_topic_only(self, harness: SinkHarness) -> None:
        verdict = make_verdict("post-1", unsafe=True, categories=(CRIMINAL_PLANNING,))

        await harness.sink.publish([Publication(verdict)])

        assert [d.body for d in await harness.delivered("unsafe")] == [verdict.to_json()]
        assert await harness.delivered("safe") == []

    async def test_publish_returns_one_empty_slot_per_publication_in_order(
        self, harness: SinkHarness
    ) -> None:
        publications = [
            Publication(make_verdict("a")),
            Publication(make_verdict("b", unsafe=True, categories=(GUNS,))),
            Publication(make_verdict("c")),
        ]

        results = await harness.sink.publish(publications)

        assert list(results) == [None, None, None]

    async def test_mixed_batch_is_split_between_the_topics(self, harness: SinkHarness) -> None:
        publications = [
            Publication(make_verdict("a")),
            Publication(make_verdict("b", unsafe=True, categories=(GUNS,))),
            Publication(make_verdict("c")),
        ]

        await harness.sink.publish(publications)

        safe_ids = sorted(json.loads(d.body)["id"] for d in await harness.delivered("safe"))
        unsafe_ids = [json.loads(d.body)["id"] for d in await harness.delivered("unsafe")]
        assert (safe_ids, unsafe_ids) == (["a", "c"], ["b"])

    async def test_more_than_ten_verdicts_are_all_published(self, harness: SinkHarness) -> None:
        publications = [Publication(make_verdict(f"post-{index}")) for index in range(23)]

        results = await harness.sink.publish(publications)

        assert list(results) == [None] * 23
        delivered = {json.loads(d.body)["id"] for d in await harness.delivered("safe")}
        assert delivered == {f"post-{index}" for index in range(23)}

    async def test_trace_headers_travel_with_the_verdict(self, harness: SinkHarness) -> None:
        trace = TraceContext(TRACEPARENT, AWS_TRACE_HEADER)

        await harness.sink.publish([Publication(make_verdict(), trace)])

        [delivered] = await harness.delivered("safe")
        assert delivered.trace == trace

    async def test_publish_without_trace_headers_carries_none(self, harness: SinkHarness) -> None:
        await harness.sink.publish([Publication(make_verdict())])

        [delivered] = await harness.delivered("safe")
        assert delivered.trace == TraceContext()

    async def test_rejected_publications_become_sink_errors_not_exceptions(
        self, harness: SinkHarness
    ) -> None:
        publications = [
            Publication(make_verdict("a")),
            Publication(make_verdict("b", unsafe=True)),
            Publication(make_verdict("c")),
        ]

        results = await harness.failing_sink.publish(publications)

        assert [type(result) for result in results] == [SinkError] * 3

    async def test_publishing_nothing_returns_nothing(self, harness: SinkHarness) -> None:
        assert list(await harness.sink.publish([])) == []


class TestSnsSinkOnMoto:
    """What only the real adapter has: message attributes, FIFO ids, AWS failures."""

    async def test_unsafe_verdict_carries_filterable_message_attributes(
        self, sns_harness: SnsHarness
    ) -> None:
        verdict = make_verdict(unsafe=True, categories=(CRIMINAL_PLANNING, GUNS), score=0.93)

        await sns_harness.sink.publish([Publication(verdict)])

        [message] = await sns_harness.messages("unsafe")
        assert attributes_of(message) == {
            "verdict": ("String", "unsafe"),
            "categories": ("String.Array", '["O3", "O2"]'),
            "score": ("Number", "0.93"),
            "prompt_format": ("String", "llama-guard-1"),
        }

    async def test_safe_verdict_has_an_empty_categories_array(
        self, sns_harness: SnsHarness
    ) -> None:
        await sns_harness.sink.publish([Publication(make_verdict())])

        [message] = await sns_harness.messages("safe")
        assert attributes_of(message)["categories"] == ("String.Array", "[]")

    async def test_score_attribute_is_left_out_when_unknown(self, sns_harness: SnsHarness) -> None:
        await sns_harness.sink.publish([Publication(make_verdict(score=None))])

        [message] = await sns_harness.messages("safe")
        assert "score" not in attributes_of(message)

    async def test_batched_verdicts_carry_the_same_attributes(
        self, sns_harness: SnsHarness
    ) -> None:
        trace = TraceContext(TRACEPARENT, AWS_TRACE_HEADER)
        verdicts = [make_verdict(f"post-{index}", score=0.125) for index in range(2)]

        await sns_harness.sink.publish([Publication(verdict, trace) for verdict in verdicts])

        messages = await sns_harness.messages("safe")
        assert [attributes_of(message) for message in messages] == [
            {
                "verdict": ("String", "safe"),
                "categories": ("String.Array", "[]"),
                "score": ("Number", "0.125"),
                "prompt_format": ("String", "llama-guard-1"),
                "traceparent": ("String", TRACEPARENT),
                "AWSTraceHeader": ("String", AWS_TRACE_HEADER),
            }
        ] * 2

    async def test_a_verdict_sns_refuses_fails_alone(self, sns_harness: SnsHarness) -> None:
        # Over SNS's 256 KiB message limit, so it goes in a Publish of its own, which moto refuses;
        # the verdicts around it are still published.
        oversized = make_verdict("big", attributes={"blob": "x" * 300_000})
        publications = [
            Publication(make_verdict("a")),
            Publication(oversized),
            Publication(make_verdict("c")),
        ]

        results = await sns_harness.sink.publish(publications)

        assert [type(result) for result in results] == [type(None), SinkError, type(None)]
        delivered = sorted(json.loads(m["Body"])["id"] for m in await sns_harness.messages("safe"))
        assert delivered == ["a", "c"]

    async def test_a_batch_stays_within_256_kib_in_total(
        self, sns_harness: SnsHarness, sns_client: SNSClient
    ) -> None:
        calls = PublishCalls(sns_client)
        publications = [Publication(padded_verdict(f"p-{i}", 60_000)) for i in range(10)]

        results = await sns_harness.sink.publish(publications)

        assert list(results) == [None] * 10
        assert calls.batches, "expected PublishBatch calls"
        assert all(sum(map(sns_size, batch)) <= SNS_MAX_MESSAGE_BYTES for batch in calls.batches)

    async def test_verdicts_split_by_size_are_all_delivered_once(
        self, sns_harness: SnsHarness, sns_client: SNSClient
    ) -> None:
        calls = PublishCalls(sns_client)
        publications = [Publication(padded_verdict(f"p-{i}", 60_000)) for i in range(10)]

        await sns_harness.sink.publish(publications)

        delivered = sorted(json.loads(d.body)["id"] for d in await sns_harness.delivered("safe"))
        assert delivered == sorted(f"p-{i}" for i in range(10))
        sent = [entry for batch in calls.batches for entry in batch] + calls.singles
        assert len(sent) == 10

    async def test_one_large_verdict_does_not_share_a_batch_it_would_overflow(
        self, sns_harness: SnsHarness, sns_client: SNSClient
    ) -> None:
        calls = PublishCalls(sns_client)
        small = [Publication(make_verdict(f"small-{i}")) for i in range(9)]
        large = Publication(padded_verdict("large", SNS_MAX_MESSAGE_BYTES - 100))

        results = await sns_harness.sink.publish([*small[:4], large, *small[4:]])

        assert list(results) == [None] * 10
        assert all(sum(map(sns_size, batch)) <= SNS_MAX_MESSAGE_BYTES for batch in calls.batches)

    async def test_a_verdict_of_exactly_256_kib_is_published(
        self, sns_harness: SnsHarness, sns_client: SNSClient
    ) -> None:
        calls = PublishCalls(sns_client)
        verdict = padded_verdict("exact", SNS_MAX_MESSAGE_BYTES)

        [result] = await sns_harness.sink.publish([Publication(verdict)])

        assert result is None
        assert [sns_size(call) for call in calls.singles] == [SNS_MAX_MESSAGE_BYTES]

    async def test_publish_to_a_missing_topic_names_the_aws_error(
        self, sns_harness: SnsHarness
    ) -> None:
        [result] = await sns_harness.failing_sink.publish([Publication(make_verdict())])

        assert isinstance(result, SinkError)
        # moto's wording: a Publish to an ARN that is no topic is looked up as a mobile endpoint.
        assert str(result) == "SNS Publish failed: NotFound: Endpoint does not exist"

    async def test_a_failed_publish_batch_call_fails_every_entry_with_the_aws_error(
        self, sns_harness: SnsHarness
    ) -> None:
        publications = [Publication(make_verdict("a")), Publication(make_verdict("b"))]

        results = await sns_harness.failing_sink.publish(publications)

        assert [(type(result), str(result)) for result in results] == [
            (SinkError, "SNS PublishBatch failed: NotFound: Topic does not exist")
        ] * 2

    async def test_fifo_verdict_is_grouped_by_conversation(self, fifo_harness: SnsHarness) -> None:
        verdict = make_verdict("post-1", conversation_id="room-42")

        await fifo_harness.sink.publish([Publication(verdict)])

        [message] = await fifo_harness.messages("safe")
        assert message.get("Attributes", {}).get("MessageGroupId") == "room-42"

    async def test_fifo_verdict_carrying_its_sns_message_is_grouped_by_conversation(
        self, fifo_harness: SnsHarness
    ) -> None:
        """The FIFO ids come from the verdict also when the message was built before the sink."""
        verdict = make_verdict("post-1", conversation_id="room-42")

        [result] = await fifo_harness.sink.publish([Publication(verdict, sns=sns_message(verdict))])

        assert result is None
        [message] = await fifo_harness.messages("safe")
        assert message.get("Attributes", {}).get("MessageGroupId") == "room-42"

    async def test_fifo_verdict_without_conversation_is_grouped_by_id(
        self, fifo_harness: SnsHarness
    ) -> None:
        await fifo_harness.sink.publish([Publication(make_verdict("post-1"))])

        [message] = await fifo_harness.messages("safe")
        assert message.get("Attributes", {}).get("MessageGroupId") == "post-1"

    async def test_fifo_deduplication_id_is_the_sha256_of_the_verdict_id(
        self, fifo_harness: SnsHarness
    ) -> None:
        await fifo_harness.sink.publish([Publication(make_verdict("post-1"))])

        [message] = await fifo_harness.messages("safe")
        expected = hashlib.sha256(b"post-1").hexdigest()
        assert message.get("Attributes", {}).get("MessageDeduplicationId") == expected

    async def test_fifo_republishing_the_same_verdict_id_is_delivered_once(
        self, fifo_harness: SnsHarness
    ) -> None:
        first = make_verdict("post-1", conversation_id="room-42")
        again = make_verdict("post-1", conversation_id="room-42", score=0.5)

        await fifo_harness.sink.publish([Publication(first)])
        await fifo_harness.sink.publish([Publication(again)])

        assert len(await fifo_harness.messages("safe")) == 1

    async def test_fifo_batch_with_a_repeated_verdict_id_is_delivered_once(
        self, fifo_harness: SnsHarness
    ) -> None:
        publications = [Publication(make_verdict(verdict_id)) for verdict_id in ("a", "b", "a")]

        results = await fifo_harness.sink.publish(publications)

        assert list(results) == [None, None, None]
        delivered = sorted(json.loads(m["Body"])["id"] for m in await fifo_harness.messages("safe"))
        assert delivered == ["a", "b"]

    async def test_fifo_id_with_characters_sns_refuses_is_still_published(
        self, fifo_harness: SnsHarness
    ) -> None:
        verdict = make_verdict("post 8f2c ✓")

        [result] = await fifo_harness.sink.publish([Publication(verdict)])

        assert result is None
        [message] = await fifo_harness.messages("safe")
        group = message.get("Attributes", {}).get("MessageGroupId")
        assert group == hashlib.sha256("post 8f2c ✓".encode()).hexdigest()


SAFE_TOPIC = "arn:aws:sns:us-east-1:123456789012:safe"
UNSAFE_TOPIC = "arn:aws:sns:us-east-1:123456789012:unsafe"


@pytest.fixture
async def stubbed_sns(
    monkeypatch: pytest.MonkeyPatch, aws_session: AioSession
) -> AsyncIterator[tuple[SnsStub, SnsSink]]:
    """An SNS sink whose client talks to a stub answering what moto never answers."""
    async with run_sns_stub() as stub:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", stub.url)
        async with open_aws_clients(services=QUEUES_ONLY, session=aws_session) as aws:
            yield stub, SnsSink(aws.sns, SAFE_TOPIC, UNSAFE_TOPIC)


def outcomes(results: Sequence[Exception | None]) -> list[tuple[type[Exception], str] | None]:
    return [None if result is None else (type(result), str(result)) for result in results]


class TestSnsSinkOnStubbedAnswers:
    """PublishBatch answers moto never gives to what the sink sends: moto refuses an entry of a
    batch only for what the sink keeps out of batches (a message over 256 KiB, FIFO ids that do
    not fit the topic), and it always answers both lists."""

    async def test_a_refused_batch_entry_fails_alone_with_the_code_and_message_sns_gave(
        self, stubbed_sns: tuple[SnsStub, SnsSink]
    ) -> None:
        stub, sink = stubbed_sns
        stub.answer = publish_batch_answer(
            successful=["0", "2"],
            failed=[Refusal("1", "KMSThrottling", "Rate exceeded")],
        )

        results = await sink.publish([Publication(make_verdict(name)) for name in "abc"])

        assert stub.actions == ["PublishBatch"]
        assert outcomes(results) == [
            None,
            (SinkError, "SNS PublishBatch rejected the entry: KMSThrottling: Rate exceeded"),
            None,
        ]

    async def test_an_answer_without_a_successful_list_fails_each_refused_entry(
        self, stubbed_sns: tuple[SnsStub, SnsSink]
    ) -> None:
        """Every entry refused, the empty Successful list left out: no crash, each its refusal."""
        stub, sink = stubbed_sns
        stub.answer = publish_batch_answer(
            successful=None,
            failed=[
                Refusal("0", "InternalError", "try again"),
                Refusal("1", "KMSDisabled", "the key is disabled"),
            ],
        )

        results = await sink.publish([Publication(make_verdict(name)) for name in "ab"])

        assert outcomes(results) == [
            (SinkError, "SNS PublishBatch rejected the entry: InternalError: try again"),
            (SinkError, "SNS PublishBatch rejected the entry: KMSDisabled: the key is disabled"),
        ]

    async def test_an_answer_without_a_failed_list_publishes_every_entry(
        self, stubbed_sns: tuple[SnsStub, SnsSink]
    ) -> None:
        """Every entry accepted, the empty Failed list left out: every slot is empty."""
        stub, sink = stubbed_sns
        stub.answer = publish_batch_answer(successful=["0", "1"], failed=None)

        results = await sink.publish([Publication(make_verdict(name)) for name in "ab"])

        assert stub.actions == ["PublishBatch"]
        assert list(results) == [None, None]


class TestBatches:
    """How the sink groups one topic's messages into PublishBatch calls."""

    def test_ten_small_messages_make_one_batch(self) -> None:
        assert batches(range(10), [100] * 10) == [list(range(10))]

    def test_eleven_small_messages_make_two_batches_in_order(self) -> None:
        assert batches(range(11), [100] * 11) == [list(range(MAX_BATCH)), [10]]

    def test_messages_that_together_exceed_256_kib_are_split(self) -> None:
        third = SNS_MAX_MESSAGE_BYTES // 3

        assert batches(range(4), [third + 1] * 4) == [[0, 1], [2, 3]]

    def test_messages_that_add_up_to_exactly_256_kib_share_a_batch(self) -> None:
        half = SNS_MAX_MESSAGE_BYTES // 2

        assert batches(range(2), [half, half]) == [[0, 1]]

    def test_the_batch_after_a_split_again_holds_up_to_exactly_256_kib(self) -> None:
        half = SNS_MAX_MESSAGE_BYTES // 2

        assert batches(range(3), [SNS_MAX_MESSAGE_BYTES, half, half]) == [[0], [1, 2]]

    def test_a_message_over_256_kib_goes_alone(self) -> None:
        sizes = [10, SNS_MAX_MESSAGE_BYTES + 1, 10]

        assert batches([7, 8, 9], sizes) == [[7], [8], [9]]


class TestMessageFields:
    def test_score_is_rounded_to_five_decimals_without_trailing_zeros(self) -> None:
        assert [format_score(s) for s in (0.93, 1.0, 0.0, 0.123456789, 1e-7)] == [
            "0.93",
            "1",
            "0",
            "0.12346",
            "0",
        ]

    def test_fifo_group_id_keeps_a_valid_conversation_id(self) -> None:
        assert fifo_group_id(make_verdict(conversation_id="room-42")) == "room-42"

    def test_fifo_group_id_digests_an_id_longer_than_sns_allows(self) -> None:
        long_id = "p" * 200

        assert fifo_group_id(make_verdict(long_id)) == hashlib.sha256(long_id.encode()).hexdigest()
