"""Decoding SQS bodies into moderation requests (DESIGN.md "Message in", "Failure semantics")."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.core.errors import InvalidMessage
from worker.core.messages import (
    DEFAULT_MAX_CONVERSATION_CHARS,
    MAX_ATTRIBUTES_BYTES,
    MAX_ID_CHARS,
    ModerationRequest,
    decode_conversation,
    decode_request,
)
from worker.core.models import Turn

# Every code the module's docstring promises; a dead-lettered message carries one of these.
DOCUMENTED_ERROR_CODES = {
    "invalid_json",
    "invalid_envelope",
    "not_an_object",
    "schema_violation",
    "empty_conversation",
    "unsupported_role",
    "empty_content",
    "invalid_text",
    "message_too_large",
    "attributes_too_large",
}


def _body(**fields: Any) -> str:
    return json.dumps(fields)


def _content_body(**fields: Any) -> str:
    """A valid body with shorthand content, overridden or extended by ``fields``."""
    return _body(**{"id": "post-1", "content": "hello", **fields})


def _rejection(
    body: str, *, max_conversation_chars: int = DEFAULT_MAX_CONVERSATION_CHARS
) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        decode_request(body, max_conversation_chars=max_conversation_chars)
    return caught.value


def _conversation_rejection(document: object) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        decode_conversation(document)
    return caught.value


def _sns_envelope(message: object) -> str:
    """An SNS notification as a queue subscribed without raw delivery receives it."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "b0a5e6b4-9d8f-5c0a-8e0a-2f6a1d2c3b4a",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:moderation-in",
            "Message": message,
            "Timestamp": "2026-11-26T14:00:00.120Z",
            "SignatureVersion": "1",
            "Signature": "c2lnbmF0dXJl",
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {"tenant": {"Type": "String", "Value": "acme"}},
        }
    )


DESIGN_EXAMPLE = {
    "id": "post-8f2c",
    "conversation_id": "room-42",
    "messages": [
        {"role": "user", "content": "I forgot how to kill a process in Linux, can you help?"},
        {"role": "assistant", "content": "Sure! Use the kill command ..."},
    ],
    "attributes": {"tenant": "acme"},
}


# --- raw body with messages -----------------------------------------------------------------------


def test_raw_body_with_messages_gives_the_turns_oldest_first() -> None:
    request = decode_request(json.dumps(DESIGN_EXAMPLE))

    assert request.turns == (
        Turn("user", "I forgot how to kill a process in Linux, can you help?"),
        Turn("assistant", "Sure! Use the kill command ..."),
    )


def test_raw_body_keeps_id_conversation_id_and_attributes() -> None:
    request = decode_request(json.dumps(DESIGN_EXAMPLE))

    assert (request.id, request.conversation_id, request.attributes) == (
        "post-8f2c",
        "room-42",
        {"tenant": "acme"},
    )


def test_the_last_turn_is_the_assessed_one() -> None:
    request = decode_request(json.dumps(DESIGN_EXAMPLE))

    assert request.assessed == Turn("assistant", "Sure! Use the kill command ...")


def test_turns_need_not_alternate() -> None:
    roles = ["user", "user", "assistant", "assistant", "user"]
    messages = [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]

    request = decode_request(_body(id="a", messages=messages))

    assert [turn.role for turn in request.turns] == roles


def test_decode_request_returns_a_moderation_request() -> None:
    assert isinstance(decode_request(_content_body()), ModerationRequest)


# --- content shorthand and the messages/content rule ----------------------------------------------


def test_content_shorthand_becomes_one_user_turn() -> None:
    request = decode_request(_body(id="a", content="shorthand for one user message"))

    assert request.turns == (Turn("user", "shorthand for one user message"),)


def test_messages_and_content_together_are_a_schema_violation_naming_both_fields() -> None:
    body = _body(id="a", content="x", messages=[{"role": "user", "content": "y"}])

    error = _rejection(body)

    assert error.error_code == "schema_violation"
    assert "'messages'" in error.detail
    assert "'content'" in error.detail


