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
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

from bench import plot, scenarios
from bench.procfs import this_machine
from bench.report import Context, Results, figures_of, plot_panels, render_markdown, rows
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
    run_dir = Path(tempfile.mkdtemp(prefix="moderation-bench-"))
    _say(f"bench run directory (logs): {run_dir}")
    results, localstack_version, profile = asyncio.run(
        _run(args.localstack_python, run_dir, sizes, profile=args.profile)
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
    localstack_python: Path, run_dir: Path, sizes: scenarios.Sizes, *, profile: bool
) -> tuple[Results, str, str | None]:
    async with open_stack(localstack_python, run_dir) as stack:
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
            repeats=await step("repeats", lambda: scenarios.repeats(stack, sizes)),
            in_flight=await step("RSS in flight", lambda: scenarios.rss_in_flight(stack, sizes)),
            long_run=await step("long run", lambda: scenarios.long_run(stack, sizes)),
            scaling=await step("scaling", lambda: scenarios.scaling(stack, sizes)),
        )
        table = None
        if profile:
            table = await step("profile", lambda: scenarios.profile_worker(stack, sizes))
    return results, localstack_version, table


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
    parser.add_argument("--write", type=Path, default=Path("docs/performance.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/performance.png"))
    return parser


if __name__ == "__main__":
    sys.exit(main())
