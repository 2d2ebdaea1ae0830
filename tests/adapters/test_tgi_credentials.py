"""Credentials in MODERATION_TGI_URL are sent as Basic auth and never shown anywhere else.

``https://user:secret@host`` must not reach a verdict's ``model.endpoint``, a log line or the
text of an error; the server must still receive them, as an ``Authorization`` header.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from endpoint_stub import StubEndpoint, run_stub_endpoint
from structlog.testing import capture_logs

from devstack.emulator import RunningEmulator
from devstack.fakes import InMemorySink
from worker.adapters.tgi import TgiClassifier
from worker.core.errors import ClassifierError, ConfigurationError
from worker.core.prompt import DEFAULT_PARAMETERS
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.pipeline import Ack, ModerationPolicy, Moderator, RetryLater
from worker.ports import ReceivedMessage
from worker.settings import load_model_settings, load_settings

USER = "moderation"
SECRET = "s3cr3t-Pa55"
PROMPT = "[INST] Task: Check if there is unsafe content in 'User' messages. [/INST]"
FORMAT = PromptFormat.LLAMA_GUARD_1


def with_credentials(url: str, password: str = SECRET) -> str:
    """``url`` with user-info added: http://moderation:SECRET@host:port."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{USER}:{password}@{rest}"


def message(text: str = "How do I bake a chocolate cake?") -> ReceivedMessage:
    return ReceivedMessage(
        message_id="sqs-1",
        receipt_handle="handle-1",
        body=f'{{"id": "cred-1", "content": "{text}"}}',
        receive_count=1,
        received_at=datetime(2026, 11, 26, 14, 0, tzinfo=UTC),
    )


def moderator(classifier: TgiClassifier, sink: InMemorySink) -> Moderator:
    return Moderator(
        classifier, sink, ModerationPolicy(prompt_format=FORMAT, taxonomy=default_taxonomy(FORMAT))
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
async def stub() -> AsyncIterator[StubEndpoint]:
    async with run_stub_endpoint() as stub:
        yield stub


async def test_the_server_receives_the_credentials_as_basic_auth(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    classifier = TgiClassifier(session, with_credentials(stub.url), DEFAULT_PARAMETERS)

    await classifier.classify(PROMPT)

    expected = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    assert stub.authorizations == [f"Basic {expected}"]


async def test_a_percent_encoded_password_is_sent_decoded(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    classifier = TgiClassifier(session, with_credentials(stub.url, "p%40ss"), DEFAULT_PARAMETERS)

    await classifier.classify(PROMPT)

    assert stub.authorizations == ["Basic " + base64.b64encode(b"moderation:p@ss").decode()]


async def test_a_url_without_credentials_sends_no_authorization(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    await TgiClassifier(session, stub.url, DEFAULT_PARAMETERS).classify(PROMPT)

    assert stub.authorizations == [None]


async def test_the_endpoint_name_is_the_url_without_credentials(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    classifier = TgiClassifier(session, with_credentials(stub.url), DEFAULT_PARAMETERS)

    assert classifier.endpoint == stub.url


async def test_the_backend_is_named_tgi(session: aiohttp.ClientSession, stub: StubEndpoint) -> None:
    """The verdict's ``model.backend`` is read from it; any other name would say "sagemaker"."""
    assert TgiClassifier(session, stub.url, DEFAULT_PARAMETERS).backend == "tgi"


async def test_neither_the_verdict_nor_the_logs_carry_the_secret(
    session: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    sink = InMemorySink()
    classifier = TgiClassifier(session, with_credentials(emulator.url), DEFAULT_PARAMETERS)

    with capture_logs() as logs:
        outcome = await moderator(classifier, sink).handle(message())

    assert isinstance(outcome, Ack)
    [published] = sink.all_published
    assert published.verdict.model.endpoint == emulator.url
    assert SECRET not in published.verdict.to_json()
    assert logs  # the verdict was logged ...
    assert SECRET not in repr(logs)  # ... without the secret


async def test_a_rejection_and_its_log_line_do_not_carry_the_secret(
    session: aiohttp.ClientSession, stub: StubEndpoint
) -> None:
    stub.answer(401, {"error": "Unauthorized"})
    classifier = TgiClassifier(session, with_credentials(stub.url), DEFAULT_PARAMETERS)

    with capture_logs() as logs:
        outcome = await moderator(classifier, InMemorySink()).handle(message())

    assert isinstance(outcome, RetryLater)
    assert [log["event"] for log in logs] == ["endpoint_rejected"]
    assert SECRET not in repr(logs)
    assert SECRET not in outcome.reason


async def test_the_error_of_an_unreachable_endpoint_does_not_carry_the_secret(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    classifier = TgiClassifier(
        session, with_credentials(f"http://127.0.0.1:{port}"), DEFAULT_PARAMETERS
    )

    with pytest.raises(ClassifierError) as caught:
        await classifier.classify(PROMPT)

    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value.__cause__)


def test_a_malformed_tgi_url_is_refused_without_repeating_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODERATION_BACKEND", "tgi")
    monkeypatch.setenv("MODERATION_TGI_URL", f"https://{USER}:{SECRET}@host:not-a-port")

    with pytest.raises(ConfigurationError) as caught:
        load_model_settings()

    assert str(caught.value).startswith("MODERATION_TGI_URL:")
    assert SECRET not in str(caught.value)


def test_settings_do_not_show_the_tgi_url_in_their_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATION_BACKEND", "tgi")
    monkeypatch.setenv("MODERATION_TGI_URL", f"https://{USER}:{SECRET}@tgi.internal:8080")

    assert SECRET not in repr(load_model_settings())


@pytest.mark.parametrize("variable", ["MODERATION_QUEUE_URL", "MODERATION_DEAD_LETTER_QUEUE_URL"])
def test_a_queue_url_with_credentials_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # SQS requests are signed with AWS credentials: a password in a queue URL is a mistake.
    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/moderation"
    monkeypatch.setenv("MODERATION_QUEUE_URL", queue)
    monkeypatch.setenv("MODERATION_SAFE_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:safe")
    monkeypatch.setenv("MODERATION_UNSAFE_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:unsafe")
    monkeypatch.setenv("MODERATION_ENDPOINT_NAME", "llama-guard")
    monkeypatch.setenv(variable, with_credentials(queue))

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert str(caught.value).startswith(f"{variable}:")
    assert SECRET not in str(caught.value)


async def test_an_endpoint_without_a_port_is_named_without_one(
    session: aiohttp.ClientSession,
) -> None:
    url = f"https://{USER}:{SECRET}@tgi.internal/generate-base"
    classifier = TgiClassifier(session, url, DEFAULT_PARAMETERS)

    assert classifier.endpoint == "https://tgi.internal/generate-base"


async def test_the_repr_names_the_class_the_url_and_the_protocol(
    session: aiohttp.ClientSession,
) -> None:
    classifier = TgiClassifier(session, "http://tgi:8080", DEFAULT_PARAMETERS)

    assert repr(classifier) == "TgiClassifier('http://tgi:8080', protocol='tgi')"
