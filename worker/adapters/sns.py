"""The SNS verdict sink: each verdict to the safe or unsafe topic, with filterable attributes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from worker.adapters.aws import AWS_ERRORS, sink_entry_error, sink_error_from
from worker.core.errors import SinkError
from worker.ports import Publication

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sns.type_defs import (
        MessageAttributeValueTypeDef,
        PublishBatchRequestEntryTypeDef,
        PublishInputTypeDef,
    )

    from worker.core.verdict import Verdict

MAX_BATCH: Final = 10  # SNS PublishBatch limit
# SNS filter policies compare numbers to five decimal places; more digits would only mislead.
SCORE_DECIMALS: Final = 5
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
        calls = []
        for topic_arn, indexes in by_topic.items():
            if len(indexes) == 1:
                calls.append(self._publish_one(topic_arn, indexes[0], publications[indexes[0]]))
                continue
            for start in range(0, len(indexes), MAX_BATCH):
                chunk = indexes[start : start + MAX_BATCH]
                calls.append(self._publish_batch(topic_arn, chunk, publications))
        results: list[Exception | None] = [None] * len(publications)
        for outcomes in await asyncio.gather(*calls):
            for index, error in outcomes:
                results[index] = error
        return results

    async def _publish_one(
        self, topic_arn: str, index: int, publication: Publication
    ) -> list[Outcome]:
        entry = publish_entry(publication, entry_id="0", fifo=_is_fifo(topic_arn))
        request: PublishInputTypeDef = {
            "TopicArn": topic_arn,
            "Message": entry["Message"],
            "MessageAttributes": entry.get("MessageAttributes", {}),
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
        self, topic_arn: str, indexes: Sequence[int], publications: Sequence[Publication]
    ) -> list[Outcome]:
        fifo = _is_fifo(topic_arn)
        # Entry ids are positions in this chunk: verdict ids may hold characters SNS refuses here.
        entries = [
            publish_entry(publications[index], entry_id=str(position), fifo=fifo)
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


def publish_entry(
    publication: Publication, *, entry_id: str, fifo: bool
) -> PublishBatchRequestEntryTypeDef:
    """The PublishBatch entry for a publication (Publish takes the same fields)."""
    verdict = publication.verdict
    entry: PublishBatchRequestEntryTypeDef = {
        "Id": entry_id,
        "Message": verdict.to_json(),
        "MessageAttributes": message_attributes(publication),
    }
    if fifo:
        entry["MessageGroupId"] = fifo_group_id(verdict)
        entry["MessageDeduplicationId"] = fifo_deduplication_id(verdict)
    return entry


def message_attributes(publication: Publication) -> dict[str, MessageAttributeValueTypeDef]:
    """The SNS message attributes subscribers filter on (at most six of SNS's ten).

    ``categories`` is always present, as ``[]`` for a safe verdict: SNS accepts an empty JSON
    array, and a filter on the attribute then sees "no categories" rather than "attribute missing".
    """
    verdict = publication.verdict
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        "verdict": _string(verdict.verdict),
        "categories": {
            "DataType": "String.Array",
            "StringValue": json.dumps([category.code for category in verdict.categories]),
        },
    }
    if verdict.score is not None:
        attributes["score"] = {"DataType": "Number", "StringValue": format_score(verdict.score)}
    optional = {
        "prompt_format": verdict.model.prompt_format,
        "traceparent": publication.trace.traceparent,
        "AWSTraceHeader": publication.trace.aws_trace_header,
    }
    # SNS refuses empty attribute values, so an empty one is left out rather than failing publish.
    attributes.update({name: _string(value) for name, value in optional.items() if value})
    return attributes


def format_score(score: float) -> str:
    """A Number attribute value: fixed-point, rounded to ``SCORE_DECIMALS``, no trailing zeros."""
    return f"{score:.{SCORE_DECIMALS}f}".rstrip("0").rstrip(".")


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


def _string(value: str) -> MessageAttributeValueTypeDef:
    return {"DataType": "String", "StringValue": value}


def _is_fifo(topic_arn: str) -> bool:
    return topic_arn.endswith(".fifo")
