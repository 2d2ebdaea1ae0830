"""Model server URLs: what is refused at start-up, with a message that never repeats the URL."""

from __future__ import annotations

import pytest

from worker.core.errors import ConfigurationError
from worker.settings import load_model_settings

SECRET = "pa55word"


@pytest.fixture(autouse=True)
def no_model_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODERATION_BACKEND", "MODERATION_TGI_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"ftp://user:{SECRET}@tgi.internal", "is not an http(s) URL"),
        ("http://", "is not an http(s) URL"),
        (f"http://user:{SECRET}@tgi.internal:99999", "its port is not a number from 0 to 65535"),
        (f"http://user:{SECRET}@/generate", "it names no host"),
        (f"http://user:{SECRET}@:8080", "it names no host"),
    ],
    ids=["not-http", "empty", "port-out-of-range", "credentials-but-no-host", "port-but-no-host"],
)
def test_a_url_that_is_not_a_usable_http_url_is_refused_without_repeating_it(
    url: str, reason: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_model_settings(backend="tgi", tgi_url=url)

    assert "MODERATION_TGI_URL" in str(caught.value)
    assert reason in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://[::1]:8080/generate",
        f"https://user:{SECRET}@tgi.internal:8443/base/",
        "http://tgi",
    ],
)
def test_a_usable_url_is_kept_as_given(url: str) -> None:
    assert load_model_settings(backend="tgi", tgi_url=url).tgi_url == url
