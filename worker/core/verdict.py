"""The verdict published to SNS (schema ``moderation.verdict.v1``) and its fixed flag vocabulary."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_serializer

SCHEMA: Literal["moderation.verdict.v1"] = "moderation.verdict.v1"


class Flag(StrEnum):
    """What a consumer should know about how a verdict was reached."""

    CONTENT_NEUTRALIZED = "content_neutralized"
    CONTEXT_TRUNCATED = "context_truncated"
    CHUNKED = "chunked"
    MODEL_OUTPUT_INVALID = "model_output_invalid"
    MODEL_OUTPUT_ANOMALY = "model_output_anomaly"
    THRESHOLD_OVERRIDE = "threshold_override"


class CategoryRef(BaseModel):
    """A violated category as the verdict names it."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str


class ModelRef(BaseModel):
    """Which model produced the verdict."""

    model_config = ConfigDict(frozen=True)

    backend: Literal["sagemaker", "tgi"]
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
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
