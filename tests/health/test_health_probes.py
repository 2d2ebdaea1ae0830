"""``/healthz`` and ``/readyz`` of the real worker: moto's SQS and SNS, the emulator over HTTP,
the production wiring (``open_worker``) and the production HTTP server (``worker.metrics``).

The probes are read from a thread with urllib, as an orchestrator reads them from outside: the
server answers from its own thread, so it answers even while the worker's event loop is blocked.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pytest
from support.conditions import wait_until

from devstack.emulator import EmulatorConfig, FaultPlan, RunningEmulator, run_emulator
from worker.app import open_worker
from worker.health import Health, HealthPolicy
from worker.metrics import serving
from worker.runner import Runner, Stage
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from devstack.moto_stack import LocalResources

ENDPOINT_NAME: Final = "llama-guard-health"
WITHIN: Final = 20.0  # a condition not met by then fails the test instead of hanging it
SAFE_TEXT: Final = "How do I bake a chocolate cake for my daughter's birthday?"


@dataclass(frozen=True)
class Probe:
    status: int
    body: dict[str, Any]

    def failing(self) -> set[str]:
        return {name for name, check in self.body["checks"].items() if not check["ok"]}


def get(url: str) -> Probe:
    """One probe, as a kubelet sends it (blocking; call it from a thread)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own server
            return Probe(response.status, json.loads(response.read()))
    except urllib.error.HTTPError as error:
        with error:
            return Probe(error.code, json.loads(error.read()))


def get_until(url: str, wanted: Callable[[Probe], bool]) -> Probe:
    """Probe again and again until ``wanted`` holds (blocking; call it from a thread)."""
    deadline = time.monotonic() + WITHIN
    while True:
        try:
            probe = get(url)
        except urllib.error.URLError:  # not listening yet: the answer is "no answer"
            probe = Probe(0, {"checks": {}})
        if wanted(probe) or time.monotonic() > deadline:
            return probe
        time.sleep(0.05)  # the probing interval, not a wait for something to happen


async def probe_until(url: str, wanted: Callable[[Probe], bool]) -> Probe:
    return await asyncio.to_thread(get_until, url, wanted)


def settings_for(resources: LocalResources, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "queue_url": resources.queue_url,
        "safe_topic_arn": resources.safe_topic_arn,
        "unsafe_topic_arn": resources.unsafe_topic_arn,
        "dead_letter_queue_url": resources.dead_letter_queue_url,
        "backend": "sagemaker",
        "endpoint_name": ENDPOINT_NAME,
        "metrics_port": 0,
        "receive_wait_seconds": 1,
        "visibility_timeout": 30,
        "drain_timeout": 1,
        "retry_attempts": 1,
        "retry_deadline": 5,
    }
    return Settings(**(values | overrides))


@dataclass(frozen=True)
class Running:
    healthz: str
    readyz: str
    runner: Runner
    loop: asyncio.AbstractEventLoop


@asynccontextmanager
async def running_worker(settings: Settings, policy: HealthPolicy) -> AsyncIterator[Running]:
    """The worker running on this loop, its probes served on a free local port."""
    health = Health(policy)
    stop = asyncio.Event()
    health.watch_stop(stop)
    with serving(0, health, host="127.0.0.1") as server:
        async with open_worker(settings, health=health) as worker:
            task = asyncio.create_task(worker.runner.run(stop))
            try:
                yield Running(
                    f"{server.url}/healthz",
                    f"{server.url}/readyz",
                    worker.runner,
                    asyncio.get_running_loop(),
                )
            finally:
                stop.set()
                await asyncio.wait_for(task, WITHIN)


@pytest.fixture
async def model(
    monkeypatch: pytest.MonkeyPatch, moto: str
) -> AsyncIterator[tuple[RunningEmulator, FaultPlan]]:
    """The emulator on the SageMaker route, with a fault plan the test can change."""
    faults = FaultPlan()
    async with run_emulator(EmulatorConfig(), faults=faults) as emulator:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
        yield emulator, faults


async def send(sqs: SQSClient, queue_url: str, message_id: str) -> None:
    body = json.dumps({"id": message_id, "content": SAFE_TEXT})
    await sqs.send_message(QueueUrl=queue_url, MessageBody=body)


async def test_a_working_worker_is_alive_and_ready(
    local_resources: LocalResources, model: tuple[RunningEmulator, FaultPlan]
) -> None:
    async with running_worker(settings_for(local_resources), HealthPolicy()) as worker:
        ready = await probe_until(worker.readyz, lambda probe: probe.status == 200)
        alive = await asyncio.to_thread(get, worker.healthz)
    assert ready.body["status"] == "pass"
    assert set(ready.body["checks"]) == {"clients", "circuit", "shutdown"}
    assert (alive.status, alive.body["status"]) == (200, "pass")
    assert set(alive.body["checks"]) == {"event_loop", "poll_loop"}


