"""The SQS message source: receive, delete, change visibility and dead-letter on Amazon SQS.

Trace headers are checked as messages are read (``worker.core.tracing``): a malformed one is
dropped and logged here, so it reaches neither the verdict nor a dead-letter copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TypeVar

import structlog

from worker.adapters.aws import AWS_ERRORS, source_error_from
from worker.core.tracing import aws_trace_header_problem, traceparent_problem
from worker.ports import ReceivedMessage, TraceContext

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import MessageSystemAttributeNameType
    from types_aiobotocore_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        MessageAttributeValueTypeDef,
        MessageSystemAttributeValueTypeDef,
        MessageTypeDef,
        ReceiveMessageRequestTypeDef,
        SendMessageRequestTypeDef,
    )

MAX_BATCH: Final = 10  # SQS's limit for ReceiveMessage and every *Batch call
MAX_WAIT_SECONDS: Final = 20  # SQS's longest long poll
MAX_ERROR_DETAIL_CHARS: Final = 1_000  # a dead-letter reason is a sentence, not a traceback
FIFO_DEAD_LETTER_GROUP: Final = "dead-letter"
TRACEPARENT: Final = "traceparent"

# MessageSystemAttributeNames replaces the deprecated AttributeNames parameter (both are in
# botocore's SQS model; the new name is the one AWS documents).
_SYSTEM_ATTRIBUTES: Final[Sequence[MessageSystemAttributeNameType]] = (
    "ApproximateReceiveCount",
    "MessageGroupId",
    "AWSTraceHeader",
    "SentTimestamp",
)

ItemT = TypeVar("ItemT")
# How much of a dropped trace header the log line shows: enough to recognise, bounded.
_LOGGED_HEADER_CHARS: Final = 80

log = structlog.get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class SqsSource:
    """A queue's messages behind the ``MessageSource`` port, with an optional dead-letter queue."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        dead_letter_queue_url: str | None = None,
        *,
        visibility_timeout: int | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._dead_letter_queue_url = dead_letter_queue_url
        self._visibility_timeout = visibility_timeout
        self._clock = clock

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        """Long-poll once; raises ``SourceError``. Cancelling abandons the poll at once."""
        request: ReceiveMessageRequestTypeDef = {
            "QueueUrl": self._queue_url,
            "MaxNumberOfMessages": min(max(max_messages, 1), MAX_BATCH),
            "WaitTimeSeconds": min(max(wait_seconds, 0), MAX_WAIT_SECONDS),
            "MessageSystemAttributeNames": _SYSTEM_ATTRIBUTES,
            "MessageAttributeNames": ["All"],
        }
        if self._visibility_timeout is not None:
            request["VisibilityTimeout"] = self._visibility_timeout
        try:
            response = await self._client.receive_message(**request)
        except AWS_ERRORS as exc:
            raise source_error_from(exc, operation="ReceiveMessage") from exc
        received_at = self._clock()
        return [_received(message, received_at) for message in response.get("Messages", [])]

    async def delete(self, messages: Sequence[ReceivedMessage]) -> Sequence[ReceivedMessage]:
        """Delete in batches of ten; returns the messages that were not deleted (never raises)."""
        chunks = list(_chunks(messages, MAX_BATCH))
        failed = await asyncio.gather(*(self._delete_chunk(chunk) for chunk in chunks))
        return [message for chunk_failed in failed for message in chunk_failed]

    async def change_visibility(
        self, changes: Sequence[tuple[ReceivedMessage, int]]
    ) -> Sequence[ReceivedMessage]:
        """Change visibility in batches of ten; returns the messages whose change failed."""
        chunks = list(_chunks(changes, MAX_BATCH))
        failed = await asyncio.gather(*(self._change_visibility_chunk(chunk) for chunk in chunks))
        return [message for chunk_failed in failed for message in chunk_failed]

    async def dead_letter(self, message: ReceivedMessage, error_code: str, detail: str) -> bool:
        """Send the original body to the dead-letter queue with ``error_code``/``error_detail``."""
        if self._dead_letter_queue_url is None:
            return False
        request = _dead_letter_request(self._dead_letter_queue_url, message, error_code, detail)
        try:
            await self._client.send_message(**request)
        except AWS_ERRORS as exc:
            raise source_error_from(exc, operation="SendMessage (dead-letter queue)") from exc
        return True

    async def _delete_chunk(self, chunk: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": message.receipt_handle}
            for index, message in enumerate(chunk)
        ]
        try:
            response = await self._client.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=entries,
            )
        except AWS_ERRORS:
            # The whole call failed; the caller logs the failed messages, which come back later.
            return list(chunk)
        succeeded = {entry["Id"] for entry in response.get("Successful", [])}
        return [message for index, message in enumerate(chunk) if str(index) not in succeeded]

    async def _change_visibility_chunk(
        self, chunk: Sequence[tuple[ReceivedMessage, int]]
    ) -> list[ReceivedMessage]:
        entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {
                "Id": str(index),
                "ReceiptHandle": message.receipt_handle,
                "VisibilityTimeout": seconds,
            }
            for index, (message, seconds) in enumerate(chunk)
        ]
        try:
            response = await self._client.change_message_visibility_batch(
                QueueUrl=self._queue_url,
                Entries=entries,
            )
        except AWS_ERRORS:
            return [message for message, _ in chunk]
        succeeded = {entry["Id"] for entry in response.get("Successful", [])}
        return [message for index, (message, _) in enumerate(chunk) if str(index) not in succeeded]


