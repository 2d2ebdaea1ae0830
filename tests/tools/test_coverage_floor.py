"""The per-module coverage floor that `make test` enforces (tools/coverage_floor.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.coverage_floor import main


def report(files: dict[str, tuple[int, int, int, int]]) -> dict[str, Any]:
    """A `coverage json` document: per file (statements, missing, branches, missing branches)."""
    return {
        "meta": {"branch_coverage": True},
        "files": {
            name: {
                "summary": {
                    "num_statements": statements,
                    "missing_lines": missing,
                    "num_branches": branches,
                    "missing_branches": missing_branches,
                }
            }
            for name, (statements, missing, branches, missing_branches) in files.items()
        },
    }


def project(tmp_path: Path, document: dict[str, Any], *modules: str) -> Path:
    for module in modules:
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("", encoding="utf-8")
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_modules_at_the_floor_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = project(
        tmp_path,
        report({"worker/runner.py": (100, 5, 10, 1), "worker/core/messages.py": (10, 0, 0, 0)}),
        "worker/runner.py",
        "worker/core/messages.py",
    )

    assert main([str(path), "--root", str(tmp_path)]) == 0
    assert "ok: all 2 delivery-critical modules" in capsys.readouterr().out


def test_a_module_below_the_branch_floor_fails_and_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(
        tmp_path,
        report({"worker/runner.py": (100, 0, 10, 2), "worker/pipeline.py": (100, 0, 10, 0)}),
        "worker/runner.py",
        "worker/pipeline.py",
    )

    assert main([str(path), "--root", str(tmp_path)]) == 1
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows if row.endswith("BELOW THE FLOOR")] == [
        "worker/runner.py"
    ]
    assert rows[-1] == "FAIL: 1 of 2 modules below the floor"


def test_a_critical_module_no_test_imported_counts_as_uncovered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, report({}), "worker/adapters/sqs.py")

    assert main([str(path), "--root", str(tmp_path)]) == 1
    assert "worker/adapters/sqs.py" in capsys.readouterr().out


def test_modules_outside_the_critical_list_do_not_count(tmp_path: Path) -> None:
    path = project(
        tmp_path,
        report({"worker/runner.py": (10, 0, 2, 0), "worker/cli.py": (100, 100, 10, 10)}),
        "worker/runner.py",
        "worker/cli.py",
    )

    assert main([str(path), "--root", str(tmp_path)]) == 0
