"""One bench run's stack and the processes under test: LocalStack, the counting proxy, workers.

The workers and the reference consumer reach LocalStack through the counting proxy (the chaos
harness's fault proxy with no faults planned: it forwards every call and counts it by
operation), so SQS and SNS calls are counted from outside, exactly. The bench itself talks to
LocalStack directly, so its own calls (filling, watching depth) are never counted. Each worker is
the real ``moderation-worker run`` (``devstack.chaos.workers.WorkerProcess``) with production
settings and its metrics on a port of its own; the endpoint is reached directly.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import aiohttp
from aiobotocore.session import AioSession

from bench.processes import free_port, localstack_server
from devstack.chaos.proxy import RunningProxy, run_fault_proxy
from devstack.chaos.workers import WorkerProcess, WorkerTuning, read_log, worker_environment
from devstack.moto_stack import (
    LOCAL_ACCESS_KEY,
    LOCAL_REGION,
    LocalResources,
    local_aws_environment,
    provision,
)
from worker.adapters.aws import queue_config

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

#: The worker's documented defaults (DESIGN.md), so the bench measures what production runs.
PRODUCTION_TUNING: Final = WorkerTuning(
    max_in_flight=64,
    visibility_timeout=60,
    retry_attempts=5,
    retry_deadline=20.0,
    request_timeout=70.0,
    release_delay_base=5.0,
    release_delay_max=300.0,
    circuit_failure_threshold=5,
    circuit_probe_interval=5.0,
    drain_timeout=30.0,
    receive_wait_seconds=20,
)
ENDPOINT_NAME: Final = "llama-guard-bench"
SNS_OPERATIONS: Final = frozenset({"Publish", "PublishBatch"})
_READY_SECONDS: Final = 60.0
_STOP_MARGIN_SECONDS: Final = 10.0
_SEND_BATCH: Final = 10
_SENDS_AT_ONCE: Final = 8
_BENCH_CONNECTIONS: Final = 16
_POLL_SECONDS: Final = 0.05
_PACKAGE_ROOT: Final = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Stack:
    """LocalStack, the counting proxy in front of it, and the bench's own clients."""

    localstack_url: str
    proxy: RunningProxy
    sqs: SQSClient
    sns: SNSClient
    http: aiohttp.ClientSession
    run_dir: Path
    # ``MODERATION_*`` settings given with ``--worker-env``, on top of the production defaults.
    worker_overrides: Mapping[str, str] = field(default_factory=dict)

    def calls(self) -> Counter[str]:
        """A copy of the proxy's call counts by operation, to subtract later."""
        return Counter(self.proxy.stats.requests)

    async def resources(self, prefix: str) -> LocalResources:
        """Fresh queues and topics for one scenario (no DLQ redrive: nothing here fails)."""
        return await provision(self.sqs, self.sns, prefix=prefix)

    async def fill(self, queue_url: str, bodies: Sequence[str]) -> None:
        """Send ``bodies`` to the queue in batches of ten, a few batches at once."""
        gate = asyncio.Semaphore(_SENDS_AT_ONCE)

        async def send(start: int) -> None:
            batch = bodies[start : start + _SEND_BATCH]
            async with gate:
                response = await self.sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)],
                )
            if response.get("Failed"):
                raise RuntimeError(f"LocalStack refused messages: {response['Failed'][:1]}")

        await asyncio.gather(*(send(start) for start in range(0, len(bodies), _SEND_BATCH)))

    async def depth(self, queue_url: str) -> int:
        """Messages still in the queue: waiting plus being worked on."""
        response = await self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    async def verdicts(self, resources: LocalResources) -> int:
        """Verdicts delivered to the two subscriber queues so far."""
        depths = await asyncio.gather(
            self.depth(resources.safe_subscriber_queue_url),
            self.depth(resources.unsafe_subscriber_queue_url),
        )
        return sum(depths)


@asynccontextmanager
async def open_stack(
    localstack_python: Path, run_dir: Path, worker_overrides: Mapping[str, str] | None = None
) -> AsyncIterator[Stack]:
    """Start LocalStack and the proxy, open the clients; everything stops on leaving."""
    async with AsyncExitStack() as stack:
        url = stack.enter_context(localstack_server(localstack_python, run_dir / "localstack"))
        proxy = await stack.enter_async_context(run_fault_proxy(url))
        session = AioSession()
        settings: dict[str, object] = {
            "endpoint_url": url,
            "region_name": LOCAL_REGION,
            "aws_access_key_id": LOCAL_ACCESS_KEY,
            "aws_secret_access_key": LOCAL_ACCESS_KEY,
            "config": queue_config(max_pool_connections=_BENCH_CONNECTIONS),
        }
        sqs = await stack.enter_async_context(session.create_client("sqs", **settings))  # type: ignore[call-overload]
        sns = await stack.enter_async_context(session.create_client("sns", **settings))  # type: ignore[call-overload]
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        )
        yield Stack(url, proxy, sqs, sns, http, run_dir, dict(worker_overrides or {}))


@dataclass(slots=True)
class Worker:
    """One real worker process, with the port its metrics are served on."""

    process: WorkerProcess
    metrics_url: str