def test_neither_messages_nor_content_is_a_schema_violation_naming_both_fields() -> None:
    error = _rejection(_body(id="a"))

    assert error.error_code == "schema_violation"
    assert "'messages'" in error.detail
    assert "'content'" in error.detail


@pytest.mark.parametrize("messages", ["hello", {"role": "user", "content": "x"}, 3, True])
def test_messages_that_is_not_a_list_is_a_schema_violation_naming_messages(messages: Any) -> None:
    error = _rejection(_body(id="a", messages=messages))

    assert error.error_code == "schema_violation"
    assert "'messages'" in error.detail


def test_empty_messages_list_is_empty_conversation() -> None:
    error = _rejection(_body(id="a", messages=[]))

    assert error.error_code == "empty_conversation"
    assert "'messages'" in error.detail


@pytest.mark.parametrize("item", ["hello", ["user", "hi"], 7, None])
def test_message_that_is_not_an_object_is_a_schema_violation_naming_its_index(item: Any) -> None:
    body = _body(id="a", messages=[{"role": "user", "content": "ok"}, item])

    error = _rejection(body)

    assert error.error_code == "schema_violation"
    assert "messages[1]" in error.detail


# --- roles ----------------------------------------------------------------------------------------


def test_agent_role_is_normalised_to_assistant() -> None:
    request = decode_request(_body(id="a", messages=[{"role": "agent", "content": "reply"}]))

    assert request.assessed.role == "assistant"


def test_assistant_role_is_kept() -> None:
    request = decode_request(_body(id="a", messages=[{"role": "assistant", "content": "reply"}]))

    assert request.assessed.role == "assistant"


@pytest.mark.parametrize("role", ["system", "tool", "User", "ASSISTANT", "", "moderator"])
def test_unknown_role_is_unsupported_role_naming_the_field(role: str) -> None:
    body = _body(
        id="a", messages=[{"role": "user", "content": "ok"}, {"role": role, "content": "x"}]
    )

    error = _rejection(body)

    assert error.error_code == "unsupported_role"
    assert "messages[1].role" in error.detail


def test_missing_role_is_a_schema_violation_naming_the_role() -> None:
    error = _rejection(_body(id="a", messages=[{"content": "x"}]))

    assert error.error_code == "schema_violation"
    assert "messages[0].role" in error.detail


@pytest.mark.parametrize("role", [1, None, ["user"], {"name": "user"}])
def test_non_string_role_is_a_schema_violation_naming_the_role(role: Any) -> None:
    error = _rejection(_body(id="a", messages=[{"role": role, "content": "x"}]))

    assert error.error_code == "schema_violation"
    assert "messages[0].role" in error.detail


# --- content --------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", " ", "\n\t  \r\n", "\u3000"])
def test_blank_content_is_empty_content_naming_the_message_content(content: str) -> None:
    error = _rejection(_body(id="a", messages=[{"role": "user", "content": content}]))

    assert error.error_code == "empty_content"
    assert "messages[0].content" in error.detail


def test_blank_content_names_the_index_of_the_blank_message() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "   "}]

    error = _rejection(_body(id="a", messages=messages))

    assert error.error_code == "empty_content"
    assert "messages[1].content" in error.detail


def test_blank_shorthand_content_is_empty_content_naming_content() -> None:
    error = _rejection(_body(id="a", content="  \n "))

    assert error.error_code == "empty_content"
    assert "'content'" in error.detail


@pytest.mark.parametrize("content", [42, 1.5, True, ["hello"], {"text": "hello"}])
def test_non_string_message_content_is_a_schema_violation_naming_it(content: Any) -> None:
    error = _rejection(_body(id="a", messages=[{"role": "user", "content": content}]))

    assert error.error_code == "schema_violation"
    assert "messages[0].content" in error.detail


