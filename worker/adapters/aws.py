"""AWS clients and AWS error translation: the one place that opens clients and reads their errors.

Clients are created once per process by ``open_aws_clients`` and closed together; adapters receive
them already open. Every AWS call in the adapters catches ``AWS_ERRORS`` and raises the project's
own error built here (``source_error_from``, ``sink_error_from``, ``classifier_error_from``)
``from`` the original, so nothing outside this module inspects ``ClientError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from worker.core.errors import (
    ClassifierError,
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
    SinkError,
    SourceError,
    says_prompt_too_long,
)

if TYPE_CHECKING:
    from types_aiobotocore_sagemaker_runtime import SageMakerRuntimeClient
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

ClientT = TypeVar("ClientT")
ErrorT = TypeVar("ErrorT", bound=BaseException)
ServiceName = Literal["sqs", "sns", "sagemaker-runtime"]
ALL_SERVICES: Final[tuple[ServiceName, ...]] = ("sqs", "sns", "sagemaker-runtime")
QUEUES_ONLY: Final[tuple[ServiceName, ...]] = ("sqs", "sns")
SQS_ONLY: Final[tuple[ServiceName, ...]] = ("sqs",)
SAGEMAKER_ONLY: Final[tuple[ServiceName, ...]] = ("sagemaker-runtime",)

#: Everything an aiobotocore call (or reading its streamed body) raises when AWS or the network
#: fails. ``asyncio.CancelledError`` is deliberately absent: cancellation must always propagate.
AWS_ERRORS: Final[tuple[type[Exception], ...]] = (
    ClientError,
    BotoCoreError,
    aiohttp.ClientError,
    TimeoutError,
)

# A ReceiveMessage long poll holds the connection for up to 20 s, so the read timeout must be
# longer than that or every empty poll would end in a ReadTimeoutError.
QUEUE_READ_TIMEOUT: Final = 30.0
QUEUE_CONNECT_TIMEOUT: Final = 5.0
# Attempts are set as botocore's ``total_max_attempts`` (the first call included): in a client
# Config, ``max_attempts`` counts only the *retries*, so {"max_attempts": 1} means two calls.
QUEUE_MAX_ATTEMPTS: Final = 3
SAGEMAKER_CONNECT_TIMEOUT: Final = 5.0
# SageMaker cuts a container off after 60 s; waiting a little longer lets its own error arrive.
DEFAULT_SAGEMAKER_READ_TIMEOUT: Final = 70.0
DEFAULT_MAX_POOL_CONNECTIONS: Final = 64


# --- clients -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwsClients:
    """The open clients of one process; a service that was not opened raises on access."""

    _sqs: SQSClient | None = None
    _sns: SNSClient | None = None
    _sagemaker_runtime: SageMakerRuntimeClient | None = None

    @property
    def sqs(self) -> SQSClient:
        return _opened(self._sqs, "sqs")

    @property
    def sns(self) -> SNSClient:
        return _opened(self._sns, "sns")

    @property
    def sagemaker_runtime(self) -> SageMakerRuntimeClient:
        return _opened(self._sagemaker_runtime, "sagemaker-runtime")


def _opened(client: ClientT | None, service: str) -> ClientT:
    if client is None:
        raise RuntimeError(f"the {service} client was not opened (see open_aws_clients services=)")
    return client


def queue_config(*, max_pool_connections: int) -> AioConfig:
    """botocore config for SQS and SNS: botocore retries briefly, our loop handles the rest.

    Parameter validation is off: the adapters build every request from typed values in a fixed
    shape, and SQS and SNS check them again anyway; walking each PublishBatch entry's
    attributes against the service model on every call was a measurable share of the CPU.
    """
    return AioConfig(
        connect_timeout=QUEUE_CONNECT_TIMEOUT,
        read_timeout=QUEUE_READ_TIMEOUT,
        retries={"total_max_attempts": QUEUE_MAX_ATTEMPTS, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        parameter_validation=False,
    )


def sagemaker_config(*, max_pool_connections: int, read_timeout: float) -> AioConfig:
    """botocore config for sagemaker-runtime: one attempt, because tenacity owns the retries."""
    return AioConfig(
        connect_timeout=SAGEMAKER_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_pool_connections,
    )


@asynccontextmanager
async def open_aws_clients(
    *,
    region: str | None = None,
    max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
    sagemaker_read_timeout: float = DEFAULT_SAGEMAKER_READ_TIMEOUT,
    services: Collection[ServiceName] = ALL_SERVICES,
    session: AioSession | None = None,
) -> AsyncIterator[AwsClients]:
    """Open each requested client once, from one session, and close them all on exit.

    Endpoints, credentials and (when ``region`` is None) the region come from botocore's standard
    chain, including ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` for a local stack.
    ``session`` defaults to a new ``get_session()``; passing one that is reused skips re-loading
    the service models (the test suite opens clients per test; the worker opens them once).
    """
    session = session or get_session()
    queues = queue_config(max_pool_connections=max_pool_connections)
    async with AsyncExitStack() as stack:
        sqs = sns = sagemaker_runtime = None
        if "sqs" in services:
            sqs = await stack.enter_async_context(
                session.create_client("sqs", region_name=region, config=queues)
            )
        if "sns" in services:
            sns = await stack.enter_async_context(
                session.create_client("sns", region_name=region, config=queues)
            )
        if "sagemaker-runtime" in services:
            config = sagemaker_config(
                max_pool_connections=max_pool_connections, read_timeout=sagemaker_read_timeout
            )
            sagemaker_runtime = await stack.enter_async_context(
                session.create_client("sagemaker-runtime", region_name=region, config=config)
            )
        yield AwsClients(sqs, sns, sagemaker_runtime)


# --- reading botocore errors ---------------------------------------------------------------------


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ``ClientError`` (e.g. ``ThrottlingException``), else None."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the failed AWS response, when there was one."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def describe_aws_error(exc: BaseException) -> str:
    """One line naming what failed: ``Code: message`` for AWS answers, the class name otherwise."""
    if isinstance(exc, ClientError):
        error: Mapping[str, Any] = exc.response.get("Error", {})
        code = error.get("Code") or "UnknownError"
        message = error.get("Message") or ""
        return f"{code}: {message}" if message else str(code)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def source_error_from(exc: BaseException, *, operation: str) -> SourceError:
    """An SQS failure as a ``SourceError`` naming the AWS error code; raise it ``from exc``."""
    return _caused_by(exc, SourceError(f"SQS {operation} failed: {describe_aws_error(exc)}"))


def sink_error_from(exc: BaseException, *, operation: str) -> SinkError:
    """An SNS failure of a whole call as a ``SinkError`` naming the AWS error code.

    The cause is set here as well, because the SNS sink returns these in result slots instead of
    raising them.
    """
    return _caused_by(exc, SinkError(f"SNS {operation} failed: {describe_aws_error(exc)}"))


def sink_entry_error(code: str | None, message: str | None, *, operation: str) -> SinkError:
    """One rejected entry of an SNS batch call (there is no exception to chain)."""
    detail = f"{code or 'UnknownError'}: {message}" if message else (code or "UnknownError")
    return SinkError(f"SNS {operation} rejected the entry: {detail}")


# --- SageMaker runtime ---------------------------------------------------------------------------

_THROTTLING_CODES: Final = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_UNAVAILABLE_CODES: Final = frozenset(
    {
        "ModelNotReadyException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalDependencyException",
        "InternalServerError",
    }
)
_TOO_MANY_REQUESTS: Final = 429
_REQUEST_TIMEOUT: Final = 408
_FIRST_CLIENT_ERROR: Final = 400
_FIRST_SERVER_ERROR: Final = 500


def classifier_error_from(exc: BaseException) -> ClassifierError:
    """A failed ``invoke_endpoint`` (or reading its body) as a ``ClassifierError``; raise from exc.

    Throttling is ``EndpointThrottled``; not ready, 5xx, timeouts and connection errors are
    ``EndpointUnavailable``; a ``ModelError`` is judged by the container's own status code
    (``OriginalStatusCode``) and message: "too many tokens" is ``PromptTooLong``. Everything
    else (``ValidationError`` such as "Endpoint NAME of account N not found.", access denied,
    expired or invalid credentials, another 4xx, a request botocore refuses to build) is
    ``EndpointRejected``: a problem of the deployment, never of the message.
    """
    return _caused_by(exc, _classifier_error_from(exc))


def _classifier_error_from(exc: BaseException) -> ClassifierError:
    if isinstance(exc, ClientError):
        return _classifier_error_from_response(exc)
    if isinstance(exc, ParamValidationError):
        # The request we built does not match the API: our configuration, not the message.
        return EndpointRejected(f"invalid InvokeEndpoint request: {exc}")
    # Connection errors, timeouts, broken streams, credential look-ups: none is the message's fault.
    return EndpointUnavailable(f"SageMaker endpoint unreachable: {describe_aws_error(exc)}")


def _classifier_error_from_response(exc: ClientError) -> ClassifierError:
    code = aws_error_code(exc) or ""
    status = http_status(exc)
    description = describe_aws_error(exc)
    if code == "ModelError":
        return _classifier_error_from_model_error(exc)
    # Checked before the status: ModelNotReadyException arrives as a 429 but means "not ready".
    if code in _UNAVAILABLE_CODES:
        return EndpointUnavailable(f"SageMaker endpoint unavailable: {description}")
    if code in _THROTTLING_CODES or status == _TOO_MANY_REQUESTS:
        return EndpointThrottled(f"SageMaker throttled the request: {description}")
    if _is_server_side(status):
        return EndpointUnavailable(f"SageMaker endpoint unavailable: {description}")
    # ValidationError (including "Endpoint X of account Y not found"), AccessDeniedException,
    # ExpiredToken and the other credential codes, and any other 4xx.
    return EndpointRejected(f"SageMaker rejected the request: {description}")


def _classifier_error_from_model_error(exc: ClientError) -> ClassifierError:
    response: Mapping[str, Any] = exc.response
    original_status = _original_status_code(response)
    original_message = str(response.get("OriginalMessage") or "")
    description = f"ModelError: container answered {original_status}: {original_message[:500]}"
    is_client_error = original_status is not None and (
        _FIRST_CLIENT_ERROR <= original_status < _FIRST_SERVER_ERROR
    )
    # TGI answers 422 and vLLM 400 for an over-long prompt: the wording decides, not the status.
    if is_client_error and says_prompt_too_long(original_message):
        return PromptTooLong(description)
    if original_status == _TOO_MANY_REQUESTS:
        return EndpointThrottled(description)
    if original_status is None or _is_server_side(original_status):
        # A ModelError without the container's status cannot be judged; retrying is the choice
        # that loses nothing (the queue's redrive policy bounds it).
        return EndpointUnavailable(description)
    # The container refused the request (e.g. TGI's `top_n_tokens` above --max-top-n-tokens).
    return EndpointRejected(description)


def _original_status_code(response: Mapping[str, Any]) -> int | None:
    # botocore merges a modeled error's fields into the top level of the parsed response.
    value = response.get("OriginalStatusCode", response.get("Error", {}).get("OriginalStatusCode"))
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _is_server_side(status: int | None) -> bool:
    return status is not None and (status >= _FIRST_SERVER_ERROR or status == _REQUEST_TIMEOUT)


def _caused_by(cause: BaseException, error: ErrorT) -> ErrorT:
    error.__cause__ = cause
    return error
