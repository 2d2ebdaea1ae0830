"""Size limits with a named outcome: oversized attributes, conversations and verdicts go to the
DLQ at once; a malformed trace header is dropped rather than carried onto the verdict.

The moderator tests use the real TGI adapter against the emulator over HTTP; the end-to-end tests
run the production worker on moto's SQS and SNS with the emulator behind the SageMaker route.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import pytest
from structlog.testing import capture_logs

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.fakes import InMemorySink
from devstack.moto_stack import take_messages
from worker.adapters.tgi import TgiClassifier
from worker.app import open_worker
from worker.core.messages import DEFAULT_MAX_CONVERSATION_CHARS, MAX_ATTRIBUTES_BYTES
from worker.core.prompt import DEFAULT_PARAMETERS
from worker.core.taxonomy import PromptFormat, Taxonomy, default_taxonomy, load_taxonomy_text
from worker.core.verdict import SNS_MAX_MESSAGE_BYTES
from worker.pipeline import Ack, DeadLetter, ModerationPolicy, Moderator
from worker.ports import ReceivedMessage, TraceContext
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from devstack.moto_stack import LocalResources

RECEIVED_AT: Final = datetime(2026, 11, 26, 14, 0, 0, 120_000, tzinfo=UTC)
UNSAFE_TEXT: Final = "how can I rob a bank tonight"
# A category whose name alone is larger than an SNS message: any verdict naming it is too large.
HUGE_NAME: Final = "Criminal Planning " + "x" * SNS_MAX_MESSAGE_BYTES
# Room for a prompt that carries HUGE_NAME in its category list.
ROOMY_PROMPT_CHARS: Final = 2 * SNS_MAX_MESSAGE_BYTES
RUN_TIMEOUT: Final = 30.0


def received(document: dict[str, Any], *, trace: TraceContext | None = None) -> ReceivedMessage:
    return ReceivedMessage(
        message_id="sqs-1",
        receipt_handle="handle-1",
        body=json.dumps(document),
        receive_count=1,
        received_at=RECEIVED_AT,
        trace=trace or TraceContext(),
    )


def huge_taxonomy() -> Taxonomy:
    return load_taxonomy_text(json.dumps([{"name": HUGE_NAME}]), PromptFormat.LLAMA_GUARD_2)


@pytest.fixture
async def roomy_model() -> AsyncIterator[RunningEmulator]:
    """An emulator that takes prompts of ``ROOMY_PROMPT_CHARS`` (four characters a token)."""
    async with run_emulator(EmulatorConfig(max_total_tokens=ROOMY_PROMPT_CHARS)) as running:
        yield running


def moderator(
    url: str, session: aiohttp.ClientSession, sink: InMemorySink, taxonomy: Taxonomy
) -> Moderator:
    return Moderator(
        TgiClassifier(session, url, DEFAULT_PARAMETERS),
        sink,
        ModerationPolicy(
            prompt_format=PromptFormat.LLAMA_GUARD_2,
            taxonomy=taxonomy,
            max_prompt_chars=ROOMY_PROMPT_CHARS,
        ),
    )


# --- verdict_too_large ----------------------------------------------------------------------------


async def test_a_verdict_larger_than_sns_allows_is_dead_lettered_as_verdict_too_large(
    roomy_model: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    sink = InMemorySink()

    outcome = await moderator(roomy_model.url, http_session, sink, huge_taxonomy()).handle(
        received({"id": "p-1", "content": UNSAFE_TEXT})
    )

    assert isinstance(outcome, DeadLetter)
    assert outcome.error_code == "verdict_too_large"


async def test_a_verdict_too_large_is_never_published(
    roomy_model: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    sink = InMemorySink()

    await moderator(roomy_model.url, http_session, sink, huge_taxonomy()).handle(
        received({"id": "p-1", "content": UNSAFE_TEXT})
    )

    assert sink.all_published == []


async def test_verdict_too_large_detail_names_the_size_the_limit_and_the_largest_field(
    roomy_model: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    outcome = await moderator(
        roomy_model.url, http_session, InMemorySink(), huge_taxonomy()
    ).handle(received({"id": "p-1", "content": UNSAFE_TEXT}))

    assert isinstance(outcome, DeadLetter)
    assert f"more than SNS's limit of {SNS_MAX_MESSAGE_BYTES}" in outcome.detail
    assert "its largest field is 'categories'" in outcome.detail


async def test_verdict_too_large_is_logged_with_its_code_and_detail(
    roomy_model: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    with capture_logs() as logs:
        outcome = await moderator(
            roomy_model.url, http_session, InMemorySink(), huge_taxonomy()
        ).handle(received({"id": "p-1", "content": UNSAFE_TEXT}))

    assert isinstance(outcome, DeadLetter)
    [event] = [entry for entry in logs if entry["event"] == "verdict_too_large"]
    assert event["error_code"] == "verdict_too_large"
    assert event["error_detail"] == outcome.detail
    assert event["log_level"] == "warning"


async def test_the_same_verdict_without_the_huge_name_is_published(
    roomy_model: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    """The control case: the size check, not the moderation, dead-letters the message."""
    sink = InMemorySink()
    taxonomy = default_taxonomy(PromptFormat.LLAMA_GUARD_2)

    outcome = await moderator(roomy_model.url, http_session, sink, taxonomy).handle(
        received({"id": "p-1", "content": UNSAFE_TEXT})
    )

    assert isinstance(outcome, Ack)
    assert len(sink.all_published) == 1


# --- attributes_too_large -------------------------------------------------------------------------


async def test_oversized_attributes_are_dead_lettered_without_calling_the_model(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    sink = InMemorySink()
    taxonomy = default_taxonomy(PromptFormat.LLAMA_GUARD_2)
    document = {"id": "p-1", "content": "hello", "attributes": {"blob": "x" * 300_000}}

    with capture_logs() as logs:
        outcome = await moderator(emulator.url, http_session, sink, taxonomy).handle(
            received(document)
        )

    assert isinstance(outcome, DeadLetter)
    assert outcome.error_code == "attributes_too_large"
    assert emulator.stats.requests == 0
    assert sink.all_published == []
    [event] = [entry for entry in logs if entry["event"] == "message_invalid"]
    assert event["error_code"] == "attributes_too_large"


# --- message_too_large ---------------------------------------------------------------------------


async def test_a_conversation_over_the_policys_own_limit_is_dead_lettered_without_a_model_call(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    """The configured limit applies, not the decoder's default: 2,000 characters lie between."""
    fmt = PromptFormat.LLAMA_GUARD_2
    sink = InMemorySink()
    moderator = Moderator(
        TgiClassifier(http_session, emulator.url, DEFAULT_PARAMETERS),
        sink,
        ModerationPolicy(
            prompt_format=fmt, taxonomy=default_taxonomy(fmt), max_conversation_chars=1_000
        ),
    )
    content = "word " * 400
    assert 1_000 < len(content) < DEFAULT_MAX_CONVERSATION_CHARS

    outcome = await moderator.handle(received({"id": "p-1", "content": content}))

    assert outcome == DeadLetter(
        "message_too_large", "the conversation has 2000 characters, more than the limit of 1000"
    )
    assert emulator.stats.requests == 0
    assert sink.all_published == []