def test_missing_message_content_is_a_schema_violation_naming_it() -> None:
    error = _rejection(_body(id="a", messages=[{"role": "user"}]))

    assert error.error_code == "schema_violation"
    assert "messages[0].content" in error.detail


@pytest.mark.parametrize("content", [42, ["hello"], {"text": "hello"}, False])
def test_non_string_shorthand_content_is_a_schema_violation_naming_content(content: Any) -> None:
    error = _rejection(_body(id="a", content=content))

    assert error.error_code == "schema_violation"
    assert "'content'" in error.detail


def test_content_is_kept_verbatim_with_its_surrounding_whitespace() -> None:
    content = "  line one\r\n\tline two  $x {x} %s \n"

    request = decode_request(_body(id="a", content=content))

    assert request.assessed.content == content


def test_control_characters_in_content_survive_decoding() -> None:
    body = r'{"id": "a", "content": "before\u0000middle\u0007after"}'

    request = decode_request(body)

    assert request.assessed.content == "before\x00middle\x07after"


def test_non_ascii_content_is_decoded_from_escapes_and_raw_utf8_alike() -> None:
    body = '{"id": "a", "messages": [{"role": "user", "content": "caf\\u00e9 日本 😀"}]}'

    request = decode_request(body)

    assert request.assessed.content == "café 日本 😀"


def test_escaped_surrogate_pair_is_decoded_to_one_character() -> None:
    request = decode_request(r'{"id": "a", "content": "smile \ud83d\ude00"}')

    assert request.assessed.content == "smile 😀"


# --- invalid text (lone surrogates) ---------------------------------------------------------------


@pytest.mark.parametrize("escape", [r"\ud800", r"\udfff", r"\ud83d tail"])
def test_lone_surrogate_in_message_content_is_invalid_text_naming_it(escape: str) -> None:
    body = '{"id": "a", "messages": [{"role": "user", "content": "x' + escape + '"}]}'

    error = _rejection(body)

    assert error.error_code == "invalid_text"
    assert "messages[0].content" in error.detail


def test_lone_surrogate_in_shorthand_content_is_invalid_text_naming_content() -> None:
    error = _rejection(r'{"id": "a", "content": "x\ud800y"}')

    assert error.error_code == "invalid_text"
    assert "'content'" in error.detail


def test_lone_surrogate_in_id_is_invalid_text_naming_id() -> None:
    error = _rejection(r'{"id": "a\ud800", "content": "x"}')

    assert error.error_code == "invalid_text"
    assert "'id'" in error.detail


def test_lone_surrogate_in_conversation_id_is_invalid_text_naming_it() -> None:
    error = _rejection(r'{"id": "a", "conversation_id": "\udc00", "content": "x"}')

    assert error.error_code == "invalid_text"
    assert "'conversation_id'" in error.detail


def test_lone_surrogate_in_attributes_is_invalid_text_naming_attributes() -> None:
    error = _rejection(r'{"id": "a", "content": "x", "attributes": {"k": ["\ud800"]}}')

    assert error.error_code == "invalid_text"
    assert "'attributes'" in error.detail


def test_lone_surrogate_inside_an_sns_envelope_is_invalid_text() -> None:
    inner = r'{"id": "a", "content": "x\ud800"}'

    error = _rejection(_sns_envelope(inner))

    assert error.error_code == "invalid_text"
    assert "'content'" in error.detail


# --- id -------------------------------------------------------------------------------------------


def test_missing_id_is_a_schema_violation_naming_id() -> None:
    error = _rejection(_body(content="x"))

    assert error.error_code == "schema_violation"
    assert "'id'" in error.detail


def test_empty_id_is_a_schema_violation_naming_id() -> None:
    error = _rejection(_content_body(id=""))

    assert error.error_code == "schema_violation"
    assert "'id'" in error.detail