async def test_a_blocked_event_loop_fails_liveness_with_the_reason(
    local_resources: LocalResources, model: tuple[RunningEmulator, FaultPlan]
) -> None:
    policy = HealthPolicy(loop_stall_after=0.5, beat_interval=0.1)
    release = threading.Event()

    def block_the_loop_and_probe(worker: Running) -> Probe:
        # The worker's loop runs release.wait: nothing else runs on it until the probe is back.
        worker.loop.call_soon_threadsafe(release.wait, WITHIN)
        try:
            return get_until(worker.healthz, lambda probe: probe.status == 503)
        finally:
            release.set()

    async with running_worker(settings_for(local_resources), policy) as worker:
        await probe_until(worker.healthz, lambda probe: probe.status == 200)
        blocked = await asyncio.to_thread(block_the_loop_and_probe, worker)
        recovered = await probe_until(worker.healthz, lambda probe: probe.status == 200)

    assert blocked.status == 503
    assert blocked.failing() == {"event_loop"}
    assert recovered.status == 200


async def test_a_stalled_poll_loop_fails_liveness(
    monkeypatch: pytest.MonkeyPatch, local_resources: LocalResources
) -> None:
    """SQS stops answering (a server that accepts and never replies): receive hangs."""

    handlers: list[asyncio.Task[None]] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while await reader.read(1 << 16):  # reads the request, never replies
                pass
        finally:
            writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{port}")
    policy = HealthPolicy(poll_stall_after=0.5, beat_interval=0.1)
    try:
        async with running_worker(settings_for(local_resources), policy) as worker:
            stalled = await probe_until(worker.healthz, lambda probe: probe.status == 503)
            ready = await asyncio.to_thread(get, worker.readyz)
    finally:
        silent.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await silent.wait_closed()

    assert stalled.status == 503
    assert stalled.failing() == {"poll_loop"}
    assert ready.status == 200  # nothing about readiness says the queue is silent


async def test_an_open_circuit_fails_readiness_but_not_liveness(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: tuple[RunningEmulator, FaultPlan],
) -> None:
    _, faults = model
    faults.update({"down": True})
    settings = settings_for(local_resources, circuit_failure_threshold=1, circuit_probe_interval=5)
    policy = HealthPolicy(poll_stall_after=0.5, beat_interval=0.1)
    async with running_worker(settings, policy) as worker:
        await send(sqs_client, local_resources.queue_url, "during-outage")
        unready = await probe_until(worker.readyz, lambda probe: probe.status == 503)
        # The poll loop waits for a probe to succeed: longer than the limit, and still alive.
        await wait_until(
            lambda: time.monotonic() - worker.runner.last_poll > policy.poll_stall_after
        )
        alive = await asyncio.to_thread(get, worker.healthz)

    assert unready.failing() == {"circuit"}
    assert alive.status == 200


async def test_a_worker_with_every_slot_busy_is_alive(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    model: tuple[RunningEmulator, FaultPlan],
) -> None:
    _, faults = model
    faults.update({"hang_rate": 1.0, "hang_seconds": WITHIN})
    # Above the runner's one-second capacity re-check, which is the progress of a full worker.
    policy = HealthPolicy(poll_stall_after=1.5, beat_interval=0.1)
    settings = settings_for(local_resources, max_in_flight=1, request_timeout=WITHIN)
    async with running_worker(settings, policy) as worker:
        await send(sqs_client, local_resources.queue_url, "slow-one")
        await wait_until(lambda: list(worker.runner.held().values()) == [Stage.MODERATING])
        busy_since = time.monotonic()
        await wait_until(lambda: time.monotonic() - busy_since > 2 * policy.poll_stall_after)
        alive = await asyncio.to_thread(get, worker.healthz)
        still_busy = list(worker.runner.held().values())

    assert still_busy == [Stage.MODERATING]
    assert alive.status == 200


async def test_metrics_are_still_served_beside_the_probes(
    local_resources: LocalResources, model: tuple[RunningEmulator, FaultPlan]
) -> None:
    async with running_worker(settings_for(local_resources), HealthPolicy()) as worker:
        metrics_url = worker.healthz.removesuffix("/healthz") + "/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(metrics_url, timeout=5) as response:  # noqa: S310
                return str(response.read().decode("utf-8"))

        text = await asyncio.to_thread(scrape)
    assert "moderation_messages_received_total" in text
