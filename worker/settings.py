"""Configuration from the environment: the one place that reads ``os.environ``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from worker.core.errors import ConfigurationError

ENV_PREFIX = "MODERATION_"
_SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")


def _sns_topic_arn(value: str) -> str:
    if not _SNS_ARN.match(value):
        raise ValueError(f"{value!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
    return value


def _http_url(value: str) -> str:
    if not _URL.match(value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


TopicArn = Annotated[str, AfterValidator(_sns_topic_arn)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
PromptFormatName = Literal["llama-guard-1", "llama-guard-2", "llama-guard-3", "llama-guard-3-1b"]


class _EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)


SettingsT = TypeVar("SettingsT", bound=_EnvSettings)


class ModelSettings(_EnvSettings):
    """How to reach the model and render its prompts: enough for ``check``."""

    backend: Literal["sagemaker", "tgi"] = "sagemaker"
    endpoint_name: str | None = Field(default=None, min_length=1, max_length=63)
    target_variant: str | None = None
    inference_component: str | None = None
    custom_attributes: str | None = Field(default=None, max_length=1024)
    tgi_url: HttpUrl | None = None
    request_timeout: float = Field(default=70.0, gt=0, le=3600)

    prompt_format: PromptFormatName = "llama-guard-1"
    taxonomy_file: Path | None = None
    unsafe_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    model_parameters: dict[str, Any] | None = None
    max_prompt_chars: int = Field(default=12_000, ge=1_000, le=1_000_000)
    max_conversation_chars: int = Field(default=100_000, ge=1, le=10_000_000)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_deadline: float = Field(default=20.0, gt=0, le=3_600)

    log_format: Literal["json", "console"] = "json"
    log_content: bool = False

    @model_validator(mode="after")
    def _backend_target_is_set(self) -> Self:
        if self.backend == "sagemaker" and self.endpoint_name is None:
            raise ValueError("MODERATION_ENDPOINT_NAME is required when the backend is sagemaker")
        if self.backend == "tgi" and self.tgi_url is None:
            raise ValueError("MODERATION_TGI_URL is required when the backend is tgi")
        return self

    @property
    def endpoint_label(self) -> str:
        """The endpoint as verdicts name it: the SageMaker endpoint name or the TGI URL."""
        return self.endpoint_name or self.tgi_url or ""


class Settings(ModelSettings):
    """Every setting of the production worker; ``MODERATION_`` + the field name in upper case."""

    queue_url: HttpUrl
    safe_topic_arn: TopicArn
    unsafe_topic_arn: TopicArn
    dead_letter_queue_url: HttpUrl | None = None

    max_in_flight: int = Field(default=64, ge=1, le=10_000)
    visibility_timeout: int = Field(default=60, ge=2, le=43_200)
    drain_timeout: float = Field(default=30.0, ge=0, le=3_600)
    receive_wait_seconds: int = Field(default=20, ge=0, le=20)
    release_delay_base: float = Field(default=5.0, ge=0, le=43_200)
    release_delay_max: float = Field(default=300.0, ge=0, le=43_200)
    circuit_failure_threshold: int = Field(default=5, ge=1, le=1_000)
    circuit_probe_interval: float = Field(default=5.0, gt=0, le=3_600)

    metrics_port: int = Field(default=9102, ge=0, le=65_535)

    @model_validator(mode="after")
    def _retries_fit_visibility(self) -> Self:
        if self.retry_deadline >= self.visibility_timeout:
            raise ValueError(
                "MODERATION_RETRY_DEADLINE must be shorter than MODERATION_VISIBILITY_TIMEOUT"
            )
        return self


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
