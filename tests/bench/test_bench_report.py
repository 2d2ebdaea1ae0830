"""The bench's report: targets judged, the document written, from synthetic figures."""

from __future__ import annotations

import dataclasses

from bench.report import (
    Context,
    EndpointView,
    Figures,
    RunCheck,
    Timeline,
    plot_panels,
    render_markdown,
    rows,
)

CONTEXT = Context(
    date="2026-11-30 12:00 UTC",
    command="python -m bench --short",
    mode="short mode",
    machine="2 cores, Test CPU, 4.0 GiB memory, Linux",
    versions="Python 3.11, LocalStack 2026.3.0",
    plot_name="performance.png",
)
# Every figure exactly on its target: the boundary passes.
ON_TARGET = Figures(
    worker_cpu_ms=1.2,
    reference_cpu_ms=1.0,
    hard_cap_goodput=152.0,
    hard_cap_throttled=0.02,
    queueing_goodput=152.0,
    queueing_throttled=0.0,
    queueing_wait_ms=25.0,
    sqs_calls=0.21,
    sns_calls=0.12,
    reference_sqs_calls=0.2,
    reference_sns_calls=0.2,
    endpoint_calls=0.72,
    distinct_share=0.7,
    rss_in_flight_mb=100.0,
    peak_in_flight=256,
    latency_p50_ms=50.0,
    latency_p99_ms=150.0,
    long_run_messages=50_000,
    long_rss_early_mb=80.0,
    long_rss_end_mb=90.0,
    long_rss_max_mb=91.0,
    scaling=((1, 400.0), (2, 700.0), (4, 900.0)),
    runs=(RunCheck("goodput: hard cap", 1000, 1000, 10.0, finished=True),),
    timelines=(Timeline("hard cap", ((0.0, 8.0, 150.0), (1.0, None, 160.0))),),
)


def _verdicts(figures: Figures) -> list[str]:
    return [row.verdict for row in rows(figures)]


def test_figures_on_their_targets_pass() -> None:
    assert _verdicts(ON_TARGET) == ["PASS"] * 9 + ["-"]


def test_a_cpu_ratio_above_the_target_fails() -> None:
    figures = dataclasses.replace(ON_TARGET, worker_cpu_ms=1.6, reference_cpu_ms=1.06)

    (cpu_row, *_) = rows(figures)

    assert cpu_row.verdict == "FAIL"
    assert "1.51\N{MULTIPLICATION SIGN}" in cpu_row.measured


def test_goodput_fails_on_throttling_alone() -> None:
    figures = dataclasses.replace(ON_TARGET, hard_cap_throttled=0.135)

    assert _verdicts(figures)[1] == "FAIL"


def test_queueing_goodput_fails_on_queue_wait_alone() -> None:
    figures = dataclasses.replace(ON_TARGET, queueing_wait_ms=277.0)

    assert _verdicts(figures)[2] == "FAIL"


def test_memory_growth_over_the_long_run_fails() -> None:
    figures = dataclasses.replace(ON_TARGET, long_rss_end_mb=120.0)

    assert _verdicts(figures)[8] == "FAIL"


def test_the_document_states_machine_command_versions_and_the_plot() -> None:
    document = render_markdown(ON_TARGET, CONTEXT)

    for expected in (
        CONTEXT.machine,
        f"`{CONTEXT.command}`",
        CONTEXT.versions,
        "![concurrency limit and goodput over time](performance.png)",
        "Every target is met.",
    ):
        assert expected in document


def test_the_document_names_the_targets_not_met() -> None:
    figures = dataclasses.replace(ON_TARGET, sns_calls=0.17)

    document = render_markdown(figures, CONTEXT)

    assert "1 target(s) not met: SNS calls per message (10 % unsafe)." in document
    assert (
        "| SNS calls per message (10 % unsafe) | **0.170** (reference: 0.200) | ≤ 0.12 | FAIL |"
        in document
    )


def test_an_incomplete_run_is_flagged_in_the_runs_table() -> None:
    figures = dataclasses.replace(
        ON_TARGET, runs=(RunCheck("long run", 50_000, 49_990, 300.0, finished=True),)
    )

    assert "| long run | 50000 | 49990 | 300.0 | **NO** |" in render_markdown(figures, CONTEXT)


def test_the_plot_shows_limit_and_goodput_as_shares_of_capacity() -> None:
    (panel,) = plot_panels(ON_TARGET)

    limit, goodput = panel.series
    # A limit of 8 is the whole capacity; a sample without a limit is left out. 160/s is 100 %.
    assert limit.points == ((0.0, 100.0),)
    assert goodput.points == ((0.0, 93.75), (1.0, 100.0))
    assert panel.references == (("capacity", 100.0),)


def test_a_profile_is_added_as_its_own_section_when_taken() -> None:
    document = render_markdown(ON_TARGET, CONTEXT, "   ncalls  tottime  percall\n")

    assert "## Where the worker's CPU goes" in document
    assert "```\n   ncalls  tottime  percall\n```" in document


def test_no_profile_section_without_a_profile() -> None:
    assert "## Where the worker's CPU goes" not in render_markdown(ON_TARGET, CONTEXT)


def test_added_latency_is_judged_on_its_median() -> None:
    figures = dataclasses.replace(ON_TARGET, latency_p50_ms=51.0)

    assert "p50 **51 ms**" in render_markdown(figures, CONTEXT)
    assert _verdicts(figures).count("FAIL") == 1


def test_the_reference_consumers_latency_stands_beside_the_workers() -> None:
    figures = dataclasses.replace(
        ON_TARGET, reference_latency_p50_ms=41.0, reference_latency_p99_ms=88.0
    )

    assert "(reference consumer: p50 41 ms, p99 88 ms)" in render_markdown(figures, CONTEXT)


def test_what_limits_goodput_and_latency_is_shown_when_measured() -> None:
    figures = dataclasses.replace(
        ON_TARGET,
        endpoint_views=(
            EndpointView(
                "hard cap",
                0.742,
                52.5,
                63.3,
                8.0,
                goodput_share=0.80,
                oracle_share=0.90,
                oracle_throttled=0.004,
            ),
        ),
        latency_stages_ms=(25.0, 29.0, 3.0, 60.0),
        unbatched_p50_ms=20.0,
        unbatched_p99_ms=40.0,
        unbatched_sns_calls=0.9,
        batched_sns_calls=0.2,
    )

    document = render_markdown(figures, CONTEXT)

    assert "## What limits goodput and latency" in document
    # The oracle's goodput with its throttled share, and the worker's goodput as a share of it.
    assert "| hard cap | 74.2% | 52.5 ms | 63.3 ms | 8.0 | 90.0% (0.4% throttled) | 88.9% |" in (
        document
    )
    assert "sent → received by the worker 25 ms" in document
    assert "decided → published 3 ms" in document
    assert (
        "`MODERATION_PUBLISH_LINGER=0` added latency is p50 20 ms, p99 40 ms, at 0.90" in document
    )
    assert "## What limits goodput and latency" not in render_markdown(ON_TARGET, CONTEXT)
