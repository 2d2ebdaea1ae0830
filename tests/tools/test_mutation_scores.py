"""The per-module mutation scores read from mutmut's result files (tools/mutation_scores.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.mutation_scores import main, module_scores


def write_meta(
    mutants: Path,
    module: str,
    exit_codes: dict[str, int | None],
    durations: dict[str, float] | None = None,
) -> None:
    meta = mutants / f"{module}.meta"
    meta.parent.mkdir(parents=True, exist_ok=True)
    document = {"exit_code_by_key": exit_codes, "durations_by_key": durations or {}}
    meta.write_text(json.dumps(document), encoding="utf-8")


def test_each_outcome_is_counted_and_timeouts_count_as_detected(tmp_path: Path) -> None:
    # mutmut's exit codes: 1 killed, 0 survived, 36 timeout, 33 no tests, None not checked.
    write_meta(tmp_path, "worker/a.py", {"m1": 1, "m2": 1, "m3": 36, "m4": 0, "m5": 33})

    (row,) = module_scores(tmp_path)

    assert (row.module, row.mutants) == ("worker/a.py", 5)
    assert (row.counts["killed"], row.counts["timeout"], row.counts["survived"]) == (2, 1, 1)
    assert row.counts["no tests"] == 1
    assert row.score == pytest.approx(60.0)
    assert row.survivors == ("m4",)
    assert row.seconds == 0.0  # no durations recorded


def test_only_mutants_matching_a_pattern_are_counted(tmp_path: Path) -> None:
    write_meta(tmp_path, "worker/core/a.py", {"worker.core.a.x_f__mutmut_1": 1})
    write_meta(tmp_path, "worker/core/b.py", {"worker.core.b.x_g__mutmut_1": 0})
    write_meta(
        tmp_path,
        "worker/runner.py",
        {"worker.runner.x_h__mutmut_1": 1, "worker.runner.x_k__mutmut_1": 0},
    )

    rows = module_scores(tmp_path, ["worker.core.*", "worker.runner.x_h*", "worker.nothing.*"])

    assert [(row.module, row.mutants) for row in rows] == [
        ("worker/core/a.py", 1),
        ("worker/core/b.py", 1),
        ("worker/runner.py", 1),
    ]


def test_the_table_marks_unchecked_mutants_sums_test_time_and_lists_survivors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_meta(
        tmp_path,
        "worker/a.py",
        {"worker.a.x_f__mutmut_1": 0, "worker.a.x_f__mutmut_2": None},
        {"worker.a.x_f__mutmut_1": 2.6},
    )
    write_meta(tmp_path, "worker/empty.py", {})

    assert main(["--mutants", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    assert "| `worker/a.py` | 2 | 0 | 1 | 0 | 0 | 1 | 0 | 0.0 % (incomplete) | 3 s |" in out
    assert "worker/empty.py" not in out
    assert out.rstrip().endswith("worker/a.py: worker.a.x_f__mutmut_1")


def test_no_results_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--mutants", str(tmp_path)]) == 1
    assert "no mutmut results" in capsys.readouterr().err