def test_id_of_257_characters_is_a_schema_violation_naming_id() -> None:
    error = _rejection(_content_body(id="x" * (MAX_ID_CHARS + 1)))

    assert MAX_ID_CHARS + 1 == 257
    assert error.error_code == "schema_violation"
    assert "'id'" in error.detail


@pytest.mark.parametrize("value", [123, 1.0, True, None, ["post-1"], {"id": "post-1"}])
def test_non_string_id_is_a_schema_violation_naming_id(value: Any) -> None:
    error = _rejection(_content_body(id=value))

    assert error.error_code == "schema_violation"
    assert "'id'" in error.detail


def test_id_of_256_characters_is_accepted() -> None:
    long_id = "x" * 256

    assert decode_request(_content_body(id=long_id)).id == long_id


def test_id_of_one_character_is_accepted() -> None:
    assert decode_request(_content_body(id="a")).id == "a"


def test_id_length_counts_characters_not_utf8_bytes() -> None:
    emoji_id = "😀" * 256  # 1024 UTF-8 bytes, 256 characters

    assert decode_request(_content_body(id=emoji_id)).id == emoji_id


# --- conversation_id ------------------------------------------------------------------------------


def test_absent_conversation_id_is_none() -> None:
    assert decode_request(_content_body()).conversation_id is None


def test_null_conversation_id_is_none() -> None:
    assert decode_request(_content_body(conversation_id=None)).conversation_id is None


def test_conversation_id_of_256_characters_is_accepted() -> None:
    value = "c" * MAX_ID_CHARS

    assert decode_request(_content_body(conversation_id=value)).conversation_id == value


def test_string_conversation_id_is_kept() -> None:
    assert decode_request(_content_body(conversation_id="room-42")).conversation_id == "room-42"


@pytest.mark.parametrize("value", [42, True, ["room"], {"room": 42}])
def test_non_string_conversation_id_is_a_schema_violation_naming_it(value: Any) -> None:
    error = _rejection(_content_body(conversation_id=value))

    assert error.error_code == "schema_violation"
    assert "'conversation_id'" in error.detail


# --- attributes -----------------------------------------------------------------------------------


def test_absent_attributes_are_an_empty_object() -> None:
    assert decode_request(_content_body()).attributes == {}


def test_null_attributes_are_an_empty_object() -> None:
    assert decode_request(_content_body(attributes=None)).attributes == {}


def test_nested_attributes_are_kept_verbatim() -> None:
    attributes = {
        "tenant": "acme",
        "nested": {"list": [1, 2.5, None, True, "x"], "deeper": {"empty": {}, "none": None}},
        "unicode": "café 😀",
        "count": 0,
    }

    request = decode_request(_content_body(attributes=attributes))

    assert request.attributes == attributes
    assert json.dumps(request.attributes) == json.dumps(attributes)


@pytest.mark.parametrize("value", [["tenant"], "acme", 3, 2.5, True])
def test_non_object_attributes_are_a_schema_violation_naming_attributes(value: Any) -> None:
    error = _rejection(_content_body(attributes=value))

    assert error.error_code == "schema_violation"
    assert "'attributes'" in error.detail


def _attributes_of_size(size: int, *, filler: str = "x") -> dict[str, str]:
    """``{"blob": ...}`` whose compact UTF-8 JSON is exactly ``size`` bytes."""
    overhead = len('{"blob":""}')
    count, remainder = divmod(size - overhead, len(filler.encode("utf-8")))
    assert remainder == 0
    return {"blob": filler * count}


def test_attributes_at_the_cap_are_accepted() -> None:
    attributes = _attributes_of_size(MAX_ATTRIBUTES_BYTES)

    assert decode_request(_content_body(attributes=attributes)).attributes == attributes


def test_attributes_are_measured_in_compact_json_with_bare_separators() -> None:
    blob = _attributes_of_size(MAX_ATTRIBUTES_BYTES - len('"a":"b",'))["blob"]
    attributes = {"a": "b", "blob": blob}  # one ',' and two ':' at the cap exactly

    assert decode_request(_content_body(attributes=attributes)).attributes == attributes


