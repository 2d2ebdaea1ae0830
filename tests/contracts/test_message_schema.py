"""The message-in schema and the hand-written decoder agree on what is a valid message.

Every case is run through both: ``decode_request`` (valid when it raises no ``InvalidMessage``)
and the committed JSON Schema. The README's bad-input table is covered where a schema can say
it; what it cannot (non-JSON bodies, the SNS envelope, lone surrogates, the configurable length
cap, the 16 KiB cap on ``attributes``) is named in the schema's descriptions and left out here.
"""

from __future__ import annotations

import json
from typing import Any, Final

import pytest
from contract_files import validator
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.errors import InvalidMessage
from worker.core.messages import decode_request

SCHEMA: Final = validator("moderation-request.schema.json")
TURN: Final = {"role": "user", "content": "hello"}

VALID: Final[dict[str, Any]] = {
    "messages": {"id": "a", "messages": [TURN]},
    "content shorthand": {"id": "a", "content": "hello"},
    "every field": {
        "id": "post-8f2c",
        "conversation_id": "room-42",
        "messages": [TURN, {"role": "assistant", "content": "hi"}],
        "attributes": {"tenant": "acme", "nested": [1, None, {"x": True}]},
    },
    "agent is an alias": {"id": "a", "messages": [{"role": "agent", "content": "hi"}]},
    "turns need not alternate": {"id": "a", "messages": [TURN, TURN]},
    "null messages with content": {"id": "a", "messages": None, "content": "hello"},
    "null content with messages": {"id": "a", "messages": [TURN], "content": None},
    "null conversation_id and attributes": {
        "id": "a",
        "content": "x",
        "conversation_id": None,
        "attributes": None,
    },
    "unknown fields are ignored": {"id": "a", "content": "x", "extra": 1, "v": [2]},
    "unknown fields in a turn are ignored": {
        "id": "a",
        "messages": [{"role": "user", "content": "x", "name": "bob"}],
    },
    "control characters are kept": {"id": "a", "content": "a\u0000b\u0007"},
    "id of 256 characters": {"id": "i" * 256, "content": "x"},
    "empty attributes": {"id": "a", "content": "x", "attributes": {}},
}

INVALID: Final[dict[str, Any]] = {
    "an array": [TURN],
    "a string": "hello",
    "a number": 42,
    "null": None,
    "id missing": {"content": "x"},
    "id empty": {"id": "", "content": "x"},
    "id too long": {"id": "i" * 257, "content": "x"},
    "id not a string": {"id": 7, "content": "x"},
    "id null": {"id": None, "content": "x"},
    "both messages and content": {"id": "a", "messages": [TURN], "content": "x"},
    "neither messages nor content": {"id": "a"},
    "both null": {"id": "a", "messages": None, "content": None},
    "messages not a list": {"id": "a", "messages": {"role": "user", "content": "x"}},
    "messages empty": {"id": "a", "messages": []},
    "a message not an object": {"id": "a", "messages": ["hello"]},
    "role missing": {"id": "a", "messages": [{"content": "x"}]},
    "role not a string": {"id": "a", "messages": [{"role": 1, "content": "x"}]},
    "unsupported role": {"id": "a", "messages": [{"role": "system", "content": "x"}]},
    "role in the wrong case": {"id": "a", "messages": [{"role": "User", "content": "x"}]},
    "content missing in a turn": {"id": "a", "messages": [{"role": "user"}]},
    "content not a string": {"id": "a", "messages": [{"role": "user", "content": ["x"]}]},
    "content empty": {"id": "a", "messages": [{"role": "user", "content": ""}]},
    "content only whitespace": {"id": "a", "messages": [{"role": "user", "content": " \t\n"}]},
    "shorthand content empty": {"id": "a", "content": ""},
    "shorthand content whitespace": {"id": "a", "content": "   "},
    "shorthand content not a string": {"id": "a", "content": 5},
    "conversation_id empty": {"id": "a", "content": "x", "conversation_id": ""},
    "conversation_id not a string": {"id": "a", "content": "x", "conversation_id": 42},
    "conversation_id too long": {"id": "a", "content": "x", "conversation_id": "c" * 257},
    "attributes not an object": {"id": "a", "content": "x", "attributes": ["tenant"]},
}


def decoder_accepts(document: Any) -> bool:
    try:
        decode_request(json.dumps(document))
    except InvalidMessage:
        return False
    return True


@pytest.mark.parametrize("document", VALID.values(), ids=VALID.keys())
def test_a_valid_message_is_valid_for_the_decoder_and_the_schema(document: Any) -> None:
    assert decoder_accepts(document)
    assert SCHEMA.is_valid(document)


@pytest.mark.parametrize("document", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_message_is_invalid_for_the_decoder_and_the_schema(document: Any) -> None:
    assert not decoder_accepts(document)
    assert not SCHEMA.is_valid(document)


# Shapes near the boundaries: each field absent, null, of a wrong type, empty, blank or fine.
_texts = st.sampled_from(["", " ", "\t\n", "x", " y ", "i" * 256, "i" * 257])
_turns = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "agent", "system", "", 1, None]),
        "content": st.one_of(_texts, st.integers(), st.none(), st.lists(_texts, max_size=1)),
    },
)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(_texts, st.integers(), st.none()),
        "conversation_id": st.one_of(_texts, st.integers(), st.none()),
        "messages": st.one_of(
            st.none(), st.lists(_turns, max_size=3), st.lists(_texts, max_size=1), _texts
        ),
        "content": st.one_of(st.none(), _texts, st.booleans()),
        "attributes": st.one_of(
            st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), _texts
        ),
        "unknown": st.integers(),
    },
)


@settings(max_examples=400, deadline=None)
@given(_documents)
def test_the_decoder_and_the_schema_agree_on_any_document_of_this_shape(document: Any) -> None:
    assert decoder_accepts(document) == SCHEMA.is_valid(document)
