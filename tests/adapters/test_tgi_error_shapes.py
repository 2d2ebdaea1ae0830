"""TGI adapter shapes no test reached (issue 10): other servers' error documents, and
credentials in a URL whose host is an IPv6 literal."""

from __future__ import annotations

import aiohttp
import pytest
from endpoint_stub import run_stub_endpoint

from worker.adapters.tgi import TgiClassifier, split_credentials
from worker.core.errors import EndpointRejected
from worker.core.prompt import DEFAULT_PARAMETERS


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # vLLM's OpenAI-compatible server
        ({"object": "error", "message": "model not loaded", "code": 400}, "model not loaded"),
        # a JSON body of no known shape is shown as it is
        (["unexpected", 1], "['unexpected', 1]"),
    ],
    ids=["vllm-message", "unknown-shape"],
)
async def test_an_error_document_of_another_shape_keeps_its_words(
    http_session: aiohttp.ClientSession, document: object, message: str
) -> None:
    async with run_stub_endpoint() as stub:
        stub.answer(400, document)
        classifier = TgiClassifier(http_session, stub.url, DEFAULT_PARAMETERS)

        with pytest.raises(EndpointRejected) as caught:
            await classifier.classify("prompt")

    assert str(caught.value) == f"TGI answered 400: {message}"


def test_credentials_are_taken_out_of_a_url_with_an_ipv6_host() -> None:
    authorization, url = split_credentials("http://user:secret@[::1]:8080/base")

    assert url == "http://[::1]:8080/base"
    assert authorization == "Basic dXNlcjpzZWNyZXQ="  # base64 of "user:secret"
