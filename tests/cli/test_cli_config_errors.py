"""``moderation-worker run`` stops on a bad setting with one line naming it; usage exit codes."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from cli_helpers import (
    ISOLATED_AWS,
    CliResult,
    Invocation,
    cli_environment,
    run_cli,
    run_cli_many,
)

from worker import __version__

# A complete, valid configuration: each case below breaks exactly one variable of it. Nothing
# listens on port 9, so a case that failed to stop start-up would fail on its timeout instead.
VALID = {
    "MODERATION_QUEUE_URL": "http://127.0.0.1:9/123456789012/moderation-requests",
    "MODERATION_SAFE_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:moderation-safe",
    "MODERATION_UNSAFE_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:moderation-unsafe",
    "MODERATION_ENDPOINT_NAME": "llama-guard",
    "MODERATION_METRICS_PORT": "0",
}
MISSING_FILE = "no-such-dir/taxonomy.yaml"  # relative to a fresh temporary directory
NOT_YAML_FILE = "not-yaml.yaml"
UNSET = ""  # marks a variable to remove from VALID


# The first test of this module also sets up the module fixture that runs every case's process
# (a dozen or more): that can pass 60 s on a busy machine.
pytestmark = pytest.mark.timeout(120)


class BadSetting(NamedTuple):
    variable: str
    value: str


CASES = {
    "missing_queue_url": BadSetting("MODERATION_QUEUE_URL", UNSET),
    "malformed_safe_topic_arn": BadSetting("MODERATION_SAFE_TOPIC_ARN", "moderation-safe"),
    "unknown_prompt_format": BadSetting("MODERATION_PROMPT_FORMAT", "llama-guard-9"),
    "zero_max_in_flight": BadSetting("MODERATION_MAX_IN_FLIGHT", "0"),
    "threshold_above_one": BadSetting("MODERATION_UNSAFE_THRESHOLD", "1.5"),
    "tgi_backend_without_url": BadSetting("MODERATION_BACKEND", "tgi"),
    "missing_taxonomy_file": BadSetting("MODERATION_TAXONOMY_FILE", MISSING_FILE),
    "taxonomy_file_not_yaml": BadSetting("MODERATION_TAXONOMY_FILE", NOT_YAML_FILE),
    "forbidden_model_parameter": BadSetting("MODERATION_MODEL_PARAMETERS", '{"temperature": 0.5}'),
    "model_parameters_not_json": BadSetting("MODERATION_MODEL_PARAMETERS", "not json"),
    "retry_deadline_not_below_visibility": BadSetting("MODERATION_RETRY_DEADLINE", "30"),
    "release_delay_base_above_max": BadSetting("MODERATION_RELEASE_DELAY_BASE", "60"),
}
# Combinations: each of these settings is valid alone; set explicitly together they conflict.
ALSO_SET = {
    "retry_deadline_not_below_visibility": {"MODERATION_VISIBILITY_TIMEOUT": "20"},
    "release_delay_base_above_max": {"MODERATION_RELEASE_DELAY_MAX": "10"},
}
# The variable the one line must name, where it is not the one that was set.
NAMED = {"tgi_backend_without_url": "MODERATION_TGI_URL"}


@pytest.fixture(scope="module")
def run_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliResult]:
    """``run`` once per case, a few at a time (module-scoped: built before the autouse AWS
    fixture, so the environment gets its dummy credentials here)."""
    directory = tmp_path_factory.mktemp("taxonomy")
    (directory / NOT_YAML_FILE).write_text("categories: [\n  - name: Spam\n", encoding="utf-8")
    invocations: dict[str, Invocation] = {}
    for case, (variable, value) in CASES.items():
        variables = {**ISOLATED_AWS, **VALID, **ALSO_SET.get(case, {}), variable: value}
        if variable == "MODERATION_TAXONOMY_FILE":
            variables[variable] = str(directory / value)
        if value == UNSET:
            del variables[variable]
        environment = cli_environment(variables, inherit_aws=False)
        invocations[case] = Invocation(["run"], environment=environment, timeout=20)
    return run_cli_many(invocations)


@pytest.mark.parametrize(
    "case",
    CASES,
)
def test_run_stops_with_one_line_naming_the_bad_variable(
    case: str, run_results: dict[str, CliResult]
) -> None:
    result = run_results[case]
    variable = NAMED.get(case, CASES[case].variable)

    assert result.returncode == 2, result.err
    assert result.stdout == b""
    assert len(result.stderr_lines) == 1, result.err
    assert variable in result.stderr_lines[0]


def test_no_command_is_a_usage_error() -> None:
    result = run_cli(Invocation([]))

    assert result.returncode == 2
    assert result.stdout == b""
    assert "usage: moderation-worker" in result.err


def test_version_prints_the_version_and_exits_0() -> None:
    result = run_cli(Invocation(["--version"]))

    assert result.returncode == 0, result.err
    assert result.out.strip() == f"moderation-worker {__version__}"
