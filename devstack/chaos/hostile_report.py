"""The figures of a hostile run, the bar it must clear, and its ``docs/reliability.md`` section.

Pure: ``tally_hostile`` turns what was sent (each message with its class and send time) and what
came back (verdict copies from the subscriber queues, copies from the DLQ, what the worker's log
says about the oversized message) into one row per class and the list of ways the run missed the
bar of issue 6:

- every valid message (ordinary, hostile whitespace, sent during the not-found window) has
  exactly one verdict, the one the emulator's rules dictate;
- ordinary messages have it within ``within_seconds`` of being sent;
- no valid message is in the DLQ;
- the oversized message is in the DLQ with a size ``error_code`` and has no verdict;
- nothing is unaccounted for (neither a verdict nor a DLQ copy).

Times are wall-clock seconds; a verdict's time is its own ``decided_at`` (the worker's clock, the
same machine), so the collector's polling interval does not blur it. No message text appears.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from devstack.chaos.corpus import Expected
from devstack.chaos.report import VerdictCopy, is_wrong

HOSTILE_SECTION_BEGIN: Final = "<!-- hostile-run:begin (written by `make hostile`) -->"
HOSTILE_SECTION_END: Final = "<!-- hostile-run:end -->"
#: The DLQ codes that name a message too large to publish (issue 6).
SIZE_ERROR_CODES: Final = frozenset({"attributes_too_large", "verdict_too_large"})

MessageClass = Literal["ordinary", "hostile", "not_found", "oversized"]
VALID_CLASSES: Final[tuple[MessageClass, ...]] = ("ordinary", "hostile", "not_found")
CLASS_LABELS: Final[Mapping[MessageClass, str]] = {
    "ordinary": "ordinary",
    "hostile": "hostile whitespace",
    "not_found": "sent during not-found",
    "oversized": "oversized attributes",
}


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One message the run sent: its id, class, send time, and the verdict the rules dictate
    (None for the oversized message, which must get none)."""

    id: str
    kind: MessageClass
    sent_at: float
    expected: Expected | None


