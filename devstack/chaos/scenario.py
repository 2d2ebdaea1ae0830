"""The chaos scenario: real workers, a real (local) AWS, faults everywhere, then the count.

One run: start moto's server (or use one given), the fault proxy in front of it, the Llama Guard
emulator and a recording proxy in front of that; provision the source queue (redriving to the
DLQ only after ``redrive_max_receive_count`` receives, so faults alone never redrive a valid
message), the DLQ, the two topics and their subscriber queues; start the workers as subprocesses
pointed at the proxies; then, on each tick, top the source queue up to ``backlog`` unfinished
messages (a producer feeding a stream), read back verdicts and dead letters,
SIGKILL and replace a worker when progress passes a ``kill_at`` mark, take the endpoint down for
the outage window, and stop when every message is accounted for and the source queue is empty
(or the deadline passes). The workers are stopped with SIGTERM, the queues read one last time,
and the figures counted (``report``).

Every wait is bounded: the run by ``deadline_seconds``, each drain of a queue by a batch count,
each worker stop by its drain timeout plus a margin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiobotocore.session import AioSession

from devstack.chaos.corpus import Corpus, build_corpus
from devstack.chaos.moto_process import moto_server_process
from devstack.chaos.proxy import (
    SNS_PUBLISH_OPERATIONS,
    ProxyFaultKind,
    ProxyStats,
    RunningProxy,
    run_fault_proxy,
)
from devstack.chaos.report import (
    REPORTED_WORKER_EVENTS,
    DeadLetterCopy,
    ReliabilityReport,
    VerdictCopy,
    tally,
)
from devstack.chaos.workers import WorkerLogSummary, WorkerProcess, WorkerTuning, worker_environment
from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.moto_stack import (
    LOCAL_ACCESS_KEY,
    LOCAL_REGION,
    LocalResources,
    provision,
    take_messages,
)
from worker.adapters.aws import queue_config

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

# Each tick reads three queues; moto's CPU is the run's bottleneck, so not too often.
TICK_SECONDS: Final = 0.5
_SEND_BATCH: Final = 10  # SQS's SendMessageBatch limit
_SENDS_AT_ONCE: Final = 8
_DRAIN_BATCHES_PER_TICK: Final = 100
_STOP_MARGIN_SECONDS: Final = 10.0
_HARNESS_CONNECTIONS: Final = 16

#: Emulator faults of a default run: every kind the worker must ride out, at rates that leave
#: most requests answered (hang_seconds is above the workers' request timeout). Most throttling
#: comes from the emulator's capacity, as with a real endpoint: it follows the load.
DEFAULT_EMULATOR_FAULTS: Final[Mapping[str, object]] = {
    "throttle_rate": 0.02,
    "not_ready_rate": 0.01,
    "server_error_rate": 0.03,
    "model_error_rate": 0.03,
    "hang_rate": 0.01,
    "invalid_output_rate": 0.02,
    "hang_seconds": 2.0,
}
#: Proxy faults of a default run. botocore makes three attempts per call, so a rate r reaches
#: the worker as r**3 of the calls: 0.3 makes about 2.7 % of the calls fail outright.
DEFAULT_PROXY_RATES: Final[Mapping[str, float]] = {
    **dict.fromkeys(SNS_PUBLISH_OPERATIONS, 0.3),
    "DeleteMessageBatch": 0.3,
    "ChangeMessageVisibilityBatch": 0.2,
}


@dataclass(frozen=True, slots=True)
class Outage:
    """The endpoint answers every request with 503, starting when the share ``at`` of valid
    messages has a verdict (0: from the start, before the workers begin), for ``seconds`` counted
    from when every worker is up."""

    at: float
    seconds: float


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """What one chaos run does."""

    valid_messages: int = 300
    invalid_messages: int = 30
    workers: int = 2
    kill_at: tuple[float, ...] = (0.3,)
    outage: Outage | None = None
    emulator: EmulatorConfig = field(
        default_factory=lambda: EmulatorConfig(latency_ms=5.0, latency_jitter_ms=20.0, capacity=12)
    )
    emulator_faults: Mapping[str, object] = field(
        default_factory=lambda: dict(DEFAULT_EMULATOR_FAULTS)
    )
    proxy_rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PROXY_RATES))
    proxy_kinds: tuple[ProxyFaultKind, ...] = (
        "internal_error",
        "service_unavailable",
        "drop_request",
        "drop_response",
    )
    tuning: WorkerTuning = field(default_factory=WorkerTuning)
    #: Seeds the proxy's and the emulator's fault draws and the order messages are sent in.
    seed: int = 7
    redrive_max_receive_count: int = 50
    #: The source queue's own visibility timeout; None: the same as the worker's setting.
    queue_visibility_timeout: int | None = None
    backlog: int = 200
    deadline_seconds: float = 120.0
    log_dir: Path | None = None

    def describe(self) -> list[tuple[str, str]]:
        """(name, value) rows saying how the run was set up, for the report."""
        emulator = self.emulator
        tuning = self.tuning
        outage = (
            "none" if self.outage is None else f"{self.outage.seconds:g} s at {self.outage.at:.0%}"
        )
        return [
            ("messages", f"{self.valid_messages} valid + {self.invalid_messages} invalid"),
            ("feeding", f"at most {self.backlog} unfinished messages queued at a time"),
            ("workers", f"{self.workers}, SIGKILL + restart at {_shares(self.kill_at)} delivered"),
            ("endpoint outage", outage),
            (
                "emulator",
                (
                    f"latency {emulator.latency_ms:g}+{emulator.latency_jitter_ms:g} ms, "
                    f"capacity {emulator.capacity}, faults {_rates(self.emulator_faults)}"
                ),
            ),
            (
                "fault proxy (SQS/SNS)",
                f"{_rates(self.proxy_rates)}; kinds {', '.join(self.proxy_kinds)}",
            ),
            (
                "worker settings",
                (
                    f"max in flight {tuning.max_in_flight}, "
                    f"visibility {tuning.visibility_timeout} s, "
                    f"retries {tuning.retry_attempts} within {tuning.retry_deadline:g} s, "
                    f"request timeout {tuning.request_timeout:g} s, release delay "
                    f"{tuning.release_delay_base:g}-{tuning.release_delay_max:g} s, circuit "
                    f"{tuning.circuit_failure_threshold} failures / probe "
                    f"{tuning.circuit_probe_interval:g} s"
                ),
            ),
            ("redrive policy", f"maxReceiveCount {self.redrive_max_receive_count}"),
            ("seed", str(self.seed)),
        ]


def _shares(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.0%}" for value in values) or "never"


def _rates(rates: Mapping[str, object]) -> str:
    return ", ".join(f"{name} {value}" for name, value in rates.items()) or "none"


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """The report, plus the raw records tests look into (times are wall-clock seconds)."""

    report: ReliabilityReport
    queue_calls: ProxyStats
    model_calls: ProxyStats
    worker_events: list[dict[str, object]]
    outage_window: tuple[float, float] | None


async def run_scenario(config: ScenarioConfig, *, moto_url: str | None = None) -> ScenarioResult:
    """Run the scenario end to end; ``moto_url`` reuses a running (empty) moto server."""
    async with AsyncExitStack() as stack:
        moto = moto_url or stack.enter_context(moto_server_process())
        log_dir = config.log_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-logs-"))
        )
        queues = await stack.enter_async_context(run_fault_proxy(moto, seed=config.seed))
        emulator = await stack.enter_async_context(
            run_emulator(dataclasses.replace(config.emulator, seed=config.seed))
        )
        model = await stack.enter_async_context(run_fault_proxy(emulator.url))
        session = isolated_session()
        async with harness_clients(session, queues.url) as (sqs, sns):
            # Through the proxy (no faults yet), so every URL the worker is given names it.
            resources = await provision(
                sqs,
                sns,
                prefix=f"chaos-{config.seed}",
                redrive_max_receive_count=config.redrive_max_receive_count,
                visibility_timeout=config.queue_visibility_timeout
                or config.tuning.visibility_timeout,
            )
        fleet = Fleet(
            worker_environment(
                resources.environment(),
                config.tuning,
                queues_url=queues.url,
                model_url=model.url,
            ),
            log_dir,
        )
        stack.push_async_callback(fleet.stop_all, grace=_stop_grace(config))
        async with harness_clients(session, moto) as (direct_sqs, _):
            driver = Driver(
                config,
                sqs=direct_sqs,
                resources=resources,
                emulator=emulator,
                queues=queues,
                fleet=fleet,
            )
            report = await driver.run()
        return ScenarioResult(
            report=report,
            queue_calls=queues.stats,
            model_calls=model.stats,
            worker_events=fleet.events(),
            outage_window=driver.outage_window,
        )


def isolated_session() -> AioSession:
    """A botocore session that reads no AWS config or credentials file of the machine.

    ``AWS_PROFILE`` is ignored too: with no config file, a named profile would not be found.
    """
    session = AioSession(session_vars={"profile": (None, None, None, None)})
    session.set_config_variable("config_file", os.devnull)
    session.set_config_variable("credentials_file", os.devnull)
    return session


@asynccontextmanager
async def harness_clients(
    session: AioSession, endpoint_url: str
) -> AsyncIterator[tuple[SQSClient, SNSClient]]:
    """SQS and SNS clients for the harness itself, on an explicit endpoint and dummy keys."""
    settings: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "region_name": LOCAL_REGION,
        "aws_access_key_id": LOCAL_ACCESS_KEY,
        "aws_secret_access_key": LOCAL_ACCESS_KEY,
        # The worker's own botocore settings (three attempts, standard mode).
        "config": queue_config(max_pool_connections=_HARNESS_CONNECTIONS),
    }
    async with (
        session.create_client("sqs", **settings) as sqs,
        session.create_client("sns", **settings) as sns,
    ):
        yield sqs, sns


def _stop_grace(config: ScenarioConfig) -> float:
    return config.tuning.drain_timeout + _STOP_MARGIN_SECONDS


class Fleet:
    """The worker processes of a run: started, replaced after a SIGKILL, stopped together."""

    def __init__(self, environment: Mapping[str, str], log_dir: Path) -> None:
        self._environment = environment
        self._log_dir = log_dir
        self.processes: list[WorkerProcess] = []

    @property
    def live(self) -> list[WorkerProcess]:
        return [process for process in self.processes if process.returncode is None]

    @property
    def ready(self) -> bool:
        """There are live workers and every one has started its poll loop."""
        live = self.live
        return bool(live) and all(process.ready for process in live)

    @property
    def unexpected_exits(self) -> int:
        return sum(process.exited_unexpectedly for process in self.processes)

    def start(self) -> WorkerProcess:
        name = f"worker-{len(self.processes) + 1}"
        process = WorkerProcess(name, self._environment, self._log_dir / f"{name}.log")
        self.processes.append(process)
        return process

    async def replace_oldest(self) -> None:
        """SIGKILL the longest-running worker and start a new one in its place."""
        live = self.live
        if live:
            await live[0].kill()
        self.start()

    async def stop_all(self, *, grace: float) -> list[int]:
        """SIGTERM every live worker at once; each drains, or is SIGKILLed after ``grace`` s.

        Returns their exit codes.
        """
        return list(await asyncio.gather(*(process.stop(grace=grace) for process in self.live)))

    def events(self) -> list[dict[str, object]]:
        """Every worker's log events, worker by worker, each tagged with its process name."""
        return [
            {**event, "worker": process.name}
            for process in self.processes
            for event in process.log()
        ]