def test_attributes_one_byte_over_the_cap_are_attributes_too_large() -> None:
    error = _rejection(_content_body(attributes=_attributes_of_size(MAX_ATTRIBUTES_BYTES + 1)))

    assert error.error_code == "attributes_too_large"


def test_attributes_too_large_detail_names_the_field_the_size_and_the_limit() -> None:
    error = _rejection(_content_body(attributes=_attributes_of_size(300_000)))

    assert error.detail == (
        "the field 'attributes' is 300000 bytes as compact UTF-8 JSON, more than the limit of "
        f"{MAX_ATTRIBUTES_BYTES}"
    )


def test_attributes_size_counts_utf8_bytes_not_characters() -> None:
    # 5 500 characters of three bytes each: far fewer characters than the cap, more bytes.
    attributes = _attributes_of_size(len('{"blob":""}') + 5_500 * 3, filler="€")

    assert _rejection(_content_body(attributes=attributes)).error_code == "attributes_too_large"


def test_attributes_size_ignores_the_whitespace_of_the_incoming_body() -> None:
    attributes = _attributes_of_size(MAX_ATTRIBUTES_BYTES)
    spaced = json.dumps({"id": "a", "content": "x", "attributes": attributes}, indent=40)

    assert decode_request(spaced).attributes == attributes


# --- unknown fields -------------------------------------------------------------------------------


def test_unknown_top_level_fields_are_ignored() -> None:
    body = _content_body(priority=5, extra={"anything": [1, 2]}, Type="NotANotification")

    request = decode_request(body)

    assert (request.id, request.turns) == ("post-1", (Turn("user", "hello"),))


def test_unknown_fields_inside_a_message_are_ignored() -> None:
    messages = [{"role": "user", "content": "hi", "name": "alice", "ts": 1}]

    request = decode_request(_body(id="a", messages=messages))

    assert request.turns == (Turn("user", "hi"),)


# --- not JSON / not an object ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["", "   ", "not json", "{", '{"id": "a",}', "{'id': 'a'}", '{"id": "a"} trailing'],
)
def test_body_that_is_not_json_is_invalid_json(body: str) -> None:
    error = _rejection(body)

    assert error.error_code == "invalid_json"
    assert "body" in error.detail


@pytest.mark.parametrize(
    "body", ["[]", '[{"id": "a", "content": "x"}]', "42", "1.5", '"text"', "null", "true"]
)
def test_json_that_is_not_an_object_is_not_an_object(body: str) -> None:
    error = _rejection(body)

    assert error.error_code == "not_an_object"
    assert "body" in error.detail


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("[]", "the body is JSON an array, not an object"),
        ("42", "the body is JSON a number, not an object"),
        ("1.5", "the body is JSON a number, not an object"),
        ('"text"', "the body is JSON a string, not an object"),
        ("null", "the body is JSON null, not an object"),
        ("true", "the body is JSON a boolean, not an object"),
        (
            '{"id": "a", "messages": {"role": "user"}}',
            "the field 'messages' must be a list, not an object",
        ),
        (
            '{"id": "a", "content": "x", "attributes": ["t"]}',
            "the field 'attributes' must be an object, not an array",
        ),
        (
            '{"id": "a", "content": "x", "attributes": {"n": NaN}}',
            "the body is not valid JSON: NaN is not a JSON value",
        ),
        ('{"content": "x"}', "the field 'id' is required"),
        ('{"id": "a"}', "exactly one of the fields 'messages' and 'content' must be given"),
        (
            '{"id": "a", "content": "x", "messages": []}',
            "exactly one of the fields 'messages' and 'content' must be given, not both",
        ),
        (
            '{"id": "a", "messages": [{"role": "user", "content": 42}]}',
            "'messages[0].content' must be a string, not a number",
        ),
        (
            '{"id": "a", "messages": [{"role": "' + "r" * 50 + '", "content": "x"}]}',
            f"'messages[0].role' is {'r' * 40!r}; the roles are 'user' and 'assistant' ('agent')",
        ),
        (
            '{"Type": "Notification"}',
            "the SNS notification envelope has no string field 'Message'",
        ),
        (
            '{"Type": "Notification", "Message": "NaN"}',
            "the SNS envelope's 'Message' is not valid JSON: NaN is not a JSON value",
        ),
    ],
)
def test_the_detail_names_the_json_type_or_the_field_in_full(body: str, detail: str) -> None:
    """The detail travels with the dead-letter copy: its whole text is part of the contract."""
    assert _rejection(body).detail == detail


