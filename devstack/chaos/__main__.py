"""``python -m devstack.chaos``: the long chaos run; prints the figures and can write them to a doc.

Exit code 0 when the run finished with nothing lost, nothing valid dead-lettered, no wrong
verdict and every invalid message dead-lettered with its code; 1 otherwise; 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from devstack.chaos.report import write_section
from devstack.chaos.scenario import Outage, ScenarioConfig, run_scenario

# The outage starts when this share of the valid messages has a verdict: mid-stream, with
# messages both behind and ahead of it.
_OUTAGE_AT = 0.5


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = ScenarioConfig(
        valid_messages=args.messages,
        invalid_messages=args.messages // 20 if args.invalid is None else args.invalid,
        workers=args.workers,
        kill_at=kill_points(args.kills),
        outage=Outage(at=_OUTAGE_AT, seconds=args.outage_seconds) if args.outage_seconds else None,
        seed=args.seed,
        backlog=args.backlog,
        deadline_seconds=args.deadline,
        log_dir=args.log_dir,
    )
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run_scenario(config))
    report = result.report
    sys.stdout.write(report.render_text())
    if args.write is not None:
        command = shlex.join(
            ["python", "-m", "devstack.chaos", *(sys.argv[1:] if argv is None else argv)]
        )
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        write_section(args.write, report.render_markdown(command=command, date=date))
        sys.stdout.write(f"written to {args.write}\n")
    return 0 if report.ok else 1


def kill_points(kills: int) -> tuple[float, ...]:
    """Evenly spread shares of progress at which a worker is SIGKILLed (2 -> 1/3 and 2/3)."""
    return tuple(round((index + 1) / (kills + 1), 3) for index in range(kills))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.chaos",
        description="Run real workers against a faulty local AWS and endpoint; count the result.",
    )
    parser.add_argument("--messages", type=_positive, default=3000, help="valid messages")
    parser.add_argument("--invalid", type=_not_negative, help="invalid ones (default: 1/20)")
    parser.add_argument("--workers", type=_positive, default=2, help="side by side")
    parser.add_argument("--kills", type=_not_negative, default=2, help="SIGKILL + restart count")
    parser.add_argument(
        "--outage-seconds", type=float, default=5.0, help="endpoint down mid-run (0: none)"
    )
    parser.add_argument("--backlog", type=_positive, default=200, help="unfinished queued max")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds before giving up")
    parser.add_argument("--write", type=Path, help="document whose figures section to rewrite")
    parser.add_argument("--log-dir", type=Path, help="keep the worker logs here")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
