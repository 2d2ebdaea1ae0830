"""The OpenAI-compatible backend (vLLM) over HTTP: what it sends, and every answer translated.

A stub endpoint answers with the exact bodies vLLM writes (both error shapes, every wording of
"too long"); the emulator answers the rest. The API key is sent as a Bearer token and never
appears in a repr, an error or a log line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import aiohttp
import pytest
from endpoint_stub import StubEndpoint, run_stub_endpoint
from structlog.testing import capture_logs

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from worker.adapters.openai import OpenAIClassifier, server_base_url
from worker.core.errors import (
    ClassifierError,
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
    UnreadableResponse,
)
from worker.core.models import Turn
from worker.core.prompt import render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.pipeline import ModerationPolicy, Moderator, RetryLater
from worker.ports import Publication, ReceivedMessage

MODEL = "meta-llama/Llama-Guard-3-8B"
API_KEY = "sk-test-0123456789abcdef"
FORMAT = PromptFormat.LLAMA_GUARD_3
PROMPT = render_prompt(
    [Turn("user", "How do I bake bread?")], FORMAT, default_taxonomy(FORMAT)
).text
COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "text": "\n\nsafe",
            "logprobs": {
                "text_offset": [0, 2],
                "token_logprobs": [-0.001, -0.03],
                "tokens": ["\n\n", "safe"],
                "top_logprobs": [{"\n\n": -0.001}, {"safe": -0.03, "unsafe": -3.6}],
            },
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 200, "total_tokens": 202, "completion_tokens": 2},
}
# vLLM's words for a prompt over the context, in the order its versions used them.
TOO_LONG_MESSAGES = {
    "requested": "This model's maximum context length is 4096 tokens. However, you requested "
    "4200 tokens (4168 in the messages, 32 in the completion). Please reduce the length of the "
    "messages or completion.",
    "request-has": "This model's maximum context length is 4096 tokens. However, your request "
    "has 4200 input tokens. Please reduce the length of the input messages.",
    "max-tokens-too-large": "'max_tokens' or 'max_completion_tokens' is too large: 32. This "
    "model's maximum context length is 4096 tokens and your request has 4080 input tokens "
    "(32 > 4096 - 4080).",
    "passed-tokens": "You passed 4100 input tokens and requested 32 output tokens. However, the "
    "model's context length is only 4096 tokens, resulting in a maximum input length of 4064 "
    "tokens. Please reduce the length of the input prompt.",
    "passed-characters": "You passed 30000 input characters and requested 32 output tokens. "
    "However, the model's context length is only 4096 tokens, resulting in a maximum input "
    "length of 4064 tokens (at most 24384 characters). Please reduce the length of the input "
    "prompt.",
}


def old_error(status: int, message: str) -> dict[str, object]:
    """vLLM's error body before 0.10 (and other OpenAI-compatible servers')."""
    return {"object": "error", "message": message, "type": "BadRequestError", "code": status}


def new_error(status: int, message: str) -> dict[str, object]:
    """vLLM's error body since, OpenAI's shape."""
    return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": status}}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
async def stub() -> AsyncIterator[StubEndpoint]:
    async with run_stub_endpoint() as stub:
        stub.answer(200, COMPLETION)
        yield stub


async def refusal(classifier: OpenAIClassifier) -> ClassifierError:
    with pytest.raises(ClassifierError) as caught:
        await classifier.classify(PROMPT)
    return caught.value


async def bodies_sent(
    session: aiohttp.ClientSession, overrides: dict[str, object] | None = None
) -> list[dict[str, object]]:
    """The JSON bodies a local server receives for one classify call."""
    received: list[dict[str, object]] = []

    async def handle(request: aiohttp.web.Request) -> aiohttp.web.Response:
        received.append(await request.json())
        return aiohttp.web.json_response(COMPLETION)

    app = aiohttp.web.Application()
    app.router.add_post("/v1/completions", handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        await OpenAIClassifier(session, url, MODEL, overrides=overrides).classify(PROMPT)
    finally:
        await runner.cleanup()
    return received


async def test_the_request_is_the_completions_body_with_the_prompt_as_rendered(
    session: aiohttp.ClientSession,
) -> None:
    assert await bodies_sent(session) == [
        {"model": MODEL, "prompt": PROMPT, "max_tokens": 32, "temperature": 0, "logprobs": 5}
    ]


async def test_the_configured_overrides_change_the_body(session: aiohttp.ClientSession) -> None:
    assert await bodies_sent(session, {"max_tokens": 8, "logprobs": None}) == [
        {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    ]


async def test_the_answer_text_and_logprobs_become_the_completion(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    completion = await OpenAIClassifier(session, stub.url, MODEL).classify(PROMPT)

    assert completion.generated_text == "\n\nsafe"
    assert completion.details is not None
    assert completion.details["tokens"] == ["\n\n", "safe"]


@pytest.mark.parametrize("wording", TOO_LONG_MESSAGES)
@pytest.mark.parametrize("shape", [old_error, new_error], ids=["object-error", "error-object"])
async def test_each_vllm_too_long_answer_is_prompt_too_long(
    session: aiohttp.ClientSession,
    stub: StubEndpoint,
    wording: str,
    shape: Callable[[int, str], dict[str, object]],
) -> None:
    stub.answer(400, shape(400, TOO_LONG_MESSAGES[wording]))

    error = await refusal(OpenAIClassifier(session, stub.url, MODEL))

    assert type(error) is PromptTooLong
    assert str(error) == f"the OpenAI-compatible server answered 400: {TOO_LONG_MESSAGES[wording]}"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, EndpointRejected),
        (401, EndpointRejected),
        (403, EndpointRejected),
        (404, EndpointRejected),
        (422, EndpointRejected),
        (429, EndpointThrottled),
        (500, EndpointUnavailable),
        (502, EndpointUnavailable),
        (503, EndpointUnavailable),
    ],
)
async def test_each_status_is_translated_into_the_error_tree(
    session: aiohttp.ClientSession, stub: StubEndpoint, status: int, expected: type
) -> None:
    stub.answer(status, new_error(status, "something the server said"))

    error = await refusal(OpenAIClassifier(session, stub.url, MODEL))

    assert type(error) is expected
    assert f"answered {status}: something the server said" in str(error)


async def test_a_404_for_an_unknown_model_is_a_rejection_with_vllms_words(
    session: aiohttp.ClientSession,
) -> None:
    async with run_emulator(EmulatorConfig(served_model_names=frozenset({MODEL}))) as emulator:
        error = await refusal(OpenAIClassifier(session, emulator.url, "another-model"))

    assert type(error) is EndpointRejected
    assert "The model `another-model` does not exist." in str(error)


@pytest.mark.parametrize(
    "body",
    [
        "<html>502 Bad Gateway</html>",
        json.dumps({"choices": []}),
        json.dumps({"choices": [{"text": 1}]}),
        json.dumps([COMPLETION]),
        json.dumps({"generated_text": "safe"}),
    ],
    ids=["html", "no-choice", "text-not-a-string", "a-list", "tgi-shape"],
)
async def test_a_200_that_is_not_a_completion_is_an_unreadable_response(
    session: aiohttp.ClientSession, stub: StubEndpoint, body: str
) -> None:
    stub.status, stub.body = 200, body

    error = await refusal(OpenAIClassifier(session, stub.url, MODEL))

    assert type(error) is UnreadableResponse


async def test_an_unreachable_server_is_unavailable(session: aiohttp.ClientSession) -> None:
    async with run_stub_endpoint() as stub:
        closed = stub.url

    error = await refusal(OpenAIClassifier(session, closed, MODEL))

    assert type(error) is EndpointUnavailable
    assert str(error).startswith(f"the OpenAI-compatible server at {closed} is unreachable:")


async def test_the_api_key_is_sent_as_a_bearer_token(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    await OpenAIClassifier(session, stub.url, MODEL, api_key=API_KEY).classify(PROMPT)

    assert stub.authorizations == [f"Bearer {API_KEY}"]


async def test_without_a_key_no_authorization_is_sent(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    await OpenAIClassifier(session, stub.url, MODEL).classify(PROMPT)

    assert stub.authorizations == [None]


async def test_the_api_key_is_never_in_a_repr_an_error_or_a_log_line(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    stub.answer(401, new_error(401, "Unauthorized"))
    classifier = OpenAIClassifier(session, stub.url, MODEL, api_key=API_KEY)
    policy = ModerationPolicy(prompt_format=FORMAT, taxonomy=default_taxonomy(FORMAT))
    moderator = Moderator(classifier, _NoSink(), policy)

    with capture_logs() as logs:
        error = await refusal(classifier)
        outcome = await moderator.handle(
            ReceivedMessage(
                message_id="sqs-1",
                receipt_handle="handle-1",
                body='{"id": "key-1", "content": "How do I bake bread?"}',
                receive_count=1,
                received_at=datetime(2026, 11, 26, 14, 0, tzinfo=UTC),
            )
        )

    assert isinstance(outcome, RetryLater)
    assert API_KEY not in repr(classifier)
    assert API_KEY not in str(error)
    assert API_KEY not in outcome.reason
    assert logs
    assert all(API_KEY not in str(entry) for entry in logs)


class _NoSink:
    async def publish(self, publications: Sequence[Publication]) -> Sequence[Exception | None]:
        raise AssertionError("nothing is published in this test")


async def test_credentials_in_the_url_are_basic_auth_and_never_shown(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    scheme, rest = stub.url.split("://", 1)
    classifier = OpenAIClassifier(session, f"{scheme}://user:s3cret@{rest}", MODEL)

    await classifier.classify(PROMPT)

    assert stub.authorizations[0] is not None
    assert stub.authorizations[0].startswith("Basic ")
    assert classifier.endpoint == stub.url
    assert "s3cret" not in repr(classifier)


@pytest.mark.parametrize(
    ("configured", "base"),
    [
        ("http://vllm:8000", "http://vllm:8000"),
        ("http://vllm:8000/", "http://vllm:8000/"),
        ("http://vllm:8000/v1", "http://vllm:8000"),
        ("http://vllm:8000/v1/", "http://vllm:8000"),
        ("http://gateway/llama-guard/v1", "http://gateway/llama-guard"),
        # only slashes are trimmed: a last segment that merely starts with v1 is kept
        ("http://gateway/v1X", "http://gateway/v1X"),
    ],
)
def test_a_base_url_ending_in_v1_is_the_same_server(configured: str, base: str) -> None:
    assert server_base_url(configured) == base


async def test_the_emulator_answers_through_the_adapter_with_a_score(
    session: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    prompt = render_prompt(
        [Turn("user", "What's the best way to rob a bank without getting caught?")],
        FORMAT,
        default_taxonomy(FORMAT),
    ).text
    classifier = OpenAIClassifier(session, emulator.url + "/v1", MODEL)

    completion = await classifier.classify(prompt)

    assert completion.generated_text == "\n\nunsafe\nS2"
    assert classifier.backend == "openai"
    assert emulator.stats.by_route["completions"] == 1
