"""Decoding an SQS body into a moderation request; every way it can be wrong has a stable code.

Error codes (the ``error_code`` attribute of a dead-lettered message):

    invalid_json       the body (or the SNS envelope's ``Message``) is not JSON
    invalid_envelope   an SNS notification envelope whose ``Message`` is missing or not a string
    not_an_object      the JSON is valid but is not an object
    schema_violation   a field is missing, has the wrong type or length; the detail names it
    empty_conversation ``messages`` is an empty list
    unsupported_role   a message's role is not user, assistant or agent
    empty_content      a message's content is empty or only whitespace
    invalid_text       text holds characters that cannot be encoded (lone UTF-16 surrogates)
    message_too_large  the conversation is longer than the configured limit
    attributes_too_large  ``attributes`` is larger than ``MAX_ATTRIBUTES_BYTES`` encoded
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from worker.core.errors import InvalidMessage
from worker.core.models import Role, Turn

MAX_ID_CHARS: Final = 256
# ``attributes`` is echoed onto the verdict, and an SNS message (body and attributes) is at most
# 256 KiB: 16 KiB of caller data leaves the verdict far from that limit. Measured the way the
# verdict writes it: compact JSON, UTF-8 bytes.
MAX_ATTRIBUTES_BYTES: Final = 16 * 1024
DEFAULT_MAX_CONVERSATION_CHARS: Final = 100_000
_ROLES: Final[Mapping[str, Role]] = {"user": "user", "assistant": "assistant", "agent": "assistant"}


@dataclass(frozen=True, slots=True)
class ModerationRequest:
    """A validated message: the conversation to assess and what is echoed onto the verdict."""

    id: str
    conversation_id: str | None
    turns: tuple[Turn, ...]
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def assessed(self) -> Turn:
        """The last turn, the one the verdict is about."""
        return self.turns[-1]


def decode_request(
    body: str, *, max_conversation_chars: int = DEFAULT_MAX_CONVERSATION_CHARS
) -> ModerationRequest:
    """Parse and validate an SQS body (raw or wrapped in an SNS envelope).

    Raises ``InvalidMessage`` with one of the module's error codes and a sentence naming the field.
    """
    document = _loads(body, what="body")
    if _is_sns_envelope(document):
        document = _unwrap_envelope(document)
    if not isinstance(document, dict):
        raise InvalidMessage(
            "not_an_object", f"the body is JSON {_json_type(document)}, not an object"
        )
    request = _request_from(document)
    total = sum(len(turn.content) for turn in request.turns)
    if total > max_conversation_chars:
        raise InvalidMessage(
            "message_too_large",
            f"the conversation has {total} characters, more than the limit of "
            f"{max_conversation_chars}",
        )
    return request


def decode_conversation(document: object) -> tuple[Turn, ...]:
    """Validate just a conversation: ``{"messages": [...]}``, ``{"content": ...}`` or a bare list.

    Used where there is no message envelope (the ``prompt`` and ``check`` commands).
    """
    if isinstance(document, list):
        document = {"messages": document}
    if not isinstance(document, dict):
        raise InvalidMessage(
            "not_an_object", f"the input is JSON {_json_type(document)}, not an object"
        )
    return _turns(document)


def _loads(text: str, *, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    # ValueError covers JSONDecodeError and integers too long to convert; RecursionError, nesting
    # deeper than the parser can follow.
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage("invalid_json", f"the {what} is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON, though Python's parser takes them."""
    raise ValueError(f"{name} is not a JSON value")


def _is_sns_envelope(document: Any) -> bool:
    return isinstance(document, dict) and document.get("Type") == "Notification"


def _unwrap_envelope(envelope: dict[str, Any]) -> Any:
    inner = envelope.get("Message")
    if not isinstance(inner, str):
        raise InvalidMessage(
            "invalid_envelope", "the SNS notification envelope has no string field 'Message'"
        )
    return _loads(inner, what="SNS envelope's 'Message'")


def _request_from(document: dict[str, Any]) -> ModerationRequest:
    return ModerationRequest(
        id=_required_id(document),
        conversation_id=_optional_string(document, "conversation_id"),
        turns=_turns(document),
        attributes=_attributes(document),
    )


def _required_id(document: dict[str, Any]) -> str:
    if "id" not in document:
        raise InvalidMessage("schema_violation", "the field 'id' is required")
    value = document["id"]
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise InvalidMessage(
            "schema_violation", f"the field 'id' must be a string of 1 to {MAX_ID_CHARS} characters"
        )
    _check_encodable(value, "id")
    return value


def _optional_string(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise InvalidMessage(
            "schema_violation",
            f"the field '{name}' must be a string of 1 to {MAX_ID_CHARS} characters when given",
        )
    _check_encodable(value, name)
    return value


def _attributes(document: dict[str, Any]) -> Mapping[str, Any]:
    value = document.get("attributes")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage(
            "schema_violation", f"the field 'attributes' must be an object, not {_json_type(value)}"
        )
    encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    _check_encodable(encoded, "attributes")
    size = len(encoded.encode("utf-8"))
    if size > MAX_ATTRIBUTES_BYTES:
        raise InvalidMessage(
            "attributes_too_large",
            f"the field 'attributes' is {size} bytes as compact UTF-8 JSON, more than the limit "
            f"of {MAX_ATTRIBUTES_BYTES}",
        )
    return value


def _turns(document: dict[str, Any]) -> tuple[Turn, ...]:
    has_messages = document.get("messages") is not None
    has_content = document.get("content") is not None
    if has_messages == has_content:
        raise InvalidMessage(
            "schema_violation",
            "exactly one of the fields 'messages' and 'content' must be given"
            + (", not both" if has_messages else ""),
        )
    if has_content:
        return (_turn({"role": "user", "content": document["content"]}, "content", shorthand=True),)
    messages = document["messages"]
    if not isinstance(messages, list):
        raise InvalidMessage(
            "schema_violation", f"the field 'messages' must be a list, not {_json_type(messages)}"
        )
    if not messages:
        raise InvalidMessage("empty_conversation", "the field 'messages' is an empty list")
    return tuple(_turn(item, f"messages[{index}]") for index, item in enumerate(messages))


def _turn(item: Any, where: str, *, shorthand: bool = False) -> Turn:
    if not isinstance(item, dict):
        raise InvalidMessage("schema_violation", f"'{where}' must be an object")
    role = item.get("role")
    content = item.get("content")
    content_field = where if shorthand else f"{where}.content"
    if not isinstance(role, str):
        raise InvalidMessage("schema_violation", f"'{where}.role' must be a string")
    normalised = _ROLES.get(role)
    if normalised is None:
        raise InvalidMessage(
            "unsupported_role",
            f"'{where}.role' is {role[:40]!r}; the roles are 'user' and 'assistant' ('agent')",
        )
    if not isinstance(content, str):
        raise InvalidMessage(
            "schema_violation", f"'{content_field}' must be a string, not {_json_type(content)}"
        )
    if not content.strip():
        raise InvalidMessage("empty_content", f"'{content_field}' is empty")
    _check_encodable(content, content_field)
    return Turn(role=normalised, content=content)


def _check_encodable(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessage(
            "invalid_text", f"'{where}' holds a lone UTF-16 surrogate at position {exc.start}"
        ) from exc


def _json_type(value: object) -> str:
    names: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "a number"),
        (float, "a number"),
        (str, "a string"),
        (list, "an array"),
        (dict, "an object"),
    ]
    if value is None:
        return "null"
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)
