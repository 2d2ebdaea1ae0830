"""What the bench reads from outside: Prometheus text, /proc, and the goodput arithmetic."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from bench import corpus
from bench.procfs import cpu_seconds, rss_bytes, this_machine
from bench.prometheus import sample_value
from bench.report import timeline_of
from bench.scenarios import Sample, steady_rate


def _exposition() -> str:
    registry = CollectorRegistry()
    limit = Gauge("moderation_endpoint_concurrency_limit", "limit", registry=registry)
    limit.set(12.5)
    outcomes = Counter("moderation_outcomes", "outcomes", ["outcome"], registry=registry)
    outcomes.labels(outcome="ack").inc(7)
    outcomes.labels(outcome="retry_later").inc(2)
    return generate_latest(registry).decode()


def test_a_sample_is_read_by_name_from_real_exposition_text() -> None:
    assert sample_value(_exposition(), "moderation_endpoint_concurrency_limit") == 12.5


def test_a_labelled_sample_is_read_by_its_labels() -> None:
    text = _exposition()

    assert sample_value(text, "moderation_outcomes_total", {"outcome": "retry_later"}) == 2.0


def test_a_missing_sample_is_none() -> None:
    assert sample_value(_exposition(), "moderation_in_flight") is None


def test_cpu_time_of_a_process_grows_while_it_works() -> None:
    before = cpu_seconds(os.getpid())
    after = before
    total = 0
    for number in range(50_000_000):  # bounded; ends as soon as the clock ticks over
        total += number * number
        if number % 100_000 == 0:
            after = cpu_seconds(os.getpid())
            if after > before:
                break

    assert after > before


def test_the_resident_memory_and_the_machine_are_read() -> None:
    machine = this_machine()

    assert rss_bytes(os.getpid()) > 1_000_000
    assert machine.cores >= 1
    assert machine.memory_bytes > 0


def _sample(at: float, successes: int, limit: float | None = 8.0) -> Sample:
    return Sample(at, 0, successes, 0, limit, None, 0, 0.0)


def test_steady_goodput_leaves_out_warm_up_and_tail() -> None:
    # Slow start (50 in the first 2 s), then 900 in 8 s, then a slow tail (50 in 10 s).
    samples = [_sample(0.0, 0), _sample(2.0, 50), _sample(10.0, 950), _sample(20.0, 1000)]

    assert steady_rate(samples, total=1000) == pytest.approx(900 / 8)


def test_steady_goodput_is_zero_when_the_run_never_got_going() -> None:
    assert steady_rate([_sample(0.0, 0), _sample(5.0, 0)], total=1000) == 0.0


def test_goodput_over_time_is_the_rate_over_the_last_second() -> None:
    samples = [_sample(0.25 * index, 40 * index) for index in range(6)]

    timeline = timeline_of("hard cap", samples)

    assert [round(rate) for _, _, rate in timeline.points] == [0, 160, 160, 160, 160, 160]


def test_the_corpus_is_one_in_ten_unsafe_and_repeats_exactly_its_share() -> None:
    texts = corpus.texts(2000, repeat_share=0.3, seed=3)
    fresh = [corpus.fresh_text(n) for n in range(20)]

    assert (
        sum(
            "rob a bank" in text or "gun" in text or "meth" in text or "kill my" in text
            for text in fresh
        )
        == 2
    )
    assert len(set(texts)) == 1400  # 30 % of 2,000 repeat an earlier text
    assert texts[0] == corpus.fresh_text(0)  # the first cannot repeat anything


def test_a_verdict_is_matched_to_its_message_by_id() -> None:
    assert corpus.verdict_id('{"id": "latency-7", "verdict": "safe"}') == "latency-7"
    assert corpus.verdict_id("not json") is None
