"""A rejection is blamed on a message only when it is about that message.

The real SageMaker adapter talks to the emulator through botocore; the endpoint guard and the
retry loop are the production ones. An endpoint that is not found, refuses our parameters or
answers something unreadable releases the message (never dead-letters it), is logged at error
level with the endpoint's own words, counts towards the circuit and in the failure metric.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from aiobotocore.session import AioSession
from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from support.conditions import wait_until

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.fakes import InMemorySink
from worker.adapters.aws import SAGEMAKER_ONLY, AwsClients, open_aws_clients
from worker.adapters.sagemaker import SageMakerClassifier
from worker.backpressure import EndpointGuard, GuardPolicy
from worker.core.errors import EndpointRejected, PromptTooLong
from worker.core.models import Turn
from worker.core.prompt import DEFAULT_PARAMETERS, render_prompt
from worker.core.protocols import TgiProtocol
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.pipeline import Ack, DeadLetter, ModerationPolicy, Moderator, RetryLater
from worker.ports import ReceivedMessage
from worker.retrying import RetryingClassifier, RetryPolicy

ENDPOINT = "llama-guard-blue"
FORMAT = PromptFormat.LLAMA_GUARD_1
TAXONOMY = default_taxonomy(FORMAT)
PROBE = render_prompt([Turn("user", "Hello")], FORMAT, TAXONOMY).text
FAST_RETRIES = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02, deadline=5)
LONG_PROMPT = render_prompt([Turn("user", "Hello " * 200)], FORMAT, TAXONOMY).text
NOT_FOUND = f"Endpoint {ENDPOINT} of account 123456789012 not found."
MakeGuard = Callable[..., EndpointGuard]


def received(text: str = "How do I bake a chocolate cake?") -> ReceivedMessage:
    return ReceivedMessage(
        message_id="sqs-1",
        receipt_handle="handle-1",
        body=json.dumps({"id": "post-1", "content": text}),
        receive_count=1,
        received_at=datetime(2026, 11, 26, 14, 0, tzinfo=UTC),
    )


def failures(kind: str) -> float:
    """The current value of moderation_endpoint_failures_total for ``kind``."""
    value = REGISTRY.get_sample_value("moderation_endpoint_failures_total", {"kind": kind})
    return value or 0.0


@pytest.fixture
async def aws(
    emulator: RunningEmulator, aws_session: AioSession, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AwsClients]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
    async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as clients:
        yield clients


@pytest.fixture
def make_guard(aws: AwsClients) -> MakeGuard:
    def make(threshold: int = 5, probe_interval: float = 0.01) -> EndpointGuard:
        classifier = SageMakerClassifier(
            aws.sagemaker_runtime, ENDPOINT, TgiProtocol(DEFAULT_PARAMETERS)
        )
        policy = GuardPolicy(failure_threshold=threshold, probe_interval=probe_interval)
        return EndpointGuard(classifier, policy, PROBE)

    return make


def moderator(guard: EndpointGuard, sink: InMemorySink | None = None) -> Moderator:
    return Moderator(
        RetryingClassifier(guard, FAST_RETRIES),
        sink or InMemorySink(),
        ModerationPolicy(prompt_format=FORMAT, taxonomy=TAXONOMY),
    )


async def test_a_message_meeting_an_endpoint_that_is_not_found_is_released(
    make_guard: MakeGuard, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("not_found")

    outcome = await moderator(make_guard()).handle(received())

    assert isinstance(outcome, RetryLater)
    assert NOT_FOUND in outcome.reason


async def test_a_rejection_is_logged_at_error_level_with_the_endpoints_own_words(
    make_guard: MakeGuard, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("not_found")

    with capture_logs() as logs:
        await moderator(make_guard()).handle(received())

    [logged] = [log for log in logs if log["event"] == "endpoint_rejected"]
    assert logged["log_level"] == "error"
    assert logged["kind"] == "rejected"
    assert NOT_FOUND in logged["error"]


async def test_a_rejection_is_not_retried_inside_the_call(
    make_guard: MakeGuard, emulator: RunningEmulator
) -> None:
    emulator.faults.not_found_rate = 1.0

    await moderator(make_guard()).handle(received())

    assert emulator.stats.requests == 1


async def test_a_rejection_is_counted_by_kind(
    make_guard: MakeGuard, emulator: RunningEmulator
) -> None:
    before = failures("rejected")
    emulator.faults.fail_next.append("not_found")

    await moderator(make_guard()).handle(received())

    assert failures("rejected") == before + 1


async def test_an_unreadable_answer_releases_the_message_and_is_counted_as_such(
    make_guard: MakeGuard, emulator: RunningEmulator
) -> None:
    before = failures("unreadable_response")
    emulator.faults.fail_next.append("unreadable_response")

    with capture_logs() as logs:
        outcome = await moderator(make_guard()).handle(received())

    assert isinstance(outcome, RetryLater)
    assert failures("unreadable_response") == before + 1
    assert [log["kind"] for log in logs if log["event"] == "endpoint_rejected"] == [
        "unreadable_response"
    ]


async def test_consecutive_rejections_open_the_circuit(
    make_guard: MakeGuard, emulator: RunningEmulator
) -> None:
    guard = make_guard(threshold=3)
    emulator.faults.not_found_rate = 1.0

    outcomes = [await moderator(guard).handle(received()) for _ in range(4)]

    assert all(isinstance(outcome, RetryLater) for outcome in outcomes)
    assert guard.circuit.is_open
    assert emulator.stats.requests == 3  # the fourth was not sent: the circuit was open


async def test_the_probe_finds_when_the_endpoint_is_back(
    make_guard: MakeGuard, emulator: RunningEmulator
) -> None:
    guard = make_guard(threshold=1)
    emulator.faults.not_found_rate = 1.0
    with pytest.raises(EndpointRejected):
        await guard.classify(PROBE)
    assert guard.circuit.is_open
    stop = asyncio.Event()
    waiting = asyncio.create_task(guard.wait_until_ready(stop))
    await wait_until(lambda: emulator.stats.by_outcome["endpoint_not_found"] >= 3)  # 2 probes
    assert guard.circuit.is_open

    emulator.faults.not_found_rate = 0.0
    await asyncio.wait_for(waiting, timeout=10)

    assert not guard.circuit.is_open


async def test_prompt_too_long_does_not_count_towards_the_circuit(
    aws_session: AioSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_emulator(EmulatorConfig(max_total_tokens=1000)) as small:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", small.url)
        async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as aws:
            classifier = SageMakerClassifier(
                aws.sagemaker_runtime, ENDPOINT, TgiProtocol(DEFAULT_PARAMETERS)
            )
            guard = EndpointGuard(classifier, GuardPolicy(failure_threshold=1), PROBE)
            with pytest.raises(PromptTooLong):
                await guard.classify(LONG_PROMPT)

    assert not guard.circuit.is_open


async def test_a_prompt_still_too_long_after_shrinking_is_the_only_rejection_dead_lettered(
    aws_session: AioSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_emulator(EmulatorConfig(max_total_tokens=1000)) as small:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", small.url)
        async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as aws:
            classifier = SageMakerClassifier(
                aws.sagemaker_runtime, ENDPOINT, TgiProtocol(DEFAULT_PARAMETERS)
            )
            guard = EndpointGuard(classifier, GuardPolicy(), PROBE)
            outcome = await moderator(guard).handle(received("Hello " * 200))

    assert isinstance(outcome, DeadLetter)
    assert outcome.error_code == "prompt_too_long"


async def test_once_the_endpoint_is_found_again_the_message_is_moderated(
    make_guard: MakeGuard, emulator: RunningEmulator
) -> None:
    guard = make_guard()
    emulator.faults.fail_next.append("not_found")
    first = await moderator(guard).handle(received())

    second = await moderator(guard).handle(received())

    assert isinstance(first, RetryLater)
    assert isinstance(second, Ack)
