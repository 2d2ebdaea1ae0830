"""The hostile run's bookkeeping: its messages are what the issue describes, and the bar is
applied right to synthetic tallies (no servers: the run itself takes minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from support.builders import verdict_copy

from devstack.chaos.corpus import SAFE, Expected
from devstack.chaos.hostile import (
    HOSTILE_TEXTS,
    OVERSIZED_ID,
    dead_letter,
    hostile_bodies,
    oversized_body,
    oversized_trace,
    timed_verdict,
)
from devstack.chaos.hostile_report import (
    HOSTILE_SECTION_BEGIN,
    HOSTILE_SECTION_END,
    DeadLetter,
    HostileTally,
    MessageClass,
    OversizedTrace,
    SentMessage,
    TimedVerdict,
    render_markdown,
    tally_hostile,
)
from devstack.chaos.report import SECTION_BEGIN, SECTION_END, write_section
from worker.core.messages import decode_request

UNSAFE_O3 = Expected("unsafe", ("O3",))
SENT_AT = 1_000.0
SQS_MAX_BYTES = 1_048_576
SNS_MAX_BYTES = 262_144


def sent(message_id: str, kind: MessageClass, expected: Expected | None = SAFE) -> SentMessage:
    return SentMessage(message_id, kind, SENT_AT, expected)


def verdict_after(
    message_id: str, after: float = 1.0, kind: Literal["safe", "unsafe"] = "safe", *codes: str
) -> TimedVerdict:
    """A verdict read back ``after`` seconds past the send."""
    return TimedVerdict(verdict_copy(message_id, kind, *codes), SENT_AT + after)


SENT = [
    sent("o-1", "ordinary"),
    sent("o-2", "ordinary", UNSAFE_O3),
    sent("h-1", "hostile"),
    sent("n-1", "not_found"),
    sent(OVERSIZED_ID, "oversized", None),
]
CLEAN_VERDICTS = [
    verdict_after("o-1", 0.5),
    verdict_after("o-2", 1.5, "unsafe", "O3"),
    verdict_after("h-1", 2.0),
    verdict_after("n-1", 25.0),
]
OVERSIZED_IN_DLQ = [DeadLetter(OVERSIZED_ID, "attributes_too_large")]


def tally(
    verdicts: list[TimedVerdict],
    dead_letters: list[DeadLetter],
    *,
    trace: OversizedTrace | None = None,
) -> HostileTally:
    return tally_hostile(SENT, verdicts, dead_letters, within_seconds=10.0, oversized=trace)


def test_hostile_messages_are_valid_and_within_the_default_conversation_limit() -> None:
    """Each is the issue's shape, decodes as a valid message, and fits the 100,000-char limit."""
    for (message_id, body), (_, text) in zip(hostile_bodies(), HOSTILE_TEXTS, strict=True):
        request = decode_request(body, max_conversation_chars=100_000)
        assert request.id == message_id
        assert request.assessed.content == text
        assert len(text) > 95_000
    assert [text[:2] for _, text in HOSTILE_TEXTS] == ["[ ", "< ", "[/"]


def test_oversized_message_fits_sqs_but_not_sns() -> None:
    size = len(oversized_body().encode())

    assert SNS_MAX_BYTES < size < SQS_MAX_BYTES


def test_a_clean_run_clears_the_bar() -> None:
    result = tally(CLEAN_VERDICTS, OVERSIZED_IN_DLQ)

    assert result.ok, result.failures
    assert result.oversized_fate == "DLQ, error_code attributes_too_large"


def test_latencies_count_from_send_to_the_first_verdicts_decision() -> None:
    result = tally([*CLEAN_VERDICTS, verdict_after("o-1", 9.0)], OVERSIZED_IN_DLQ)

    ordinary = result.rows[0]
    assert (ordinary.first, ordinary.p50, ordinary.max) == (0.5, 1.0, 1.5)


def test_a_second_verdict_for_an_id_misses_the_exactly_once_bar() -> None:
    result = tally([*CLEAN_VERDICTS, verdict_after("h-1", 40.0)], OVERSIZED_IN_DLQ)

    assert result.failures == ("hostile whitespace: 1 ids have more than one verdict",)
    assert result.rows[1].verdict_copies == 2


def test_a_slow_ordinary_verdict_misses_the_bar() -> None:
    verdicts = [verdict_after("o-1", 106.0), *CLEAN_VERDICTS[1:]]

    result = tally(verdicts, OVERSIZED_IN_DLQ)

    assert result.failures == ("ordinary: slowest verdict 106.0 s after sending (bar: 10 s)",)


def test_a_slow_verdict_after_the_not_found_window_is_not_held_to_the_ordinary_bar() -> None:
    """Messages released during the window come back after their release delay, by design."""
    verdicts = [*CLEAN_VERDICTS[:3], verdict_after("n-1", 60.0)]

    assert tally(verdicts, OVERSIZED_IN_DLQ).ok


