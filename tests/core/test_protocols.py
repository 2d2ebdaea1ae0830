"""The request protocols: the bodies they write, the answers they read, the errors they quote."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.core.errors import ConfigurationError, UnreadableResponse
from worker.core.prompt import DEFAULT_PARAMETERS, build_request_body
from worker.core.protocols import (
    OpenAICompletionsProtocol,
    TgiProtocol,
    decode_openai_completion,
    read_error_message,
)

PROMPT = "<|start_header_id|>user<|end_header_id|>\n\nTask: ...<|eot_id|>"
LOGPROBS = {
    "text_offset": [0],
    "token_logprobs": [-0.01],
    "tokens": ["safe"],
    "top_logprobs": [{"safe": -0.01, "unsafe": -4.6}],
}


def completion_body(text: object = "safe", logprobs: object = LOGPROBS) -> str:
    return json.dumps({"choices": [{"index": 0, "text": text, "logprobs": logprobs}]})


def test_the_openai_body_is_greedy_with_five_alternatives_and_the_prompt_as_given() -> None:
    body = OpenAICompletionsProtocol("llama-guard").request_body(PROMPT)

    assert body == {
        "model": "llama-guard",
        "prompt": PROMPT,
        "max_tokens": 32,
        "temperature": 0,
        "logprobs": 5,
    }


def test_without_a_model_name_the_body_has_no_model_field() -> None:
    body = OpenAICompletionsProtocol(None).request_body(PROMPT)

    assert "model" not in body


def test_max_tokens_and_logprobs_can_be_changed_and_logprobs_removed() -> None:
    protocol = OpenAICompletionsProtocol("m", {"max_tokens": 8, "logprobs": None})

    assert protocol.request_body("p") == {
        "model": "m",
        "prompt": "p",
        "max_tokens": 8,
        "temperature": 0,
    }


@pytest.mark.parametrize(
    "key",
    ["temperature", "top_p", "top_k", "echo", "n", "truncate_prompt_tokens", "max_new_tokens"],
)
def test_any_other_generation_field_is_refused_by_name(key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        OpenAICompletionsProtocol("m", {key: 1})

    assert str(raised.value) == (
        f"generation parameter {key!r} cannot be set for the OpenAI protocol: only"
        " max_tokens and logprobs can (greedy decoding with temperature 0 is fixed)"
    )


def test_max_tokens_cannot_be_removed() -> None:
    with pytest.raises(ConfigurationError) as raised:
        OpenAICompletionsProtocol("m", {"max_tokens": None})

    assert str(raised.value) == "max_tokens cannot be removed for the OpenAI protocol"


def test_the_tgi_protocol_writes_the_same_body_as_before() -> None:
    protocol = TgiProtocol(DEFAULT_PARAMETERS)

    assert protocol.request_body(PROMPT) == build_request_body(PROMPT, DEFAULT_PARAMETERS)
    assert protocol.http_path == "/generate"


def test_the_tgi_protocol_refuses_sampling_parameters() -> None:
    with pytest.raises(ConfigurationError, match="temperature"):
        TgiProtocol({**DEFAULT_PARAMETERS, "temperature": 0.5})


def test_a_completion_is_the_first_choice_text_with_its_logprobs() -> None:
    completion = decode_openai_completion(completion_body())

    assert completion.generated_text == "safe"
    assert completion.details == LOGPROBS


@pytest.mark.parametrize("logprobs", [None, [0.5], "0.5"])
def test_a_completion_without_a_logprobs_object_has_no_details(logprobs: object) -> None:
    assert decode_openai_completion(completion_body(logprobs=logprobs)).details is None


_NO_CHOICE = "the endpoint's answer has no list of exactly one 'choices'"
_NO_TEXT = "the endpoint's answer has no string 'choices[0].text'"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (json.dumps([{"text": "safe"}]).encode(), _NO_CHOICE),
        (json.dumps({"choices": "safe"}).encode(), _NO_CHOICE),
        (json.dumps({"choices": []}).encode(), _NO_CHOICE),
        (json.dumps({"choices": [{"text": "a"}, {"text": "b"}]}).encode(), _NO_CHOICE),
        (completion_body(text=None).encode(), _NO_TEXT),
        (json.dumps({"choices": ["safe"]}).encode(), _NO_TEXT),
        (json.dumps({"error": {"message": "boom"}}).encode(), _NO_CHOICE),
    ],
    ids=[
        "a-list",
        "choices-not-a-list",
        "no-choice",
        "two-choices",
        "no-text",
        "a-choice-not-an-object",
        "an-error-object",
    ],
)
def test_any_other_answer_is_unreadable_saying_what_is_missing(
    payload: bytes, message: str
) -> None:
    """The message is logged with ``endpoint_rejected``: an operator reads what was wrong."""
    with pytest.raises(UnreadableResponse) as raised:
        decode_openai_completion(payload)

    assert str(raised.value) == message


@pytest.mark.parametrize("payload", [b"not json", b"\xff\xfe"], ids=["not-json", "not-utf8"])
def test_an_answer_that_is_not_json_is_unreadable_with_the_parsers_reason(payload: bytes) -> None:
    with pytest.raises(UnreadableResponse) as raised:
        decode_openai_completion(payload)

    # Python's own words follow the prefix (they are the json module's, not ours).
    assert str(raised.value).startswith("the endpoint answered with invalid JSON: Expecting value")


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_decoding_any_bytes_gives_a_completion_or_unreadable_never_another_error(
    payload: bytes,
) -> None:
    with contextlib.suppress(UnreadableResponse):
        decode_openai_completion(payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            b'{"error": "Input validation error", "error_type": "validation"}',
            "Input validation error",
        ),
        (b'{"object": "error", "message": "too long", "type": "x", "code": 400}', "too long"),
        (
            b'{"error": {"message": "too long", "type": "x", "param": null, "code": 400}}',
            "too long",
        ),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (b'{"detail": "Not Found"}', "{'detail': 'Not Found'}"),
    ],
    ids=["tgi", "vllm-old", "vllm-new", "not-json", "other-json"],
)
def test_the_error_message_is_read_from_every_servers_shape(payload: bytes, message: str) -> None:
    assert read_error_message(payload) == message


def test_an_error_message_is_cut_to_500_characters() -> None:
    payload = json.dumps({"error": {"message": "x" * 2000}})

    assert read_error_message(payload) == "x" * 500


def test_an_error_body_that_is_not_utf8_is_read_with_replacement_characters() -> None:
    assert read_error_message(b"\xffbad gateway") == "\ufffdbad gateway"


def test_an_error_body_given_as_text_that_is_not_json_is_read_as_it_is() -> None:
    assert read_error_message("upstream connect error") == "upstream connect error"
