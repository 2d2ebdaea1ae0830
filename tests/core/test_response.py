"""Reading the endpoint's generation response (FORMATS.md section 5): shapes, echo, bad bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.core.errors import UnreadableResponse
from worker.core.models import Completion
from worker.core.response import decode_generation

PROMPT = "[INST] Task: Check if there is unsafe content in 'User' messages ... [/INST]"
DETAILS = {
    "finish_reason": "eos_token",
    "generated_tokens": 2,
    "tokens": [
        {"id": 25110, "text": "unsafe", "logprob": -0.05, "special": False},
        {"id": 13, "text": "\n", "logprob": -0.01, "special": False},
    ],
    "top_tokens": [
        [
            {"id": 25110, "text": "unsafe", "logprob": -0.05, "special": False},
            {"id": 9109, "text": "safe", "logprob": -3.0, "special": False},
        ],
        [{"id": 13, "text": "\n", "logprob": -0.01, "special": False}],
    ],
}


def _payload(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8")


def _rejection(payload: bytes | str, prompt: str = PROMPT) -> UnreadableResponse:
    with pytest.raises(UnreadableResponse) as caught:
        decode_generation(payload, prompt)
    return caught.value


# --- shapes ---------------------------------------------------------------------------------------


def test_sagemaker_list_shape_gives_the_generated_text() -> None:
    completion = decode_generation(_payload([{"generated_text": "safe"}]), PROMPT)

    assert completion == Completion(generated_text="safe", details=None)


def test_tgi_object_shape_gives_the_generated_text() -> None:
    completion = decode_generation(_payload({"generated_text": "unsafe\nS1"}), PROMPT)

    assert completion == Completion(generated_text="unsafe\nS1", details=None)


def test_payload_may_be_given_as_text() -> None:
    assert decode_generation('{"generated_text": "safe"}', PROMPT).generated_text == "safe"


def test_non_ascii_generated_text_is_decoded_from_utf8() -> None:
    payload = '{"generated_text": "unsafe\\nS1 — café"}'.encode()

    assert decode_generation(payload, PROMPT).generated_text == "unsafe\nS1 — café"


def test_generated_text_is_otherwise_kept_as_is() -> None:
    text = "\n\nunsafe\nS1<|eot_id|>"

    assert decode_generation(_payload({"generated_text": text}), PROMPT).generated_text == text


def test_extra_fields_in_the_answer_are_ignored() -> None:
    payload = _payload([{"generated_text": "safe", "warnings": ["x"], "extra": 1}])

    assert decode_generation(payload, PROMPT) == Completion("safe", None)


# --- details --------------------------------------------------------------------------------------


def test_details_are_kept_when_an_object_in_the_list_shape() -> None:
    payload = _payload([{"generated_text": "unsafe\nO3", "details": DETAILS}])

    assert decode_generation(payload, PROMPT).details == DETAILS


def test_details_are_kept_when_an_object_in_the_object_shape() -> None:
    payload = _payload({"generated_text": "unsafe\nO3", "details": DETAILS})

    assert decode_generation(payload, PROMPT).details == DETAILS


def test_missing_details_are_none() -> None:
    assert decode_generation(_payload({"generated_text": "safe"}), PROMPT).details is None


@pytest.mark.parametrize("details", [None, [DETAILS], "details", 3, True])
def test_details_that_are_not_an_object_are_dropped(details: Any) -> None:
    payload = _payload({"generated_text": "safe", "details": details})

    assert decode_generation(payload, PROMPT).details is None


def test_details_do_not_make_an_answer_invalid_when_malformed() -> None:
    payload = _payload({"generated_text": "safe", "details": {"tokens": "garbage"}})

    assert decode_generation(payload, PROMPT).generated_text == "safe"


# --- echoed prompt --------------------------------------------------------------------------------


def test_echoed_prompt_is_stripped() -> None:
    payload = _payload([{"generated_text": PROMPT + "unsafe\nO3"}])

    assert decode_generation(payload, PROMPT).generated_text == "unsafe\nO3"


def test_echoed_prompt_is_stripped_in_the_object_shape() -> None:
    payload = _payload({"generated_text": PROMPT + " safe"})

    assert decode_generation(payload, PROMPT).generated_text == " safe"


@pytest.mark.parametrize("begin", ["<s>", "<|begin_of_text|>", " <s>", "\n<s> "])
def test_echoed_prompt_after_a_begin_of_text_token_is_stripped(begin: str) -> None:
    payload = _payload({"generated_text": begin + PROMPT + "safe"})

    assert decode_generation(payload, PROMPT).generated_text == "safe"


def test_echoed_prompt_that_is_the_whole_text_leaves_nothing() -> None:
    assert decode_generation(_payload({"generated_text": PROMPT}), PROMPT).generated_text == ""


def test_prompt_appearing_after_the_start_is_not_stripped() -> None:
    text = "safe\n" + PROMPT

    assert decode_generation(_payload({"generated_text": text}), PROMPT).generated_text == text


def test_partial_echo_of_the_prompt_is_not_stripped() -> None:
    text = PROMPT[:20] + "safe"

    assert decode_generation(_payload({"generated_text": text}), PROMPT).generated_text == text


def test_nothing_is_stripped_with_an_empty_prompt() -> None:
    text = "\n\nsafe"

    assert decode_generation(_payload({"generated_text": text}), "").generated_text == text


# --- bodies of the wrong shape are permanent errors -----------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"{", b'{"generated_text": "safe"', b"\xff\xfe\xfd", b"\xc3\x28"],
    ids=["empty", "text", "open-brace", "unterminated", "bad-bytes", "bad-utf8"],
)
def test_invalid_json_is_a_permanent_error(payload: bytes) -> None:
    assert "JSON" in str(_rejection(payload))


def test_empty_list_is_a_permanent_error() -> None:
    assert "0" in str(_rejection(b"[]"))


def test_list_of_two_generations_is_a_permanent_error() -> None:
    payload = _payload([{"generated_text": "safe"}, {"generated_text": "unsafe"}])

    assert str(_rejection(payload)) == (
        "the endpoint answered with a list of 2 generations, expected 1"
    )


NO_GENERATED_TEXT = "the endpoint's answer has no string 'generated_text'"


@pytest.mark.parametrize("document", [{}, [{}], {"text": "safe"}, [{"details": DETAILS}]])
def test_missing_generated_text_is_a_permanent_error(document: Any) -> None:
    assert str(_rejection(_payload(document))) == NO_GENERATED_TEXT


@pytest.mark.parametrize("value", [None, 5, True, ["safe"], {"text": "safe"}])
def test_non_string_generated_text_is_a_permanent_error(value: Any) -> None:
    assert str(_rejection(_payload({"generated_text": value}))) == NO_GENERATED_TEXT


@pytest.mark.parametrize("document", ["safe", 1, None, True, ["safe"], [["safe"]], [None]])
def test_answer_that_is_not_a_generation_object_is_a_permanent_error(document: Any) -> None:
    _rejection(_payload(document))


def test_permanent_error_is_not_retryable() -> None:
    assert _rejection(b"[]").retryable is False


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"generated_text": "safe", "details": {"n": ' + b"1" * 5000 + b"}}",
    ],
    ids=["deep-nesting", "huge-integer"],
)
def test_json_python_cannot_decode_is_a_permanent_error(payload: bytes) -> None:
    _rejection(payload)
