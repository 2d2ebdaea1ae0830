"""Shutdown: what a receive returns after stop is released at once, and the probe watches stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import aiohttp
import pytest
from structlog.testing import capture_logs
from support.conditions import wait_until
from test_runner import ScriptedHandler, ack, config

from devstack.emulator import RunningEmulator
from devstack.fakes import InMemorySource
from worker.adapters.sqs import SqsSource
from worker.adapters.tgi import TgiClassifier
from worker.backpressure import EndpointGuard, GuardPolicy
from worker.core.errors import EndpointUnavailable
from worker.core.models import Turn
from worker.core.prompt import DEFAULT_PARAMETERS, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.pipeline import Outcome
from worker.ports import ReceivedMessage
from worker.runner import Runner

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from devstack.moto_stack import LocalResources

# The receive under way at stop returns as soon as its messages exist; this only bounds a broken
# run, it is not what the tests measure.
GENEROUS_GRACE = 15.0
# What production uses for the model endpoint: far longer than any shutdown may take.
PRODUCTION_REQUEST_TIMEOUT = 70.0
FORMAT = PromptFormat.LLAMA_GUARD_2
PROMPT = render_prompt([Turn("user", "Hello")], FORMAT, default_taxonomy(FORMAT)).text


class LateReceiveSource(InMemorySource):
    """A receive whose answer is in transit: it takes messages at once (they are hidden from
    then on), but returns them only a few loop turns after ``deliver`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.receiving = asyncio.Event()
        self.deliver = asyncio.Event()

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        self.receiving.set()
        batch = await super().receive(max_messages, wait_seconds)
        await self.deliver.wait()
        for _ in range(5):
            await asyncio.sleep(0)
        return batch


async def test_messages_a_receive_returns_after_stop_are_released_at_once() -> None:
    """Not stranded until their visibility timeout: made visible again before the run ends."""
    source = LateReceiveSource()
    ids = [source.send(f"m{index}") for index in range(3)]
    handler = ScriptedHandler()
    runner = Runner(
        source, handler, config(burst=False, wait_seconds=20, receive_grace=GENEROUS_GRACE)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await source.receiving.wait()
    stop.set()
    source.deliver.set()
    with capture_logs() as logs:
        stats = await asyncio.wait_for(running, timeout=20)
    assert handler.handled == []
    assert sorted(source.visibility_changes) == [(message_id, 0) for message_id in ids]
    assert source.in_flight() == []
    assert stats.released_on_shutdown == 3
    assert [e["count"] for e in logs if e["event"] == "received_during_shutdown_released"] == [3]


class StopOnReceiveSource(InMemorySource):
    """A receive whose answer arrives together with the stop: the stop is set as it returns."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__()
        self.stop = stop

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        batch = await super().receive(max_messages, wait_seconds)
        self.stop.set()
        return batch


async def test_messages_that_arrive_with_the_stop_are_released_not_started() -> None:
    """The poll loop meets a finished receive and the stop at once: it starts nothing."""
    stop = asyncio.Event()
    source = StopOnReceiveSource(stop)
    ids = [source.send(f"m{index}") for index in range(3)]
    handler = ScriptedHandler()
    runner = Runner(source, handler, config(burst=False))

    with capture_logs() as logs:
        stats = await asyncio.wait_for(runner.run(stop), timeout=20)

    assert handler.handled == []
    assert sorted(source.visibility_changes) == [(message_id, 0) for message_id in ids]
    assert stats.released_on_shutdown == 3
    assert [e["count"] for e in logs if e["event"] == "received_during_shutdown_released"] == [3]


async def test_a_receive_still_waiting_after_the_grace_is_abandoned() -> None:
    source = LateReceiveSource()  # empty: its long poll waits for messages that never come
    runner = Runner(source, ScriptedHandler(), config(burst=False, receive_grace=0))
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await source.receiving.wait()
    with capture_logs() as logs:
        stop.set()
        stats = await asyncio.wait_for(running, timeout=20)
    assert stats.received == 0
    assert any(e["event"] == "receive_abandoned_on_stop" for e in logs)


class ObservedSqsSource(SqsSource):
    """The real SQS adapter, telling the test when a receive has begun."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        super().__init__(client, queue_url, visibility_timeout=30)
        self.receiving = asyncio.Event()

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        self.receiving.set()
        return await super().receive(max_messages, wait_seconds)


async def queue_counts(sqs: SQSClient, queue_url: str) -> tuple[int, int]:
    response = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def test_on_sqs_a_long_poll_answered_after_stop_leaves_its_messages_visible(
    sqs_client: SQSClient, local_resources: LocalResources
) -> None:
    """Through moto: the 20 s long poll under way at stop takes a message; it is released."""
    queue_url = local_resources.queue_url
    source = ObservedSqsSource(sqs_client, queue_url)
    handler = ScriptedHandler()
    runner = Runner(
        source, handler, config(burst=False, wait_seconds=20, receive_grace=GENEROUS_GRACE)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await source.receiving.wait()
    stop.set()
    await sqs_client.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"id": "late"}))
    stats = await asyncio.wait_for(running, timeout=GENEROUS_GRACE + 10)
    assert handler.handled == []
    assert stats.released_on_shutdown == 1
    assert await queue_counts(sqs_client, queue_url) == (1, 0)


@pytest.fixture
async def patient_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that would wait as long as production does for an answer."""
    timeout = aiohttp.ClientTimeout(total=PRODUCTION_REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def test_stop_ends_an_open_circuit_probe_hanging_on_the_endpoint(
    emulator: RunningEmulator, patient_session: aiohttp.ClientSession
) -> None:
    """The runner returns while the probe's request is still hanging; the probe is abandoned.

    The request would hang for a minute (and the client would wait 70 s); the run is allowed
    10 s here only to bound a broken run: what is asserted is that the hanging probe was
    abandoned (the emulator saw the client go away) rather than answered.
    """
    classifier = TgiClassifier(patient_session, emulator.url, DEFAULT_PARAMETERS)
    guard = EndpointGuard(classifier, GuardPolicy(failure_threshold=1, probe_interval=0.01), PROMPT)
    emulator.faults.down = True
    with pytest.raises(EndpointUnavailable):
        await guard.classify(PROMPT)
    assert guard.circuit.is_open
    emulator.faults.update({"down": False, "hang_rate": 1.0, "hang_seconds": 60.0})
    runner = Runner(InMemorySource(), ScriptedHandler(), config(burst=False), gate=guard)
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(runner.run(stop))
        await wait_until(lambda: emulator.stats.in_flight == 1)
        stop.set()
        await asyncio.wait_for(running, timeout=10)
    await wait_until(lambda: emulator.stats.by_outcome["cancelled"] == 1)
    assert emulator.stats.by_outcome["safe"] == 0
    assert any(e["event"] == "circuit_probe_abandoned_on_stop" for e in logs)


class HeldExtensionSource(InMemorySource):
    """Visibility extensions start, then wait until ``land`` is set."""

    def __init__(self) -> None:
        super().__init__(visibility_timeout=1)
        self.extending = asyncio.Event()
        self.land = asyncio.Event()

    async def change_visibility(
        self, changes: Sequence[tuple[ReceivedMessage, int]]
    ) -> Sequence[ReceivedMessage]:
        self.extending.set()
        await self.land.wait()
        return await super().change_visibility(changes)


async def test_the_run_ends_only_once_a_delete_waiting_for_an_extension_is_done() -> None:
    """The drain gives up on the message's task, not on its settling: the delete that waits
    for an extension still in flight happens before ``run`` returns."""
    source = HeldExtensionSource()
    message_id = source.send("m0")

    async def acked_during_an_extension(message: ReceivedMessage) -> Outcome:
        await source.extending.wait()  # the heartbeat's extension is under way (and held)
        return await ack(message)

    runner = Runner(
        source,
        ScriptedHandler(acked_during_an_extension),
        config(burst=False, visibility_timeout=1, drain_timeout=0.05),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await source.extending.wait()
    stop.set()
    # A window for a run that would end without its delete (a lower bound: load cannot make
    # the run end early, only hide that it would).
    await asyncio.sleep(0.5)
    assert not running.done()
    assert not source.is_deleted(message_id)

    source.land.set()
    await asyncio.wait_for(running, timeout=20)
    assert source.is_deleted(message_id)
