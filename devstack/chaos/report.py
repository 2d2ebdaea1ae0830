"""The figures of a chaos run, how they are counted, and the ``docs/reliability.md`` section.

Pure: ``tally`` turns what was sent (the corpus) and what came out (verdict copies read from the
two subscriber queues, copies read from the dead-letter queue) into the delivery figures;
``ReliabilityReport`` adds the run's faults and the workers' own account; the renderers write it
for a terminal and for the document. Message text never appears in any of it, only ids and codes.

Definitions:
- delivered: valid ids with at least one verdict; lost: valid ids with none.
- duplicates: verdict copies beyond the first, counted per valid id from the copies read back
  (at-least-once delivery allows them). A publish the proxy applied and then cut off
  (``drop_response``) is sent again, by botocore or after a later receive, so each one must show
  as at least one duplicate: fewer means copies were lost, or the count is blind to them.
- wrong verdicts: copies whose verdict, categories or topic differ from what the emulator's rules
  dictate. A fail-closed copy (``model_output_invalid``: unparseable model output twice, by design
  ``unsafe``) is counted apart, not as wrong.
- dead letters: valid ids found in the DLQ (must be none), invalid bodies found there (must be
  all, each with its ``error_code``), and copies beyond the first.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from devstack.chaos.corpus import Corpus, Expected

FAIL_CLOSED_FLAG: Final = "model_output_invalid"
SECTION_BEGIN: Final = "<!-- chaos-figures:begin (written by `make chaos`) -->"
SECTION_END: Final = "<!-- chaos-figures:end -->"
_LISTED_IDS: Final = 20
#: Worker log events that show a fault reaching the worker (past botocore's own retries, or from
#: the endpoint) and how the worker reacted to it.
REPORTED_WORKER_EVENTS: Final = (
    "publish_failed",
    "delete_failed",
    "visibility_change_failed",
    "release_failed",
    "dead_letter_failed",
    "receive_failed",
    "classifier_retry",
    "classifier_unavailable",
    "endpoint_rejected",
    "model_output_invalid",
    "message_released",
    "concurrency_decreased",
    "circuit_opened",
    "circuit_probe_failed",
    "circuit_closed",
    "handler_failed",
)


@dataclass(frozen=True, slots=True)
class VerdictCopy:
    """One verdict read back from a subscriber queue."""

    id: str
    verdict: str
    categories: tuple[str, ...]
    flags: tuple[str, ...]
    topic: Literal["safe", "unsafe"]


@dataclass(frozen=True, slots=True)
class DeadLetterCopy:
    """One message read back from the dead-letter queue, with its ``error_code`` if it has one."""

    body: str
    error_code: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to the messages."""

    sent_valid: int
    sent_invalid: int
    delivered: int
    lost_ids: tuple[str, ...]
    verdict_copies: int
    duplicates: int
    duplicated_ids: tuple[str, ...]
    wrong_verdicts: int
    fail_closed: int
    unexpected_verdicts: int
    dlq_valid: int
    dlq_invalid: int
    dlq_invalid_copies: int
    dlq_wrong_code: int
    dlq_unknown: int
    left_in_queue: int

    @property
    def sent(self) -> int:
        return self.sent_valid + self.sent_invalid

    @property
    def lost(self) -> int:
        return len(self.lost_ids)

    @property
    def invalid_missing(self) -> int:
        return self.sent_invalid - self.dlq_invalid

    def problems(self) -> tuple[str, ...]:
        """Each broken promise, named: something lost, guessed, wrongly dead-lettered or unnamed."""
        checks = (
            ("lost", self.lost),
            ("wrong verdicts", self.wrong_verdicts),
            ("unexpected verdicts", self.unexpected_verdicts),
            ("valid ids in the DLQ", self.dlq_valid),
            ("invalid messages missing from the DLQ", self.invalid_missing),
            ("DLQ copies with the wrong error_code", self.dlq_wrong_code),
            ("unknown DLQ copies", self.dlq_unknown),
        )
        return tuple(f"{name}: {count}" for name, count in checks if count)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing guessed, nothing valid dead-lettered, every invalid one named."""
        return not self.problems()


def tally(
    corpus: Corpus,
    verdicts: Iterable[VerdictCopy],
    dead_letters: Iterable[DeadLetterCopy],
    *,
    left_in_queue: int = 0,
) -> Delivery:
    """Count the run's delivery figures (see the module docstring for the definitions)."""
    verdicts, dead_letters = list(verdicts), list(dead_letters)
    known = [copy for copy in verdicts if copy.id in corpus.valid]
    copies_per_id = Counter(copy.id for copy in known)
    delivered = set(copies_per_id)
    invalid_copies = [copy for copy in dead_letters if copy.body in corpus.invalid]
    valid_dead = {_valid_id(copy.body, corpus) for copy in dead_letters} - {None}
    return Delivery(
        sent_valid=len(corpus.valid),
        sent_invalid=len(corpus.invalid),
        delivered=len(delivered),
        lost_ids=tuple(sorted(set(corpus.valid) - delivered)),
        verdict_copies=len(known),
        duplicates=sum(copies - 1 for copies in copies_per_id.values()),
        duplicated_ids=tuple(sorted(i for i, copies in copies_per_id.items() if copies > 1)),
        wrong_verdicts=sum(is_wrong(copy, corpus.valid[copy.id]) for copy in known),
        fail_closed=sum(is_fail_closed(copy) for copy in known),
        unexpected_verdicts=len(verdicts) - len(known),
        dlq_valid=len(valid_dead),
        dlq_invalid=len({copy.body for copy in invalid_copies}),
        dlq_invalid_copies=len(invalid_copies),
        dlq_wrong_code=sum(copy.error_code != corpus.invalid[copy.body] for copy in invalid_copies),
        dlq_unknown=len(dead_letters) - len(invalid_copies) - _count_valid(dead_letters, corpus),
        left_in_queue=left_in_queue,
    )


