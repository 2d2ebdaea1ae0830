"""The real worker end to end: SQS on moto in, the emulator over HTTP, verdicts out through SNS.

Each test enqueues messages on a real SQS queue (moto's server), runs the production worker built
by ``open_worker`` in burst mode, and reads what came out: the subscriber queues of the safe and
unsafe topics, the dead-letter queue, and the source queue's own counters.

Here the model is a SageMaker endpoint sent TGI's body. The same tests run again with the OpenAI
completions protocol, through the SageMaker route (an LMI endpoint) and over HTTP (vLLM), in
``test_worker_end_to_end_sagemaker_openai.py`` and ``test_worker_end_to_end_http_openai.py``:
each overrides ``model_route`` (separate modules, so the parallel run spreads them).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs
from support.builders import AWS_TRACE_HEADER, TRACEPARENT, VERDICT_FIELDS
from support.conditions import wait_until
from worker_harness import (
    RUN_TIMEOUT,
    SAFE_TEXT,
    SAGEMAKER_TGI,
    TIMESTAMP_PATTERN,
    UNSAFE_TEXT,
    ModelRoute,
    QueueDepth,
    body_of,
    dead_letters,
    point_model_at,
    published_verdicts,
    queue_depth,
    receive_when_back,
    run_worker,
    send,
    send_many,
    wait_until_visible,
    worker_settings,
)

from devstack.emulator import INVALID_MARKER, EmulatorConfig, RunningEmulator, run_emulator
from devstack.moto_stack import provision

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from devstack.moto_stack import LocalResources
    from worker.adapters.aws import AwsClients

EMPTY = QueueDepth(visible=0, not_visible=0)
PROBE_INTERVAL = 0.5
# While a message takes seconds, a long poll waits in moto instead of polling it in a busy loop.
LONG_POLL = {"receive_wait_seconds": 1}


PointModel = Callable[[str], None]


@pytest.fixture
def model_route() -> ModelRoute:
    """How the worker reaches the model in this module: SageMaker, TGI's body."""
    return SAGEMAKER_TGI


@pytest.fixture
def point_model(monkeypatch: pytest.MonkeyPatch, model_route: ModelRoute) -> PointModel:
    """Point the worker at an emulator's URL by this module's route."""
    return lambda url: point_model_at(monkeypatch, url, model_route)


@pytest.fixture
def model(point_model: PointModel, emulator: RunningEmulator) -> RunningEmulator:
    """The default emulator, reached by the worker by this module's route."""
    point_model(emulator.url)
    return emulator


@pytest.fixture
async def slow_model(point_model: PointModel) -> AsyncIterator[RunningEmulator]:
    """An emulator that takes 50 ms per answer, so concurrent requests overlap."""
    async with run_emulator(EmulatorConfig(latency_ms=50)) as running:
        point_model(running.url)
        yield running


# --- verdicts out -------------------------------------------------------------------------------


async def test_a_safe_message_gets_a_complete_verdict_on_the_safe_topic(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: RunningEmulator,
    model_route: ModelRoute,
) -> None:
    attributes = {"tenant": "acme", "label": "日本語 ✓", "nested": {"list": [1, None], "ok": True}}
    await send(
        sqs_client,
        local_resources.queue_url,
        {
            "id": "post-8f2c",
            "conversation_id": "room-42",
            "messages": [{"role": "user", "content": SAFE_TEXT}],
            "attributes": attributes,
        },
    )

    await run_worker(worker_settings(local_resources))

    verdicts = await published_verdicts(sqs_client, local_resources)
    assert verdicts.unsafe == []
    [delivered] = verdicts.safe
    verdict = delivered.document
    assert set(verdict) == VERDICT_FIELDS
    assert delivered.body.startswith('{"schema":')
    assert verdict["schema"] == "moderation.verdict.v1"
    assert verdict["id"] == "post-8f2c"
    assert verdict["conversation_id"] == "room-42"
    assert verdict["verdict"] == "safe"
    assert verdict["categories"] == []
    assert verdict["unknown_codes"] == []
    assert isinstance(verdict["score"], float)
    assert 0.0 <= verdict["score"] < 0.5
    assert verdict["assessed_role"] == "user"
    assert verdict["model"] == {
        **model_route.model_ref(model.url),
        "prompt_format": "llama-guard-1",
    }
    assert verdict["flags"] == []
    assert verdict["attributes"] == attributes
    assert re.match(TIMESTAMP_PATTERN, verdict["received_at"])
    assert re.match(TIMESTAMP_PATTERN, verdict["decided_at"])
    assert verdict["received_at"] <= verdict["decided_at"]