class Collector:
    """Reads back everything the workers produced: verdict copies and dead letters."""

    def __init__(self, sqs: SQSClient, resources: LocalResources, corpus: Corpus) -> None:
        self._sqs = sqs
        self._resources = resources
        self._corpus = corpus
        self.verdicts: list[VerdictCopy] = []
        self.dead_letters: list[DeadLetterCopy] = []
        self._delivered: set[str] = set()
        self._dead_invalid: set[str] = set()

    @property
    def progress(self) -> float:
        """The share of valid messages that have a verdict."""
        return len(self._delivered) / max(len(self._corpus.valid), 1)

    @property
    def accounted(self) -> int:
        """Distinct messages that reached their end: a verdict, or the DLQ for invalid ones."""
        return len(self._delivered) + len(self._dead_invalid)

    @property
    def complete(self) -> bool:
        """Every valid message has a verdict and every invalid one is in the DLQ."""
        return len(self._delivered) == len(self._corpus.valid) and len(self._dead_invalid) == len(
            self._corpus.invalid
        )

    async def poll(self) -> None:
        """Take whatever the subscriber queues and the DLQ hold now."""
        resources = self._resources
        safe, unsafe, dead = await asyncio.gather(
            _take(self._sqs, resources.safe_subscriber_queue_url),
            _take(self._sqs, resources.unsafe_subscriber_queue_url),
            _take(self._sqs, resources.dead_letter_queue_url or ""),
        )
        for topic, messages in (("safe", safe), ("unsafe", unsafe)):
            for message in messages:
                copy = _verdict_copy(message.get("Body", ""), topic)
                self.verdicts.append(copy)
                if copy.id in self._corpus.valid:
                    self._delivered.add(copy.id)
        for message in dead:
            dead_letter = _dead_letter_copy(message)
            self.dead_letters.append(dead_letter)
            if dead_letter.body in self._corpus.invalid:
                self._dead_invalid.add(dead_letter.body)


