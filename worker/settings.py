"""Configuration from the environment: the one place that reads ``os.environ``.

Every documented setting can be changed by itself: where two settings must agree, the one left
unset is derived from the one that was set (``Settings._derive_defaults``), and only a
combination the user set explicitly is refused, with one line naming both variables.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from worker.core.errors import ConfigurationError

ENV_PREFIX = "MODERATION_"
DEFAULT_VISIBILITY_TIMEOUT = 60
DEFAULT_RETRY_DEADLINE = 20.0
DEFAULT_RELEASE_DELAY_BASE = 5.0
DEFAULT_RELEASE_DELAY_MAX = 300.0
# The retry deadline takes at most this share of the visibility timeout, leaving the rest for the
# verdict's publish and the heartbeat's slack.
_RETRY_SHARE_OF_VISIBILITY = 3
_UNSAFE_LINGER_FACTOR = 5
_SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")


def _sns_topic_arn(value: str) -> str:
    if not _SNS_ARN.match(value):
        raise ValueError(f"{value!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
    return value


def _http_url(value: str) -> str:
    # The value is never repeated in the message: it may hold a password.
    if not _URL.match(value):
        raise ValueError("is not an http(s) URL")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError(
            "is not an http(s) URL: its port is not a number from 0 to 65535"
        ) from None
    if not parts.hostname:  # e.g. credentials and a port, but no host
        raise ValueError("is not an http(s) URL: it names no host")
    return value


def _queue_url(value: str) -> str:
    parts = urlsplit(_http_url(value))
    # SQS requests are signed with the AWS credentials; user-info in a queue URL is a mistake
    # that would be sent along as a parameter and shown by ``send``.
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials (user:password@); AWS credentials sign SQS")
    return value


TopicArn = Annotated[str, AfterValidator(_sns_topic_arn)]
#: An http(s) URL; credentials in it (``https://user:secret@host``) are sent as Basic auth by
#: the HTTP adapters (TGI, OpenAI-compatible) and never shown.
HttpUrl = Annotated[str, AfterValidator(_http_url)]
QueueUrl = Annotated[str, AfterValidator(_queue_url)]
PromptFormatName = Literal["llama-guard-1", "llama-guard-2", "llama-guard-3", "llama-guard-3-1b"]


class _EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)


SettingsT = TypeVar("SettingsT", bound=_EnvSettings)


class ModelSettings(_EnvSettings):
    """How to reach the model and render its prompts: enough for ``check``."""

    backend: Literal["sagemaker", "tgi", "openai"] = "sagemaker"
    endpoint_name: str | None = Field(default=None, min_length=1, max_length=63)
    # The body sent through invoke_endpoint: TGI's (JumpStart TGI) or OpenAI completions (LMI).
    sagemaker_protocol: Literal["tgi", "openai"] = "tgi"
    target_variant: str | None = None
    inference_component: str | None = None
    custom_attributes: str | None = Field(default=None, max_length=1024)
    tgi_url: HttpUrl | None = Field(default=None, repr=False)
    openai_url: HttpUrl | None = Field(default=None, repr=False)
    openai_model: str | None = Field(default=None, min_length=1, max_length=512)
    openai_api_key: SecretStr | None = Field(default=None, repr=False)
    request_timeout: float = Field(default=70.0, gt=0, le=3600)

    prompt_format: PromptFormatName = "llama-guard-1"
    taxonomy_file: Path | None = None
    unsafe_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    model_parameters: dict[str, Any] | None = None
    max_prompt_chars: int = Field(default=12_000, ge=1_000, le=1_000_000)
    # 4,096 tokens of context (Llama Guard's usual deployment) minus the answer's 32.
    max_prompt_tokens: int = Field(default=4_064, ge=256, le=1_000_000)
    max_conversation_chars: int = Field(default=100_000, ge=1, le=10_000_000)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    # Without a queue (``check``) nothing bounds it; ``Settings`` derives it from the visibility.
    retry_deadline: float = Field(default=DEFAULT_RETRY_DEADLINE, gt=0, le=3_600)

    log_format: Literal["json", "console"] = "json"
    log_content: bool = False

    @model_validator(mode="after")
    def _backend_target_is_set(self) -> Self:
        if self.backend == "sagemaker" and self.endpoint_name is None:
            raise ValueError("MODERATION_ENDPOINT_NAME is required when the backend is sagemaker")
        if self.backend == "tgi" and self.tgi_url is None:
            raise ValueError("MODERATION_TGI_URL is required when the backend is tgi")
        if self.backend == "openai":
            if self.openai_url is None:
                raise ValueError("MODERATION_OPENAI_URL is required when the backend is openai")
            if self.openai_model is None:
                raise ValueError(
                    "MODERATION_OPENAI_MODEL (the served model name) is required when the"
                    " backend is openai"
                )
        if self.openai_api_key is not None and self.openai_url is not None:
            parts = urlsplit(self.openai_url)
            if parts.username is not None or parts.password is not None:
                raise ValueError(
                    "MODERATION_OPENAI_API_KEY and credentials in MODERATION_OPENAI_URL are both"
                    " set: use one of them"
                )
        return self


class Settings(ModelSettings):
    """Every setting of the production worker; ``MODERATION_`` + the field name in upper case."""

    queue_url: QueueUrl
    safe_topic_arn: TopicArn
    unsafe_topic_arn: TopicArn
    dead_letter_queue_url: QueueUrl | None = None

    max_in_flight: int = Field(default=64, ge=1, le=10_000)
    visibility_timeout: int = Field(default=DEFAULT_VISIBILITY_TIMEOUT, ge=2, le=43_200)
    drain_timeout: float = Field(default=30.0, ge=0, le=3_600)
    receive_wait_seconds: int = Field(default=20, ge=0, le=20)
    release_delay_base: float = Field(default=DEFAULT_RELEASE_DELAY_BASE, ge=0, le=43_200)
    release_delay_max: float = Field(default=DEFAULT_RELEASE_DELAY_MAX, ge=0, le=43_200)
    circuit_failure_threshold: int = Field(default=5, ge=1, le=1_000)
    circuit_probe_interval: float = Field(default=5.0, gt=0, le=3_600)

    # Assessments kept for repeated prompts; 0 turns the cache off. Entries are small (a digest
    # and a parsed answer), so the bound is on their number.
    cache_size: int = Field(default=10_000, ge=0, le=10_000_000)
    cache_ttl: float = Field(default=3_600.0, gt=0, le=7 * 24 * 3_600)

    # How long a verdict may wait for nine more of its topic before it is published anyway:
    # longer means fewer SNS calls (and less CPU) per message at low rates, and later verdicts.
    # Safe verdicts let posts through, so theirs is short; unsafe ones are rarer (a batch takes
    # longer to fill) and hold back a post that is not shown anyway, so theirs is longer: five
    # times the safe one unless set.
    publish_linger: float = Field(default=0.05, ge=0, le=1.0)
    unsafe_publish_linger: float = Field(default=_UNSAFE_LINGER_FACTOR * 0.05, ge=0, le=5.0)

    metrics_port: int = Field(default=9102, ge=0, le=65_535)

    @model_validator(mode="after")
    def _derive_defaults(self) -> Self:
        """Fill the settings left unset from those that were set; refuse explicit conflicts.

        - retry deadline: a third of the visibility timeout, at most 20 s; a visibility timeout
          left unset grows to three times an explicit retry deadline (at least 60 s).
        - release delays: an unset maximum is at least the base; an unset base at most the max.
        - the unsafe topic's publish linger: five times the safe topic's.

        Nothing else needs deriving: the drain timeout, the receive wait, the request timeout and
        the circuit's settings hold whatever the others are (the heartbeat keeps in-flight
        messages hidden however long a call or a drain takes).
        """
        explicit = self.model_fields_set
        if "retry_deadline" not in explicit:
            share = self.visibility_timeout / _RETRY_SHARE_OF_VISIBILITY
            self._derive("retry_deadline", min(DEFAULT_RETRY_DEADLINE, share))
        elif "visibility_timeout" not in explicit:
            wanted = math.ceil(self.retry_deadline * _RETRY_SHARE_OF_VISIBILITY)
            self._derive("visibility_timeout", max(DEFAULT_VISIBILITY_TIMEOUT, wanted))
        elif self.retry_deadline >= self.visibility_timeout:
            raise ValueError(
                f"MODERATION_RETRY_DEADLINE ({self.retry_deadline:g}) must be shorter than "
                f"MODERATION_VISIBILITY_TIMEOUT ({self.visibility_timeout})"
            )
        if "unsafe_publish_linger" not in explicit:
            self._derive("unsafe_publish_linger", _UNSAFE_LINGER_FACTOR * self.publish_linger)
        if "release_delay_max" not in explicit:
            self._derive(
                "release_delay_max", max(DEFAULT_RELEASE_DELAY_MAX, self.release_delay_base)
            )
        elif "release_delay_base" not in explicit:
            self._derive(
                "release_delay_base", min(DEFAULT_RELEASE_DELAY_BASE, self.release_delay_max)
            )
        elif self.release_delay_base > self.release_delay_max:
            raise ValueError(
                f"MODERATION_RELEASE_DELAY_BASE ({self.release_delay_base:g}) must not exceed "
                f"MODERATION_RELEASE_DELAY_MAX ({self.release_delay_max:g})"
            )
        return self

    def _derive(self, name: str, value: float) -> None:
        # The model is frozen for its users; this runs while it is still being built, and the
        # field stays out of ``model_fields_set`` (it was not set by the user).
        object.__setattr__(self, name, value)


def load_settings(**overrides: Any) -> Settings:
    """The worker's settings from the environment; a problem is one line naming the variable."""
    return _load(Settings, overrides)


def load_model_settings(**overrides: Any) -> ModelSettings:
    """Only the model's settings (for ``check``), so no queue or topic is needed."""
    return _load(ModelSettings, overrides)


def _load(kind: type[SettingsT], overrides: dict[str, Any]) -> SettingsT:
    try:
        return kind(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from exc
    except SettingsError as exc:  # a complex value (JSON) that could not be decoded
        raise ConfigurationError(str(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem as one sentence: ``MODERATION_X: what is wrong``."""
    error = exc.errors()[0]
    location = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    if not location:
        return message
    variable = ENV_PREFIX + location[0].upper()
    if error["type"] == "missing":
        return f"{variable} is required but not set"
    return f"{variable}: {message}"


class QueueSettings(_EnvSettings):
    """Just the source queue, for ``send``."""

    queue_url: HttpUrl


def load_queue_settings() -> QueueSettings:
    """The source queue from ``MODERATION_QUEUE_URL``."""
    return _load(QueueSettings, {})
