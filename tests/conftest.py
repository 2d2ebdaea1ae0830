"""Shared fixtures: an isolated AWS environment for every test, and a real moto server on demand.

Every test runs with the developer's ``AWS_*`` variables and AWS config files hidden and dummy
credentials set, so nothing can reach a real account. Tests that ask for ``moto`` (or anything
built on it) get the session's moto server, reset first, with ``AWS_ENDPOINT_URL`` pointing at it:
botocore's standard endpoint handling then sends every client there. moto's in-process decorator
would not help: it does not intercept aiobotocore.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiobotocore.session import AioSession, get_session

from devstack.moto_stack import (
    LOCAL_ACCESS_KEY,
    LOCAL_REGION,
    LocalResources,
    local_aws_environment,
    provision,
    start_moto_server,
)
from worker.adapters.aws import QUEUES_ONLY, AwsClients, open_aws_clients

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

    from devstack.emulator import RunningEmulator

# Short enough that nothing lingers; long enough that a message never reappears mid-test.
TEST_VISIBILITY_TIMEOUT = 30


@pytest.fixture(autouse=True)
def isolated_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the real AWS configuration; dummy credentials and a fixed region instead."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", LOCAL_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", LOCAL_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", LOCAL_REGION)
    # ~/.aws/config could set a region, an endpoint or a profile; the metadata service could
    # supply credentials. Neither may leak in.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """One moto server (SQS, SNS) for the whole session, on a free local port."""
    with start_moto_server() as url:
        yield url


@pytest.fixture
def moto(
    moto_server_url: str,
    isolated_aws_environment: None,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The moto server, emptied, with every AWS client of this test pointed at it."""
    for name, value in local_aws_environment(moto_server_url).items():
        monkeypatch.setenv(name, value)
    # S310: the URL is our own moto server's, always http.
    reset = urllib.request.Request(f"{moto_server_url}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(reset, timeout=5) as response:  # noqa: S310
        response.read()
    return moto_server_url


@pytest.fixture(scope="session")
def aws_session() -> AioSession:
    """One botocore session for the run, so each test does not re-load the service models."""
    return get_session()


@pytest.fixture
async def aws_clients(moto: str, aws_session: AioSession) -> AsyncIterator[AwsClients]:
    """SQS and SNS clients opened the way the worker opens them, on the moto server."""
    async with open_aws_clients(services=QUEUES_ONLY, session=aws_session) as clients:
        yield clients


@pytest.fixture
def sqs_client(aws_clients: AwsClients) -> SQSClient:
    return aws_clients.sqs


@pytest.fixture
def sns_client(aws_clients: AwsClients) -> SNSClient:
    return aws_clients.sns


@pytest.fixture
async def local_resources(aws_clients: AwsClients) -> LocalResources:
    """Standard queues and topics, with a dead-letter queue."""
    return await provision(
        aws_clients.sqs, aws_clients.sns, visibility_timeout=TEST_VISIBILITY_TIMEOUT
    )


@pytest.fixture
async def fifo_resources(aws_clients: AwsClients) -> LocalResources:
    """FIFO queues and topics, with a FIFO dead-letter queue."""
    return await provision(
        aws_clients.sqs, aws_clients.sns, fifo=True, visibility_timeout=TEST_VISIBILITY_TIMEOUT
    )


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    """The Llama Guard emulator with its default configuration, on a free local port."""
    # Imported here so that a problem in the emulator fails only the tests that use it.
    from devstack.emulator import EmulatorConfig, run_emulator  # noqa: PLC0415

    async with run_emulator(EmulatorConfig()) as running:
        yield running


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp session per test, as the worker shares one (a bound on any broken request)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
