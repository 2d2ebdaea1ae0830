"""The event contracts as JSON Schema (2020-12): the message in and the verdict out.

``python -m worker.contracts DIR`` (``make schemas``) writes them to ``docs/schemas/``, where
downstream teams and ``docs/asyncapi.yaml`` find them; ``tests/contracts`` fails when the
committed files drift from what this module generates.

- The verdict's schema comes from ``worker.core.verdict.Verdict`` itself, as its JSON is
  published (``schema`` rather than the field's Python name ``schema_``, timestamps as strings).
- The decoder of the message in (``worker.core.messages``) is hand-written, so ``MessageIn``
  mirrors it here for the schema alone; ``tests/contracts`` checks that the two agree on valid
  and invalid examples. What a schema cannot say is in the descriptions: the 16 KiB cap on
  ``attributes``, the configurable length cap of the conversation, lone surrogates, and the
  SNS notification envelope the decoder also unwraps.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.core.messages import MAX_ATTRIBUTES_BYTES, MAX_ID_CHARS
from worker.core.verdict import SCHEMA, Verdict

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
# Names, not locations: the files live in docs/schemas/ of whichever copy of the repository.
ID_BASE: Final = "urn:moderation-worker:schemas:"
MESSAGE_IN_FILE: Final = "moderation-request.schema.json"
VERDICT_FILE: Final = "verdict.schema.json"
TIMESTAMP_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
# Not empty and not only whitespace: at least one character that is not white space.
_NOT_BLANK: Final = r"\S"


class TurnIn(BaseModel):
    """One turn of the conversation; other fields are ignored."""

    model_config = ConfigDict(extra="allow", title="Turn")

    role: Literal["user", "assistant", "agent"] = Field(
        description="Who wrote it; `agent` is an alias of `assistant`."
    )
    content: str = Field(pattern=_NOT_BLANK, description="The text; not empty or only spaces.")


class MessageIn(BaseModel):
    """Mirror of ``worker.core.messages.decode_request``, for the schema of the message in."""

    model_config = ConfigDict(
        extra="allow",
        title="Moderation request",
        json_schema_extra={
            "description": (
                "The body of an SQS message on the source queue (UTF-8 JSON), or the same "
                "document as the `Message` string of an SNS notification envelope. Exactly one "
                "of `messages` and `content` is given (a null one counts as absent); unknown "
                "fields are ignored. Not expressible here: the conversation's total length "
                "is capped by MODERATION_MAX_CONVERSATION_CHARS (100,000 characters by "
                "default), and text must not hold lone UTF-16 surrogates."
            ),
            "oneOf": [
                {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
                {"required": ["content"], "properties": {"content": {"type": "string"}}},
            ],
        },
    )

    id: str = Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="The platform's id for the item, echoed on the verdict.",
    )
    conversation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="Echoed on the verdict; the FIFO group of FIFO topics.",
    )
    messages: list[TurnIn] | None = Field(
        default=None,
        min_length=1,
        description="The conversation, oldest first; the last turn is the one assessed.",
    )
    content: str | None = Field(
        default=None,
        pattern=_NOT_BLANK,
        description="Shorthand for one user message.",
    )
    attributes: dict[str, Any] | None = Field(
        default=None,
        description=(
            f"Any JSON object, echoed on the verdict verbatim; at most {MAX_ATTRIBUTES_BYTES} "
            "bytes as compact UTF-8 JSON."
        ),
    )


def message_in_schema() -> dict[str, Any]:
    """The JSON Schema of the SQS body the worker accepts."""
    schema = MessageIn.model_json_schema()
    return {"$schema": DIALECT, "$id": ID_BASE + MESSAGE_IN_FILE, **schema}


def verdict_schema() -> dict[str, Any]:
    """The JSON Schema of the verdict as published (``Verdict.to_json``)."""
    schema = Verdict.model_json_schema(mode="serialization")
    properties = schema["properties"]
    # Published as "schema", first: to_json renames the field.
    published = {"schema": {**properties.pop("schema_"), "title": "Schema"}, **properties}
    for name in ("received_at", "decided_at"):
        published[name] = {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "title": properties[name].get("title", name),
            "description": "UTC, milliseconds, with a Z: 2026-11-26T14:00:00.120Z.",
        }
    schema["properties"] = published
    schema["required"] = sorted({"schema" if n == "schema_" else n for n in published})
    schema["description"] = (
        f"The verdict published to the safe or unsafe SNS topic ({SCHEMA}). Consumers should "
        "treat two verdicts with the same id as one item (delivery is at least once)."
    )
    return {"$schema": DIALECT, "$id": ID_BASE + VERDICT_FILE, **schema}


def rendered() -> dict[str, str]:
    """Each schema file's name and its exact text."""
    return {
        MESSAGE_IN_FILE: _dump(message_in_schema()),
        VERDICT_FILE: _dump(verdict_schema()),
    }


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the schema files into the directory given (``docs/schemas``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m worker.contracts DIRECTORY\n")
        return 2
    directory = Path(args[0])
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (directory / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
