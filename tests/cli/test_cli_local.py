"""``moderation-worker local``: the embedded demo, end to end, as a user runs it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest
from cli_helpers import (
    ISOLATED_AWS,
    CliResult,
    Invocation,
    cli_environment,
    run_cli_many,
    table_rows,
)

from devstack.emulator.rules import assess_prompt
from worker.core.errors import InvalidMessage
from worker.core.messages import decode_request
from worker.core.prompt import render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy

# The demo starts moto and the emulator, runs the worker in burst mode and polls the verdict
# queues: seconds normally, so 90 s only bounds a hang.
DEMO_TIMEOUT = 90.0
VERDICT_COLUMNS = 6  # id, verdict, categories, score, flags, topic
DEAD_LETTER_COLUMNS = 3  # body, error_code, error_detail

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@dataclass(frozen=True, slots=True)
class DemoOutput:
    """The tables and the summary line the demo printed."""

    verdicts: dict[str, tuple[str, str]]  # id -> (verdict, topic)
    dead_letter_codes: list[str]
    text: str


MY_BODIES: list[dict[str, Any]] = [
    {"id": "mine-1", "content": "What is a good name for a cat?"},
    {"id": "mine-2", "content": "How can I rob a bank without getting caught?"},
    {
        "id": "mine-3",
        "messages": [
            {"role": "user", "content": "Any tips for a first marathon?"},
            {"role": "assistant", "content": "Train slowly and rest well."},
        ],
    },
]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliResult]:
    """Every demo run at once: each mostly waits on its one-second polls, so together they take
    the time of one. Module-scoped, so built before the autouse AWS fixture: the demo sets its
    own dummy credentials and local endpoints, and the environment gets the isolated AWS ones.
    """
    path = tmp_path_factory.mktemp("local") / "mine.jsonl"
    path.write_text("".join(json.dumps(body) + "\n" for body in MY_BODIES), encoding="utf-8")
    environment = cli_environment(ISOLATED_AWS, inherit_aws=False)
    runs = {
        "samples": ["local"],
        "input": ["local", "--input", str(path)],
        "missing_input": ["local", "--input", str(path.with_name("absent.jsonl"))],
        "openai": ["local", "--backend", "openai", "--input", str(path)],
        "sagemaker_openai": ["local", "--sagemaker-protocol", "openai", "--input", str(path)],
    }
    return run_cli_many(
        {
            name: Invocation(args, environment=environment, timeout=DEMO_TIMEOUT)
            for name, args in runs.items()
        },
        at_once=len(runs),
    )


def _demo(result: CliResult) -> DemoOutput:
    assert result.returncode == 0, result.err
    verdicts: dict[str, tuple[str, str]] = {}
    dead_letter_codes: list[str] = []
    for cells in table_rows(result.out):
        if len(cells) == VERDICT_COLUMNS and cells[0]:
            verdicts[cells[0]] = (cells[1], cells[5])
        elif len(cells) == DEAD_LETTER_COLUMNS and cells[1]:
            dead_letter_codes.append(cells[1])
    return DemoOutput(verdicts, dead_letter_codes, result.out)


def _expected_verdict(body: str) -> str:
    """What the emulator answers for a valid message under the demo's llama-guard-1 default."""
    request = decode_request(body)
    fmt = PromptFormat.LLAMA_GUARD_1
    prompt = render_prompt(request.turns, fmt, default_taxonomy(fmt)).text
    return assess_prompt(prompt).verdict


def _valid_samples() -> dict[str, str]:
    """The bundled samples that are valid messages: id -> expected verdict."""
    text = resources.files("devstack.data").joinpath("samples.jsonl").read_text("utf-8")
    expected: dict[str, str] = {}
    for body in filter(str.strip, text.splitlines()):
        try:
            expected[decode_request(body).id] = _expected_verdict(body)
        except InvalidMessage:
            continue
    return expected


def test_local_shows_every_valid_sample_with_its_verdict_and_dead_letters_the_bad_role(
    demo_runs: dict[str, CliResult],
) -> None:
    expected = _valid_samples()
    assert expected, "the bundled samples hold no valid message"

    demo = _demo(demo_runs["samples"])

    assert {key: verdict for key, (verdict, _) in demo.verdicts.items()} == expected
    assert all(topic == verdict for verdict, topic in demo.verdicts.values())
    assert demo.dead_letter_codes == ["unsupported_role"]
    assert re.search(r"\b1 dead-lettered\b", demo.text), demo.text


def test_local_with_input_shows_exactly_the_ids_of_that_file(
    demo_runs: dict[str, CliResult],
) -> None:
    demo = _demo(demo_runs["input"])

    assert set(demo.verdicts) == {body["id"] for body in MY_BODIES}
    assert demo.verdicts["mine-2"][0] == "unsafe"
    assert demo.dead_letter_codes == []
    assert re.search(r"\b3 sent\b.*\b0 dead-lettered\b", demo.text), demo.text


def test_local_with_a_missing_input_file_is_a_one_line_usage_error(
    demo_runs: dict[str, CliResult],
) -> None:
    result = demo_runs["missing_input"]

    assert result.returncode == 2
    assert len(result.stderr_lines) == 1, result.err
    assert "absent.jsonl" in result.stderr_lines[0]


@pytest.mark.parametrize("run", ["openai", "sagemaker_openai"])
def test_local_with_the_openai_protocol_moderates_every_message_of_the_file(
    demo_runs: dict[str, CliResult], run: str
) -> None:
    """``--backend openai`` (vLLM's route) and ``--sagemaker-protocol openai`` (LMI) both work."""
    demo = _demo(demo_runs[run])

    assert set(demo.verdicts) == {body["id"] for body in MY_BODIES}
    assert demo.verdicts["mine-2"] == ("unsafe", "unsafe")
    assert demo.verdicts["mine-1"] == ("safe", "safe")
    assert re.search(r"\b3 sent\b.*\b3 verdicts published\b", demo.text), demo.text
