"""``python -m devstack.chaos.hostile``: issue 6's hostile run against one real worker process.

One run: moto's server (own process), the Llama Guard emulator behind the model-side proxy, one
``moderation-worker run`` subprocess (SageMaker backend, visibility timeout 20 s), a source queue
redriving to the DLQ after ``redrive`` receives. Then:

1. The redeploy: the model-side proxy answers every invocation with SageMaker's ``400
   ValidationError: Endpoint NAME of account N not found.`` for ``--window-seconds`` (a
   blue/green swap), and 20 valid messages are sent as the window opens.
2. Once those 20 are accounted for (a verdict or a DLQ copy), or ``--window-settle`` seconds after
   the window opened, sent together: 40 ordinary messages (safe and unsafe by the emulator's
   keyword rules), three hostile whitespace messages (``[`` + 95,000 spaces + ``x``, ``<`` +
   95,000 spaces + ``x``, ``[/`` + 95,000 tabs + ``x``: within the default 100,000-character
   conversation limit) and one oversized message (``attributes`` of about 300 KB: SQS takes it,
   SNS cannot publish it).
3. The subscriber queues and the DLQ are read until every message is accounted for and the source
   queue is empty, or ``--linger`` seconds after every valid message was accounted for (a message
   that cycles forever never empties the queue), or the deadline. The worker is stopped (SIGTERM)
   and the queues read one last time.

The window comes first so that each attack meets a worker that is otherwise well: a worker whose
event loop is blocked by step 2 would never call the endpoint during a later window.

The figures (``hostile_report``) are printed, and with ``--write`` written to their section of a
document. Exit code 0 when the run clears issue 6's bar, 1 when it does not, 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from devstack.chaos.corpus import SAFE, valid_body
from devstack.chaos.hostile_report import (
    HOSTILE_SECTION_BEGIN,
    HOSTILE_SECTION_END,
    DeadLetter,
    HostileTally,
    OversizedTrace,
    SentMessage,
    TimedVerdict,
    render_markdown,
    render_text,
    tally_hostile,
)
from devstack.chaos.moto_process import moto_server_process
from devstack.chaos.proxy import RunningProxy, run_fault_proxy
from devstack.chaos.report import VerdictCopy, write_section
from devstack.chaos.scenario import harness_clients, isolated_session, queue_depth, send_all
from devstack.chaos.workers import (
    PRODUCTION_LIKE,
    WorkerProcess,
    WorkerTuning,
    worker_environment,
)
from devstack.emulator import EmulatorConfig, run_emulator
from devstack.moto_stack import LocalResources, provision, take_messages

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

ORDINARY_MESSAGES: Final = 40
NOT_FOUND_MESSAGES: Final = 20
HOSTILE_RUN_LENGTH: Final = 95_000
OVERSIZED_ATTRIBUTE_BYTES: Final = 300_000
#: (id, text) of the three hostile messages: long whitespace runs after a marker's first bytes.
HOSTILE_TEXTS: Final[tuple[tuple[str, str], ...]] = (
    ("hostile-bracket-spaces", "[" + " " * HOSTILE_RUN_LENGTH + "x"),
    ("hostile-angle-spaces", "<" + " " * HOSTILE_RUN_LENGTH + "x"),
    ("hostile-bracket-slash-tabs", "[/" + "\t" * HOSTILE_RUN_LENGTH + "x"),
)
OVERSIZED_ID: Final = "oversized-attributes"
#: The worker as a platform team would run it: production defaults, except the visibility timeout
#: of the issue's measurements (20 s) and what has to follow from it (the retry deadline below it),
#: a request timeout and drain that keep the end of the run short.
HOSTILE_TUNING: Final = replace(PRODUCTION_LIKE, visibility_timeout=20, retry_deadline=15.0)
_TICK_SECONDS: Final = 0.5
_DRAIN_BATCHES: Final = 50
_READY_TIMEOUT_SECONDS: Final = 60.0
_STOP_MARGIN_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class HostileConfig:
    """What one hostile run does."""

    within_seconds: float = 10.0
    window_seconds: float = 10.0
    window_settle: float = 90.0
    linger_seconds: float = 30.0
    deadline_seconds: float = 420.0
    redrive_max_receive_count: int = 10
    tuning: WorkerTuning = HOSTILE_TUNING
    emulator: EmulatorConfig = field(
        default_factory=lambda: EmulatorConfig(latency_ms=20.0, latency_jitter_ms=20.0)
    )
    log_dir: Path | None = None

    def describe(self) -> list[tuple[str, str]]:
        """(name, value) rows saying how the run was set up."""
        tuning = self.tuning
        return [
            (
                "messages",
                (
                    f"{ORDINARY_MESSAGES} ordinary + {len(HOSTILE_TEXTS)} hostile whitespace "
                    f"({HOSTILE_RUN_LENGTH:,} spaces/tabs) + 1 oversized "
                    f"({OVERSIZED_ATTRIBUTE_BYTES:,} B of attributes), sent together, after "
                    f"{NOT_FOUND_MESSAGES} sent as the not-found window opened"
                ),
            ),
            (
                "not-found window",
                (
                    f"{self.window_seconds:g} s of 400 ValidationError 'Endpoint ... not found.' "
                    f"at the start; the rest sent once its messages are accounted for "
                    f"(at the latest {self.window_settle:g} s after it opened)"
                ),
            ),
            (
                "worker",
                (
                    f"1 process; visibility {tuning.visibility_timeout} s, max in flight "
                    f"{tuning.max_in_flight}, retries {tuning.retry_attempts} within "
                    f"{tuning.retry_deadline:g} s, release delay {tuning.release_delay_base:g}-"
                    f"{tuning.release_delay_max:g} s, circuit {tuning.circuit_failure_threshold} "
                    f"failures / probe {tuning.circuit_probe_interval:g} s"
                ),
            ),
            ("redrive policy", f"maxReceiveCount {self.redrive_max_receive_count}"),
            ("bar", f"ordinary verdicts within {self.within_seconds:g} s of sending"),
        ]


@dataclass(frozen=True, slots=True)
class HostileResult:
    """The tally, plus what the run observed along the way."""

    tally: HostileTally
    setup: tuple[tuple[str, str], ...]
    window: tuple[float, float] | None
    worker_events: Mapping[str, int]
    worker_exit_code: int | None
    ended: str
    wall_seconds: float

    def describe(self) -> list[tuple[str, str]]:
        """The set-up rows plus what happened on the way."""
        window = (
            "never opened"
            if self.window is None
            else f"{self.window[1] - self.window[0]:.1f} s, opened {self.window[0]:.1f} s in"
        )
        events = ", ".join(f"{name} {count}" for name, count in sorted(self.worker_events.items()))
        return [
            *self.setup,
            ("not-found window (observed)", window),
            ("worker log events", events or "none"),
            ("worker exit code after SIGTERM", str(self.worker_exit_code)),
            ("run ended", f"after {self.wall_seconds:.0f} s: {self.ended}"),
        ]


#: Worker log events worth showing next to the figures.
REPORTED_EVENTS: Final = (
    "classifier_rejected",  # before issue 6: an endpoint rejection dead-lettered the message
    "endpoint_rejected",  # after: logged at error level, the message released
    "classifier_unavailable",
    "message_invalid",
    "verdict_too_large",
    "message_dead_lettered",
    "message_released",
    "publish_failed",
    "circuit_opened",
    "circuit_probe_failed",
    "circuit_closed",
    "visibility_change_failed",
    "handler_failed",
)


def ordinary_messages(first: int, count: int) -> list[tuple[str, str, SentMessage]]:
    """``count`` labelled messages from the chaos corpus: (id, body, record without a time)."""
    messages = []
    for n in range(first, first + count):
        message_id, body, expected = valid_body(n)
        messages.append((message_id, body, SentMessage(message_id, "ordinary", 0.0, expected)))
    return messages


def hostile_bodies() -> list[tuple[str, str]]:
    """(id, body) of the three hostile whitespace messages."""
    return [
        (message_id, json.dumps({"id": message_id, "content": text}))
        for message_id, text in HOSTILE_TEXTS
    ]


def oversized_body() -> str:
    """A harmless question whose ``attributes`` hold about 300 KB."""
    return json.dumps(
        {
            "id": OVERSIZED_ID,
            "content": "What is the capital of France?",
            "attributes": {"padding": "a" * OVERSIZED_ATTRIBUTE_BYTES},
        }
    )


class HostileRun:
    """Sends the classes of message, plays the not-found window, collects, and counts."""

    def __init__(
        self,
        config: HostileConfig,
        *,
        sqs: SQSClient,
        resources: LocalResources,
        model: RunningProxy,
        worker: WorkerProcess,
    ) -> None:
        self._config = config
        self._sqs = sqs
        self._resources = resources
        self._model = model
        self._worker = worker
        self.sent: list[SentMessage] = []
        self.verdicts: list[TimedVerdict] = []
        self.dead_letters: list[DeadLetter] = []
        self._started = 0.0
        self._wave_sent = False
        self._window: tuple[float, float | None] | None = None

    async def run(self) -> HostileResult:
        # The worker's poll loop runs before sending, so sending starts the clock on a live worker.
        await self._worker.wait_until_ready(within=_READY_TIMEOUT_SECONDS, tick=_TICK_SECONDS)
        self._started = time.time()
        self._model.plan.update(endpoint_not_found=True)
        self._window = (self._started, None)
        await self._send_during_window()
        ended = await self._drive()
        wall_seconds = time.time() - self._started
        self._end_window()
        exit_code = await self._worker.stop(
            grace=self._config.tuning.drain_timeout + _STOP_MARGIN_SECONDS
        )
        await self._collect()
        left = await queue_depth(self._sqs, self._resources.queue_url)
        events = self._worker.log()
        tally = tally_hostile(
            self.sent,
            self.verdicts,
            self.dead_letters,
            within_seconds=self._config.within_seconds,
            oversized=oversized_trace(events),
            left_in_queue=left,
        )
        counts = {
            name: sum(event.get("event") == name for event in events) for name in REPORTED_EVENTS
        }
        return HostileResult(
            tally=tally,
            setup=tuple(self._config.describe()),
            window=self._relative_window(),
            worker_events={name: count for name, count in counts.items() if count},
            worker_exit_code=exit_code,
            ended=ended,
            wall_seconds=wall_seconds,
        )

    async def _send_wave(self) -> None:
        ordinary = ordinary_messages(0, ORDINARY_MESSAGES)
        hostile = hostile_bodies()
        sent_at = time.time()
        # The large bodies go one per call (SendMessageBatch caps the whole batch), all at once.
        await asyncio.gather(
            send_all(self._sqs, self._resources.queue_url, [body for _, body, _ in ordinary]),
            *(self._send_one(body) for _, body in hostile),
            self._send_one(oversized_body()),
        )
        self.sent.extend(
            SentMessage(record.id, "ordinary", sent_at, record.expected)
            for _, _, record in ordinary
        )
        self.sent.extend(
            SentMessage(message_id, "hostile", sent_at, SAFE) for message_id, _ in hostile
        )
        self.sent.append(SentMessage(OVERSIZED_ID, "oversized", sent_at, None))

    async def _send_one(self, body: str) -> None:
        await self._sqs.send_message(QueueUrl=self._resources.queue_url, MessageBody=body)

    async def _send_during_window(self) -> None:
        messages = ordinary_messages(ORDINARY_MESSAGES, NOT_FOUND_MESSAGES)
        sent_at = time.time()
        await send_all(self._sqs, self._resources.queue_url, [body for _, body, _ in messages])
        self.sent.extend(
            SentMessage(record.id, "not_found", sent_at, record.expected)
            for _, _, record in messages
        )

    async def _drive(self) -> str:
        """Tick until everything is accounted for and the queue is empty, the linger after every
        valid message was accounted for runs out, the deadline passes or the worker dies; says
        which."""
        config = self._config
        deadline = time.monotonic() + config.deadline_seconds
        valid_done_at: float | None = None
        while time.monotonic() < deadline:
            await self._collect()
            self._step_window()
            if self._wave_due():
                await self._send_wave()
                self._wave_sent = True
            if self._wave_sent:
                if self._all_accounted() and await self._source_empty():
                    return "everything accounted for, the source queue empty"
                if valid_done_at is None and self._all_accounted(valid_only=True):
                    valid_done_at = time.monotonic()
                if (
                    valid_done_at is not None
                    and time.monotonic() - valid_done_at > config.linger_seconds
                ):
                    return (
                        f"{config.linger_seconds:g} s after every valid message was accounted "
                        "for, the source queue still not empty"
                    )
            if self._worker.returncode is not None:
                return "the worker exited on its own"
            await asyncio.sleep(_TICK_SECONDS)
        return f"the deadline ({config.deadline_seconds:g} s)"

    def _step_window(self) -> None:
        window = self._window
        open_since = window[0] if window is not None and window[1] is None else None
        if open_since is not None and time.time() - open_since >= self._config.window_seconds:
            self._end_window()

    def _wave_due(self) -> bool:
        """After the window: once its messages are accounted for, or it has settled long enough."""
        if self._wave_sent or not self._window_over():
            return False
        settled = time.time() - self._started >= self._config.window_settle
        return settled or self._all_accounted()

    def _end_window(self) -> None:
        if self._window is not None and self._window[1] is None:
            self._model.plan.update(endpoint_not_found=False)
            self._window = (self._window[0], time.time())

    def _window_over(self) -> bool:
        return self._window is not None and self._window[1] is not None

    def _relative_window(self) -> tuple[float, float] | None:
        if self._window is None or self._window[1] is None:
            return None
        return self._window[0] - self._started, self._window[1] - self._started

    def _accounted_ids(self) -> set[str]:
        """Ids sent that have a verdict or a DLQ copy."""
        seen = {timed.copy.id for timed in self.verdicts}
        seen.update(letter.id for letter in self.dead_letters if letter.id is not None)
        return seen & {message.id for message in self.sent}

    def _all_accounted(self, *, valid_only: bool = False) -> bool:
        wanted = {m.id for m in self.sent if not valid_only or m.kind != "oversized"}
        return self._accounted_ids() >= wanted

    async def _source_empty(self) -> bool:
        return await queue_depth(self._sqs, self._resources.queue_url) == 0

    async def _collect(self) -> None:
        resources = self._resources
        safe, unsafe, dead = await asyncio.gather(
            _drain(self._sqs, resources.safe_subscriber_queue_url),
            _drain(self._sqs, resources.unsafe_subscriber_queue_url),
            _drain(self._sqs, resources.dead_letter_queue_url or ""),
        )
        seen_at = time.time()
        for topic, messages in (("safe", safe), ("unsafe", unsafe)):
            self.verdicts.extend(timed_verdict(m.get("Body", ""), topic, seen_at) for m in messages)
        self.dead_letters.extend(dead_letter(message) for message in dead)


async def _drain(sqs: SQSClient, queue_url: str) -> list[MessageTypeDef]:
    taken: list[MessageTypeDef] = []
    for _ in range(_DRAIN_BATCHES):
        batch = await take_messages(sqs, queue_url)
        if not batch:
            break
        taken.extend(batch)
    return taken


def timed_verdict(body: str, topic: str, seen_at: float) -> TimedVerdict:
    """A verdict read from a subscriber queue; its time is ``decided_at``, else when it was seen."""
    try:
        document = json.loads(body)
        copy = VerdictCopy(
            id=str(document["id"]),
            verdict=str(document["verdict"]),
            categories=tuple(str(category["code"]) for category in document["categories"]),
            flags=tuple(str(flag) for flag in document["flags"]),
            topic="unsafe" if topic == "unsafe" else "safe",
        )
    except (ValueError, KeyError, TypeError):
        return TimedVerdict(VerdictCopy("<unreadable>", "", (), (), "safe"), seen_at)
    return TimedVerdict(copy, _timestamp(document.get("decided_at")) or seen_at)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def dead_letter(message: MessageTypeDef) -> DeadLetter:
    """A DLQ copy: the id its body names, and its ``error_code`` attribute."""
    attribute = message.get("MessageAttributes", {}).get("error_code")
    code = attribute.get("StringValue") if attribute is not None else None
    try:
        document = json.loads(message.get("Body", ""))
    except ValueError:
        return DeadLetter(None, code)
    message_id = document.get("id") if isinstance(document, dict) else None
    return DeadLetter(message_id if isinstance(message_id, str) else None, code)


def oversized_trace(events: Sequence[Mapping[str, object]]) -> OversizedTrace:
    """What the worker logged about the oversized message (its events carry ``request_id``)."""
    own = [event for event in events if event.get("request_id") == OVERSIZED_ID]
    receive_counts = [
        count for event in own if isinstance(count := event.get("receive_count"), int)
    ]
    return OversizedTrace(
        events=len(own),
        publish_failures=sum(event.get("event") == "publish_failed" for event in own),
        max_receive_count=max(receive_counts, default=0),
    )


async def run_hostile(config: HostileConfig) -> HostileResult:
    """Start everything, run once, stop everything."""
    async with AsyncExitStack() as stack:
        moto = stack.enter_context(moto_server_process())
        log_dir = config.log_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="hostile-logs-"))
        )
        emulator = await stack.enter_async_context(run_emulator(config.emulator))
        model = await stack.enter_async_context(run_fault_proxy(emulator.url))
        sqs, sns = await stack.enter_async_context(harness_clients(isolated_session(), moto))
        resources = await provision(
            sqs,
            sns,
            prefix="hostile",
            redrive_max_receive_count=config.redrive_max_receive_count,
            visibility_timeout=config.tuning.visibility_timeout,
        )
        environment = worker_environment(
            resources.environment(), config.tuning, queues_url=moto, model_url=model.url
        )
        worker = WorkerProcess("worker-1", environment, log_dir / "worker-1.log")
        stack.push_async_callback(worker.stop, grace=_STOP_MARGIN_SECONDS)
        return await HostileRun(
            config, sqs=sqs, resources=resources, model=model, worker=worker
        ).run()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    config = HostileConfig(
        within_seconds=args.within,
        window_seconds=args.window_seconds,
        window_settle=args.window_settle,
        linger_seconds=args.linger,
        deadline_seconds=args.deadline,
        redrive_max_receive_count=args.redrive,
        log_dir=args.log_dir,
    )
    result = asyncio.run(run_hostile(config))
    setup = result.describe()
    sys.stdout.write(render_text(result.tally, setup))
    if args.write is not None:
        command = shlex.join(
            ["python", "-m", "devstack.chaos.hostile", *(sys.argv[1:] if argv is None else argv)]
        )
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        section = render_markdown(result.tally, setup, command=command, date=date)
        write_section(args.write, section, begin=HOSTILE_SECTION_BEGIN, end=HOSTILE_SECTION_END)
        sys.stdout.write(f"written to {args.write}\n")
    return 0 if result.tally.ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.chaos.hostile",
        description=(
            "Hostile whitespace, an endpoint that is 'not found' for a while and an oversized "
            "message against one real worker; exits 1 when the run misses issue 6's bar."
        ),
    )
    parser.add_argument(
        "--within", type=float, default=10.0, help="seconds allowed per ordinary verdict"
    )
    parser.add_argument(
        "--window-seconds", type=float, default=10.0, help="length of the not-found window"
    )
    parser.add_argument(
        "--window-settle",
        type=float,
        default=90.0,
        help="send the rest by this many seconds after the window opened",
    )
    parser.add_argument("--linger", type=float, default=30.0, help="watch after the valid ones (s)")
    parser.add_argument("--deadline", type=float, default=420.0, help="seconds before giving up")
    parser.add_argument("--redrive", type=int, default=10, help="the queue's maxReceiveCount")
    parser.add_argument("--write", type=Path, help="document whose hostile-run section to rewrite")
    parser.add_argument("--log-dir", type=Path, help="keep the worker's log here")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
