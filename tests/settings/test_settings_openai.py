"""The OpenAI-compatible backend's settings: what is required, what conflicts, what stays secret."""

from __future__ import annotations

import pytest

from worker.app import request_protocol
from worker.core.errors import ConfigurationError
from worker.core.protocols import OpenAICompletionsProtocol, TgiProtocol
from worker.settings import load_model_settings

URL = "http://vllm.internal:8000"
KEY = "sk-very-secret-0123"


@pytest.fixture(autouse=True)
def no_model_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODERATION_BACKEND", "MODERATION_OPENAI_URL", "MODERATION_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)


def test_the_openai_backend_needs_its_url() -> None:
    with pytest.raises(ConfigurationError, match="MODERATION_OPENAI_URL is required"):
        load_model_settings(backend="openai", openai_model="m")


def test_the_openai_backend_needs_the_served_model_name() -> None:
    with pytest.raises(ConfigurationError, match="MODERATION_OPENAI_MODEL"):
        load_model_settings(backend="openai", openai_url=URL)


def test_a_key_and_credentials_in_the_url_are_refused_in_one_line_naming_both() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_model_settings(
            backend="openai",
            openai_url="http://user:pass@vllm:8000",
            openai_model="m",
            openai_api_key=KEY,
        )

    text = str(caught.value)
    assert "\n" not in text
    assert "MODERATION_OPENAI_API_KEY" in text
    assert "MODERATION_OPENAI_URL" in text


def test_the_key_is_never_in_the_settings_repr_or_str() -> None:
    settings = load_model_settings(
        backend="openai", openai_url=URL, openai_model="m", openai_api_key=KEY
    )

    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == KEY


def test_the_url_is_never_in_the_settings_repr() -> None:
    settings = load_model_settings(
        backend="openai", openai_url="http://user:pass@vllm:8000", openai_model="m"
    )

    assert "pass" not in repr(settings)


def test_sagemaker_with_the_openai_protocol_needs_no_model_name() -> None:
    settings = load_model_settings(endpoint_name="lmi", sagemaker_protocol="openai")

    protocol = request_protocol(settings)

    assert isinstance(protocol, OpenAICompletionsProtocol)
    assert "model" not in protocol.request_body("p")


def test_sagemaker_speaks_tgi_by_default() -> None:
    assert isinstance(request_protocol(load_model_settings(endpoint_name="tgi")), TgiProtocol)


def test_a_sampling_parameter_for_the_openai_protocol_stops_start_up_naming_the_variable() -> None:
    settings = load_model_settings(
        backend="openai", openai_url=URL, openai_model="m", model_parameters={"top_p": 0.9}
    )

    with pytest.raises(ConfigurationError, match=r"MODERATION_MODEL_PARAMETERS: .*'top_p'"):
        request_protocol(settings)


@pytest.mark.parametrize("tokens", [0, 255, 1_000_001])
def test_the_token_budget_is_bounded(tokens: int) -> None:
    with pytest.raises(ConfigurationError, match="MODERATION_MAX_PROMPT_TOKENS"):
        load_model_settings(endpoint_name="e", max_prompt_tokens=tokens)
