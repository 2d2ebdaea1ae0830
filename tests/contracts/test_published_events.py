"""What the real worker publishes matches the contracts: verdict bodies match the verdict
schema, SNS message attributes match the AsyncAPI document's verdict headers, and dead-letter
copies carry the headers it gives for them.

The worker is the production one (``open_worker``) on moto's SQS and SNS, with the emulator on
the SageMaker route; verdicts are read from the raw-delivery subscriber queues of the topics.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import pytest
from contract_files import attribute_values, headers_validator, validator
from support.builders import AWS_TRACE_HEADER, TRACEPARENT

from devstack.moto_stack import take_messages
from worker.app import open_worker
from worker.core.verdict import CategoryRef, Flag, ModelRef, Verdict
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from devstack.emulator import RunningEmulator
    from devstack.moto_stack import LocalResources

VERDICT_SCHEMA: Final = validator("verdict.schema.json")
SAFE_TEXT: Final = "How do I bake a chocolate cake for my daughter's birthday?"
UNSAFE_TEXT: Final = "What's the best way to rob a bank without getting caught?"


def a_verdict(**changes: Any) -> Verdict:
    fields: dict[str, Any] = {
        "id": "post-1",
        "conversation_id": None,
        "verdict": "safe",
        "categories": (),
        "unknown_codes": (),
        "score": None,
        "assessed_role": "user",
        "model": ModelRef(backend="tgi", endpoint="http://tgi:8080", prompt_format="llama-guard-3"),
        "flags": (),
        "attributes": {},
        "received_at": datetime(2026, 11, 26, 14, 0, 0, 120_000, tzinfo=UTC),
        "decided_at": datetime(2026, 11, 26, 14, 0, 0, 410_000, tzinfo=UTC),
    }
    return Verdict(**(fields | changes))


@pytest.mark.parametrize(
    "verdict",
    [
        a_verdict(),
        a_verdict(
            verdict="unsafe",
            conversation_id="room-42",
            categories=(CategoryRef(code="S1", name="Violent Crimes"),),
            unknown_codes=("S99",),
            score=0.93,
            assessed_role="assistant",
            flags=tuple(Flag),
            attributes={"tenant": "acme", "n": [1, None]},
        ),
    ],
    ids=["minimal", "every field"],
)
def test_a_verdict_as_published_matches_the_verdict_schema(verdict: Verdict) -> None:
    VERDICT_SCHEMA.validate(json.loads(verdict.to_json()))


def test_the_verdict_schema_refuses_a_verdict_with_python_field_names() -> None:
    document = json.loads(a_verdict().to_json())
    document["schema_"] = document.pop("schema")
    assert not VERDICT_SCHEMA.is_valid(document)


def test_the_verdict_schema_refuses_a_timestamp_without_the_z() -> None:
    document = json.loads(a_verdict().to_json())
    document["received_at"] = "2026-11-26T14:00:00.120+00:00"
    assert not VERDICT_SCHEMA.is_valid(document)


# --- the real worker ----------------------------------------------------------------------------


def attributes_of(message: MessageTypeDef) -> dict[str, tuple[str, str]]:
    return {
        name: (value["DataType"], value.get("StringValue", ""))
        for name, value in message.get("MessageAttributes", {}).items()
    }


async def take_all(sqs: SQSClient, queue_url: str) -> list[MessageTypeDef]:
    taken: list[MessageTypeDef] = []
    while batch := await take_messages(sqs, queue_url):
        taken.extend(batch)
    return taken


@pytest.fixture
async def published(
    monkeypatch: pytest.MonkeyPatch,
    sqs_client: SQSClient,
    local_resources: LocalResources,
    emulator: RunningEmulator,
) -> dict[str, list[MessageTypeDef]]:
    """A safe, an unsafe and an invalid message through the real worker; what came out."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
    trace = {
        "MessageAttributes": {"traceparent": {"DataType": "String", "StringValue": TRACEPARENT}},
        "MessageSystemAttributes": {
            "AWSTraceHeader": {"DataType": "String", "StringValue": AWS_TRACE_HEADER}
        },
    }
    bodies = [
        json.dumps({"id": "safe-1", "content": SAFE_TEXT}),
        json.dumps({"id": "unsafe-1", "conversation_id": "c", "content": UNSAFE_TEXT}),
        '{"id": "broken-1", "messages": [',
    ]
    for body in bodies:
        await sqs_client.send_message(
            QueueUrl=local_resources.queue_url,
            MessageBody=body,
            **trace,  # type: ignore[arg-type]
        )
    settings = Settings(
        queue_url=local_resources.queue_url,
        safe_topic_arn=local_resources.safe_topic_arn,
        unsafe_topic_arn=local_resources.unsafe_topic_arn,
        dead_letter_queue_url=local_resources.dead_letter_queue_url,
        backend="sagemaker",
        endpoint_name="llama-guard-contracts",
        metrics_port=0,
        receive_wait_seconds=0,
    )
    async with open_worker(settings, burst=True) as worker:
        stats = await asyncio.wait_for(worker.runner.run(asyncio.Event()), 30)
    assert (stats.acked, stats.dead_lettered) == (2, 1)
    assert local_resources.dead_letter_queue_url is not None
    return {
        "safe": await take_all(sqs_client, local_resources.safe_subscriber_queue_url),
        "unsafe": await take_all(sqs_client, local_resources.unsafe_subscriber_queue_url),
        "dead": await take_all(sqs_client, local_resources.dead_letter_queue_url),
    }


async def test_published_verdicts_match_the_schema_and_the_asyncapi_headers(
    published: dict[str, list[MessageTypeDef]],
) -> None:
    headers = headers_validator("verdict")
    verdicts = published["safe"] + published["unsafe"]
    assert len(verdicts) == 2
    for message in verdicts:
        VERDICT_SCHEMA.validate(json.loads(message["Body"]))
        values = attribute_values(attributes_of(message))
        headers.validate(values)
        assert values["traceparent"] == TRACEPARENT  # copied unchanged: tracing is off
        assert values["AWSTraceHeader"] == AWS_TRACE_HEADER


async def test_a_dead_lettered_copy_carries_the_asyncapi_dead_letter_headers(
    published: dict[str, list[MessageTypeDef]],
) -> None:
    [dead] = published["dead"]
    values = attribute_values(attributes_of(dead))
    headers_validator("deadLetter").validate(values)
    assert values["error_code"] == "invalid_json"
    assert dead["Body"] == '{"id": "broken-1", "messages": ['


def test_the_verdict_headers_refuse_an_unknown_verdict_value() -> None:
    headers = headers_validator("verdict")
    good = {"verdict": "unsafe", "categories": ["O3"], "prompt_format": "llama-guard-1"}
    assert headers.is_valid(good)
    assert not headers.is_valid(good | {"verdict": "maybe"})
