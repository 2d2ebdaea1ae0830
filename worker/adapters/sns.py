"""The SNS verdict sink: each verdict to the safe or unsafe topic, with filterable attributes.

Verdicts bound for one topic go out in PublishBatch calls that respect both of SNS's batch
limits, ten entries and 256 KiB in all; a verdict larger than 256 KiB by itself goes alone, so
SNS refuses only that one.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from worker.adapters.aws import AWS_ERRORS, sink_entry_error, sink_error_from
from worker.core.errors import SinkError
from worker.core.verdict import SNS_MAX_MESSAGE_BYTES, SnsMessage, sns_message
from worker.ports import Publication

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sns.type_defs import (
        PublishBatchRequestEntryTypeDef,
        PublishInputTypeDef,
    )

    from worker.core.verdict import Verdict

MAX_BATCH: Final = 10  # SNS PublishBatch limit
# What SNS FIFO accepts in MessageGroupId / MessageDeduplicationId: 1-128 ASCII alphanumerics
# and punctuation.
_FIFO_ID: Final = re.compile(r"^[!-~]{1,128}$")

Outcome = tuple[int, Exception | None]


class SnsSink:
    """Verdicts to two SNS topics (standard or FIFO) behind the ``VerdictSink`` port."""

    def __init__(self, client: SNSClient, safe_topic_arn: str, unsafe_topic_arn: str) -> None:
        self._client = client
        self._safe_topic_arn = safe_topic_arn
        self._unsafe_topic_arn = unsafe_topic_arn

    def topic_for(self, verdict: Verdict) -> str:
        """The topic a verdict belongs on."""
        return self._unsafe_topic_arn if verdict.verdict == "unsafe" else self._safe_topic_arn

    async def publish(self, publications: Sequence[Publication]) -> Sequence[Exception | None]:
        """Publish all, grouped per topic; one slot per publication: None or its ``SinkError``.

        Never raises for a failed publish: the caller keeps the message so that it comes back.
        """
        by_topic: dict[str, list[int]] = {}
        for index, publication in enumerate(publications):
            by_topic.setdefault(self.topic_for(publication.verdict), []).append(index)
        messages = [outgoing(publication) for publication in publications]
        calls = []
        for topic_arn, indexes in by_topic.items():
            for group in batches(indexes, [messages[index].sns.size for index in indexes]):
                if len(group) == 1:
                    calls.append(self._publish_one(topic_arn, group[0], messages[group[0]]))
                else:
                    calls.append(self._publish_batch(topic_arn, group, messages))
        results: list[Exception | None] = [None] * len(publications)
        for outcomes in await asyncio.gather(*calls):
            for index, error in outcomes:
                results[index] = error
        return results

    async def _publish_one(self, topic_arn: str, index: int, message: Outgoing) -> list[Outcome]:
        entry = publish_entry(message, entry_id="0", fifo=_is_fifo(topic_arn))
        request: PublishInputTypeDef = {
            "TopicArn": topic_arn,
            "Message": entry["Message"],
            "MessageAttributes": entry["MessageAttributes"],
        }
        if "MessageGroupId" in entry:
            request["MessageGroupId"] = entry["MessageGroupId"]
        if "MessageDeduplicationId" in entry:
            request["MessageDeduplicationId"] = entry["MessageDeduplicationId"]
        try:
            await self._client.publish(**request)
        except AWS_ERRORS as exc:
            return [(index, sink_error_from(exc, operation="Publish"))]
        return [(index, None)]

    async def _publish_batch(
        self, topic_arn: str, indexes: Sequence[int], messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        fifo = _is_fifo(topic_arn)
        # Entry ids are positions in this chunk: verdict ids may hold characters SNS refuses here.
        entries = [
            publish_entry(messages[index], entry_id=str(position), fifo=fifo)
            for position, index in enumerate(indexes)
        ]
        try:
            response = await self._client.publish_batch(
                TopicArn=topic_arn, PublishBatchRequestEntries=entries
            )
        except AWS_ERRORS as exc:
            error = sink_error_from(exc, operation="PublishBatch")
            return [(index, error) for index in indexes]
        succeeded = {entry.get("Id") for entry in response.get("Successful", [])}
        rejected = {
            entry["Id"]: sink_entry_error(
                entry.get("Code"), entry.get("Message"), operation="PublishBatch"
            )
            for entry in response.get("Failed", [])
        }
        return [
            (index, _entry_outcome(str(position), succeeded, rejected))
            for position, index in enumerate(indexes)
        ]


def _entry_outcome(
    entry_id: str, succeeded: set[str | None], rejected: dict[str, SinkError]
) -> Exception | None:
    if entry_id in rejected:
        return rejected[entry_id]
    if entry_id in succeeded:
        return None
    # Neither accepted nor refused: assume it was not published, so the message comes back.
    return SinkError("SNS PublishBatch returned no result for the entry")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A publication's SNS message, built once: it is both measured and sent."""

    verdict: Verdict
    sns: SnsMessage


def outgoing(publication: Publication) -> Outgoing:
    """The publication's SNS message: the one it carries, else built here."""
    if publication.sns is not None:
        return Outgoing(publication.verdict, publication.sns)
    trace = publication.trace
    return Outgoing(
        publication.verdict,
        sns_message(
            publication.verdict,
            traceparent=trace.traceparent,
            aws_trace_header=trace.aws_trace_header,
        ),
    )


def batches(indexes: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """Consecutive groups of ``indexes`` within both PublishBatch limits.

    ``sizes[i]`` is the size of ``indexes[i]``'s message. A group holds at most ``MAX_BATCH``
    entries whose sizes add up to at most ``SNS_MAX_MESSAGE_BYTES``; an entry larger than that by
    itself is put in a group of its own.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for index, size in zip(indexes, sizes, strict=True):
        if current and (len(current) == MAX_BATCH or total + size > SNS_MAX_MESSAGE_BYTES):
            groups.append(current)
            current, total = [], 0
        current.append(index)
        total += size
    if current:
        groups.append(current)
    return groups


def publish_entry(
    message: Outgoing, *, entry_id: str, fifo: bool
) -> PublishBatchRequestEntryTypeDef:
    """The PublishBatch entry for a message (Publish takes the same fields)."""
    verdict = message.verdict
    entry: PublishBatchRequestEntryTypeDef = {
        "Id": entry_id,
        "Message": message.sns.body,
        "MessageAttributes": {
            name: {"DataType": attribute.data_type, "StringValue": attribute.value}
            for name, attribute in message.sns.attributes.items()
        },
    }
    if fifo:
        entry["MessageGroupId"] = fifo_group_id(verdict)
        entry["MessageDeduplicationId"] = fifo_deduplication_id(verdict)
    return entry


def fifo_group_id(verdict: Verdict) -> str:
    """The conversation keeps its order: group by ``conversation_id``, else by ``id``."""
    key = verdict.conversation_id or verdict.id
    # An id SNS would refuse becomes a stable digest, so the same key still lands in one group.
    return key if _FIFO_ID.match(key) else _digest(key)


def fifo_deduplication_id(verdict: Verdict) -> str:
    """Derived from ``id`` alone, so republishing a redelivered message is dropped by SNS.

    A digest, because ids may be longer than 128 characters or hold characters SNS refuses.
    """
    return _digest(verdict.id)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_fifo(topic_arn: str) -> bool:
    return topic_arn.endswith(".fifo")
