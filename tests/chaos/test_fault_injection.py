"""Faults everywhere at once, and still nothing is lost: the bounded version of ``make chaos``.

One run for the whole module (about twenty-five seconds): 250 valid and 25 invalid messages,
two ``moderation-worker run`` subprocesses, one of them SIGKILLed at a third of the way and
replaced; the emulator throttles, fails (503, ModelError, not ready), hangs past the request
timeout and answers garbage; the fault proxy fails about a third of the SNS publishes and SQS
batch deletes and a fifth of the visibility changes, with 500s, 503s and dropped connections
(before and after the call was applied). Each test then checks one promise against that run.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import pytest

from devstack.chaos.scenario import ScenarioConfig, ScenarioResult, run_scenario

# The run's own deadline is 90 s; the first test also pays for the module fixture.
pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    config = ScenarioConfig(
        valid_messages=250,
        invalid_messages=25,
        workers=2,
        kill_at=(0.33,),
        deadline_seconds=90.0,
        log_dir=tmp_path_factory.mktemp("chaos-logs"),
    )
    result = asyncio.run(run_scenario(config))
    sys.stdout.write(result.report.render_text())  # shown with -s
    return result


def test_the_run_finishes_before_its_deadline(chaos: ScenarioResult) -> None:
    assert chaos.report.completed
    assert chaos.report.delivery.left_in_queue == 0


def test_every_valid_message_gets_a_verdict(chaos: ScenarioResult) -> None:
    delivery = chaos.report.delivery
    assert delivery.lost_ids == ()
    assert delivery.delivered == delivery.sent_valid == 250


def test_no_valid_message_reaches_the_dead_letter_queue(chaos: ScenarioResult) -> None:
    assert chaos.report.delivery.dlq_valid == 0
    assert chaos.report.max_receive_count < chaos.report.redrive_max_receive_count


def test_every_invalid_message_is_dead_lettered_with_its_error_code(chaos: ScenarioResult) -> None:
    delivery = chaos.report.delivery
    assert delivery.dlq_invalid == delivery.sent_invalid == 25
    assert delivery.dlq_wrong_code == 0
    assert delivery.dlq_unknown == 0


def test_every_verdict_is_the_one_the_rules_dictate(chaos: ScenarioResult) -> None:
    """Fail-closed verdicts (garbage from the model twice) are unsafe by design, not wrong."""
    delivery = chaos.report.delivery
    assert delivery.wrong_verdicts == 0
    assert delivery.unexpected_verdicts == 0


def test_every_publish_answer_the_proxy_dropped_shows_as_a_duplicate_verdict(
    chaos: ScenarioResult,
) -> None:
    """A publish applied and then cut off is sent again (botocore's retry, or a later receive):
    at-least-once delivery makes a second copy, and the report must count it."""
    report = chaos.report
    assert report.dropped_publish_answers > 0
    assert report.delivery.duplicates >= report.dropped_publish_answers
    assert len(report.delivery.duplicated_ids) > 0


def test_the_report_finds_no_broken_promise(chaos: ScenarioResult) -> None:
    assert chaos.report.problems() == ()


def test_the_faults_were_real_and_some_reached_the_worker(chaos: ScenarioResult) -> None:
    """botocore absorbs most proxy faults; the ones it gave up on show in the worker's log."""
    report = chaos.report
    injected = Counter(chaos.queue_calls.injected)
    emulator_faults = report.emulator["faults_injected"]
    assert isinstance(emulator_faults, dict)
    assert injected["DeleteMessageBatch"] > 0
    assert injected["Publish"] + injected["PublishBatch"] > 0
    assert sum(emulator_faults.values()) > 0
    assert sum(chaos.queue_calls.exhausted.values()) > 0
    assert report.worker_events["publish_failed"] + report.worker_events["delete_failed"] > 0
    assert report.kills == 1


def test_no_worker_crashed_or_logged_an_unexpected_exception(chaos: ScenarioResult) -> None:
    assert chaos.report.unexpected_exits == 0
    assert chaos.report.worker_exceptions == 0


def test_workers_stopped_with_sigterm_drain_and_exit_zero(chaos: ScenarioResult) -> None:
    """The two workers still running at the end (the replacement included) shut down cleanly."""
    assert chaos.report.sigterm_exit_codes == (0, 0)