def _received(message: MessageTypeDef, received_at: datetime) -> ReceivedMessage:
    system = message.get("Attributes", {})
    message_id = message.get("MessageId", "")
    traceparent = _string_attribute(message.get("MessageAttributes", {}), TRACEPARENT)
    aws_trace_header = system.get("AWSTraceHeader")
    return ReceivedMessage(
        message_id=message_id,
        receipt_handle=message.get("ReceiptHandle", ""),
        body=message.get("Body", ""),
        receive_count=int(system.get("ApproximateReceiveCount", "1")),
        received_at=received_at,
        group_id=system.get("MessageGroupId"),
        trace=TraceContext(
            traceparent=_checked(
                traceparent, traceparent_problem, "traceparent_dropped", message_id
            ),
            aws_trace_header=_checked(
                aws_trace_header, aws_trace_header_problem, "aws_trace_header_dropped", message_id
            ),
        ),
    )


def _checked(
    value: str | None, problem_of: Callable[[str], str | None], event: str, message_id: str
) -> str | None:
    """The header if it is well-formed; otherwise None, and the drop is logged as ``event``."""
    if not value:
        return None
    problem = problem_of(value)
    if problem is None:
        return value
    log.warning(
        event,
        message_id=message_id,
        reason=problem,
        length=len(value),
        value_prefix=value[:_LOGGED_HEADER_CHARS],
    )
    return None


def _string_attribute(attributes: Mapping[str, Mapping[str, object]], name: str) -> str | None:
    attribute = attributes.get(name)
    if attribute is None or not str(attribute.get("DataType", "")).startswith("String"):
        return None
    value = attribute.get("StringValue")
    # An empty value is left to the caller: ``_checked`` drops it like a missing one.
    return value if isinstance(value, str) else None


def _dead_letter_request(
    queue_url: str, message: ReceivedMessage, error_code: str, detail: str
) -> SendMessageRequestTypeDef:
    # SQS rejects empty attribute values, so a blank detail still says something. Error codes
    # are never blank: every caller passes one of the fixed codes (worker.core.messages,
    # worker.pipeline).
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        "error_code": {"DataType": "String", "StringValue": error_code},
        "error_detail": {
            "DataType": "String",
            "StringValue": _truncate(detail, MAX_ERROR_DETAIL_CHARS) or "(no detail)",
        },
    }
    if message.trace.traceparent:
        attributes[TRACEPARENT] = {"DataType": "String", "StringValue": message.trace.traceparent}
    request: SendMessageRequestTypeDef = {
        "QueueUrl": queue_url,
        "MessageBody": message.body,
        "MessageAttributes": attributes,
    }
    if message.trace.aws_trace_header:
        trace_header: MessageSystemAttributeValueTypeDef = {
            "DataType": "String",
            "StringValue": message.trace.aws_trace_header,
        }
        request["MessageSystemAttributes"] = {"AWSTraceHeader": trace_header}
    if queue_url.endswith(".fifo"):
        request["MessageGroupId"] = message.group_id or FIFO_DEAD_LETTER_GROUP
        # the source message id makes a repeated dead-lettering of the same delivery a no-op
        request["MessageDeduplicationId"] = message.message_id
    return request


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chunks(items: Sequence[ItemT], size: int) -> Iterator[Sequence[ItemT]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
