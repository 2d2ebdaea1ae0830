"""``python -m bench``: run every scenario once and write docs/performance.md and its plot.

Exit code 0 when the run completed (whether or not every target is met: the document says
which are not), 1 when a scenario could not complete, 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shlex
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Final, TypeVar

from bench import plot, scenarios
from bench.procfs import this_machine
from bench.report import (
    Context,
    EndpointView,
    Results,
    figures_of,
    plot_panels,
    render_markdown,
    rows,
)
from bench.stack import Stack, open_stack

_T = TypeVar("_T")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.localstack_python.exists():
        sys.stderr.write(
            f"{args.localstack_python} not found: `make bench` installs LocalStack there\n"
        )
        return 2
    sizes = scenarios.Sizes.short() if args.short else scenarios.Sizes()
    overrides = _worker_overrides(args.worker_env)
    if overrides is None:
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix="moderation-bench-"))
    _say(f"bench run directory (logs): {run_dir}")
    if args.only:
        asyncio.run(_run_only(args.localstack_python, run_dir, sizes, args.only, overrides))
        return 0
    results, localstack_version, profile = asyncio.run(
        _run(args.localstack_python, run_dir, sizes, overrides, profile=args.profile)
    )
    figures = figures_of(results)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    context = Context(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
        mode="short mode: quick check, small samples" if args.short else "full run",
        machine=this_machine().describe(),
        versions=(
            f"Python {platform.python_version()} (worker), LocalStack {localstack_version}, "
            f"aiobotocore {version('aiobotocore')}, botocore {version('botocore')}"
        ),
        plot_name=args.plot.name,
    )
    args.write.write_text(render_markdown(figures, context, profile), encoding="utf-8")
    args.plot.write_bytes(plot.render(plot_panels(figures)))
    for row in rows(figures):
        _say(f"{row.verdict:4}  {row.figure}: {row.measured.replace('**', '')}")
    _say(f"written to {args.write} and {args.plot}")
    return 0 if all(run.complete for run in figures.runs) else 1


async def _run(
    localstack_python: Path,
    run_dir: Path,
    sizes: scenarios.Sizes,
    overrides: Mapping[str, str],
    *,
    profile: bool,
) -> tuple[Results, str, str | None]:
    async with open_stack(localstack_python, run_dir, overrides) as stack:
        localstack_version = await _localstack_version(stack)

        async def step(name: str, scenario: Callable[[], Awaitable[_T]]) -> _T:
            _say(f"- {name} ...")
            return await scenario()

        results = Results(
            cpu=await step("CPU and calls", lambda: scenarios.cpu_and_calls(stack, sizes)),
            hard_cap=await step(
                "goodput, hard cap", lambda: scenarios.goodput(stack, sizes, queueing=False)
            ),
            queueing=await step(
                "goodput, queueing", lambda: scenarios.goodput(stack, sizes, queueing=True)
            ),
            latency=await step(
                "added latency", lambda: scenarios.latency_at_half_capacity(stack, sizes)
            ),
            latency_unbatched=await step(
                "added latency without publish batching",
                lambda: scenarios.latency_at_half_capacity(
                    stack, sizes, name="latency-unbatched", settings=scenarios.NO_PUBLISH_LINGER
                ),
            ),
            latency_reference=await step(
                "added latency of the reference consumer",
                lambda: scenarios.latency_at_half_capacity(
                    stack, sizes, name="latency-reference", reference=True
                ),
            ),
            repeats=await step("repeats", lambda: scenarios.repeats(stack, sizes)),
            in_flight=await step("RSS in flight", lambda: scenarios.rss_in_flight(stack, sizes)),
            long_run=await step("long run", lambda: scenarios.long_run(stack, sizes)),
            scaling=await step("scaling", lambda: scenarios.scaling(stack, sizes)),
        )
        table = None
        if profile:
            table = await step("profile", lambda: scenarios.profile_worker(stack, sizes))
    return results, localstack_version, table


async def _run_only(
    localstack_python: Path,
    run_dir: Path,
    sizes: scenarios.Sizes,
    names: Sequence[str],
    overrides: Mapping[str, str],
) -> None:
    """A developer's quick look: the named scenarios only, their figures printed, no document."""
    async with open_stack(localstack_python, run_dir, overrides) as stack:
        for name in names:
            _say(f"- {name} ...")
            for line in await SCENARIOS[name](stack, sizes):
                _say(f"  {line}")


async def _only_cpu(stack: Stack, sizes: scenarios.Sizes) -> list[str]:
    result = await scenarios.cpu_and_calls(stack, sizes)
    worker, reference = result.worker, result.reference
    return [
        (
            f"CPU {worker.cpu_ms_per_message:.2f} ms / reference "
            f"{reference.cpu_ms_per_message:.2f} ms = {result.ratio:.2f}x"
        ),
        (
            f"SQS calls/message {worker.sqs_calls_per_message:.3f} (reference "
            f"{reference.sqs_calls_per_message:.3f}), SNS {worker.sns_calls_per_message:.3f} "
            f"(reference {reference.sns_calls_per_message:.3f}); worker calls {dict(worker.calls)}"
        ),
        f"throughput {worker.throughput:.0f}/s (reference {reference.throughput:.0f}/s)",
    ]


