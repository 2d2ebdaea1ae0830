"""Traces through the real worker: one span per message continuing the producer's trace, child
spans for the model call and the publish, and the publish span's context on the verdict.

Spans are recorded by the SDK's ``InMemorySpanExporter``; the worker is the production one on
moto's SQS and SNS with the emulator on the SageMaker route; verdicts are read back from the
safe topic's raw-delivery subscriber queue.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.builders import AWS_TRACE_HEADER, PARENT_ID, TRACE_ID

from devstack.moto_stack import take_messages
from worker.app import open_worker
from worker.otel_spans import MessageTracing
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from devstack.emulator import RunningEmulator
    from devstack.moto_stack import LocalResources

SAFE_TEXT: Final = "How do I bake a chocolate cake for my daughter's birthday?"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[MessageTracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield MessageTracing(provider.get_tracer("tests"))
    provider.shutdown()


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, emulator: RunningEmulator) -> RunningEmulator:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
    return emulator


async def moderate(
    sqs: SQSClient,
    resources: LocalResources,
    tracing: MessageTracing,
    body: dict[str, Any] | str,
    *,
    traceparent: str | None = None,
) -> list[MessageTypeDef]:
    """Send one message, run the traced worker until the queue is empty, return the verdicts."""
    attributes: dict[str, Any] = {}
    if traceparent is not None:
        attributes["MessageAttributes"] = {
            "traceparent": {"DataType": "String", "StringValue": traceparent}
        }
    await sqs.send_message(
        QueueUrl=resources.queue_url,
        MessageBody=body if isinstance(body, str) else json.dumps(body),
        MessageSystemAttributes={
            "AWSTraceHeader": {"DataType": "String", "StringValue": AWS_TRACE_HEADER}
        },
        **attributes,
    )
    settings = Settings(
        queue_url=resources.queue_url,
        safe_topic_arn=resources.safe_topic_arn,
        unsafe_topic_arn=resources.unsafe_topic_arn,
        dead_letter_queue_url=resources.dead_letter_queue_url,
        backend="sagemaker",
        endpoint_name="llama-guard-traced",
        metrics_port=0,
        receive_wait_seconds=0,
    )
    async with open_worker(settings, burst=True, tracing=tracing) as worker:
        await asyncio.wait_for(worker.runner.run(asyncio.Event()), 30)
    return await take_messages(sqs, resources.safe_subscriber_queue_url)


def verdict_attribute(message: MessageTypeDef, name: str) -> str:
    return message["MessageAttributes"][name]["StringValue"]


def spans_named(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        named.setdefault(span.name, []).append(span)
    return named


async def test_the_message_span_continues_the_source_messages_trace(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: RunningEmulator,
    tracing: MessageTracing,
    exporter: InMemorySpanExporter,
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    body = {"id": "traced-1", "content": SAFE_TEXT}
    await moderate(sqs_client, local_resources, tracing, body, traceparent=traceparent)

    [span] = spans_named(exporter)["moderate message"]
    assert span.context is not None
    assert span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.parent.is_remote
    assert span.attributes is not None
    assert span.attributes["moderation.outcome"] == "ack"
    assert span.attributes["moderation.verdict"] == "safe"


async def test_the_model_call_and_the_publish_are_children_of_the_message_span(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: RunningEmulator,
    tracing: MessageTracing,
    exporter: InMemorySpanExporter,
) -> None:
    body = {"id": "traced-2", "content": SAFE_TEXT}
    await moderate(sqs_client, local_resources, tracing, body)

    named = spans_named(exporter)
    [message_span] = named["moderate message"]
    [model_call] = named["model call"]
    [publish] = named["publish verdict"]
    assert message_span.context is not None
    for child in (model_call, publish):
        assert child.parent is not None
        assert child.parent.span_id == message_span.context.span_id
    assert message_span.parent is None  # no traceparent on the source: a trace of its own


async def test_the_verdict_carries_the_publish_spans_traceparent(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: RunningEmulator,
    tracing: MessageTracing,
    exporter: InMemorySpanExporter,
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    body = {"id": "traced-3", "content": SAFE_TEXT}
    [verdict] = await moderate(sqs_client, local_resources, tracing, body, traceparent=traceparent)

    [publish] = spans_named(exporter)["publish verdict"]
    assert publish.context is not None
    assert verdict_attribute(verdict, "traceparent") == (
        f"00-{TRACE_ID}-{publish.context.span_id:016x}-01"
    )
    assert verdict_attribute(verdict, "AWSTraceHeader") == AWS_TRACE_HEADER


async def test_an_unsampled_trace_records_nothing_but_still_continues_on_the_verdict(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: RunningEmulator,
    tracing: MessageTracing,
    exporter: InMemorySpanExporter,
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-00"
    body = {"id": "traced-4", "content": SAFE_TEXT}
    [verdict] = await moderate(sqs_client, local_resources, tracing, body, traceparent=traceparent)

    assert exporter.get_finished_spans() == ()
    version, trace_id, span_id, flags = verdict_attribute(verdict, "traceparent").split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00")
    assert span_id != PARENT_ID


async def test_an_invalid_message_gets_a_span_naming_its_dead_letter_code(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: RunningEmulator,
    tracing: MessageTracing,
    exporter: InMemorySpanExporter,
) -> None:
    await moderate(sqs_client, local_resources, tracing, '{"id": "x", "messages": []}')

    named = spans_named(exporter)
    [span] = named["moderate message"]
    assert span.attributes is not None
    assert span.attributes["moderation.outcome"] == "dead_letter"
    assert span.attributes["moderation.error_code"] == "empty_conversation"
    assert "model call" not in named
    assert "publish verdict" not in named