def is_fail_closed(copy: VerdictCopy) -> bool:
    """Unparseable output twice: by design the verdict is ``unsafe``, flagged, never guessed."""
    return FAIL_CLOSED_FLAG in copy.flags and copy.verdict == "unsafe"


def is_wrong(copy: VerdictCopy, expected: Expected) -> bool:
    """A verdict that is not what the rules dictate, or sits on the other topic."""
    if copy.topic != copy.verdict:
        return True
    if is_fail_closed(copy):
        return False
    return copy.verdict != expected.verdict or copy.categories != expected.categories


def _valid_id(body: str, corpus: Corpus) -> str | None:
    if body in corpus.invalid:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    message_id = document.get("id") if isinstance(document, dict) else None
    return message_id if isinstance(message_id, str) and message_id in corpus.valid else None


def _count_valid(dead_letters: Iterable[DeadLetterCopy], corpus: Corpus) -> int:
    return sum(_valid_id(copy.body, corpus) is not None for copy in dead_letters)


@dataclass(frozen=True, slots=True)
class ReliabilityReport:
    """Everything a chaos run reports."""

    delivery: Delivery
    completed: bool
    wall_seconds: float
    workers: int
    kills: int
    unexpected_exits: int
    sigterm_exit_codes: tuple[int, ...]
    outage_seconds: float
    max_receive_count: int
    redrive_max_receive_count: int
    proxy: Mapping[str, Mapping[str, int]]
    emulator: Mapping[str, object]
    worker_events: Mapping[str, int] = field(default_factory=dict)
    worker_exceptions: int = 0
    setup: tuple[tuple[str, str], ...] = ()
    #: Publish calls the proxy applied and then cut off: each must show as a duplicate.
    dropped_publish_answers: int = 0

    def problems(self) -> tuple[str, ...]:
        """Each promise the run broke, named (empty: the run is OK)."""
        found = list(self.delivery.problems())
        if self.delivery.duplicates < self.dropped_publish_answers:
            found.append(
                f"duplicates: {self.delivery.duplicates}, fewer than the "
                f"{self.dropped_publish_answers} publish answers dropped"
            )
        if not self.completed:
            found.append("the run did not finish before its deadline")
        if self.unexpected_exits:
            found.append(f"workers that exited on their own: {self.unexpected_exits}")
        unclean = [code for code in self.sigterm_exit_codes if code != 0]
        if unclean:
            found.append(f"exit codes other than 0 after SIGTERM: {unclean}")
        return tuple(found)

    @property
    def ok(self) -> bool:
        return not self.problems()

    def result(self) -> str:
        """``OK``, or ``FAILED`` with every problem found."""
        problems = self.problems()
        return "FAILED: " + "; ".join(problems) if problems else "OK"

    def figures(self) -> list[tuple[str, str]]:
        """(name, value) rows, in the order they are printed and written."""
        d = self.delivery
        return [
            ("sent", f"{d.sent} ({d.sent_valid} valid, {d.sent_invalid} invalid)"),
            ("delivered", f"{d.delivered} of {d.sent_valid} valid ids have a verdict"),
            ("lost", f"{d.lost}" + (f" ({', '.join(d.lost_ids[:_LISTED_IDS])})" if d.lost else "")),
            (
                "duplicates",
                (
                    f"{d.duplicates} extra verdict copies of {len(d.duplicated_ids)} ids "
                    f"({d.verdict_copies} in all; publish answers dropped: "
                    f"{self.dropped_publish_answers})"
                ),
            ),
            ("wrong verdicts", f"{d.wrong_verdicts} (fail-closed by design: {d.fail_closed})"),
            ("unexpected verdicts", str(d.unexpected_verdicts)),
            ("DLQ valid", str(d.dlq_valid)),
            (
                "DLQ invalid",
                (
                    f"{d.dlq_invalid} of {d.sent_invalid} (wrong error_code: {d.dlq_wrong_code}, "
                    f"copies: {d.dlq_invalid_copies}, unknown: {d.dlq_unknown})"
                ),
            ),
            ("left in source queue", str(d.left_in_queue)),
            ("wall time", f"{self.wall_seconds:.1f} s" + ("" if self.completed else " (DEADLINE)")),
            (
                "workers",
                (
                    f"{self.workers} side by side, {self.kills} SIGKILLed and replaced, "
                    f"{self.unexpected_exits} exited on their own"
                ),
            ),
            (
                "exit codes after SIGTERM",
                ", ".join(str(code) for code in self.sigterm_exit_codes) or "none stopped",
            ),
            ("endpoint outage", f"{self.outage_seconds:.1f} s"),
            (
                "max receive count",
                f"{self.max_receive_count} (redrive at {self.redrive_max_receive_count})",
            ),
            ("proxy faults injected", _counts(self.proxy.get("injected", {}))),
            ("proxy faults by kind", _counts(self.proxy.get("injected_by_kind", {}))),
            ("calls failed on every attempt", _counts(self.proxy.get("exhausted", {}))),
            ("emulator faults injected", _counts(_mapping(self.emulator.get("faults_injected")))),
            ("emulator answers", _counts(_mapping(self.emulator.get("by_outcome")))),
            ("reached the worker (log events)", _counts(self.worker_events)),
            ("worker exceptions logged", str(self.worker_exceptions)),
        ]

    def render_text(self) -> str:
        rows = [*self.setup, ("", ""), *self.figures(), ("result", self.result())]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.rjust(width)}  {value}".rstrip() for name, value in rows) + "\n"

    def render_markdown(self, *, command: str, date: str) -> str:
        return "\n".join(
            [
                SECTION_BEGIN,
                f"Run on {date} with:",
                "",
                "```",
                command,
                "```",
                "",
                f"Result: **{self.result()}**",
                "",
                "| set-up | |",
                "|---|---|",
                *(f"| {name} | {value} |" for name, value in self.setup),
                "",
                "| figure | value |",
                "|---|---|",
                *(f"| {name} | {value} |" for name, value in self.figures()),
                SECTION_END,
            ]
        )


def _mapping(value: object) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(key): count for key, count in value.items() if isinstance(count, int)}


def _counts(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    parts = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()) if count)
    return f"{total} ({parts})"


def write_section(
    path: Path, section: str, *, begin: str = SECTION_BEGIN, end: str = SECTION_END
) -> None:
    """Replace the generated section of ``path`` (between ``begin`` and ``end``), or append it.

    Each command that writes figures (``make chaos``, ``make hostile``, ``make soak``) has its own
    markers, so none overwrites another's section.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