def test_deeply_nested_arrays_are_invalid_json_not_a_crash() -> None:
    error = _rejection("[" * 100_000 + "]" * 100_000)

    assert error.error_code == "invalid_json"


def test_deeply_nested_attributes_are_invalid_json_not_a_crash() -> None:
    depth = 100_000
    body = '{"id": "a", "content": "x", "attributes": ' + '{"a": ' * depth + "1" + "}" * depth + "}"

    error = _rejection(body)

    assert error.error_code == "invalid_json"


def test_integer_too_long_for_python_is_an_invalid_message_not_a_crash() -> None:
    body = '{"id": "a", "content": "x", "attributes": {"n": ' + "1" * 5000 + "}}"

    error = _rejection(body)

    assert error.error_code in DOCUMENTED_ERROR_CODES


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_constants_are_invalid_json(constant: str) -> None:
    body = '{"id": "a", "content": "x", "attributes": {"n": ' + constant + "}}"

    error = _rejection(body)

    assert error.error_code == "invalid_json"


# --- SNS envelope ---------------------------------------------------------------------------------


def test_sns_envelope_is_unwrapped() -> None:
    request = decode_request(_sns_envelope(json.dumps(DESIGN_EXAMPLE)))

    assert request == decode_request(json.dumps(DESIGN_EXAMPLE))


def test_sns_envelope_attributes_are_not_taken_for_the_messages_attributes() -> None:
    request = decode_request(_sns_envelope(_content_body()))

    assert request.attributes == {}


def test_sns_envelope_without_message_is_invalid_envelope_naming_message() -> None:
    error = _rejection(json.dumps({"Type": "Notification", "TopicArn": "arn:aws:sns:x"}))

    assert error.error_code == "invalid_envelope"
    assert "'Message'" in error.detail


@pytest.mark.parametrize("message", [None, 42, {"id": "a", "content": "x"}, ["x"], True])
def test_sns_envelope_with_non_string_message_is_invalid_envelope_naming_message(
    message: Any,
) -> None:
    error = _rejection(_sns_envelope(message))

    assert error.error_code == "invalid_envelope"
    assert "'Message'" in error.detail


@pytest.mark.parametrize("message", ["", "not json", "{", "[" * 100_000])
def test_sns_envelope_whose_message_is_not_json_is_invalid_json_naming_message(
    message: str,
) -> None:
    error = _rejection(_sns_envelope(message))

    assert error.error_code == "invalid_json"
    assert "'Message'" in error.detail


def test_sns_envelope_whose_message_is_a_json_array_is_not_an_object() -> None:
    error = _rejection(_sns_envelope("[1, 2]"))

    assert error.error_code == "not_an_object"


def test_sns_envelope_inner_body_is_validated_like_a_raw_body() -> None:
    error = _rejection(_sns_envelope(_body(content="x")))

    assert error.error_code == "schema_violation"
    assert "'id'" in error.detail


# --- size limit -----------------------------------------------------------------------------------


def test_conversation_longer_than_the_limit_is_message_too_large() -> None:
    error = _rejection(_body(id="a", content="x" * 11), max_conversation_chars=10)

    assert error.error_code == "message_too_large"
    assert "10" in error.detail


