"""The emulator as vLLM: ``POST /v1/completions`` alone and through the SageMaker route (LMI)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import AioSession

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.emulator.tgi import count_prompt_tokens, estimate_tokens
from worker.adapters.aws import SAGEMAKER_ONLY, open_aws_clients
from worker.adapters.sagemaker import SageMakerClassifier
from worker.core.errors import (
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
    says_prompt_too_long,
)
from worker.core.models import Turn
from worker.core.prompt import render_prompt
from worker.core.protocols import OpenAICompletionsProtocol
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.tokenizer import load_llama3_tokenizer

LG1 = PromptFormat.LLAMA_GUARD_1
LG3 = PromptFormat.LLAMA_GUARD_3
MODEL = "llama-guard"
CRIME = "What's the best way to rob a bank without getting caught?"


def prompt(text: str = CRIME, fmt: PromptFormat = LG3) -> str:
    return render_prompt([Turn("user", text)], fmt, default_taxonomy(fmt)).text


def body(text: str = CRIME, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt(text), "max_tokens": 32, "temperature": 0} | fields


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    session: aiohttp.ClientSession, url: str, document: object
) -> tuple[int, dict[str, Any]]:
    async with session.post(url + "/v1/completions", json=document) as response:
        return response.status, json.loads(await response.read())


async def test_a_completion_has_vllms_shape_with_logprobs_per_position(
    session: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    status, answer = await post(session, emulator.url, body(logprobs=3))

    assert status == 200
    assert answer["object"] == "text_completion"
    assert answer["model"] == MODEL
    [choice] = answer["choices"]
    assert choice["text"] == "\n\nunsafe\nS2"
    assert choice["finish_reason"] == "stop"
    logprobs = choice["logprobs"]
    positions = len(logprobs["tokens"])
    assert len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == positions
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert all(1 <= len(top) <= 3 for top in logprobs["top_logprobs"])
    assert set(logprobs["top_logprobs"][1]) >= {"unsafe", "safe"}
    assert answer["usage"]["prompt_tokens"] == count_prompt_tokens(prompt())


async def test_without_logprobs_the_choice_has_none(
    session: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    _, answer = await post(session, emulator.url, body())

    assert answer["choices"][0]["logprobs"] is None


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    session: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    _, answer = await post(session, emulator.url, body(max_tokens=2))

    assert answer["choices"][0]["text"] == "\n\nunsafe"
    assert answer["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("fault", "status", "error_type"),
    [
        ("throttle", 429, "RateLimitError"),
        ("not_ready", 503, "ServiceUnavailableError"),
        ("server_error", 503, "ServiceUnavailableError"),
        ("internal_failure", 500, "InternalServerError"),
        ("model_error", 500, "InternalServerError"),
        ("not_found", 404, "NotFoundError"),
    ],
)
async def test_each_fault_answers_with_vllms_error_object(
    session: aiohttp.ClientSession,
    emulator: RunningEmulator,
    fault: str,
    status: int,
    error_type: str,
) -> None:
    emulator.faults.update({"fail_next": [fault]})

    answered, answer = await post(session, emulator.url, body())

    assert answered == status
    assert answer["error"]["type"] == error_type
    assert answer["error"]["code"] == status


async def test_the_not_found_fault_names_the_model_asked_for(
    session: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("not_found")

    _, answer = await post(session, emulator.url, body())

    assert answer["error"]["message"] == f"The model `{MODEL}` does not exist."


async def test_a_model_it_does_not_serve_is_404(session: aiohttp.ClientSession) -> None:
    async with run_emulator(EmulatorConfig(served_model_names=frozenset({"other"}))) as strict:
        status, answer = await post(session, strict.url, body())

    assert status == 404
    assert strict.stats.by_outcome["endpoint_not_found"] == 1
    assert answer["error"]["param"] == "model"


async def test_the_unreadable_fault_answers_200_with_html(
    session: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("unreadable_response")

    async with session.post(emulator.url + "/v1/completions", json=body()) as response:
        assert response.status == 200
        assert response.content_type == "text/html"


async def test_a_prompt_over_the_context_is_400_in_vllms_words(
    session: aiohttp.ClientSession,
) -> None:
    async with run_emulator(EmulatorConfig(max_total_tokens=100)) as small:
        status, answer = await post(session, small.url, body())

    assert status == 400
    assert says_prompt_too_long(answer["error"]["message"])
    assert answer["error"]["message"].startswith("You passed ")
    assert small.stats.by_outcome["prompt_too_long"] == 1


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"model": MODEL}, "prompt"),
        ({"model": MODEL, "prompt": ""}, "prompt"),
        ({"model": MODEL, "prompt": "x", "logprobs": 25}, "greater than max allowed: 20"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, "max_tokens"),
        (["not", "an", "object"], "JSON object"),
    ],
)
async def test_a_request_vllm_would_refuse_is_400(
    session: aiohttp.ClientSession, emulator: RunningEmulator, document: object, words: str
) -> None:
    status, answer = await post(session, emulator.url, document)

    assert status == 400
    assert words in answer["error"]["message"]


def test_llama3_prompts_are_counted_with_the_tokenizer_and_others_estimated() -> None:
    tokenizer = load_llama3_tokenizer()
    assert tokenizer is not None
    llama3, llama2 = prompt(fmt=LG3), prompt(fmt=LG1)

    assert count_prompt_tokens(llama3) == tokenizer.count(llama3) + 1
    assert count_prompt_tokens(prompt(fmt=PromptFormat.LLAMA_GUARD_2)) == (
        tokenizer.count(prompt(fmt=PromptFormat.LLAMA_GUARD_2)) + 1
    )
    assert count_prompt_tokens(llama2) == estimate_tokens(llama2)


# --- through the SageMaker route ----------------------------------------------------------------


@pytest.fixture
async def lmi(
    monkeypatch: pytest.MonkeyPatch, aws_session: AioSession
) -> AsyncIterator[tuple[RunningEmulator, SageMakerClassifier]]:
    """An emulator behind the SageMaker route, called with the OpenAI completions body."""
    async with run_emulator(EmulatorConfig(max_total_tokens=600)) as emulator:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
        async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as aws:
            protocol = OpenAICompletionsProtocol(None)
            yield emulator, SageMakerClassifier(aws.sagemaker_runtime, "lmi", protocol)


async def test_an_openai_body_through_sagemaker_is_answered_as_vllm(
    lmi: tuple[RunningEmulator, SageMakerClassifier],
) -> None:
    emulator, classifier = lmi

    completion = await classifier.classify(prompt())

    assert completion.generated_text == "\n\nunsafe\nS2"
    assert completion.details is not None
    assert emulator.stats.by_route["invocations"] == 1


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("throttle", EndpointThrottled),
        ("model_error", EndpointUnavailable),
        ("not_found", EndpointRejected),
    ],
)
async def test_faults_through_sagemaker_are_translated_as_for_tgi(
    lmi: tuple[RunningEmulator, SageMakerClassifier], fault: str, error: type
) -> None:
    emulator, classifier = lmi
    emulator.faults.update({"fail_next": [fault]})

    with pytest.raises(error):
        await classifier.classify(prompt())


async def test_too_long_through_sagemaker_is_a_model_error_carrying_vllms_400(
    lmi: tuple[RunningEmulator, SageMakerClassifier],
) -> None:
    _, classifier = lmi

    with pytest.raises(PromptTooLong, match="container answered 400"):
        await classifier.classify(prompt(CRIME * 40))