async def test_a_verdict_carries_the_sns_attributes_subscribers_filter_on(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    await send(sqs_client, local_resources.queue_url, {"id": "post-1", "content": SAFE_TEXT})

    await run_worker(worker_settings(local_resources))

    [delivered] = (await published_verdicts(sqs_client, local_resources)).safe
    score = delivered.document["score"]
    assert delivered.attributes == {
        "verdict": ("String", "safe"),
        "categories": ("String.Array", "[]"),
        "score": ("Number", delivered.attributes["score"][1]),
        "prompt_format": ("String", "llama-guard-1"),
    }
    assert float(delivered.attributes["score"][1]) == pytest.approx(score, abs=1e-5)


async def test_a_message_is_deleted_from_the_source_queue_once_its_verdict_is_published(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    await send(sqs_client, local_resources.queue_url, {"id": "post-1", "content": SAFE_TEXT})

    stats = await run_worker(worker_settings(local_resources))

    assert (stats.received, stats.acked) == (1, 1)
    assert await queue_depth(sqs_client, local_resources.queue_url) == EMPTY
    assert len((await published_verdicts(sqs_client, local_resources)).safe) == 1


async def test_an_unsafe_message_is_published_to_the_unsafe_topic_with_categories_and_score(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    await send(sqs_client, local_resources.queue_url, {"id": "post-9", "content": UNSAFE_TEXT})

    await run_worker(worker_settings(local_resources))

    verdicts = await published_verdicts(sqs_client, local_resources)
    assert verdicts.safe == []
    [delivered] = verdicts.unsafe
    verdict = delivered.document
    assert verdict["verdict"] == "unsafe"
    assert verdict["categories"] == [{"code": "O3", "name": "Criminal Planning"}]
    assert verdict["unknown_codes"] == []
    assert verdict["score"] >= 0.5
    assert verdict["flags"] == []
    assert verdict["conversation_id"] is None
    assert verdict["attributes"] == {}
    assert delivered.attributes["verdict"] == ("String", "unsafe")
    assert delivered.attributes["categories"] == ("String.Array", '["O3"]')
    assert delivered.attributes["score"][0] == "Number"
    assert float(delivered.attributes["score"][1]) == pytest.approx(verdict["score"], abs=1e-5)
    assert await queue_depth(sqs_client, local_resources.queue_url) == EMPTY


async def test_a_score_over_the_threshold_overrides_a_safe_answer_onto_the_unsafe_topic(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    # The emulator gives this safe answer P(unsafe) of about 0.03.
    await send(sqs_client, local_resources.queue_url, {"id": "edge-1", "content": SAFE_TEXT})

    await run_worker(worker_settings(local_resources, unsafe_threshold=0.01))

    verdicts = await published_verdicts(sqs_client, local_resources)
    assert verdicts.safe == []
    [delivered] = verdicts.unsafe
    assert delivered.document["verdict"] == "unsafe"
    assert delivered.document["flags"] == ["threshold_override"]
    assert delivered.attributes["verdict"] == ("String", "unsafe")


@pytest.mark.parametrize("role", ["assistant", "agent"])
async def test_a_last_assistant_turn_is_assessed_as_the_assistant(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator, role: str
) -> None:
    conversation = [
        {"role": "user", "content": "I need money by Friday. Any ideas?"},
        {"role": role, "content": f"Sure: {UNSAFE_TEXT.lower()}"},
    ]
    await send(sqs_client, local_resources.queue_url, {"id": "reply-1", "messages": conversation})

    await run_worker(worker_settings(local_resources))

    [delivered] = (await published_verdicts(sqs_client, local_resources)).unsafe
    assert delivered.document["assessed_role"] == "assistant"
    assert [c["code"] for c in delivered.document["categories"]] == ["O3"]


async def test_only_the_last_turn_decides_the_verdict(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    conversation = [
        {"role": "user", "content": UNSAFE_TEXT},
        {"role": "assistant", "content": "I can't help with that. Is there anything else?"},
    ]
    await send(sqs_client, local_resources.queue_url, {"id": "reply-2", "messages": conversation})

    await run_worker(worker_settings(local_resources))

    verdicts = await published_verdicts(sqs_client, local_resources)
    assert verdicts.unsafe == []
    [delivered] = verdicts.safe
    assert delivered.document["assessed_role"] == "assistant"


async def test_the_content_shorthand_is_moderated_as_one_user_message(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    await send(sqs_client, local_resources.queue_url, {"id": "short-1", "content": UNSAFE_TEXT})

    await run_worker(worker_settings(local_resources))

    [delivered] = (await published_verdicts(sqs_client, local_resources)).unsafe
    assert delivered.document["id"] == "short-1"
    assert delivered.document["assessed_role"] == "user"
    assert delivered.document["verdict"] == "unsafe"


async def test_a_body_wrapped_in_an_sns_envelope_is_unwrapped(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    inner = {"id": "wrapped-1", "conversation_id": "room-7", "content": UNSAFE_TEXT}
    envelope = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:chat-messages",
        "Message": json.dumps(inner),
        "Timestamp": "2026-11-26T14:00:00.000Z",
        "SignatureVersion": "1",
    }
    await send(sqs_client, local_resources.queue_url, envelope)

    await run_worker(worker_settings(local_resources))

    [delivered] = (await published_verdicts(sqs_client, local_resources)).unsafe
    assert delivered.document["id"] == "wrapped-1"
    assert delivered.document["conversation_id"] == "room-7"
    assert await dead_letters(sqs_client, local_resources) == []


async def test_trace_headers_of_the_source_message_are_carried_onto_the_verdict(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    await send(
        sqs_client,
        local_resources.queue_url,
        {"id": "traced-1", "content": SAFE_TEXT},
        traceparent=TRACEPARENT,
        aws_trace_header=AWS_TRACE_HEADER,
    )

    await run_worker(worker_settings(local_resources))

    [delivered] = (await published_verdicts(sqs_client, local_resources)).safe
    assert delivered.attributes["traceparent"] == ("String", TRACEPARENT)
    assert delivered.attributes["AWSTraceHeader"] == ("String", AWS_TRACE_HEADER)


# --- FIFO ---------------------------------------------------------------------------------------


async def test_fifo_messages_of_one_conversation_are_published_in_order(
    sqs_client: SQSClient, fifo_resources: LocalResources, model: RunningEmulator
) -> None:
    ids = [f"turn-{index}" for index in range(6)]
    for message_id in ids:
        body = {
            "id": message_id,
            "conversation_id": "room-1",
            "content": f"{SAFE_TEXT} ({message_id})",
        }
        await send(
            sqs_client,
            fifo_resources.queue_url,
            body,
            group_id="room-1",
            deduplication_id=message_id,
        )

    await run_worker(worker_settings(fifo_resources))

    verdicts = await published_verdicts(sqs_client, fifo_resources)
    assert [delivered.document["id"] for delivered in verdicts.safe] == ids
    assert {delivered.group_id for delivered in verdicts.safe} == {"room-1"}
    assert await queue_depth(sqs_client, fifo_resources.queue_url) == EMPTY


async def test_a_duplicate_delivery_on_fifo_publishes_one_verdict(
    sqs_client: SQSClient, fifo_resources: LocalResources, model: RunningEmulator
) -> None:
    body = {"id": "post-dup", "content": SAFE_TEXT}
    # The same item enqueued twice (a producer retry): SQS sees two messages, the id is one.
    for attempt in ("first", "second"):
        await send(
            sqs_client, fifo_resources.queue_url, body, group_id="room-2", deduplication_id=attempt
        )

    stats = await run_worker(worker_settings(fifo_resources))

    assert stats.acked == 2
    verdicts = await published_verdicts(sqs_client, fifo_resources)
    assert [delivered.document["id"] for delivered in verdicts.all] == ["post-dup"]
    # without a conversation_id the verdict's FIFO group is the id
    assert verdicts.all[0].group_id == "post-dup"
    assert await queue_depth(sqs_client, fifo_resources.queue_url) == EMPTY


@pytest.mark.slow
async def test_fifo_a_message_that_must_wait_holds_back_the_rest_of_its_conversation(
    sqs_client: SQSClient, fifo_resources: LocalResources, model: RunningEmulator
) -> None:
    ids = ["held-0", "held-1", "held-2"]
    for message_id in ids:
        body = {"id": message_id, "conversation_id": "room-3", "content": SAFE_TEXT}
        await send(
            sqs_client,
            fifo_resources.queue_url,
            body,
            group_id="room-3",
            deduplication_id=message_id,
        )
    model.faults.fail_next = ["server_error"]  # the first message's only attempt fails
    settings = worker_settings(fifo_resources, retry_attempts=1)

    first = await run_worker(settings)
    published_while_held = (await published_verdicts(sqs_client, fifo_resources)).all
    await wait_until_visible(sqs_client, fifo_resources.queue_url, len(ids))
    await run_worker(settings)

    assert (first.acked, first.retried) == (0, 1)
    assert published_while_held == []
    verdicts = await published_verdicts(sqs_client, fifo_resources)
    assert [delivered.document["id"] for delivered in verdicts.safe] == ids


async def test_fifo_an_invalid_message_is_dead_lettered_and_its_conversation_carries_on(
    sqs_client: SQSClient, fifo_resources: LocalResources, model: RunningEmulator
) -> None:
    bodies = [
        json.dumps({"id": "ok-0", "conversation_id": "room-5", "content": SAFE_TEXT}),
        "not JSON",
        json.dumps({"id": "ok-2", "conversation_id": "room-5", "content": SAFE_TEXT}),
    ]
    for index, body in enumerate(bodies):
        await send(
            sqs_client,
            fifo_resources.queue_url,
            body,
            group_id="room-5",
            deduplication_id=f"m-{index}",
        )

    await run_worker(worker_settings(fifo_resources))

    verdicts = await published_verdicts(sqs_client, fifo_resources)
    assert [delivered.document["id"] for delivered in verdicts.safe] == ["ok-0", "ok-2"]
    [letter] = await dead_letters(sqs_client, fifo_resources)
    assert (letter.body, letter.group_id) == ("not JSON", "room-5")
    assert letter.attributes["error_code"] == ("String", "invalid_json")
    assert await queue_depth(sqs_client, fifo_resources.queue_url) == EMPTY


# --- invalid messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidCase:
    """A message the worker must refuse: what is sent, its error code, words of its detail."""

    message: Any
    error_code: str
    detail_names: str


INVALID_MESSAGES = [
    pytest.param(
        InvalidCase("this is not JSON {", "invalid_json", "not valid JSON"), id="not-json"
    ),
    pytest.param(
        InvalidCase(json.dumps([{"id": "a", "content": "hi"}]), "not_an_object", "array"),
        id="json-array",
    ),
    pytest.param(InvalidCase({"content": "hello"}, "schema_violation", "'id'"), id="missing-id"),
    pytest.param(
        InvalidCase(
            {"id": "x", "content": "hi", "messages": [{"role": "user", "content": "hi"}]},
            "schema_violation",
            "'messages' and 'content'",
        ),
        id="content-and-messages",
    ),
    pytest.param(
        InvalidCase({"id": "x", "messages": []}, "empty_conversation", "'messages'"),
        id="empty-messages",
    ),
    pytest.param(
        InvalidCase(
            {"id": "x", "messages": [{"role": "system", "content": "You are a helpful bot."}]},
            "unsupported_role",
            "role",
        ),
        id="system-role",
    ),
    pytest.param(
        InvalidCase({"id": "x", "content": " \n\t "}, "empty_content", "content"),
        id="blank-content",
    ),
    pytest.param(
        InvalidCase(
            {"Type": "Notification", "MessageId": "m-1", "Message": {"id": "x", "content": "hi"}},
            "invalid_envelope",
            "'Message'",
        ),
        id="malformed-envelope",
    ),
    pytest.param(
        InvalidCase({"id": "x", "content": "a" * 100_001}, "message_too_large", "100000"),
        id="too-large",
    ),
    # json.dumps escapes the lone surrogate, so the SQS body itself is plain ASCII.
    pytest.param(
        InvalidCase({"id": "x", "content": "before \ud800 after"}, "invalid_text", "surrogate"),
        id="lone-surrogate",
    ),
]


@pytest.mark.parametrize("case", INVALID_MESSAGES)
async def test_an_invalid_message_is_dead_lettered_unchanged_with_its_reason(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: RunningEmulator,
    case: InvalidCase,
) -> None:
    body = body_of(case.message)
    await send(sqs_client, local_resources.queue_url, body)

    stats = await run_worker(worker_settings(local_resources))

    assert stats.dead_lettered == 1
    [letter] = await dead_letters(sqs_client, local_resources)
    assert letter.body == body
    assert letter.attributes["error_code"] == ("String", case.error_code)
    data_type, detail = letter.attributes["error_detail"]
    assert data_type == "String"
    assert case.detail_names in detail
    assert await queue_depth(sqs_client, local_resources.queue_url) == EMPTY
    assert model.stats.requests == 0
    assert (await published_verdicts(sqs_client, local_resources)).all == []


async def test_without_a_dead_letter_queue_an_invalid_message_is_left_for_the_redrive_policy(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    await send(sqs_client, local_resources.queue_url, "not JSON")

    await run_worker(worker_settings(local_resources, dead_letter_queue_url=None))

    assert await queue_depth(sqs_client, local_resources.queue_url) == QueueDepth(0, 1)
    assert await dead_letters(sqs_client, local_resources) == []
    assert model.stats.requests == 0


# --- the endpoint and SNS failing ---------------------------------------------------------------


async def test_throttling_is_retried_until_the_verdict_is_published(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    model.faults.fail_next = ["throttle", "throttle"]
    await send(sqs_client, local_resources.queue_url, {"id": "busy-1", "content": SAFE_TEXT})

    stats = await run_worker(worker_settings(local_resources))

    assert (stats.acked, stats.retried, stats.dead_lettered) == (1, 0, 0)
    assert model.stats.by_outcome["throttled"] == 2
    verdicts = await published_verdicts(sqs_client, local_resources)
    assert [delivered.document["id"] for delivered in verdicts.all] == ["busy-1"]
    assert await queue_depth(sqs_client, local_resources.queue_url) == EMPTY


@pytest.mark.slow
async def test_an_endpoint_that_stays_down_leaves_the_message_to_come_back(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    model.faults.down = True
    body = json.dumps({"id": "outage-1", "content": SAFE_TEXT})
    await send(sqs_client, local_resources.queue_url, body)

    stats = await run_worker(worker_settings(local_resources, retry_attempts=3))

    assert (stats.acked, stats.retried, stats.dead_lettered) == (0, 1, 0)
    assert model.stats.by_outcome["server_error"] == 3
    assert (await published_verdicts(sqs_client, local_resources)).all == []
    assert await dead_letters(sqs_client, local_resources) == []
    assert await queue_depth(sqs_client, local_resources.queue_url) == QueueDepth(0, 1)
    back = await receive_when_back(sqs_client, local_resources.queue_url)
    assert back["Body"] == body
    assert int(back["Attributes"]["ApproximateReceiveCount"]) == 2


@pytest.mark.slow
async def test_a_message_released_in_an_outage_gets_its_verdict_once_the_endpoint_is_back(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    model.faults.down = True
    await send(sqs_client, local_resources.queue_url, {"id": "outage-2", "content": UNSAFE_TEXT})
    settings = worker_settings(local_resources)
    await run_worker(settings)
    model.faults.down = False
    await wait_until_visible(sqs_client, local_resources.queue_url, 1)

    stats = await run_worker(settings)

    assert stats.acked == 1
    verdicts = await published_verdicts(sqs_client, local_resources)
    assert [delivered.document["id"] for delivered in verdicts.unsafe] == ["outage-2"]
    assert verdicts.safe == []
    assert await queue_depth(sqs_client, local_resources.queue_url) == EMPTY


def logged(logs: Sequence[Mapping[str, Any]], event: str) -> int:
    return sum(entry["event"] == event for entry in logs)


@pytest.mark.slow
async def test_while_the_endpoint_circuit_is_open_nothing_is_received_and_only_probes_are_sent(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    model.faults.down = True
    for index in range(3):
        # Distinct texts, so that no answer comes from the verdict cache instead of a call.
        body = {"id": f"circuit-{index}", "content": f"{SAFE_TEXT} ({index})"}
        await send(sqs_client, local_resources.queue_url, body)
    settings = worker_settings(
        local_resources,
        max_in_flight=1,
        retry_attempts=2,
        circuit_failure_threshold=2,
        circuit_probe_interval=PROBE_INTERVAL,
        release_delay_base=30,
        release_delay_max=30,
    )
    with capture_logs() as logs:
        worker = asyncio.create_task(run_worker(settings))
        # The first message's two failed attempts open the circuit; it is released for 30 s.
        await wait_until(lambda: logged(logs, "circuit_opened") == 1)
        # The outage lasts until two probes have failed.
        await wait_until(lambda: logged(logs, "circuit_probe_failed") >= 2)
        during_outage = await queue_depth(sqs_client, local_resources.queue_url)
        model.faults.down = False
        stats = await asyncio.wait_for(worker, RUN_TIMEOUT)

    assert during_outage == QueueDepth(visible=2, not_visible=1)
    probes = logged(logs, "circuit_probe_failed") + logged(logs, "circuit_probe_succeeded")
    # Every call to the endpoint is accounted for: the first message's two attempts, the
    # probes, and one call for each of the other two messages once the circuit closed.
    assert model.stats.requests == 2 + probes + 2
    assert stats.acked == 2
    verdicts = await published_verdicts(sqs_client, local_resources)
    assert sorted(delivered.document["id"] for delivered in verdicts.safe) == [
        "circuit-1",
        "circuit-2",
    ]
    assert await queue_depth(sqs_client, local_resources.queue_url) == QueueDepth(0, 1)


@pytest.mark.slow
async def test_a_slow_message_stays_invisible_while_it_is_worked_on(
    point_model: PointModel, aws_clients: AwsClients
) -> None:
    # The model takes longer than the visibility timeout: only the heartbeat keeps it hidden.
    resources = await provision(
        aws_clients.sqs, aws_clients.sns, prefix="heartbeat", visibility_timeout=2
    )
    async with run_emulator(EmulatorConfig(latency_ms=2500)) as slow:
        point_model(slow.url)
        await send(aws_clients.sqs, resources.queue_url, {"id": "slow-1", "content": SAFE_TEXT})

        stats = await run_worker(
            worker_settings(resources, visibility_timeout=2, retry_deadline=1, **LONG_POLL)
        )

    assert (stats.received, stats.acked) == (1, 1)
    assert slow.stats.requests == 1
    verdicts = await published_verdicts(aws_clients.sqs, resources)
    assert [delivered.document["id"] for delivered in verdicts.all] == ["slow-1"]


@pytest.mark.slow
async def test_a_received_message_is_hidden_for_the_configured_visibility_timeout(
    point_model: PointModel, aws_clients: AwsClients
) -> None:
    # The queue's own default (1 s) is shorter than MODERATION_VISIBILITY_TIMEOUT (6 s), whose
    # first heartbeat comes at 2 s: only receiving with the setting keeps the message hidden.
    # (Regression: before f10f297 open_worker did not pass the setting to SqsSource.)
    resources = await provision(
        aws_clients.sqs, aws_clients.sns, prefix="short-default", visibility_timeout=1
    )
    async with run_emulator(EmulatorConfig(latency_ms=1500)) as slow:
        point_model(slow.url)
        await send(aws_clients.sqs, resources.queue_url, {"id": "slow-2", "content": SAFE_TEXT})

        stats = await run_worker(
            worker_settings(resources, visibility_timeout=6, retry_deadline=5, **LONG_POLL)
        )

    verdicts = await published_verdicts(aws_clients.sqs, resources)
    assert [delivered.document["id"] for delivered in verdicts.all] == ["slow-2"]
    assert stats.received == 1
    assert slow.stats.requests == 1


async def test_a_prompt_over_the_token_budget_is_repeated_with_older_turns_dropped(
    point_model: PointModel, sqs_client: SQSClient, local_resources: LocalResources
) -> None:
    filler = "Tell me more about the weather and the garden this spring. " * 5
    conversation = [
        {"role": "user" if index % 2 == 0 else "assistant", "content": f"{index}: {filler}"}
        for index in range(24)
    ]
    conversation.append({"role": "user", "content": UNSAFE_TEXT})
    async with run_emulator(EmulatorConfig(max_total_tokens=2048)) as small:
        point_model(small.url)
        await send(
            sqs_client, local_resources.queue_url, {"id": "long-1", "messages": conversation}
        )

        await run_worker(worker_settings(local_resources))

    assert small.stats.by_outcome["prompt_too_long"] >= 1
    [delivered] = (await published_verdicts(sqs_client, local_resources)).unsafe
    assert delivered.document["flags"] == ["context_truncated"]
    assert [c["code"] for c in delivered.document["categories"]] == ["O3"]
    assert await queue_depth(sqs_client, local_resources.queue_url) == EMPTY


async def test_a_request_the_endpoint_rejects_is_released_never_dead_lettered(
    point_model: PointModel, sqs_client: SQSClient, local_resources: LocalResources
) -> None:
    body = json.dumps({"id": "rejected-1", "content": SAFE_TEXT})
    # SageMaker answers ValidationError ("Endpoint ... not found") for any other endpoint name,
    # vLLM 404 ("The model ... does not exist") for any other model name: the deployment's
    # fault, not the message's (see tests/e2e/test_worker_endpoint_redeploy.py).
    others = frozenset({"another"})
    async with run_emulator(
        EmulatorConfig(endpoint_names=others, served_model_names=others)
    ) as strict:
        point_model(strict.url)
        await send(sqs_client, local_resources.queue_url, body)

        stats = await run_worker(worker_settings(local_resources))

    assert (stats.acked, stats.retried, stats.dead_lettered) == (0, 1, 0)
    assert await dead_letters(sqs_client, local_resources) == []
    assert (await published_verdicts(sqs_client, local_resources)).all == []
    back = await receive_when_back(sqs_client, local_resources.queue_url)
    assert back["Body"] == body


async def test_unparseable_model_output_fails_closed_to_an_unsafe_verdict(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    content = f"Hello there {INVALID_MARKER}"
    await send(sqs_client, local_resources.queue_url, {"id": "garbled-1", "content": content})

    await run_worker(worker_settings(local_resources))

    verdicts = await published_verdicts(sqs_client, local_resources)
    assert verdicts.safe == []
    [delivered] = verdicts.unsafe
    assert delivered.document["verdict"] == "unsafe"
    assert "model_output_invalid" in delivered.document["flags"]
    assert delivered.attributes["verdict"] == ("String", "unsafe")
    # one more call after the first unparseable answer, then the verdict fails closed
    assert model.stats.by_outcome["invalid_output"] == 2
    assert await queue_depth(sqs_client, local_resources.queue_url) == EMPTY


@pytest.mark.slow
async def test_a_verdict_sns_refuses_leaves_the_message_to_come_back(
    sqs_client: SQSClient, local_resources: LocalResources, model: RunningEmulator
) -> None:
    body = json.dumps({"id": "unpublished-1", "content": UNSAFE_TEXT})
    await send(sqs_client, local_resources.queue_url, body)
    missing_topic = "arn:aws:sns:us-east-1:123456789012:no-such-topic"

    stats = await run_worker(worker_settings(local_resources, unsafe_topic_arn=missing_topic))

    assert (stats.acked, stats.retried, stats.dead_lettered) == (0, 1, 0)
    assert (await published_verdicts(sqs_client, local_resources)).all == []
    assert await dead_letters(sqs_client, local_resources) == []
    back = await receive_when_back(sqs_client, local_resources.queue_url)
    assert back["Body"] == body
    assert int(back["Attributes"]["ApproximateReceiveCount"]) == 2


# --- volume -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_many_messages_with_bounded_concurrency_each_get_exactly_one_verdict(
    sqs_client: SQSClient, local_resources: LocalResources, slow_model: RunningEmulator
) -> None:
    messages = [
        {"id": f"bulk-{index:02d}", "content": UNSAFE_TEXT if index % 3 == 0 else SAFE_TEXT}
        for index in range(60)
    ]
    await send_many(sqs_client, local_resources.queue_url, messages)

    stats = await run_worker(worker_settings(local_resources, max_in_flight=8))

    assert (stats.received, stats.acked) == (60, 60)
    verdicts = await published_verdicts(sqs_client, local_resources)
    published = Counter(delivered.document["id"] for delivered in verdicts.all)
    assert published == Counter(str(message["id"]) for message in messages)
    assert {d.document["id"] for d in verdicts.unsafe} == {
        m["id"] for m in messages if m["content"] == UNSAFE_TEXT
    }
    assert 1 < slow_model.stats.max_in_flight <= 8
    assert await queue_depth(sqs_client, local_resources.queue_url) == EMPTY