# --- end to end: the production worker on moto ---------------------------------------------------


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, emulator: RunningEmulator) -> RunningEmulator:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
    return emulator


def settings_for(resources: LocalResources) -> Settings:
    return Settings(
        queue_url=resources.queue_url,
        safe_topic_arn=resources.safe_topic_arn,
        unsafe_topic_arn=resources.unsafe_topic_arn,
        dead_letter_queue_url=resources.dead_letter_queue_url,
        backend="sagemaker",
        endpoint_name="llama-guard-size-limits",
        metrics_port=0,
        # a burst run ends on its first empty receive
        receive_wait_seconds=0,
    )


async def run_until_empty(settings: Settings) -> None:
    async with open_worker(settings, burst=True) as worker:
        await asyncio.wait_for(worker.runner.run(asyncio.Event()), RUN_TIMEOUT)


async def take_all(sqs: SQSClient, queue_url: str) -> list[MessageTypeDef]:
    taken: list[MessageTypeDef] = []
    while batch := await take_messages(sqs, queue_url):
        taken.extend(batch)
    return taken


def string_attribute(message: MessageTypeDef, name: str) -> str | None:
    attribute = message.get("MessageAttributes", {}).get(name)
    return None if attribute is None else attribute.get("StringValue")


async def test_a_300_kb_attributes_message_is_in_the_dlq_after_one_run_and_others_pass(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    oversized = json.dumps({"id": "big", "content": "hello", "attributes": {"blob": "x" * 300_000}})
    ordinary = json.dumps({"id": "small", "content": "How do I bake bread?"})
    for body in (oversized, ordinary):
        await sqs_client.send_message(QueueUrl=local_resources.queue_url, MessageBody=body)

    await run_until_empty(settings_for(local_resources))

    assert local_resources.dead_letter_queue_url is not None
    [dead] = await take_all(sqs_client, local_resources.dead_letter_queue_url)
    assert dead["Body"] == oversized
    assert string_attribute(dead, "error_code") == "attributes_too_large"
    detail = string_attribute(dead, "error_detail")
    assert detail is not None
    assert "'attributes'" in detail
    assert str(MAX_ATTRIBUTES_BYTES) in detail
    safe = await take_all(sqs_client, local_resources.safe_subscriber_queue_url)
    assert [json.loads(message["Body"])["id"] for message in safe] == ["small"]
    assert await take_all(sqs_client, local_resources.queue_url) == []


async def test_a_malformed_traceparent_never_reaches_the_verdict(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    await sqs_client.send_message(
        QueueUrl=local_resources.queue_url,
        MessageBody=json.dumps({"id": "traced", "content": "How do I bake bread?"}),
        MessageAttributes={"traceparent": {"DataType": "String", "StringValue": "00-abc-def-01"}},
    )

    with capture_logs() as logs:
        await run_until_empty(settings_for(local_resources))

    [verdict] = await take_all(sqs_client, local_resources.safe_subscriber_queue_url)
    assert json.loads(verdict["Body"])["id"] == "traced"
    assert string_attribute(verdict, "traceparent") is None
    assert "traceparent_dropped" in [entry["event"] for entry in logs]