async def _take(sqs: SQSClient, queue_url: str) -> list[MessageTypeDef]:
    """Receive and delete what a queue holds now (bounded: at most a hundred batches)."""
    taken: list[MessageTypeDef] = []
    for _ in range(_DRAIN_BATCHES_PER_TICK):
        batch = await take_messages(sqs, queue_url)
        if not batch:
            break
        taken.extend(batch)
    return taken


def _verdict_copy(body: str, topic: str) -> VerdictCopy:
    try:
        document = json.loads(body)
        return VerdictCopy(
            id=str(document["id"]),
            verdict=str(document["verdict"]),
            categories=tuple(str(category["code"]) for category in document["categories"]),
            flags=tuple(str(flag) for flag in document["flags"]),
            topic="unsafe" if topic == "unsafe" else "safe",
        )
    except (ValueError, KeyError, TypeError):
        # Not a verdict at all: counted as an unexpected verdict under a name no message has.
        return VerdictCopy("<unreadable>", "", (), (), "safe")


def _dead_letter_copy(message: MessageTypeDef) -> DeadLetterCopy:
    attribute = message.get("MessageAttributes", {}).get("error_code")
    code = attribute.get("StringValue") if attribute is not None else None
    return DeadLetterCopy(body=message.get("Body", ""), error_code=code)


