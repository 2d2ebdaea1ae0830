"""The chaos harness's bookkeeping: the corpus is labelled right, and the figures count right."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from support.builders import verdict_copy

from devstack.chaos.__main__ import kill_points
from devstack.chaos.corpus import ERROR_CODES, LABELLED, build_corpus, invalid_body, valid_body
from devstack.chaos.proxy import SNS_PUBLISH_OPERATIONS, SQS_BATCH_OPERATIONS
from devstack.chaos.report import (
    SECTION_BEGIN,
    SECTION_END,
    DeadLetterCopy,
    ReliabilityReport,
    VerdictCopy,
    tally,
    write_section,
)
from devstack.chaos.scenario import DEFAULT_PROXY_RATES
from devstack.emulator.rules import assess_prompt
from worker.core.errors import InvalidMessage
from worker.core.messages import decode_request
from worker.core.prompt import render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy

FORMAT = PromptFormat("llama-guard-1")  # the worker's default, which the chaos runs use


@pytest.mark.parametrize("n", range(len(LABELLED)))
def test_each_labelled_message_gets_its_expected_verdict_from_the_emulator(n: int) -> None:
    """The expectations the runs check against are the emulator's own answers."""
    _, body, expected = valid_body(n)
    request = decode_request(body)
    prompt = render_prompt(request.turns, FORMAT, default_taxonomy(FORMAT)).text

    assessment = assess_prompt(prompt)

    assert (assessment.verdict, assessment.codes) == (expected.verdict, expected.categories)


@pytest.mark.parametrize("n", range(len(ERROR_CODES)))
def test_each_invalid_message_is_refused_with_its_expected_error_code(n: int) -> None:
    body, code = invalid_body(n)

    with pytest.raises(InvalidMessage) as refused:
        decode_request(body)

    assert refused.value.error_code == code


def test_corpus_bodies_are_unique_so_dead_letters_match_by_body() -> None:
    corpus = build_corpus(120, 30, seed=1)

    assert len(set(corpus.bodies)) == len(corpus.bodies) == 150


def test_tally_counts_lost_ids_duplicate_copies_and_wrong_verdicts() -> None:
    corpus = build_corpus(6, 0, seed=0)  # ids 0-4 are safe texts, 5 is "rob a bank" (O3)
    verdicts = [
        verdict_copy("chaos-000000"),
        verdict_copy("chaos-000000"),  # a duplicate
        verdict_copy("chaos-000001", "unsafe", "O3"),  # wrong: this text is safe
        verdict_copy("chaos-000002", "unsafe", flags=("model_output_invalid",)),  # fail-closed
        verdict_copy("chaos-000005", "unsafe", "O3"),
        verdict_copy("not-sent"),
    ]

    delivery = tally(corpus, verdicts, [])

    assert delivery.lost_ids == ("chaos-000003", "chaos-000004")
    assert (delivery.delivered, delivery.duplicates) == (4, 1)
    assert (delivery.wrong_verdicts, delivery.fail_closed) == (1, 1)
    assert delivery.unexpected_verdicts == 1
    assert not delivery.ok


def test_duplicates_are_counted_per_id_from_the_copies_read_back() -> None:
    corpus = build_corpus(4, 0, seed=0)
    verdicts = [
        *[verdict_copy("chaos-000000")] * 3,  # two extra copies
        *[verdict_copy("chaos-000001")] * 2,  # one extra copy
        verdict_copy("chaos-000002"),
        *[verdict_copy("not-sent")] * 2,  # not a duplicate of anything sent
    ]

    delivery = tally(corpus, verdicts, [])

    assert delivery.duplicates == 3
    assert delivery.duplicated_ids == ("chaos-000000", "chaos-000001")
    assert delivery.verdict_copies == 6


CORPUS = build_corpus(6, 0, seed=0)  # ids 0-4 are safe texts, 5 is "rob a bank" (O3)
EXPECTED_COPIES = [
    *(verdict_copy(f"chaos-00000{n}") for n in range(5)),
    verdict_copy("chaos-000005", "unsafe", "O3"),
]


def report_of(verdicts: list[VerdictCopy], *, dropped_publish_answers: int) -> ReliabilityReport:
    """A finished run's report whose only figures of note are the verdicts read back."""
    return ReliabilityReport(
        delivery=tally(CORPUS, verdicts, []),
        completed=True,
        wall_seconds=1.0,
        workers=2,
        kills=0,
        unexpected_exits=0,
        sigterm_exit_codes=(0, 0),
        outage_seconds=0.0,
        max_receive_count=1,
        redrive_max_receive_count=50,
        proxy={},
        emulator={},
        dropped_publish_answers=dropped_publish_answers,
    )


def test_a_run_with_every_verdict_right_and_each_dropped_publish_duplicated_is_ok() -> None:
    report = report_of([*EXPECTED_COPIES, EXPECTED_COPIES[0]], dropped_publish_answers=1)

    assert report.problems() == ()
    assert report.result() == "OK"