def test_conversation_exactly_at_the_limit_is_accepted() -> None:
    request = decode_request(_body(id="a", content="x" * 10), max_conversation_chars=10)

    assert request.assessed.content == "x" * 10


def test_size_limit_counts_every_turn_of_the_conversation() -> None:
    messages = [{"role": "user", "content": "x" * 6}, {"role": "assistant", "content": "y" * 6}]

    error = _rejection(_body(id="a", messages=messages), max_conversation_chars=10)

    assert error.error_code == "message_too_large"


def test_size_limit_counts_characters_not_utf8_bytes() -> None:
    request = decode_request(_body(id="a", content="é" * 10), max_conversation_chars=10)

    assert len(request.assessed.content) == 10


def test_default_limit_accepts_a_conversation_exactly_at_it() -> None:
    body = _body(id="a", content="x" * DEFAULT_MAX_CONVERSATION_CHARS)

    assert len(decode_request(body).assessed.content) == DEFAULT_MAX_CONVERSATION_CHARS


def test_default_limit_rejects_one_character_more() -> None:
    error = _rejection(_body(id="a", content="x" * (DEFAULT_MAX_CONVERSATION_CHARS + 1)))

    assert error.error_code == "message_too_large"


# --- every rejection uses a documented code -------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "nope",
        "[]",
        json.dumps({"Type": "Notification"}),
        _body(content="x"),
        _body(id="a", messages=[]),
        _body(id="a", messages=[{"role": "bot", "content": "x"}]),
        _body(id="a", content=" "),
        r'{"id": "a", "content": "\ud800"}',
    ],
)
def test_every_rejection_carries_a_documented_error_code(body: str) -> None:
    assert _rejection(body).error_code in DOCUMENTED_ERROR_CODES


# --- decode_conversation --------------------------------------------------------------------------


def test_decode_conversation_accepts_a_bare_list() -> None:
    turns = decode_conversation(
        [{"role": "user", "content": "hi"}, {"role": "agent", "content": "hello"}]
    )

    assert turns == (Turn("user", "hi"), Turn("assistant", "hello"))


def test_decode_conversation_accepts_an_object_with_messages() -> None:
    turns = decode_conversation({"messages": [{"role": "user", "content": "hi"}]})

    assert turns == (Turn("user", "hi"),)


def test_decode_conversation_accepts_content_shorthand() -> None:
    assert decode_conversation({"content": "hi"}) == (Turn("user", "hi"),)


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        ("hi", "the input is JSON a string, not an object"),
        # decode_conversation takes any decoded value; one JSON never yields is named by type.
        (("a",), "the input is JSON tuple, not an object"),
    ],
)
def test_decode_conversation_of_a_non_object_names_its_type(document: object, detail: str) -> None:
    error = _conversation_rejection(document)

    assert (error.error_code, error.detail) == ("not_an_object", detail)


def test_an_invalid_message_reads_as_its_code_and_detail() -> None:
    assert str(_rejection("[]")) == "not_an_object: the body is JSON an array, not an object"


def test_decode_conversation_needs_no_id() -> None:
    assert decode_conversation({"messages": [{"role": "user", "content": "hi"}]})[0].content == "hi"


def test_decode_conversation_of_an_empty_list_is_empty_conversation() -> None:
    assert _conversation_rejection([]).error_code == "empty_conversation"


@pytest.mark.parametrize("document", ["text", 42, None, True])
def test_decode_conversation_of_a_scalar_is_not_an_object(document: object) -> None:
    assert _conversation_rejection(document).error_code == "not_an_object"


def test_decode_conversation_rejects_an_unknown_role() -> None:
    error = _conversation_rejection([{"role": "system", "content": "x"}])

    assert error.error_code == "unsupported_role"
    assert "messages[0].role" in error.detail
