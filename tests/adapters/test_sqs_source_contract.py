"""The MessageSource contract, run against the in-memory fake and the SQS adapter on moto."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import pytest
from botocore.exceptions import ClientError
from sqs_stub import SqsStub, run_sqs_stub
from structlog.testing import capture_logs
from support.builders import AWS_TRACE_HEADER, TRACEPARENT
from support.conditions import wait_until

from devstack.fakes import InMemorySource
from worker.adapters.aws import QUEUES_ONLY, open_aws_clients
from worker.adapters.sqs import FIFO_DEAD_LETTER_GROUP, MAX_ERROR_DETAIL_CHARS, SqsSource
from worker.core.errors import SourceError
from worker.ports import MessageSource, ReceivedMessage, TraceContext

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from botocore.awsrequest import AWSPreparedRequest
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        MessageAttributeValueOutputTypeDef,
        SendMessageRequestTypeDef,
    )

    from devstack.moto_stack import LocalResources

NO_TRACE = TraceContext()
# Half the 20 s long poll: a receive that waited its poll out (or turned the cancel into a
# result) fails; a cancelled one ends at once. Only a guard against a hang, not a figure.
ABANDON_GUARD_SECONDS = 10.0
# A 64-bit trace id (16 hex digits) where W3C asks for 128 bits (32).
MALFORMED_TRACEPARENT = "00-4bf92f3577b34da6-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class DeadLetterCopy:
    """A message as read back from a dead-letter queue."""

    body: str
    error_code: str | None
    error_detail: str | None
    traceparent: str | None


class SourceHarness(Protocol):
    """One implementation of the port plus a way to feed it and look behind it."""

    source: MessageSource
    source_without_dead_letter_queue: MessageSource

    @property
    def polls_started(self) -> int:
        """Receives of ``source`` begun so far (for SQS: whose request is being sent)."""
        ...

    async def send(self, body: str, *, trace: TraceContext = ...) -> None: ...

    async def remaining(self) -> int: ...

    async def dead_letters(self) -> list[DeadLetterCopy]: ...


class PollCountingSource(InMemorySource):
    """The in-memory source, counting the receives begun."""

    def __init__(self) -> None:
        super().__init__(visibility_timeout=30)
        self.polls_started = 0

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        self.polls_started += 1
        return await super().receive(max_messages, wait_seconds)


class FakeHarness:
    def __init__(self) -> None:
        self.fake = PollCountingSource()
        self.source: MessageSource = self.fake
        self.source_without_dead_letter_queue: MessageSource = InMemorySource(
            dead_letter_queue=False
        )

    @property
    def polls_started(self) -> int:
        return self.fake.polls_started

    async def send(self, body: str, *, trace: TraceContext = NO_TRACE) -> None:
        self.fake.send(body, trace=trace)

    async def remaining(self) -> int:
        return self.fake.remaining()

    async def dead_letters(self) -> list[DeadLetterCopy]:
        return [
            DeadLetterCopy(letter.body, letter.error_code, letter.detail, letter.trace.traceparent)
            for letter in self.fake.dead_letters
        ]


class SqsHarness:
    def __init__(self, client: SQSClient, resources: LocalResources) -> None:
        assert resources.dead_letter_queue_url is not None
        self.client = client
        self.queue_url = resources.queue_url
        self.dead_letter_queue_url = resources.dead_letter_queue_url
        self.source: MessageSource = SqsSource(client, self.queue_url, self.dead_letter_queue_url)
        self.source_without_dead_letter_queue: MessageSource = SqsSource(client, self.queue_url)
        self._polls_started = 0
        client.meta.events.register("before-send.sqs.ReceiveMessage", self._count_poll)

    def _count_poll(self, **_: object) -> None:
        self._polls_started += 1

    @property
    def polls_started(self) -> int:
        return self._polls_started

    async def send(self, body: str, *, trace: TraceContext = NO_TRACE) -> None:
        await send_with_trace(self.client, self.queue_url, body, trace)

    async def remaining(self) -> int:
        response = await self.client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return sum(int(count) for count in response["Attributes"].values())

    async def dead_letters(self) -> list[DeadLetterCopy]:
        response = await self.client.receive_message(
            QueueUrl=self.dead_letter_queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
        )
        copies = []
        for message in response.get("Messages", []):
            attributes = message.get("MessageAttributes", {})
            copies.append(
                DeadLetterCopy(
                    body=message["Body"],
                    error_code=_string_value(attributes, "error_code"),
                    error_detail=_string_value(attributes, "error_detail"),
                    traceparent=_string_value(attributes, "traceparent"),
                )
            )
        return copies


def _string_value(
    attributes: dict[str, MessageAttributeValueOutputTypeDef], name: str
) -> str | None:
    attribute = attributes.get(name)
    return None if attribute is None else attribute.get("StringValue")


async def send_with_trace(
    client: SQSClient,
    queue_url: str,
    body: str,
    trace: TraceContext = NO_TRACE,
    group_id: str | None = None,
) -> None:
    """Send as a producer would: ``traceparent`` attribute, ``AWSTraceHeader`` system attribute."""
    request: SendMessageRequestTypeDef = {"QueueUrl": queue_url, "MessageBody": body}
    if trace.traceparent:
        request["MessageAttributes"] = {
            "traceparent": {"DataType": "String", "StringValue": trace.traceparent}
        }
    if trace.aws_trace_header:
        request["MessageSystemAttributes"] = {
            "AWSTraceHeader": {"DataType": "String", "StringValue": trace.aws_trace_header}
        }
    if group_id is not None:
        request["MessageGroupId"] = group_id
        request["MessageDeduplicationId"] = f"{group_id}-{body}"
    await client.send_message(**request)


async def receive_exactly(source: MessageSource, count: int) -> list[ReceivedMessage]:
    """Receive until ``count`` messages arrived (a receive returns at most ten)."""
    received: list[ReceivedMessage] = []
    for _ in range(count + 3):
        received.extend(await source.receive(10, 0))
        if len(received) >= count:
            break
    assert len(received) == count
    return received


# Synchronous on purpose: getfixturevalue can set up the async moto fixtures only from outside
# the running event loop.
@pytest.fixture(params=["fake", "sqs"])
def harness(request: pytest.FixtureRequest) -> SourceHarness:
    if request.param == "fake":
        return FakeHarness()
    client: SQSClient = request.getfixturevalue("sqs_client")
    resources: LocalResources = request.getfixturevalue("local_resources")
    return SqsHarness(client, resources)


class TestMessageSourceContract:
    async def test_receive_returns_the_sent_body_with_receive_count_one(
        self, harness: SourceHarness
    ) -> None:
        await harness.send('{"id": "post-1", "content": "hello"}')

        [message] = await harness.source.receive(10, 0)

        assert message.body == '{"id": "post-1", "content": "hello"}'
        assert message.receive_count == 1

    async def test_receive_stamps_received_at_in_utc(self, harness: SourceHarness) -> None:
        await harness.send("body")

        [message] = await harness.source.receive(10, 0)

        assert message.received_at.utcoffset() == timedelta(0)

    async def test_receive_returns_nothing_from_an_empty_queue(
        self, harness: SourceHarness
    ) -> None:
        assert list(await harness.source.receive(10, 0)) == []

    async def test_receive_returns_at_most_max_messages(self, harness: SourceHarness) -> None:
        for index in range(3):
            await harness.send(f"body-{index}")

        assert len(await harness.source.receive(2, 0)) == 2

    async def test_receive_clamps_max_messages_to_ten(self, harness: SourceHarness) -> None:
        for index in range(12):
            await harness.send(f"body-{index}")

        assert len(await harness.source.receive(50, 0)) <= 10

    async def test_received_message_is_not_received_again_while_invisible(
        self, harness: SourceHarness
    ) -> None:
        await harness.send("body")
        await harness.source.receive(10, 0)

        assert list(await harness.source.receive(10, 0)) == []

    async def test_released_message_is_received_again_with_receive_count_two(
        self, harness: SourceHarness
    ) -> None:
        await harness.send("body")
        [first] = await harness.source.receive(10, 0)

        failed = await harness.source.change_visibility([(first, 0)])
        [second] = await harness.source.receive(10, 0)

        assert list(failed) == []
        assert second.message_id == first.message_id
        assert second.receive_count == 2

    async def test_receive_carries_traceparent_and_aws_trace_header(
        self, harness: SourceHarness
    ) -> None:
        await harness.send("body", trace=TraceContext(TRACEPARENT, AWS_TRACE_HEADER))

        [message] = await harness.source.receive(10, 0)

        assert message.trace == TraceContext(TRACEPARENT, AWS_TRACE_HEADER)

    async def test_receive_without_trace_headers_has_an_empty_trace(
        self, harness: SourceHarness
    ) -> None:
        await harness.send("body")

        [message] = await harness.source.receive(10, 0)

        assert message.trace == TraceContext()

    async def test_cancelling_a_long_poll_abandons_it(self, harness: SourceHarness) -> None:
        poll = asyncio.create_task(harness.source.receive(10, 20))
        await wait_until(lambda: harness.polls_started == 1)

        poll.cancel()
        await asyncio.wait({poll}, timeout=ABANDON_GUARD_SECONDS)

        assert poll.cancelled()
        # moto's server thread is still waiting on the abandoned poll; a message ends its wait.
        await harness.send("wake the abandoned poll")

    async def test_delete_removes_the_message(self, harness: SourceHarness) -> None:
        await harness.send("body")
        received = await harness.source.receive(10, 0)

        failed = await harness.source.delete(received)

        assert list(failed) == []
        assert await harness.remaining() == 0

    async def test_delete_handles_more_than_ten_messages(self, harness: SourceHarness) -> None:
        for index in range(12):
            await harness.send(f"body-{index}")
        received = await receive_exactly(harness.source, 12)

        failed = await harness.source.delete(received)

        assert list(failed) == []
        assert await harness.remaining() == 0

    async def test_delete_returns_only_the_messages_it_could_not_delete(
        self, harness: SourceHarness
    ) -> None:
        await harness.send("body")
        [message] = await harness.source.receive(10, 0)
        unknown = dataclasses.replace(message, message_id="other", receipt_handle="not-a-handle")

        failed = await harness.source.delete([message, unknown])

        assert [m.message_id for m in failed] == ["other"]
        assert await harness.remaining() == 0

    async def test_change_visibility_handles_more_than_ten_messages(
        self, harness: SourceHarness
    ) -> None:
        for index in range(12):
            await harness.send(f"body-{index}")
        received = await receive_exactly(harness.source, 12)

        failed = await harness.source.change_visibility([(m, 0) for m in received])

        assert list(failed) == []
        assert len(await receive_exactly(harness.source, 12)) == 12

    async def test_change_visibility_reports_a_deleted_message_as_failed(
        self, harness: SourceHarness
    ) -> None:
        await harness.send("body")
        received = await harness.source.receive(10, 0)
        await harness.source.delete(received)

        failed = await harness.source.change_visibility([(received[0], 0)])

        assert [m.message_id for m in failed] == [received[0].message_id]

    async def test_dead_letter_copies_the_original_body_with_code_and_detail(
        self, harness: SourceHarness
    ) -> None:
        body = "not json ✓ {"
        await harness.send(body)
        [message] = await harness.source.receive(10, 0)

        copied = await harness.source.dead_letter(
            message, "invalid_json", "the body is not JSON (line 1, column 12)"
        )

        assert copied is True
        assert await harness.dead_letters() == [
            DeadLetterCopy(body, "invalid_json", "the body is not JSON (line 1, column 12)", None)
        ]

    async def test_dead_letter_keeps_the_traceparent(self, harness: SourceHarness) -> None:
        await harness.send("body", trace=TraceContext(traceparent=TRACEPARENT))
        [message] = await harness.source.receive(10, 0)

        await harness.source.dead_letter(message, "schema_violation", "`id` is missing")

        [copy] = await harness.dead_letters()
        assert copy.traceparent == TRACEPARENT

    async def test_dead_letter_without_a_dead_letter_queue_returns_false(
        self, harness: SourceHarness
    ) -> None:
        await harness.send("body")
        [message] = await harness.source.receive(10, 0)

        copied = await harness.source_without_dead_letter_queue.dead_letter(
            message, "invalid_json", "not JSON"
        )

        assert copied is False
        assert await harness.dead_letters() == []


class TestTraceHeadersOnMoto:
    """The SQS adapter forwards only well-formed trace headers (``worker.core.tracing``)."""

    @pytest.fixture
    def sqs_harness(self, sqs_client: SQSClient, local_resources: LocalResources) -> SqsHarness:
        return SqsHarness(sqs_client, local_resources)

    async def test_a_malformed_traceparent_is_dropped_on_receive(
        self, sqs_harness: SqsHarness
    ) -> None:
        await sqs_harness.send("body", trace=TraceContext(MALFORMED_TRACEPARENT, AWS_TRACE_HEADER))

        [message] = await sqs_harness.source.receive(10, 0)

        assert message.trace == TraceContext(None, AWS_TRACE_HEADER)

    async def test_a_dropped_traceparent_is_logged_with_the_message_id_and_reason(
        self, sqs_harness: SqsHarness
    ) -> None:
        await sqs_harness.send("body", trace=TraceContext(MALFORMED_TRACEPARENT))

        with capture_logs() as logs:
            [message] = await sqs_harness.source.receive(10, 0)

        [event] = [entry for entry in logs if entry["event"] == "traceparent_dropped"]
        assert event["message_id"] == message.message_id
        assert event["reason"] == "not version-traceid-parentid-flags in lowercase hex"
        assert event["log_level"] == "warning"

    async def test_a_long_malformed_traceparent_is_logged_only_in_part(
        self, sqs_harness: SqsHarness
    ) -> None:
        hostile = "[" + " " * 10_000
        await sqs_harness.send("body", trace=TraceContext(hostile))

        with capture_logs() as logs:
            await sqs_harness.source.receive(10, 0)

        [event] = [entry for entry in logs if entry["event"] == "traceparent_dropped"]
        assert event["length"] == len(hostile)
        assert len(event["value_prefix"]) < 100

    async def test_a_dropped_traceparent_is_not_on_the_dead_letter_copy(
        self, sqs_harness: SqsHarness
    ) -> None:
        await sqs_harness.send("body", trace=TraceContext(MALFORMED_TRACEPARENT))
        [message] = await sqs_harness.source.receive(10, 0)

        await sqs_harness.source.dead_letter(message, "invalid_json", "not JSON")

        [copy] = await sqs_harness.dead_letters()
        assert copy.traceparent is None

    async def test_a_well_formed_traceparent_is_received_without_a_log_line(
        self, sqs_harness: SqsHarness
    ) -> None:
        await sqs_harness.send("body", trace=TraceContext(TRACEPARENT, AWS_TRACE_HEADER))

        with capture_logs() as logs:
            [message] = await sqs_harness.source.receive(10, 0)

        assert message.trace == TraceContext(TRACEPARENT, AWS_TRACE_HEADER)
        assert logs == []

    async def test_a_malformed_aws_trace_header_is_dropped_and_logged(
        self, sqs_harness: SqsHarness
    ) -> None:
        await sqs_harness.send("body", trace=TraceContext(TRACEPARENT, "not-an-x-ray-header"))

        with capture_logs() as logs:
            [message] = await sqs_harness.source.receive(10, 0)

        assert message.trace == TraceContext(TRACEPARENT, None)
        assert logs == [
            {
                "event": "aws_trace_header_dropped",
                "log_level": "warning",
                "message_id": message.message_id,
                "reason": "not ';'-separated Key=Value fields in visible ASCII",
                "length": len("not-an-x-ray-header"),
                "value_prefix": "not-an-x-ray-header",
            }
        ]


class TestSqsSourceOnMoto:
    """What only the real adapter has: FIFO fields, AWS failures, receive options."""

    async def test_dead_letter_truncates_detail_to_the_limit_with_an_ellipsis(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        harness = SqsHarness(sqs_client, local_resources)
        await harness.send("body")
        [message] = await harness.source.receive(10, 0)

        await harness.source.dead_letter(message, "schema_violation", "x" * 5_000)

        [copy] = await harness.dead_letters()
        assert copy.error_detail == "x" * (MAX_ERROR_DETAIL_CHARS - 1) + "…"

    async def test_dead_letter_keeps_a_detail_of_exactly_the_limit_whole(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        harness = SqsHarness(sqs_client, local_resources)
        await harness.send("body")
        [message] = await harness.source.receive(10, 0)
        detail = "y" * MAX_ERROR_DETAIL_CHARS

        await harness.source.dead_letter(message, "schema_violation", detail)

        [copy] = await harness.dead_letters()
        assert copy.error_detail == detail

    async def test_dead_letter_with_an_empty_detail_says_there_is_none(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        """SQS refuses an empty attribute value; an exception without a message gives one."""
        harness = SqsHarness(sqs_client, local_resources)
        await harness.send("body")
        [message] = await harness.source.receive(10, 0)

        copied = await harness.source.dead_letter(message, "prompt_too_long", "")

        assert copied is True
        assert await harness.dead_letters() == [
            DeadLetterCopy("body", "prompt_too_long", "(no detail)", None)
        ]

    async def test_receive_reports_the_fifo_message_group(
        self, sqs_client: SQSClient, fifo_resources: LocalResources
    ) -> None:
        await send_with_trace(sqs_client, fifo_resources.queue_url, "body", group_id="room-42")
        source = SqsSource(sqs_client, fifo_resources.queue_url)

        [message] = await source.receive(10, 0)

        assert message.group_id == "room-42"

    async def test_dead_letter_to_fifo_keeps_group_and_deduplicates_by_message_id(
        self, sqs_client: SQSClient, fifo_resources: LocalResources
    ) -> None:
        assert fifo_resources.dead_letter_queue_url is not None
        await send_with_trace(sqs_client, fifo_resources.queue_url, "body", group_id="room-42")
        source = SqsSource(
            sqs_client, fifo_resources.queue_url, fifo_resources.dead_letter_queue_url
        )
        [message] = await source.receive(10, 0)

        await source.dead_letter(message, "invalid_json", "not JSON")
        await source.dead_letter(message, "invalid_json", "not JSON")

        copies = await _read_system_attributes(sqs_client, fifo_resources.dead_letter_queue_url)
        assert copies == [
            {"MessageGroupId": "room-42", "MessageDeduplicationId": message.message_id}
        ]

    async def test_dead_letter_to_fifo_without_group_uses_the_dead_letter_group(
        self, sqs_client: SQSClient, fifo_resources: LocalResources
    ) -> None:
        assert fifo_resources.dead_letter_queue_url is not None
        source = SqsSource(
            sqs_client, fifo_resources.queue_url, fifo_resources.dead_letter_queue_url
        )
        message = ReceivedMessage("m-1", "handle", "body", 1, datetime.now(UTC))

        await source.dead_letter(message, "invalid_json", "not JSON")

        [copy] = await _read_system_attributes(sqs_client, fifo_resources.dead_letter_queue_url)
        assert copy["MessageGroupId"] == FIFO_DEAD_LETTER_GROUP

    async def test_receive_applies_the_configured_visibility_timeout(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        await send_with_trace(sqs_client, local_resources.queue_url, "body")
        source = SqsSource(sqs_client, local_resources.queue_url, visibility_timeout=0)

        await source.receive(10, 0)
        [again] = await source.receive(10, 0)

        assert again.receive_count == 2

    @pytest.mark.parametrize(
        ("max_messages", "wait_seconds", "asked"),
        [(1, 0, (1, 0)), (0, -1, (1, 0))],
        ids=["one-message-no-wait", "below-the-range"],
    )
    async def test_receive_asks_for_at_least_one_message_and_no_wait_below_zero(
        self,
        sqs_client: SQSClient,
        local_resources: LocalResources,
        max_messages: int,
        wait_seconds: int,
        asked: tuple[int, int],
    ) -> None:
        """MaxNumberOfMessages and WaitTimeSeconds as sent: a short poll stays a short poll."""
        sent: list[tuple[int, int]] = []

        def record(request: AWSPreparedRequest, **_: object) -> None:
            assert isinstance(request.body, bytes)  # the JSON protocol's serialised request
            body = json.loads(request.body)
            sent.append((body["MaxNumberOfMessages"], body["WaitTimeSeconds"]))

        sqs_client.meta.events.register("before-send.sqs.ReceiveMessage", record)
        source = SqsSource(sqs_client, local_resources.queue_url)

        assert list(await source.receive(max_messages, wait_seconds)) == []
        assert sent == [asked]

    async def test_receive_from_a_missing_queue_raises_source_error_naming_call_and_code(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        source = SqsSource(sqs_client, local_resources.queue_url + "-missing")

        with pytest.raises(SourceError) as raised:
            await source.receive(10, 0)

        assert str(raised.value) == (
            "SQS ReceiveMessage failed: AWS.SimpleQueueService.NonExistentQueue: "
            "The specified queue does not exist."
        )
        assert isinstance(raised.value.__cause__, ClientError)

    async def test_delete_on_a_failing_call_returns_every_message_as_failed(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        await send_with_trace(sqs_client, local_resources.queue_url, "body")
        received = await SqsSource(sqs_client, local_resources.queue_url).receive(10, 0)
        broken = SqsSource(sqs_client, local_resources.queue_url + "-missing")

        failed = await broken.delete(received)

        assert [m.message_id for m in failed] == [m.message_id for m in received]

    async def test_change_visibility_on_a_failing_call_returns_every_message_as_failed(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        await send_with_trace(sqs_client, local_resources.queue_url, "body")
        received = await SqsSource(sqs_client, local_resources.queue_url).receive(10, 0)
        broken = SqsSource(sqs_client, local_resources.queue_url + "-missing")

        failed = await broken.change_visibility([(m, 0) for m in received])

        assert [m.message_id for m in failed] == [m.message_id for m in received]

    async def test_dead_letter_to_a_missing_queue_raises_source_error_naming_the_call(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        source = SqsSource(
            sqs_client, local_resources.queue_url, local_resources.queue_url + "-missing"
        )
        message = ReceivedMessage("m-1", "handle", "body", 1, datetime.now(UTC))

        with pytest.raises(SourceError) as raised:
            await source.dead_letter(message, "invalid_json", "not JSON")

        assert str(raised.value) == (
            "SQS SendMessage (dead-letter queue) failed: "
            "AWS.SimpleQueueService.NonExistentQueue: The specified queue does not exist."
        )


QUEUE_URL = "http://127.0.0.1/000000000000/stubbed"
RECEIVED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NOT_A_HANDLE = {"SenderFault": True, "Code": "ReceiptHandleIsInvalid", "Message": "not a handle"}


@pytest.fixture
async def stubbed_sqs(
    monkeypatch: pytest.MonkeyPatch, aws_session: AioSession
) -> AsyncIterator[tuple[SqsStub, SqsSource]]:
    """A source whose SQS client talks to an ``SqsStub``."""
    async with run_sqs_stub() as stub:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", stub.url)
        async with open_aws_clients(services=QUEUES_ONLY, session=aws_session) as aws:
            yield stub, SqsSource(aws.sqs, QUEUE_URL, clock=lambda: RECEIVED_AT)


def two_received() -> list[ReceivedMessage]:
    return [ReceivedMessage(f"m-{n}", f"handle-{n}", "body", 1, RECEIVED_AT) for n in range(2)]


class TestSqsSourceOnStubbedAnswers:
    """Answers moto never gives: it always sends both lists of a batch result, and every member
    of a received message."""

    async def test_a_delete_with_every_entry_failed_and_no_successful_list_fails_each(
        self, stubbed_sqs: tuple[SqsStub, SqsSource]
    ) -> None:
        """Real SQS leaves the empty ``Successful`` list out when every entry failed."""
        stub, source = stubbed_sqs
        stub.answers["DeleteMessageBatch"] = {
            "Failed": [{"Id": "0", **NOT_A_HANDLE}, {"Id": "1", **NOT_A_HANDLE}]
        }
        messages = two_received()

        failed = await source.delete(messages)

        assert stub.actions == ["DeleteMessageBatch"]
        assert list(failed) == messages

    async def test_a_visibility_change_with_every_entry_failed_and_no_successful_list_fails_each(
        self, stubbed_sqs: tuple[SqsStub, SqsSource]
    ) -> None:
        """Real SQS leaves the empty ``Successful`` list out when every entry failed."""
        stub, source = stubbed_sqs
        stub.answers["ChangeMessageVisibilityBatch"] = {
            "Failed": [{"Id": "0", **NOT_A_HANDLE}, {"Id": "1", **NOT_A_HANDLE}]
        }
        messages = two_received()

        failed = await source.change_visibility([(message, 0) for message in messages])

        assert stub.actions == ["ChangeMessageVisibilityBatch"]
        assert list(failed) == messages

    async def test_a_received_message_without_its_optional_members_is_still_received(
        self, stubbed_sqs: tuple[SqsStub, SqsSource]
    ) -> None:
        """The API marks every member of a message optional: missing ones read as empty, the
        receive count as one, rather than failing the whole receive."""
        stub, source = stubbed_sqs
        stub.answers["ReceiveMessage"] = {"Messages": [{}]}

        received = await source.receive(10, 0)

        assert list(received) == [ReceivedMessage("", "", "", 1, RECEIVED_AT)]


async def _read_system_attributes(client: SQSClient, queue_url: str) -> list[dict[str, str]]:
    response = await client.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
    )
    return [
        {str(name): value for name, value in message.get("Attributes", {}).items()}
        for message in response.get("Messages", [])
    ]
