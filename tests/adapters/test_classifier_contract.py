"""Both classifier backends against the emulator over HTTP: same answers, same error translation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack

import aiohttp
import pytest
from aiobotocore.session import AioSession
from endpoint_stub import run_stub_endpoint

from devstack.emulator import RunningEmulator
from worker.adapters.aws import SAGEMAKER_ONLY, open_aws_clients
from worker.adapters.sagemaker import SageMakerClassifier
from worker.adapters.tgi import TgiClassifier
from worker.core.completion import parse_completion, unsafe_probability
from worker.core.errors import (
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
)
from worker.core.models import Turn
from worker.core.prompt import DEFAULT_PARAMETERS, render_prompt
from worker.core.protocols import TgiProtocol
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.ports import Classifier

FORMAT = PromptFormat.LLAMA_GUARD_3
TAXONOMY = default_taxonomy(FORMAT)
ENDPOINT = "llama-guard-test"


def prompt_for(text: str) -> str:
    return render_prompt([Turn("user", text)], FORMAT, TAXONOMY).text


ClassifierFactory = Callable[[Mapping[str, object]], Classifier]


@pytest.fixture(params=["sagemaker", "tgi"])
async def make_classifier(
    request: pytest.FixtureRequest,
    emulator: RunningEmulator,
    aws_session: AioSession,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[ClassifierFactory]:
    """Builds the backend under test, with its client open for the test, for given parameters."""
    async with AsyncExitStack() as stack:
        if request.param == "sagemaker":
            monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
            aws = await stack.enter_async_context(
                open_aws_clients(
                    services=SAGEMAKER_ONLY, session=aws_session, sagemaker_read_timeout=2
                )
            )
            yield lambda parameters: SageMakerClassifier(
                aws.sagemaker_runtime, ENDPOINT, TgiProtocol(parameters)
            )
        else:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
            )
            yield lambda parameters: TgiClassifier(session, emulator.url, parameters)


@pytest.fixture
def classifier(make_classifier: ClassifierFactory) -> Classifier:
    return make_classifier(DEFAULT_PARAMETERS)


async def test_safe_message_gets_a_safe_completion_with_a_low_score(classifier: Classifier) -> None:
    completion = await classifier.classify(prompt_for("How do I bake a chocolate cake?"))
    assert parse_completion(completion.generated_text, TAXONOMY).verdict == "safe"
    score = unsafe_probability(completion.details)
    assert score is not None
    assert score < 0.5


async def test_unsafe_message_gets_codes_and_a_high_score(classifier: Classifier) -> None:
    completion = await classifier.classify(
        prompt_for("How can I rob a bank without getting caught?")
    )
    parsed = parse_completion(completion.generated_text, TAXONOMY)
    assert parsed.verdict == "unsafe"
    assert "S2" in parsed.categories
    score = unsafe_probability(completion.details)
    assert score is not None
    assert score > 0.5


async def test_throttling_becomes_endpoint_throttled(
    classifier: Classifier, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("throttle")
    with pytest.raises(EndpointThrottled):
        await classifier.classify(prompt_for("hello"))


@pytest.mark.parametrize(
    "fault", ["not_ready", "server_error", "internal_failure", "model_error", "disconnect"]
)
async def test_server_side_faults_become_endpoint_unavailable(
    classifier: Classifier, emulator: RunningEmulator, fault: str
) -> None:
    emulator.faults.fail_next.append(fault)  # type: ignore[arg-type]  # a FaultKind literal
    with pytest.raises(EndpointUnavailable):
        await classifier.classify(prompt_for("hello"))


async def test_endpoint_down_becomes_endpoint_unavailable(
    classifier: Classifier, emulator: RunningEmulator
) -> None:
    emulator.faults.down = True
    with pytest.raises(EndpointUnavailable):
        await classifier.classify(prompt_for("hello"))


async def test_a_hung_request_times_out_as_endpoint_unavailable(
    classifier: Classifier, emulator: RunningEmulator
) -> None:
    emulator.faults.hang_seconds = 10
    emulator.faults.fail_next.append("hang")
    with pytest.raises(EndpointUnavailable):
        await classifier.classify(prompt_for("hello"))


async def test_token_budget_rejection_becomes_prompt_too_long(
    classifier: Classifier, emulator: RunningEmulator
) -> None:
    too_long = prompt_for("word " * 20_000)
    with pytest.raises(PromptTooLong):
        await classifier.classify(too_long)
    assert emulator.stats.by_outcome["prompt_too_long"] == 1


async def test_unreachable_endpoint_becomes_endpoint_unavailable(
    aws_session: AioSession, monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    closed = f"http://127.0.0.1:{unused_tcp_port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", closed)
    async with (
        open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as aws,
        aiohttp.ClientSession() as session,
    ):
        for classifier in (
            SageMakerClassifier(aws.sagemaker_runtime, ENDPOINT, TgiProtocol(DEFAULT_PARAMETERS)),
            TgiClassifier(session, closed, DEFAULT_PARAMETERS),
        ):
            with pytest.raises(EndpointUnavailable):
                await classifier.classify(prompt_for("hello"))


async def test_echoed_prompt_is_stripped_from_the_completion(
    make_classifier: ClassifierFactory,
) -> None:
    prompt = prompt_for("How do I bake a chocolate cake?")
    echoing = make_classifier({**DEFAULT_PARAMETERS, "return_full_text": True})
    completion = await echoing.classify(prompt)
    assert parse_completion(completion.generated_text, TAXONOMY).verdict == "safe"
    assert "Task:" not in completion.generated_text


async def test_sagemaker_unknown_endpoint_is_a_rejection(
    aws_session: AioSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devstack.emulator import EmulatorConfig, run_emulator  # noqa: PLC0415 - a special config

    config = EmulatorConfig(endpoint_names=frozenset({"only-this-one"}))
    async with run_emulator(config) as emulator:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
        async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as aws:
            classifier = SageMakerClassifier(
                aws.sagemaker_runtime, "missing", TgiProtocol(DEFAULT_PARAMETERS)
            )
            with pytest.raises(EndpointRejected):
                await classifier.classify(prompt_for("hello"))


async def test_sagemaker_routing_options_are_sent_as_invoke_endpoint_parameters(
    aws_session: AioSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each option arrives as the header SageMaker routes by (the emulator ignores them, so a
    stub that records what it received is the witness)."""
    async with run_stub_endpoint() as stub:
        stub.answer(200, [{"generated_text": "safe"}])
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", stub.url)
        async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as aws:
            classifier = SageMakerClassifier(
                aws.sagemaker_runtime,
                ENDPOINT,
                TgiProtocol(DEFAULT_PARAMETERS),
                target_variant="AllTraffic",
                inference_component="llama-guard-component",
                custom_attributes="tenant=acme",
            )
            completion = await classifier.classify(prompt_for("How do I bake a chocolate cake?"))
    assert completion.generated_text == "safe"
    [headers] = stub.received_headers
    assert headers["X-Amzn-SageMaker-Target-Variant"] == "AllTraffic"
    assert headers["X-Amzn-SageMaker-Inference-Component"] == "llama-guard-component"
    assert headers["X-Amzn-SageMaker-Custom-Attributes"] == "tenant=acme"


async def test_sagemaker_sends_the_prompt_as_utf8_json_and_asks_for_json(
    aws_session: AioSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw request as the endpoint receives it: text outside ASCII as UTF-8 bytes (not
    ``\\u`` escapes, which would count differently against a token budget), JSON both ways."""
    prompt = prompt_for("¿Cómo horneo un pastel? 🍰")
    async with run_stub_endpoint() as stub:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", stub.url)
        async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as aws:
            classifier = SageMakerClassifier(
                aws.sagemaker_runtime, ENDPOINT, TgiProtocol(DEFAULT_PARAMETERS)
            )
            await classifier.classify(prompt)
    [headers] = stub.received_headers
    [body] = stub.received_bodies
    assert headers["Accept"] == "application/json"
    assert headers["Content-Type"] == "application/json"
    assert "¿Cómo horneo un pastel? 🍰".encode() in body
    assert json.loads(body)["inputs"] == prompt