async def send_all(sqs: SQSClient, queue_url: str, bodies: Sequence[str]) -> None:
    """Enqueue every body, ten per call, a few calls at a time; a refused entry is an error."""
    batches = [bodies[start : start + _SEND_BATCH] for start in range(0, len(bodies), _SEND_BATCH)]
    for first in range(0, len(batches), _SENDS_AT_ONCE):
        await asyncio.gather(
            *(
                _send_batch(sqs, queue_url, batch)
                for batch in batches[first : first + _SENDS_AT_ONCE]
            )
        )


async def _send_batch(sqs: SQSClient, queue_url: str, bodies: Sequence[str]) -> None:
    response = await sqs.send_message_batch(
        QueueUrl=queue_url,
        Entries=[{"Id": str(index), "MessageBody": body} for index, body in enumerate(bodies)],
    )
    if response.get("Failed"):
        raise RuntimeError(f"SendMessageBatch refused entries: {response['Failed']}")


async def queue_depth(sqs: SQSClient, queue_url: str) -> int:
    """Messages in the queue, visible or not (zero only when all were deleted)."""
    response = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )
    return sum(int(value) for value in response.get("Attributes", {}).values())


class Driver:
    """Runs one scenario on prepared infrastructure and counts the result."""

    def __init__(
        self,
        config: ScenarioConfig,
        *,
        sqs: SQSClient,
        resources: LocalResources,
        emulator: RunningEmulator,
        queues: RunningProxy,
        fleet: Fleet,
    ) -> None:
        self._config = config
        self._sqs = sqs
        self._resources = resources
        self._emulator = emulator
        self._queues = queues
        self._fleet = fleet
        self._corpus = build_corpus(
            config.valid_messages, config.invalid_messages, seed=config.seed
        )
        self._collector = Collector(sqs, resources, self._corpus)
        self._sent = 0
        self._kills_due = sorted(config.kill_at)
        self.kills = 0
        self.exit_codes: list[int] = []
        self._down_at: float | None = None
        self._outage_clock: float | None = None
        self._up_at: float | None = None

    @property
    def outage_window(self) -> tuple[float, float] | None:
        if self._down_at is None or self._up_at is None:
            return None
        return self._down_at, self._up_at

    async def run(self) -> ReliabilityReport:
        self._inject_faults()
        self._step_outage()  # an outage at 0 starts before the first worker does
        for _ in range(self._config.workers):
            self._fleet.start()
        started = time.monotonic()
        completed = await self._drive()
        wall_seconds = time.monotonic() - started
        self._end_outage()
        self.exit_codes = await self._fleet.stop_all(grace=_stop_grace(self._config))
        await self._collector.poll()  # what the workers published while draining
        left = await queue_depth(self._sqs, self._resources.queue_url)
        return self._report(completed=completed, wall_seconds=wall_seconds, left=left)

    def _inject_faults(self) -> None:
        self._emulator.faults.update(dict(self._config.emulator_faults))
        self._queues.plan.update(rates=self._config.proxy_rates, kinds=self._config.proxy_kinds)

    async def _drive(self) -> bool:
        """Tick until everything is accounted for (True) or the deadline passes (False)."""
        deadline = time.monotonic() + self._config.deadline_seconds
        while time.monotonic() < deadline:
            await self._feed()
            await self._collector.poll()
            await self._kill_if_due()
            self._step_outage()
            if await self._finished():
                return True
            if not self._fleet.live:
                return False  # every worker died on its own: nothing more will happen
            await asyncio.sleep(TICK_SECONDS)
        return False

    async def _feed(self) -> None:
        """Top the source queue up to ``backlog`` messages not yet accounted for.

        A producer feeds a queue over time; sending everything at once would also make moto slow,
        since its SQS walks every message of a queue on each send and receive.
        """
        bodies = self._corpus.bodies
        room = self._config.backlog - (self._sent - self._collector.accounted)
        if room <= 0 or self._sent >= len(bodies):
            return
        chunk = bodies[self._sent : self._sent + room]
        await send_all(self._sqs, self._resources.queue_url, chunk)
        self._sent += len(chunk)

    async def _kill_if_due(self) -> None:
        while self._kills_due and self._collector.progress >= self._kills_due[0]:
            self._kills_due.pop(0)
            await self._fleet.replace_oldest()
            self.kills += 1

    def _step_outage(self) -> None:
        outage = self._config.outage
        if outage is None or self._up_at is not None:
            return
        now = time.time()
        if self._down_at is None and self._collector.progress >= outage.at:
            self._emulator.faults.update({"down": True})
            self._down_at = now
        # The outage's length counts from when every worker is up (a worker still importing
        # cannot notice an outage), so a slow start never shortens what the workers live through.
        if self._down_at is not None and self._outage_clock is None and self._fleet.ready:
            self._outage_clock = now
        if self._outage_clock is not None and now >= self._outage_clock + outage.seconds:
            self._end_outage()

    def _end_outage(self) -> None:
        if self._down_at is not None and self._up_at is None:
            self._emulator.faults.update({"down": False})
            self._up_at = time.time()

    async def _finished(self) -> bool:
        outage_over = self._config.outage is None or self._up_at is not None
        all_sent = self._sent == len(self._corpus.bodies)
        if not (outage_over and all_sent and self._collector.complete):
            return False
        return await queue_depth(self._sqs, self._resources.queue_url) == 0

    def _report(self, *, completed: bool, wall_seconds: float, left: int) -> ReliabilityReport:
        summary = WorkerLogSummary.of(self._fleet.events())
        window = self.outage_window
        return ReliabilityReport(
            delivery=tally(
                self._corpus,
                self._collector.verdicts,
                self._collector.dead_letters,
                left_in_queue=left,
            ),
            completed=completed,
            wall_seconds=wall_seconds,
            workers=self._config.workers,
            kills=self.kills,
            unexpected_exits=self._fleet.unexpected_exits,
            sigterm_exit_codes=tuple(self.exit_codes),
            outage_seconds=window[1] - window[0] if window else 0.0,
            max_receive_count=summary.max_receive_count,
            redrive_max_receive_count=self._config.redrive_max_receive_count,
            proxy=self._queues.stats.as_json(),
            emulator=self._emulator.stats.as_json(),
            worker_events={name: summary.events[name] for name in REPORTED_WORKER_EVENTS},
            worker_exceptions=summary.unexpected_errors,
            setup=tuple(self._config.describe()),
            dropped_publish_answers=self._queues.stats.dropped_answers(SNS_PUBLISH_OPERATIONS),
        )
