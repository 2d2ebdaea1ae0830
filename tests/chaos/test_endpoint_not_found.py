"""The model proxy's not-found window: SageMaker's exact answer, as botocore reads it.

A real aiobotocore ``sagemaker-runtime`` client (retries off, so each answer is seen once) talks
to the fault proxy in front of the emulator, as the hostile run's worker does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from devstack.chaos.proxy import RunningProxy, run_fault_proxy
from devstack.emulator import RunningEmulator

if TYPE_CHECKING:
    from types_aiobotocore_sagemaker_runtime import SageMakerRuntimeClient

ENDPOINT = "llama-guard-blue"
BODY = json.dumps({"inputs": "[INST] Task: say hello [/INST]", "parameters": {}})


@pytest.fixture
async def model_proxy(emulator: RunningEmulator) -> AsyncIterator[RunningProxy]:
    async with run_fault_proxy(emulator.url) as running:
        yield running


@pytest.fixture
async def sagemaker(
    model_proxy: RunningProxy, aws_session: AioSession
) -> AsyncIterator[SageMakerRuntimeClient]:
    async with aws_session.create_client(
        "sagemaker-runtime",
        endpoint_url=model_proxy.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(retries={"total_max_attempts": 1, "mode": "standard"}),
    ) as client:
        yield client


async def _invoke(sagemaker: SageMakerRuntimeClient) -> int:
    response = await sagemaker.invoke_endpoint(
        EndpointName=ENDPOINT, Body=BODY, ContentType="application/json"
    )
    async with response["Body"] as stream:
        await stream.read()
    return response["ResponseMetadata"]["HTTPStatusCode"]


async def test_not_found_window_reads_as_sagemakers_validation_error(
    model_proxy: RunningProxy, sagemaker: SageMakerRuntimeClient
) -> None:
    """Status 400, SageMaker's error-type header, and botocore's code and message."""
    model_proxy.plan.update(endpoint_not_found=True)

    with pytest.raises(ClientError) as raised:
        await _invoke(sagemaker)

    response = raised.value.response
    assert response["Error"]["Code"] == "ValidationError"
    assert response["Error"]["Message"] == (
        f"Endpoint {ENDPOINT} of account 123456789012 not found."
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
        "ValidationError:http://internal.amazon.com/coral/com.amazon.coral.validate/"
    )


async def test_not_found_window_never_reaches_the_model(
    model_proxy: RunningProxy, emulator: RunningEmulator, sagemaker: SageMakerRuntimeClient
) -> None:
    """While the window is open the emulator sees nothing; the proxy counts what it answered."""
    model_proxy.plan.update(endpoint_not_found=True)

    with pytest.raises(ClientError):
        await _invoke(sagemaker)

    assert emulator.stats.requests == 0
    assert model_proxy.stats.injected_by_kind["endpoint_not_found"] == 1


async def test_closing_the_window_forwards_again(
    model_proxy: RunningProxy, sagemaker: SageMakerRuntimeClient
) -> None:
    """After the window the same call reaches the model and succeeds."""
    model_proxy.plan.update(endpoint_not_found=True)
    with pytest.raises(ClientError):
        await _invoke(sagemaker)

    model_proxy.plan.update(endpoint_not_found=False)

    assert await _invoke(sagemaker) == 200
