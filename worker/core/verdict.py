"""The verdict published to SNS (schema ``moderation.verdict.v1``), its fixed flag vocabulary, and
the SNS message it becomes: body, filterable message attributes, and its size as SNS counts it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, field_serializer

SCHEMA: Literal["moderation.verdict.v1"] = "moderation.verdict.v1"
#: Where the model runs: a SageMaker endpoint (TGI or OpenAI body), a TGI server, or an
#: OpenAI-compatible completions server such as vLLM.
BackendName = Literal["sagemaker", "tgi", "openai"]
# SNS's limit for one message, and for all the messages of one PublishBatch together: the body
# plus every message attribute's name, data type and value, in UTF-8 bytes.
SNS_MAX_MESSAGE_BYTES: Final = 262_144
# SNS filter policies compare numbers to five decimal places; more digits would only mislead.
SCORE_DECIMALS: Final = 5


class Flag(StrEnum):
    """What a consumer should know about how a verdict was reached."""

    CONTENT_NEUTRALIZED = "content_neutralized"
    CONTEXT_TRUNCATED = "context_truncated"
    CHUNKED = "chunked"
    MODEL_OUTPUT_INVALID = "model_output_invalid"
    MODEL_OUTPUT_ANOMALY = "model_output_anomaly"
    THRESHOLD_OVERRIDE = "threshold_override"
    CACHED = "cached"


class CategoryRef(BaseModel):
    """A violated category as the verdict names it."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str


class ModelRef(BaseModel):
    """Which model produced the verdict."""

    model_config = ConfigDict(frozen=True)

    backend: BackendName
    endpoint: str
    prompt_format: str


class Verdict(BaseModel):
    """The message downstream services act on."""

    model_config = ConfigDict(frozen=True)

    schema_: Literal["moderation.verdict.v1"] = SCHEMA
    id: str
    conversation_id: str | None
    verdict: Literal["safe", "unsafe"]
    categories: tuple[CategoryRef, ...]
    unknown_codes: tuple[str, ...]
    score: float | None
    assessed_role: Literal["user", "assistant"]
    model: ModelRef
    flags: tuple[Flag, ...]
    attributes: dict[str, Any]
    received_at: datetime
    decided_at: datetime

    @field_serializer("received_at", "decided_at")
    def _utc_millis(self, moment: datetime) -> str:
        return format_timestamp(moment)

    def to_json(self) -> str:
        """The SNS message body: compact JSON with ``schema`` as its first key."""
        document = self.model_dump(mode="json")
        document = {"schema": document.pop("schema_"), **document}
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, e.g. ``2026-11-26T14:00:00.120Z``."""
    # isoformat is several times cheaper than strftime; in UTC it always ends in "+00:00".
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass(frozen=True, slots=True)
class MessageAttribute:
    """One SNS message attribute, as its data type and its string value."""

    data_type: Literal["String", "String.Array", "Number"]
    value: str


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verdict as SNS receives it: the JSON body and the attributes subscribers filter on."""

    body: str
    attributes: Mapping[str, MessageAttribute]

    @property
    def size(self) -> int:
        """The bytes SNS counts toward ``SNS_MAX_MESSAGE_BYTES``."""
        return _utf8_len(self.body) + sum(
            _utf8_len(name) + _utf8_len(attribute.data_type) + _utf8_len(attribute.value)
            for name, attribute in self.attributes.items()
        )


def sns_message(
    verdict: Verdict, *, traceparent: str | None = None, aws_trace_header: str | None = None
) -> SnsMessage:
    """The message a verdict is published as (at most six of SNS's ten attributes).

    ``categories`` is always present, as ``[]`` for a safe verdict: SNS accepts an empty JSON
    array, and a filter on the attribute then sees "no categories" rather than "attribute missing".
    The trace headers are copied as given (the source validated them).
    """
    attributes = {
        "verdict": MessageAttribute("String", verdict.verdict),
        "categories": MessageAttribute(
            "String.Array", json.dumps([category.code for category in verdict.categories])
        ),
    }
    if verdict.score is not None:
        attributes["score"] = MessageAttribute("Number", format_score(verdict.score))
    optional = {
        "prompt_format": verdict.model.prompt_format,
        "traceparent": traceparent,
        "AWSTraceHeader": aws_trace_header,
    }
    # SNS refuses empty attribute values, so an empty one is left out rather than failing publish.
    attributes.update(
        {name: MessageAttribute("String", value) for name, value in optional.items() if value}
    )
    return SnsMessage(verdict.to_json(), attributes)


def too_large_for_sns(
    verdict: Verdict, *, traceparent: str | None = None, aws_trace_header: str | None = None
) -> str | None:
    """Why the verdict's SNS message could never be published, or None when it fits.

    The sentence names the size, SNS's limit and the verdict's largest field.
    """
    message = sns_message(verdict, traceparent=traceparent, aws_trace_header=aws_trace_header)
    return too_large_to_publish(verdict, message)


def too_large_to_publish(verdict: Verdict, message: SnsMessage) -> str | None:
    """``too_large_for_sns`` for a verdict whose SNS message is already built."""
    size = message.size
    if size <= SNS_MAX_MESSAGE_BYTES:
        return None
    name, field_size = largest_field(verdict)
    return (
        f"the verdict would be an SNS message of {size} bytes, more than SNS's limit of "
        f"{SNS_MAX_MESSAGE_BYTES}; its largest field is '{name}' ({field_size} bytes)"
    )


def largest_field(verdict: Verdict) -> tuple[str, int]:
    """The verdict's largest top-level field and its size in the body (UTF-8 bytes of its JSON).

    Names the culprit when a verdict is too large to publish.
    """
    document = json.loads(verdict.to_json())
    sizes = {
        name: _utf8_len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        for name, value in document.items()
    }
    name = max(sizes, key=lambda field_name: sizes[field_name])
    return name, sizes[name]


def format_score(score: float) -> str:
    """A Number attribute value: fixed-point, rounded to ``SCORE_DECIMALS``, no trailing zeros."""
    return f"{score:.{SCORE_DECIMALS}f}".rstrip("0").rstrip(".")


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))
