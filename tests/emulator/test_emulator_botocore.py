"""botocore parses the emulator's SageMaker answers as it parses the real service's.

This proves the wire format: a real aiobotocore ``sagemaker-runtime`` client, pointed at the
emulator with ``endpoint_url``, sees success bodies and ``ClientError``s with the right codes and
modelled fields. Retries are off (``total_max_attempts: 1``) so each fault is seen exactly once;
note that botocore's ``max_attempts`` counts retries, not attempts (last test).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from emulator_prompts import prompt_for

from devstack.emulator import EmulatorConfig, FaultKind, RunningEmulator, run_emulator

if TYPE_CHECKING:
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_sagemaker_runtime import SageMakerRuntimeClient

BODY = json.dumps(
    {"inputs": prompt_for("I will rob a bank", "llama-guard-1"), "parameters": {"details": True}}
)


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with run_emulator(EmulatorConfig()) as running:
        yield running


NO_RETRIES = {"total_max_attempts": 1, "mode": "standard"}


def _sagemaker_client(
    emu: RunningEmulator, retries: dict[str, object]
) -> ClientCreatorContext[SageMakerRuntimeClient]:
    return get_session().create_client(
        "sagemaker-runtime",
        endpoint_url=emu.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(retries=retries),
    )


@pytest.fixture
async def client(emu: RunningEmulator) -> AsyncIterator[SageMakerRuntimeClient]:
    async with _sagemaker_client(emu, NO_RETRIES) as sagemaker:
        yield sagemaker


async def _invoke(client: SageMakerRuntimeClient, body: str = BODY) -> list[dict[str, object]]:
    response = await client.invoke_endpoint(
        EndpointName="llama-guard", Body=body, ContentType="application/json"
    )
    async with response["Body"] as stream:
        document = json.loads(await stream.read())
    assert isinstance(document, list)
    return document


async def _client_error(client: SageMakerRuntimeClient, body: str = BODY) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await _invoke(client, body)
    return caught.value


async def test_invoke_endpoint_returns_the_list_body(client: SageMakerRuntimeClient) -> None:
    document = await _invoke(client)

    assert document[0]["generated_text"] == "unsafe\nO3"


async def test_invoke_endpoint_reports_json_content_type(client: SageMakerRuntimeClient) -> None:
    response = await client.invoke_endpoint(
        EndpointName="llama-guard", Body=BODY, ContentType="application/json"
    )
    async with response["Body"] as stream:
        await stream.read()

    assert response["ContentType"].startswith("application/json")


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        ("throttle", "ThrottlingException", 400),
        ("not_ready", "ModelNotReadyException", 429),
        ("server_error", "ServiceUnavailable", 503),
        ("internal_failure", "InternalFailure", 500),
        ("model_error", "ModelError", 424),
    ],
)
async def test_fault_is_a_client_error_with_the_services_code(
    fault: FaultKind,
    code: str,
    status: int,
    emu: RunningEmulator,
    client: SageMakerRuntimeClient,
) -> None:
    emu.faults.fail_next.append(fault)

    error = await _client_error(client)

    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.response["Error"]["Message"]


async def test_model_not_ready_is_botocores_modelled_exception(
    emu: RunningEmulator, client: SageMakerRuntimeClient
) -> None:
    emu.faults.fail_next.append("not_ready")

    with pytest.raises(client.exceptions.ModelNotReadyException):
        await _invoke(client)


async def test_model_error_exposes_its_modelled_fields(
    emu: RunningEmulator, client: SageMakerRuntimeClient
) -> None:
    emu.faults.fail_next.append("model_error")

    with pytest.raises(client.exceptions.ModelError) as caught:
        await _invoke(client)
    response = caught.value.response

    assert response.get("OriginalStatusCode") == 500
    assert "Request failed during generation" in str(response.get("OriginalMessage"))
    assert str(response.get("LogStreamArn")).startswith("arn:aws:logs:us-east-1:")


async def test_prompt_over_the_budget_is_model_error_with_original_status_422(
    client: SageMakerRuntimeClient,
) -> None:
    body = json.dumps({"inputs": "x" * 20000, "parameters": {"max_new_tokens": 32}})

    error = await _client_error(client, body)

    assert error.response["Error"]["Code"] == "ModelError"
    assert error.response.get("OriginalStatusCode") == 422
    assert "must be <= 4096" in str(error.response.get("OriginalMessage"))
    assert "Received client error (422)" in error.response["Error"]["Message"]


async def test_unknown_endpoint_is_a_validation_error() -> None:
    async with (
        run_emulator(EmulatorConfig(endpoint_names=frozenset({"other"}))) as emu,
        _sagemaker_client(emu, NO_RETRIES) as client,
    ):
        error = await _client_error(client)

    assert error.response["Error"]["Code"] == "ValidationError"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400


async def test_fail_next_gives_exactly_one_throttle_then_an_answer(
    emu: RunningEmulator, client: SageMakerRuntimeClient
) -> None:
    emu.faults.fail_next.append("throttle")

    error = await _client_error(client)
    document = await _invoke(client)

    assert error.response["Error"]["Code"] == "ThrottlingException"
    assert document[0]["generated_text"] == "unsafe\nO3"


async def test_standard_retries_treat_the_throttle_as_retryable(emu: RunningEmulator) -> None:
    """``max_attempts: 1`` means one retry in botocore, so one throttle is absorbed."""
    emu.faults.fail_next.append("throttle")

    async with _sagemaker_client(emu, {"max_attempts": 1, "mode": "standard"}) as client:
        document = await _invoke(client)

    assert document[0]["generated_text"] == "unsafe\nO3"
    assert emu.stats.by_outcome == {"throttled": 1, "unsafe": 1}