@dataclass(frozen=True, slots=True)
class TimedVerdict:
    """A verdict copy and when the worker decided it."""

    copy: VerdictCopy
    decided_at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A DLQ copy: the id in its body (None if unreadable) and its ``error_code`` (None: moved by
    the queue's redrive policy, without a reason)."""

    id: str | None
    error_code: str | None


@dataclass(frozen=True, slots=True)
class OversizedTrace:
    """What the worker's log says about the oversized message: how many events name it, failed
    publishes, and the highest receive count it was handled with."""

    events: int = 0
    publish_failures: int = 0
    max_receive_count: int = 0


@dataclass(frozen=True, slots=True)
class ClassRow:
    """The figures of one class of message."""

    kind: MessageClass
    sent: int
    with_verdict: int
    verdict_copies: int
    duplicated_ids: int
    wrong: int
    dead_lettered: Mapping[str, int]
    unaccounted: int
    latencies: tuple[float, ...]

    @property
    def first(self) -> float | None:
        return min(self.latencies) if self.latencies else None

    @property
    def p50(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    @property
    def max(self) -> float | None:
        return max(self.latencies) if self.latencies else None

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())


@dataclass(frozen=True, slots=True)
class HostileTally:
    """The rows, the oversized message's fate, and the ways the bar was missed."""

    rows: tuple[ClassRow, ...]
    oversized_fate: str
    left_in_queue: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def tally_hostile(
    sent: Sequence[SentMessage],
    verdicts: Iterable[TimedVerdict],
    dead_letters: Iterable[DeadLetter],
    *,
    within_seconds: float,
    oversized: OversizedTrace | None = None,
    left_in_queue: int = 0,
) -> HostileTally:
    """Count the run (see the module docstring for the bar)."""
    verdicts, dead_letters = list(verdicts), list(dead_letters)
    copies: dict[str, list[TimedVerdict]] = {}
    for timed in verdicts:
        copies.setdefault(timed.copy.id, []).append(timed)
    dead: dict[str, list[DeadLetter]] = {}
    for letter in dead_letters:
        if letter.id is not None:
            dead.setdefault(letter.id, []).append(letter)
    rows = tuple(
        _row(kind, [m for m in sent if m.kind == kind], copies, dead)
        for kind in (*VALID_CLASSES, "oversized")
    )
    oversized_ids = [message.id for message in sent if message.kind == "oversized"]
    fate = _oversized_fate(oversized_ids, copies, dead, oversized or OversizedTrace())
    failures = _failures(rows, copies, dead, oversized_ids, within_seconds=within_seconds)
    known = {message.id for message in sent}
    strays = sorted({timed.copy.id for timed in verdicts} - known)
    if strays:
        failures.append(f"{len(strays)} verdicts for ids that were never sent")
    return HostileTally(rows, fate, left_in_queue, tuple(failures))


def _row(
    kind: MessageClass,
    messages: Sequence[SentMessage],
    copies: Mapping[str, list[TimedVerdict]],
    dead: Mapping[str, list[DeadLetter]],
) -> ClassRow:
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    wrong = duplicated = with_verdict = verdict_copies = unaccounted = 0
    for message in messages:
        own = copies.get(message.id, [])
        letters = dead.get(message.id, [])
        codes.update(letter.error_code or "no error_code (redrive)" for letter in letters)
        verdict_copies += len(own)
        duplicated += len(own) > 1
        if own:
            with_verdict += 1
            latencies.append(min(timed.decided_at for timed in own) - message.sent_at)
        elif not letters:
            unaccounted += 1
        if message.expected is not None:
            wrong += sum(is_wrong(timed.copy, message.expected) for timed in own)
    return ClassRow(
        kind=kind,
        sent=len(messages),
        with_verdict=with_verdict,
        verdict_copies=verdict_copies,
        duplicated_ids=duplicated,
        wrong=wrong,
        dead_lettered=dict(codes),
        unaccounted=unaccounted,
        latencies=tuple(sorted(latencies)),
    )


def _failures(
    rows: Sequence[ClassRow],
    copies: Mapping[str, list[TimedVerdict]],
    dead: Mapping[str, list[DeadLetter]],
    oversized_ids: Sequence[str],
    *,
    within_seconds: float,
) -> list[str]:
    failures = [
        failure
        for row in rows
        if row.kind != "oversized"
        for failure in _row_failures(row, within_seconds=within_seconds)
    ]
    for message_id in oversized_ids:
        codes = {letter.error_code for letter in dead.get(message_id, [])}
        if message_id in copies:
            failures.append("oversized: a verdict was published for it")
        if not codes & SIZE_ERROR_CODES:
            failures.append("oversized: not in the DLQ with a size error_code")
    return failures


def _row_failures(row: ClassRow, *, within_seconds: float) -> list[str]:
    """How a class of valid messages missed the bar (empty: it did not)."""
    label = CLASS_LABELS[row.kind]
    failures: list[str] = []
    if row.with_verdict < row.sent:
        failures.append(f"{label}: {row.sent - row.with_verdict} of {row.sent} have no verdict")
    if row.duplicated_ids:
        failures.append(f"{label}: {row.duplicated_ids} ids have more than one verdict")
    if row.wrong:
        failures.append(f"{label}: {row.wrong} wrong verdicts")
    if row.dead_lettered_total:
        failures.append(f"{label}: {row.dead_lettered_total} valid messages in the DLQ")
    slowest = row.max
    if row.kind == "ordinary" and slowest is not None and slowest > within_seconds:
        failures.append(
            f"{label}: slowest verdict {slowest:.1f} s after sending (bar: {within_seconds:g} s)"
        )
    return failures


def _oversized_fate(
    ids: Sequence[str],
    copies: Mapping[str, list[TimedVerdict]],
    dead: Mapping[str, list[DeadLetter]],
    trace: OversizedTrace,
) -> str:
    fates: list[str] = []
    for message_id in ids:
        letters = dead.get(message_id, [])
        coded = sorted({letter.error_code for letter in letters if letter.error_code})
        if coded:
            fates.append(f"DLQ, error_code {', '.join(coded)}")
        elif letters:
            fates.append(
                f"DLQ without error_code (the redrive policy moved it after "
                f"{trace.max_receive_count} receives)"
            )
        elif message_id in copies:
            fates.append(f"published ({len(copies[message_id])} verdicts)")
        elif not trace.events:
            fates.append("no outcome: the worker logged nothing about it")
        else:
            fates.append(
                f"still cycling: {trace.publish_failures} failed publishes, "
                f"receive count {trace.max_receive_count}"
            )
    return "; ".join(fates) or "not sent"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _codes(counts: Mapping[str, int]) -> str:
    if not counts:
        return "0"
    return ", ".join(f"{count} {code}" for code, count in sorted(counts.items()))


TABLE_HEADER: Final = (
    "class",
    "sent",
    "with verdict",
    "verdicts",
    "ids twice+",
    "wrong",
    "in DLQ",
    "unaccounted",
    "first s",
    "p50 s",
    "max s",
)


def table_rows(tally: HostileTally) -> list[tuple[str, ...]]:
    """The per-class table, one tuple of cells per class (``TABLE_HEADER`` names them)."""
    return [
        (
            CLASS_LABELS[row.kind],
            str(row.sent),
            str(row.with_verdict),
            str(row.verdict_copies),
            str(row.duplicated_ids),
            str(row.wrong),
            _codes(row.dead_lettered),
            str(row.unaccounted),
            _seconds(row.first),
            _seconds(row.p50),
            _seconds(row.max),
        )
        for row in tally.rows
    ]


def render_text(tally: HostileTally, setup: Sequence[tuple[str, str]]) -> str:
    """The run for a terminal: set-up, the class table, the fate, the verdict on the bar."""
    table = [TABLE_HEADER, *table_rows(tally)]
    widths = [max(len(row[column]) for row in table) for column in range(len(TABLE_HEADER))]
    lines = [f"{name}: {value}" for name, value in setup]
    lines.append("")
    lines.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )
    lines.append("")
    lines.append(f"oversized message: {tally.oversized_fate}")
    lines.append(f"left in source queue: {tally.left_in_queue}")
    lines.append(f"result: {'PASS' if tally.ok else 'FAIL'}")
    lines.extend(f"  - {failure}" for failure in tally.failures)
    return "\n".join(lines) + "\n"


def render_markdown(
    tally: HostileTally, setup: Sequence[tuple[str, str]], *, command: str, date: str
) -> str:
    """The ``docs/reliability.md`` section, between its own markers."""
    failures = [f"- {failure}" for failure in tally.failures] or ["- none"]
    return "\n".join(
        [
            HOSTILE_SECTION_BEGIN,
            f"Run on {date} with:",
            "",
            "```",
            command,
            "```",
            "",
            f"Result: **{'PASS' if tally.ok else 'FAIL'}**",
            "",
            "| set-up | |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in setup),
            "",
            "| " + " | ".join(TABLE_HEADER) + " |",
            "|" + "---|" * len(TABLE_HEADER),
            *("| " + " | ".join(row) + " |" for row in table_rows(tally)),
            "",
            (
                f"Oversized message: {tally.oversized_fate}. "
                f"Left in the source queue at the end: {tally.left_in_queue}."
            ),
            "",
            "Missed the bar:",
            "",
            *failures,
            HOSTILE_SECTION_END,
        ]
    )
