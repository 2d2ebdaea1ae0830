"""Both backends over HTTP: what is a rejection, what is "too long", and what is unreadable.

The SageMaker adapter goes through botocore to the emulator or a stub (``AWS_ENDPOINT_URL_*``);
the TGI adapter through aiohttp. Every "too long" wording must be recognised by both, and every
other refusal must be an ``EndpointRejected`` carrying the endpoint's own words.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import aiohttp
import pytest
from endpoint_stub import run_stub_endpoint

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from worker.adapters.aws import SAGEMAKER_ONLY, open_aws_clients
from worker.adapters.sagemaker import SageMakerClassifier
from worker.adapters.tgi import TgiClassifier
from worker.core.errors import (
    ClassifierError,
    EndpointRejected,
    PromptTooLong,
    UnreadableResponse,
)
from worker.core.prompt import DEFAULT_PARAMETERS
from worker.core.protocols import TgiProtocol
from worker.ports import Classifier

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

Backend = Literal["sagemaker", "tgi"]
ENDPOINT = "llama-guard-blue"
PROMPT = "[INST] Task: Check if there is unsafe content in 'User' messages. [/INST]"

TOO_LONG_WORDINGS = {
    "tgi-total": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
    "Given: 4500 `inputs` tokens and 100 `max_new_tokens`",
    "tgi-inputs": "Input validation error: `inputs` must have less than 4000 tokens. Given: 4500",
    "vllm": "This model's maximum context length is 4096 tokens. However, you requested 5000 "
    "tokens (4900 in the messages, 100 in the completion). Please reduce the length of the "
    "messages or completion.",
}
# TGI answers 422 for its validation errors; vLLM answers 400.
TOO_LONG_STATUS = {"tgi-total": 422, "tgi-inputs": 422, "vllm": 400}


@pytest.fixture(params=["sagemaker", "tgi"])
def backend(request: pytest.FixtureRequest) -> Backend:
    value: Backend = request.param
    return value


@pytest.fixture
def open_classifier(
    backend: Backend, aws_session: AioSession, monkeypatch: pytest.MonkeyPatch
) -> OpenClassifier:
    return OpenClassifier(backend, aws_session, monkeypatch)


class OpenClassifier:
    """Opens the backend under test on a model server's base URL, with its client."""

    def __init__(
        self, backend: Backend, aws_session: AioSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self._backend = backend
        self._aws_session = aws_session
        self._monkeypatch = monkeypatch

    @asynccontextmanager
    async def __call__(self, url: str) -> AsyncIterator[Classifier]:
        if self._backend == "tgi":
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                yield TgiClassifier(session, url, DEFAULT_PARAMETERS)
            return
        self._monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
        async with open_aws_clients(services=SAGEMAKER_ONLY, session=self._aws_session) as aws:
            yield SageMakerClassifier(
                aws.sagemaker_runtime, ENDPOINT, TgiProtocol(DEFAULT_PARAMETERS)
            )


async def refusal(classifier: Classifier) -> ClassifierError:
    """The error the classifier raises for the next prompt."""
    with pytest.raises(ClassifierError) as caught:
        await classifier.classify(PROMPT)
    return caught.value


@pytest.mark.parametrize("wording", TOO_LONG_WORDINGS)
async def test_each_too_long_wording_is_prompt_too_long_on_both_backends(
    backend: Backend, open_classifier: OpenClassifier, wording: str
) -> None:
    message = TOO_LONG_WORDINGS[wording]
    status = TOO_LONG_STATUS[wording]
    async with run_stub_endpoint() as stub, open_classifier(stub.url) as classifier:
        if backend == "tgi":
            stub.answer(status, {"error": message, "error_type": "validation"})
        else:  # SageMaker wraps the container's answer in a ModelError
            stub.answer(
                424,
                {
                    "Message": f"Received client error ({status}) from primary",
                    "OriginalStatusCode": status,
                    "OriginalMessage": f'{{"error":"{message}","error_type":"validation"}}',
                },
                **{"x-amzn-ErrorType": "ModelError"},
            )
        error = await refusal(classifier)

    assert type(error) is PromptTooLong


async def test_an_endpoint_that_is_not_found_is_a_rejection_with_its_own_words(
    backend: Backend, open_classifier: OpenClassifier, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("not_found")
    async with open_classifier(emulator.url) as classifier:
        error = await refusal(classifier)

    assert type(error) is EndpointRejected
    if backend == "sagemaker":
        assert f"Endpoint {ENDPOINT} of account 123456789012 not found." in str(error)
    else:
        assert "404" in str(error)


async def test_top_n_tokens_above_the_servers_limit_is_a_rejection_with_its_own_words(
    open_classifier: OpenClassifier,
) -> None:
    # DEFAULT_PARAMETERS asks for 5 alternatives; this server allows 2 (--max-top-n-tokens 2).
    async with (
        run_emulator(EmulatorConfig(max_top_n_tokens=2)) as strict,
        open_classifier(strict.url) as classifier,
    ):
        error = await refusal(classifier)

    assert type(error) is EndpointRejected
    assert "`top_n_tokens` must be >= 0 and <= 2" in str(error)


async def test_a_body_that_is_not_json_is_an_unreadable_response(
    open_classifier: OpenClassifier, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("unreadable_response")
    async with open_classifier(emulator.url) as classifier:
        error = await refusal(classifier)

    assert type(error) is UnreadableResponse


async def test_a_json_body_of_the_wrong_shape_is_an_unreadable_response(
    open_classifier: OpenClassifier,
) -> None:
    async with run_stub_endpoint() as stub, open_classifier(stub.url) as classifier:
        stub.answer(200, {"outputs": ["safe"]})
        error = await refusal(classifier)

    assert type(error) is UnreadableResponse


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_any_other_tgi_4xx_is_a_rejection(status: int) -> None:
    async with (
        run_stub_endpoint() as stub,
        aiohttp.ClientSession() as session,
    ):
        stub.answer(status, {"error": "Unauthorized" if status == 401 else "Bad request"})
        error = await refusal(TgiClassifier(session, stub.url, DEFAULT_PARAMETERS))

    assert type(error) is EndpointRejected
    assert f"TGI answered {status}" in str(error)
