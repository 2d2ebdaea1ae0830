"""The coverage floor of the delivery-critical modules, which coverage.py alone cannot enforce.

coverage.py's ``fail_under`` is one global figure; a well-covered CLI would hide a runner that lost
its tests. This reads the JSON report (``coverage json``) and requires, of every module matched by
``CRITICAL`` (patterns relative to the repository), at least ``LINE_FLOOR`` % of its lines and
``BRANCH_FLOOR`` % of its branches. A module that matches a pattern but is missing from the report
was never imported by a test: it counts as 0 %. It prints one row per module and exits 1 when any
row is below the floor.

    python tools/coverage_floor.py build/coverage.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

# Extend this list when a delivery-critical module is added or split (a pattern that matches no
# file is ignored, so a module planned but not written yet can be listed already).
CRITICAL: Final = (
    "worker/runner.py",
    "worker/pipeline.py",
    "worker/backpressure.py",
    "worker/concurrency.py",
    "worker/circuit.py",
    "worker/batching.py",
    "worker/retrying.py",
    "worker/adapters/*.py",
    "worker/core/*.py",
)
LINE_FLOOR: Final = 95.0
BRANCH_FLOOR: Final = 90.0


@dataclass(frozen=True, slots=True)
class ModuleCoverage:
    """One module's figures from the report."""

    path: str
    statements: int
    missing_lines: int
    branches: int
    missing_branches: int

    @property
    def line_percent(self) -> float:
        return _percent(self.statements - self.missing_lines, self.statements)

    @property
    def branch_percent(self) -> float:
        return _percent(self.branches - self.missing_branches, self.branches)

    def below_floor(self, line_floor: float, branch_floor: float) -> bool:
        return self.line_percent < line_floor or self.branch_percent < branch_floor


def _percent(covered: int, total: int) -> float:
    # Nothing to cover (an empty __init__.py, a module without branches) is fully covered.
    return 100.0 if total == 0 else 100.0 * covered / total


def critical_modules(root: Path, patterns: Iterable[str] = CRITICAL) -> list[str]:
    """The files under ``root`` that the patterns match, as POSIX paths relative to it."""
    found: set[str] = set()
    for pattern in patterns:
        found.update(path.relative_to(root).as_posix() for path in root.glob(pattern))
    return sorted(found)


def read_report(report: Mapping[str, Any], root: Path) -> dict[str, ModuleCoverage]:
    """Per-file figures from a ``coverage json`` document, keyed by path relative to ``root``."""
    modules: dict[str, ModuleCoverage] = {}
    for name, data in report["files"].items():
        path = Path(name)
        relative = path.relative_to(root) if path.is_absolute() else path
        summary = data["summary"]
        modules[relative.as_posix()] = ModuleCoverage(
            path=relative.as_posix(),
            statements=summary["num_statements"],
            missing_lines=summary["missing_lines"],
            branches=summary.get("num_branches", 0),
            missing_branches=summary.get("missing_branches", 0),
        )
    if not report.get("meta", {}).get("branch_coverage", False):
        raise ValueError("the report has no branch data: run coverage with branch = true")
    return modules


def check(
    modules: Mapping[str, ModuleCoverage],
    critical: Sequence[str],
    *,
    line_floor: float = LINE_FLOOR,
    branch_floor: float = BRANCH_FLOOR,
) -> tuple[list[ModuleCoverage], list[ModuleCoverage]]:
    """Every critical module's figures, and those below the floor (never imported: 0 %)."""
    rows = [modules.get(path) or ModuleCoverage(path, 1, 1, 1, 1) for path in critical]
    failing = [row for row in rows if row.below_floor(line_floor, branch_floor)]
    return rows, failing


def format_table(
    rows: Sequence[ModuleCoverage],
    failing: Sequence[ModuleCoverage],
    *,
    line_floor: float = LINE_FLOOR,
    branch_floor: float = BRANCH_FLOOR,
) -> str:
    width = max((len(row.path) for row in rows), default=6)
    lines = [
        f"coverage floor: {line_floor:g} % of lines, {branch_floor:g} % of branches per module",
        f"{'module':<{width}}  {'lines':>7}  {'branches':>8}",
    ]
    below = {row.path for row in failing}
    for row in rows:
        mark = "  BELOW THE FLOOR" if row.path in below else ""
        lines.append(
            f"{row.path:<{width}}  {row.line_percent:6.1f}%  {row.branch_percent:7.1f}%{mark}"
        )
    verdict = (
        f"FAIL: {len(failing)} of {len(rows)} modules below the floor"
        if failing
        else f"ok: all {len(rows)} delivery-critical modules at or above the floor"
    )
    lines.append(verdict)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the output of `coverage json`")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository root")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    document = json.loads(args.report.read_text(encoding="utf-8"))
    critical = critical_modules(root)
    if not critical:
        print(f"no delivery-critical module found under {root}", file=sys.stderr)  # noqa: T201
        return 2
    rows, failing = check(read_report(document, root), critical)
    print(format_table(rows, failing))  # noqa: T201 - the table is this tool's output
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
