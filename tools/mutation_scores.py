"""The mutation score of each module from mutmut's result files, for docs/testing.md.

``mutmut run`` records one exit code per mutant in ``mutants/<path>.meta``; ``mutmut results``
lists the mutants that were not killed but gives no figures. This reads those files and prints,
per module, the mutants, how many were killed, survived, timed out, had no test, and the score
(killed and timed out over all mutants, as mutmut's badge counts it) and the time its mutants'
test runs took in all (two run at once with ``--max-children 2``), then the surviving mutants'
names. It counts the mutants whose names match any of the patterns given (fnmatch, as
``mutmut run`` takes them), else all. A module with mutants not checked yet is marked incomplete.

    python tools/mutation_scores.py 'worker.core.*' 'worker.pipeline.*'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mutmut.stats import status_by_exit_code

# mutmut's status names, grouped into the table's columns.
_COLUMNS: Final = {
    "killed": "killed",
    "caught by type check": "killed",
    "survived": "survived",
    "timeout": "timeout",
    "no tests": "no tests",
    "not checked": "not checked",
}


@dataclass(frozen=True, slots=True)
class ModuleScore:
    """One module's mutants by outcome; ``other`` is suspicious, segfault, skipped, interrupted."""

    module: str
    counts: Counter[str]
    survivors: tuple[str, ...]
    seconds: float

    @property
    def mutants(self) -> int:
        return sum(self.counts.values())

    @property
    def score(self) -> float:
        detected = self.counts["killed"] + self.counts["timeout"]
        return 100.0 * detected / self.mutants if self.mutants else 100.0


def module_scores(mutants_dir: Path, patterns: Sequence[str] = ()) -> list[ModuleScore]:
    """One row per mutated module under ``mutants_dir`` with a mutant matching ``patterns``."""
    rows = []
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        module = meta.relative_to(mutants_dir).as_posix().removesuffix(".meta")
        results = json.loads(meta.read_text("utf-8"))
        exit_codes: dict[str, int | None] = results["exit_code_by_key"]
        durations: dict[str, float] = results.get("durations_by_key", {})
        statuses = {
            name: status_by_exit_code[code]
            for name, code in exit_codes.items()
            if not patterns or any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
        }
        if not statuses:
            continue
        counts = Counter(_COLUMNS.get(status, "other") for status in statuses.values())
        survivors = tuple(name for name, status in statuses.items() if status == "survived")
        seconds = sum(durations.get(name, 0.0) for name in statuses)
        rows.append(ModuleScore(module, counts, survivors, seconds))
    return rows


def render(rows: Iterable[ModuleScore]) -> str:
    """A Markdown table of the rows, then each module's survivors."""
    columns = ("killed", "survived", "timeout", "no tests", "not checked", "other")
    lines = [
        "| module | mutants | " + " | ".join(columns) + " | score | mutants' test time |",
        "|---|" + "---|" * (len(columns) + 3),
    ]
    survivors: list[str] = []
    for row in rows:
        incomplete = " (incomplete)" if row.counts["not checked"] else ""
        figures = " | ".join(str(row.counts[column]) for column in columns)
        lines.append(
            f"| `{row.module}` | {row.mutants} | {figures} | {row.score:.1f} %{incomplete}"
            f" | {row.seconds:.0f} s |"
        )
        survivors.extend(f"{row.module}: {name}" for name in row.survivors)
    return "\n".join([*lines, "", "survivors:", *(survivors or ["none"])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"), help="mutmut's directory")
    parser.add_argument("patterns", nargs="*", help="mutant names (fnmatch), as mutmut run takes")
    args = parser.parse_args(argv)
    rows = module_scores(args.mutants, args.patterns)
    if not rows:
        print(f"no mutmut results under {args.mutants}", file=sys.stderr)  # noqa: T201
        return 1
    print(render(rows))  # noqa: T201 - the table is this tool's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