async def _only_goodput(stack: Stack, sizes: scenarios.Sizes, *, queueing: bool) -> list[str]:
    result = await scenarios.goodput(stack, sizes, queueing=queueing)
    view = EndpointView.of(result)
    return [
        (
            f"goodput {result.goodput_per_second:.1f}/s = {100 * result.goodput_share:.1f} %, "
            f"throttled {100 * result.throttled_share:.1f} %, "
            f"mean queue wait {result.mean_queue_wait_ms:.1f} ms"
        ),
        (
            f"endpoint slots busy {100 * view.busy_share:.1f} % of the run, "
            f"{view.slot_ms:.1f} ms held per call"
        ),
        (
            f"oracle ({scenarios.CAPACITY} in flight, told the capacity): "
            f"{result.oracle_goodput_per_second:.1f}/s = {100 * view.oracle_share:.1f} %, "
            f"throttled {100 * view.oracle_throttled:.1f} %; worker / oracle "
            f"{100 * view.of_oracle:.1f} %"
        ),
        (
            f"worker's view (medians): limit {view.worker_limit:.1f}, call latency "
            f"{view.worker_call_ms:.1f} ms, baseline {view.worker_baseline_ms:.1f} ms"
        ),
        (
            f"SQS calls/message {result.drain.sqs_calls_per_message:.3f}, "
            f"SNS {result.drain.sns_calls_per_message:.3f}"
        ),
    ]


async def _only_latency(stack: Stack, sizes: scenarios.Sizes) -> list[str]:
    result = await scenarios.latency_at_half_capacity(stack, sizes)
    reference = await scenarios.latency_at_half_capacity(
        stack, sizes, name="latency-reference", reference=True
    )
    return [
        f"added latency p50 {result.percentile(0.5):.0f} ms, p99 {result.percentile(0.99):.0f} ms",
        (
            f"reference consumer, same feed: p50 {reference.percentile(0.5):.0f} ms, "
            f"p99 {reference.percentile(0.99):.0f} ms"
        ),
        "medians: sent to received {:.0f} ms, received to decided beyond the service {:.0f} ms, "
        "decided to published {:.0f} ms, published to delivered {:.0f} ms".format(
            *result.stage_medians()
        ),
        (
            f"SQS calls/message {result.drain.sqs_calls_per_message:.3f}, "
            f"SNS {result.drain.sns_calls_per_message:.3f}"
        ),
    ]


async def _only_repeats(stack: Stack, sizes: scenarios.Sizes) -> list[str]:
    result = await scenarios.repeats(stack, sizes)
    return [
        (
            f"endpoint calls/message {result.endpoint_calls_per_message:.3f} "
            f"(distinct texts {result.distinct_texts / result.messages:.3f})"
        )
    ]


async def _only_scaling(stack: Stack, sizes: scenarios.Sizes) -> list[str]:
    result = await scenarios.scaling(stack, sizes)
    return [
        f"{workers} worker(s): {drain.throughput:.0f}/s, SQS calls/message "
        f"{drain.sqs_calls_per_message:.3f} {dict(drain.calls)}"
        for workers, drain in result.by_workers
    ]


async def _only_profile(stack: Stack, sizes: scenarios.Sizes) -> list[str]:
    return (await scenarios.profile_worker(stack, sizes)).splitlines()


SCENARIOS: Final[dict[str, Callable[[Stack, scenarios.Sizes], Awaitable[list[str]]]]] = {
    "cpu": _only_cpu,
    "hard-cap": lambda stack, sizes: _only_goodput(stack, sizes, queueing=False),
    "queueing": lambda stack, sizes: _only_goodput(stack, sizes, queueing=True),
    "latency": _only_latency,
    "repeats": _only_repeats,
    "profile": _only_profile,
    "scaling": _only_scaling,
}


def _worker_overrides(pairs: Sequence[str]) -> dict[str, str] | None:
    overrides = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name.startswith("MODERATION_"):
            sys.stderr.write(f"--worker-env takes MODERATION_NAME=VALUE, not {pair!r}\n")
            return None
        overrides[name] = value
    return overrides


async def _localstack_version(stack: Stack) -> str:
    async with stack.http.get(f"{stack.localstack_url}/_localstack/health") as response:
        health = await response.json()
    found = health.get("version") if isinstance(health, dict) else None
    return str(found) if found else "unknown"


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure the worker; write docs/performance.md."
    )
    parser.add_argument("--short", action="store_true", help="small samples: a quick check")
    parser.add_argument(
        "--localstack-python",
        type=Path,
        default=Path(".venv-localstack/bin/python"),
        help="the interpreter of LocalStack's own virtualenv",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run the CPU scenario's worker under cProfile and add its top functions",
    )
    parser.add_argument(
        "--only",
        type=lambda names: names.split(","),
        choices=None,
        default=[],
        metavar="SCENARIO[,SCENARIO]",
        help=f"run only these ({', '.join(SCENARIOS)}), print their figures, write nothing",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="MODERATION_NAME=VALUE",
        help="a worker setting on top of the production defaults (repeatable); the document "
        "records the command, so the override shows there",
    )
    parser.add_argument("--write", type=Path, default=Path("docs/performance.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/performance.png"))
    return parser


if __name__ == "__main__":
    sys.exit(main())