def start_workers(
    stack: Stack,
    resources: LocalResources,
    endpoint_url: str,
    *,
    count: int,
    name: str,
    tuning: WorkerTuning = PRODUCTION_TUNING,
    settings: Mapping[str, str] | None = None,
) -> list[Worker]:
    """Start ``count`` worker processes on ``resources``, logging into the run directory."""
    workers = []
    for index in range(count):
        port = free_port()
        environment = {
            **worker_environment(
                resources.environment(),
                tuning,
                queues_url=stack.proxy.url,
                model_url=endpoint_url,
            ),
            "MODERATION_ENDPOINT_NAME": ENDPOINT_NAME,
            "MODERATION_METRICS_PORT": str(port),
            **stack.worker_overrides,
            **(settings or {}),
        }
        log_path = stack.run_dir / f"{name}-worker-{index}.log"
        process = WorkerProcess(f"{name}-{index}", environment, log_path)
        workers.append(Worker(process, f"http://127.0.0.1:{port}/metrics"))
    return workers


async def wait_ready(workers: Sequence[Worker]) -> None:
    """Until every worker has logged ``worker_started``; raises if one dies or it takes long."""
    deadline = time.monotonic() + _READY_SECONDS
    while not all(worker.process.ready for worker in workers):
        if any(worker.process.exited_unexpectedly for worker in workers):
            raise RuntimeError("a worker exited while starting (see its log in the run directory)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not start within {_READY_SECONDS}s")
        await asyncio.sleep(_POLL_SECONDS)


async def stop_workers(workers: Sequence[Worker], tuning: WorkerTuning = PRODUCTION_TUNING) -> None:
    """SIGTERM every worker and wait for its drain (SIGKILL past the drain timeout)."""
    grace = tuning.drain_timeout + _STOP_MARGIN_SECONDS
    await asyncio.gather(*(worker.process.stop(grace=grace) for worker in workers))


class ReferenceProcess:
    """``python -m bench.reference`` as a child process, pointed through the proxy."""

    def __init__(
        self,
        stack: Stack,
        resources: LocalResources,
        endpoint_url: str,
        *,
        messages: int,
        in_flight: int = 0,
    ) -> None:
        environment = {
            **local_aws_environment(stack.proxy.url),
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint_url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        command = [
            sys.executable,
            "-m",
            "bench.reference",
            f"--queue-url={resources.queue_url}",
            f"--safe-topic-arn={resources.safe_topic_arn}",
            f"--unsafe-topic-arn={resources.unsafe_topic_arn}",
            f"--endpoint-name={ENDPOINT_NAME}",
            f"--messages={messages}",
            f"--in-flight={in_flight}",
        ]
        self._log_path = stack.run_dir / "reference.log"
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command,
                env=environment,
                cwd=_PACKAGE_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    async def wait_ready(self) -> None:
        """Until it has printed ``ready``; raises if it dies or takes long."""
        deadline = time.monotonic() + _READY_SECONDS
        while "ready" not in self._log_path.read_text(encoding="utf-8", errors="replace"):
            if self._process.poll() is not None:
                raise RuntimeError("the reference consumer exited while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the reference consumer did not start in {_READY_SECONDS}s")
            await asyncio.sleep(_POLL_SECONDS)

    async def stop(self) -> None:
        """SIGTERM (it may have finished already) and wait, bounded."""
        if self._process.poll() is None:
            self._process.terminate()
        try:
            await asyncio.to_thread(self._process.wait, _STOP_MARGIN_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class ProfiledWorker:
    """One worker process under cProfile (``python -m cProfile -o FILE -m worker.cli run``).

    cProfile writes its file when the worker exits on its own after SIGTERM (a drain). Its CPU
    figures are not comparable with an unprofiled run: this only shows where the time goes.
    """

    def __init__(
        self, stack: Stack, resources: LocalResources, endpoint_url: str, profile_path: Path
    ) -> None:
        environment = {
            **worker_environment(
                resources.environment(),
                PRODUCTION_TUNING,
                queues_url=stack.proxy.url,
                model_url=endpoint_url,
            ),
            "MODERATION_ENDPOINT_NAME": ENDPOINT_NAME,
            **stack.worker_overrides,
        }
        command = [
            sys.executable,
            *("-m", "cProfile", "-o", str(profile_path)),
            *("-m", "worker.cli", "run"),
        ]
        self._log_path = stack.run_dir / "profiled-worker.log"
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command,
                env=environment,
                cwd=_PACKAGE_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self) -> None:
        """Until it has logged ``worker_started``; raises if it dies or takes long."""
        deadline = time.monotonic() + _READY_SECONDS
        while not any(event.get("event") == "worker_started" for event in read_log(self._log_path)):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the profiled worker did not start")
            await asyncio.sleep(_POLL_SECONDS)

    async def stop(self) -> None:
        """SIGTERM, and wait for the drain (and the profile's file); SIGKILL past the grace."""
        if self._process.poll() is None:
            self._process.terminate()
        try:
            grace = PRODUCTION_TUNING.drain_timeout + _STOP_MARGIN_SECONDS
            await asyncio.to_thread(self._process.wait, grace)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def worker_pids(workers: Sequence[Worker]) -> list[int]:
    return [worker.process.pid for worker in workers]


def without(after: Mapping[str, int], before: Mapping[str, int]) -> Counter[str]:
    """Calls made between two snapshots of ``Stack.calls``."""
    return Counter({name: count - before.get(name, 0) for name, count in after.items()})