def test_a_valid_message_in_the_dlq_misses_the_bar_and_is_counted_by_code() -> None:
    dead = [*OVERSIZED_IN_DLQ, DeadLetter("n-1", "model_rejected")]

    result = tally(CLEAN_VERDICTS[:3], dead)

    assert result.failures == (
        "sent during not-found: 1 of 1 have no verdict",
        "sent during not-found: 1 valid messages in the DLQ",
    )
    assert result.rows[2].dead_lettered == {"model_rejected": 1}
    assert result.rows[2].unaccounted == 0


def test_a_message_with_neither_verdict_nor_dlq_copy_is_unaccounted() -> None:
    result = tally(CLEAN_VERDICTS[1:], OVERSIZED_IN_DLQ)

    assert result.rows[0].unaccounted == 1
    assert result.failures == ("ordinary: 1 of 2 have no verdict",)


def test_a_wrong_verdict_misses_the_bar() -> None:
    verdicts = [verdict_after("o-1", 0.5, "unsafe", "O3"), *CLEAN_VERDICTS[1:]]

    assert tally(verdicts, OVERSIZED_IN_DLQ).failures == ("ordinary: 1 wrong verdicts",)


def test_an_oversized_message_still_cycling_misses_the_bar() -> None:
    trace = OversizedTrace(events=8, publish_failures=4, max_receive_count=4)

    result = tally(CLEAN_VERDICTS, [], trace=trace)

    assert result.failures == ("oversized: not in the DLQ with a size error_code",)
    assert result.oversized_fate == "still cycling: 4 failed publishes, receive count 4"


def test_an_oversized_message_moved_by_the_redrive_policy_misses_the_bar() -> None:
    """In the DLQ, but without a reason: the redrive policy put it there, not the worker."""
    trace = OversizedTrace(events=20, publish_failures=10, max_receive_count=10)

    result = tally(CLEAN_VERDICTS, [DeadLetter(OVERSIZED_ID, None)], trace=trace)

    assert result.failures == ("oversized: not in the DLQ with a size error_code",)
    assert "redrive" in result.oversized_fate


def test_an_oversized_message_the_worker_never_reached_says_so() -> None:
    result = tally(CLEAN_VERDICTS, [])

    assert result.oversized_fate == "no outcome: the worker logged nothing about it"


def test_a_verdict_for_an_id_never_sent_misses_the_bar() -> None:
    result = tally([*CLEAN_VERDICTS, verdict_after("stranger")], OVERSIZED_IN_DLQ)

    assert result.failures == ("1 verdicts for ids that were never sent",)


def test_a_verdict_is_timed_by_its_decided_at() -> None:
    body = json.dumps(
        {
            "id": "o-1",
            "verdict": "unsafe",
            "categories": [{"code": "O3", "name": "Criminal Planning"}],
            "flags": [],
            "decided_at": "2026-11-26T14:00:00.410Z",
        }
    )

    timed = timed_verdict(body, "unsafe", seen_at=0.0)

    assert timed.copy == verdict_copy("o-1", "unsafe", "O3")
    assert timed.decided_at == pytest.approx(1_795_701_600.41)


def test_a_dead_letter_is_matched_by_the_id_in_its_body() -> None:
    message = {
        "Body": oversized_body(),
        "MessageAttributes": {
            "error_code": {"DataType": "String", "StringValue": "attributes_too_large"}
        },
    }

    assert dead_letter(message) == DeadLetter(OVERSIZED_ID, "attributes_too_large")  # type: ignore[arg-type]


def test_the_oversized_trace_reads_only_that_messages_events() -> None:
    events: list[dict[str, object]] = [
        {"event": "publish_failed", "request_id": OVERSIZED_ID, "receive_count": 1},
        {"event": "publish_failed", "request_id": OVERSIZED_ID, "receive_count": 3},
        {"event": "publish_failed", "request_id": "o-1", "receive_count": 7},
        {"event": "verdict_published", "request_id": "o-1"},
    ]

    assert oversized_trace(events) == OversizedTrace(
        events=2, publish_failures=2, max_receive_count=3
    )


def test_the_hostile_section_is_written_beside_the_chaos_section(tmp_path: Path) -> None:
    """Each command rewrites only its own section of the document."""
    document = tmp_path / "reliability.md"
    chaos = f"{SECTION_BEGIN}\nchaos figures\n{SECTION_END}"
    document.write_text(f"# Reliability\n\n{chaos}\n", encoding="utf-8")
    result = tally(CLEAN_VERDICTS, OVERSIZED_IN_DLQ)

    for date in ("first", "second"):
        section = render_markdown(result, [], command="python -m devstack.chaos.hostile", date=date)
        write_section(document, section, begin=HOSTILE_SECTION_BEGIN, end=HOSTILE_SECTION_END)

    text = document.read_text(encoding="utf-8")
    assert chaos in text
    assert text.count(HOSTILE_SECTION_BEGIN) == 1
    assert "Run on second" in text
    assert "Run on first" not in text
