"""Every documented setting can be changed by itself; only explicit conflicting pairs are refused.

The list of settings is read from the README's configuration table, so a variable documented
there without a case here fails ``test_every_documented_variable_has_a_case``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

from worker.app import open_worker, policy_from
from worker.core.errors import ConfigurationError
from worker.settings import Settings, load_settings

README: Final = Path(__file__).resolve().parents[2] / "README.md"
REQUIRED: Final = {
    "MODERATION_QUEUE_URL": "http://127.0.0.1:9/123456789012/moderation-requests",
    "MODERATION_SAFE_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:moderation-safe",
    "MODERATION_UNSAFE_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:moderation-unsafe",
    "MODERATION_ENDPOINT_NAME": "llama-guard",
}
TAXONOMY_FILE: Final = "taxonomy.yaml"
# One valid value, different from the default, for every documented variable. Where a value
# needs another variable to make sense (a file path, the TGI backend's URL) it says so.
ALONE: Final[dict[str, str]] = {
    "MODERATION_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/other",
    "MODERATION_SAFE_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:other-safe",
    "MODERATION_UNSAFE_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:other-unsafe",
    "MODERATION_DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:9/123456789012/moderation-dlq",
    "MODERATION_BACKEND": "tgi",  # documented as needing MODERATION_TGI_URL: see BACKEND_PAIR
    "MODERATION_ENDPOINT_NAME": "llama-guard-green",
    "MODERATION_TARGET_VARIANT": "AllTraffic",
    "MODERATION_INFERENCE_COMPONENT": "llama-guard-component",
    "MODERATION_CUSTOM_ATTRIBUTES": "tenant=acme",
    "MODERATION_TGI_URL": "https://user:secret@tgi.internal:8080",
    "MODERATION_SAGEMAKER_PROTOCOL": "openai",
    "MODERATION_OPENAI_URL": "https://user:secret@vllm.internal:8000/v1",
    "MODERATION_OPENAI_MODEL": "meta-llama/Llama-Guard-3-8B",
    "MODERATION_OPENAI_API_KEY": "sk-local-test-key",
    "MODERATION_REQUEST_TIMEOUT": "15",
    "MODERATION_PROMPT_FORMAT": "llama-guard-3",
    "MODERATION_TAXONOMY_FILE": TAXONOMY_FILE,  # written to a temporary directory
    "MODERATION_UNSAFE_THRESHOLD": "0.7",
    "MODERATION_MODEL_PARAMETERS": '{"max_new_tokens": 16}',
    "MODERATION_MAX_PROMPT_CHARS": "6000",
    "MODERATION_MAX_PROMPT_TOKENS": "2000",
    "MODERATION_MAX_CONVERSATION_CHARS": "50000",
    "MODERATION_MAX_IN_FLIGHT": "8",
    "MODERATION_VISIBILITY_TIMEOUT": "20",  # below the retry deadline's old fixed default
    "MODERATION_DRAIN_TIMEOUT": "5",
    "MODERATION_RETRY_ATTEMPTS": "2",
    "MODERATION_RETRY_DEADLINE": "100",  # above the visibility timeout's default
    "MODERATION_RELEASE_DELAY_BASE": "600",  # above the maximum's default
    "MODERATION_RELEASE_DELAY_MAX": "2",  # below the base's default
    "MODERATION_RECEIVE_WAIT_SECONDS": "5",
    "MODERATION_CIRCUIT_FAILURE_THRESHOLD": "2",
    "MODERATION_CIRCUIT_PROBE_INTERVAL": "1",
    "MODERATION_CACHE_SIZE": "0",
    "MODERATION_CACHE_TTL": "60",
    "MODERATION_PUBLISH_LINGER": "0.1",
    "MODERATION_UNSAFE_PUBLISH_LINGER": "2",
    "MODERATION_METRICS_PORT": "0",
    "MODERATION_LOG_FORMAT": "console",
    "MODERATION_LOG_CONTENT": "true",
}
# The only documented dependency between variables: the tgi backend needs its URL.
BACKEND_PAIR: Final = {"MODERATION_TGI_URL": "http://127.0.0.1:9"}


def documented_variables() -> set[str]:
    """Every MODERATION_* variable named in the first column of the README's tables."""
    variables: set[str] = set()
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `MODERATION_"):
            first_cell = line.split("|")[1]
            variables.update(re.findall(r"MODERATION_[A-Z_]+", first_cell))
    return variables


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Only the required variables set; the working directory holds a custom taxonomy file."""
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    (tmp_path / TAXONOMY_FILE).write_text(
        "- code: S1\n  name: Spam\n  description: Unsolicited advertising.\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_every_documented_variable_has_a_case() -> None:
    assert documented_variables() == set(ALONE)


def test_every_case_is_a_setting_the_worker_reads() -> None:
    fields = {"MODERATION_" + name.upper() for name in Settings.model_fields}
    assert set(ALONE) <= fields


@pytest.mark.parametrize("variable", sorted(ALONE))
async def test_a_documented_setting_changed_alone_is_accepted_at_start_up(
    environment: pytest.MonkeyPatch, variable: str
) -> None:
    environment.setenv(variable, ALONE[variable])
    if variable == "MODERATION_BACKEND":
        environment.setenv(*next(iter(BACKEND_PAIR.items())))

    settings = load_settings()
    policy_from(settings)
    async with open_worker(settings):  # the whole wiring, without any network call
        pass

    field = variable.removeprefix("MODERATION_").lower()
    assert field in settings.model_fields_set


def test_the_retry_deadline_is_a_third_of_a_short_visibility_timeout(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("MODERATION_VISIBILITY_TIMEOUT", "12")

    assert load_settings().retry_deadline == 4


def test_the_retry_deadline_stays_20_seconds_under_a_long_visibility_timeout(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("MODERATION_VISIBILITY_TIMEOUT", "600")

    assert load_settings().retry_deadline == 20


def test_the_visibility_timeout_grows_to_three_times_a_long_retry_deadline(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("MODERATION_RETRY_DEADLINE", "100")

    assert load_settings().visibility_timeout == 300


def test_the_defaults_are_the_documented_ones(environment: pytest.MonkeyPatch) -> None:
    settings = load_settings()

    assert (settings.visibility_timeout, settings.retry_deadline) == (60, 20)
    assert (settings.release_delay_base, settings.release_delay_max) == (5, 300)
    assert (settings.publish_linger, settings.unsafe_publish_linger) == (0.05, 0.25)


def test_the_unsafe_publish_linger_follows_the_safe_one(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MODERATION_PUBLISH_LINGER", "0")

    assert load_settings().unsafe_publish_linger == 0


def test_an_unsafe_publish_linger_that_is_set_is_kept(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MODERATION_PUBLISH_LINGER", "0.01")
    environment.setenv("MODERATION_UNSAFE_PUBLISH_LINGER", "0.5")

    assert load_settings().unsafe_publish_linger == 0.5


def test_the_release_delay_maximum_follows_a_larger_base(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MODERATION_RELEASE_DELAY_BASE", "600")

    assert load_settings().release_delay_max == 600


def test_the_release_delay_base_follows_a_smaller_maximum(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MODERATION_RELEASE_DELAY_MAX", "2")

    assert load_settings().release_delay_base == 2


@pytest.mark.parametrize(
    ("pair", "named"),
    [
        pytest.param(
            {"MODERATION_VISIBILITY_TIMEOUT": "20", "MODERATION_RETRY_DEADLINE": "20"},
            ("MODERATION_RETRY_DEADLINE", "MODERATION_VISIBILITY_TIMEOUT"),
            id="retry-deadline-not-below-visibility",
        ),
        pytest.param(
            {"MODERATION_RELEASE_DELAY_BASE": "60", "MODERATION_RELEASE_DELAY_MAX": "10"},
            ("MODERATION_RELEASE_DELAY_BASE", "MODERATION_RELEASE_DELAY_MAX"),
            id="release-delay-base-above-max",
        ),
    ],
)
def test_an_explicit_conflicting_pair_is_refused_in_one_line_naming_both(
    environment: pytest.MonkeyPatch, pair: dict[str, str], named: tuple[str, str]
) -> None:
    for name, value in pair.items():
        environment.setenv(name, value)

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    text = str(caught.value)
    assert "\n" not in text
    assert all(variable in text for variable in named)