def test_a_missing_verdict_fails_the_run_as_lost() -> None:
    report = report_of(EXPECTED_COPIES[1:], dropped_publish_answers=0)

    assert report.problems() == ("lost: 1",)
    assert not report.ok


@pytest.mark.parametrize(
    "wrong",
    [
        verdict_copy("chaos-000005"),  # "rob a bank" called safe
        verdict_copy("chaos-000005", "unsafe", "O1"),  # unsafe, with the wrong category
        verdict_copy("chaos-000000", "unsafe"),  # a safe text called unsafe, no category
    ],
    ids=["unsafe-called-safe", "wrong-category", "safe-called-unsafe"],
)
def test_a_wrong_verdict_fails_the_run(wrong: VerdictCopy) -> None:
    verdicts = [copy for copy in EXPECTED_COPIES if copy.id != wrong.id]

    report = report_of([*verdicts, wrong], dropped_publish_answers=0)

    assert report.problems() == ("wrong verdicts: 1",)


def test_a_verdict_on_the_other_topic_fails_the_run_as_wrong() -> None:
    misrouted = [*EXPECTED_COPIES[:5], verdict_copy("chaos-000005", "unsafe", "O3", topic="safe")]

    assert report_of(misrouted, dropped_publish_answers=0).problems() == ("wrong verdicts: 1",)


def test_fewer_duplicates_than_dropped_publish_answers_fail_the_run() -> None:
    """Two publishes were applied and their answers cut off: two copies must come back twice."""
    report = report_of([*EXPECTED_COPIES, EXPECTED_COPIES[0]], dropped_publish_answers=2)

    assert report.problems() == ("duplicates: 1, fewer than the 2 publish answers dropped",)
    assert report.result().startswith("FAILED: duplicates: 1")


def test_a_duplicate_of_an_id_never_sent_does_not_count_towards_the_dropped_answers() -> None:
    strangers = [*EXPECTED_COPIES, verdict_copy("not-sent"), verdict_copy("not-sent")]

    report = report_of(strangers, dropped_publish_answers=1)

    assert "duplicates: 0, fewer than the 1 publish answers dropped" in report.problems()


def test_an_unfinished_run_or_an_unclean_exit_fails_the_run() -> None:
    clean = report_of(EXPECTED_COPIES, dropped_publish_answers=0)

    assert dataclasses.replace(clean, completed=False).problems() == (
        "the run did not finish before its deadline",
    )
    assert dataclasses.replace(clean, sigterm_exit_codes=(0, 1)).problems() == (
        "exit codes other than 0 after SIGTERM: [1]",
    )
    assert dataclasses.replace(clean, unexpected_exits=1).problems() == (
        "workers that exited on their own: 1",
    )


def test_tally_sorts_dead_letters_into_valid_invalid_wrong_code_and_unknown() -> None:
    corpus = build_corpus(2, 2, seed=0)
    first_invalid, second_invalid = corpus.invalid
    dead_letters = [
        DeadLetterCopy(first_invalid, corpus.invalid[first_invalid]),
        DeadLetterCopy(first_invalid, corpus.invalid[first_invalid]),  # a second copy
        DeadLetterCopy(second_invalid, "some_other_code"),
        DeadLetterCopy(json.dumps({"id": "chaos-000001"}), None),  # valid, redriven
        DeadLetterCopy("never sent", "invalid_json"),
    ]

    delivered = [verdict_copy("chaos-000000"), verdict_copy("chaos-000001")]
    delivery = tally(corpus, delivered, dead_letters)

    assert (delivery.dlq_invalid, delivery.dlq_invalid_copies) == (2, 3)
    assert delivery.dlq_wrong_code == 1
    assert delivery.dlq_valid == 1
    assert delivery.dlq_unknown == 1
    assert delivery.invalid_missing == 0


def test_write_section_replaces_only_the_generated_part(tmp_path: Path) -> None:
    document = tmp_path / "reliability.md"
    document.write_text(f"# Title\n\nProse.\n\n{SECTION_BEGIN}\nold\n{SECTION_END}\n\nMore.\n")

    write_section(document, f"{SECTION_BEGIN}\nnew\n{SECTION_END}")

    text = document.read_text()
    assert text == f"# Title\n\nProse.\n\n{SECTION_BEGIN}\nnew\n{SECTION_END}\n\nMore.\n"


def test_default_runs_fail_every_settling_call_of_the_worker() -> None:
    """SNS publishes and the SQS batch calls that delete and release messages all get faults."""
    assert set(DEFAULT_PROXY_RATES) == {*SNS_PUBLISH_OPERATIONS, *SQS_BATCH_OPERATIONS}


def test_kills_are_spread_evenly_over_the_run() -> None:
    assert kill_points(2) == (0.333, 0.667)
    assert kill_points(0) == ()
