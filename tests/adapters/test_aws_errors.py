"""Translation of AWS failures into the project's error tree, from real botocore exceptions.

SQS and SNS errors come from moto. SageMaker errors come from a small local HTTP server that
answers ``invoke_endpoint`` the way SageMaker does (status, ``x-amzn-ErrorType``, JSON body), so
botocore parses them exactly as it would in production. A few shapes are built as
``ClientError`` objects directly, to pin where botocore puts ``OriginalStatusCode``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from worker.adapters.aws import (
    AWS_ERRORS,
    SAGEMAKER_ONLY,
    aws_error_code,
    classifier_error_from,
    http_status,
    open_aws_clients,
    sink_entry_error,
    sink_error_from,
    source_error_from,
)
from worker.core.errors import (
    ClassifierError,
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
    SinkError,
    SourceError,
)

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from types_aiobotocore_sagemaker_runtime import SageMakerRuntimeClient
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

    from devstack.moto_stack import LocalResources

TGI_TOO_LONG = (
    '{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. '
    'Given: 4500 `inputs` tokens and 100 `max_new_tokens`","error_type":"validation"}'
)
TGI_OTHER_VALIDATION = (
    '{"error":"Input validation error: `temperature` must be strictly positive",'
    '"error_type":"validation"}'
)
STUB_READ_TIMEOUT = 0.5


@dataclass
class StubAnswer:
    status: int
    error_type: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


class SageMakerStub:
    """Answers every invocation with ``answer``, or never answers when ``hang`` is set."""

    def __init__(self) -> None:
        self.answer = StubAnswer(200, body={"generated_text": "safe"})
        self.hang = False
        self.requests = 0

    async def invocations(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        if self.hang:
            await asyncio.sleep(5)  # cancelled when the client gives up (handler_cancellation)
        headers = {"x-amzn-ErrorType": self.answer.error_type} if self.answer.error_type else {}
        return web.json_response(self.answer.body, status=self.answer.status, headers=headers)


def model_error(original_status: int, original_message: str) -> StubAnswer:
    """SageMaker's answer when the container itself returned an error."""
    return StubAnswer(
        424,
        "ModelError",
        {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
            "Message": f"Received client error ({original_status}) from primary with message "
            f'"{original_message}".',
            "OriginalStatusCode": original_status,
            "OriginalMessage": original_message,
            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/x",
        },
    )


@pytest.fixture
async def stub(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SageMakerStub]:
    stub = SageMakerStub()
    app = web.Application()
    app.router.add_post("/endpoints/{name}/invocations", stub.invocations)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{port}")
    yield stub
    await runner.cleanup()


@pytest.fixture
async def sagemaker(
    stub: SageMakerStub, aws_session: AioSession
) -> AsyncIterator[SageMakerRuntimeClient]:
    async with open_aws_clients(
        services=SAGEMAKER_ONLY,
        sagemaker_read_timeout=STUB_READ_TIMEOUT,
        session=aws_session,
    ) as clients:
        yield clients.sagemaker_runtime


async def invoke(client: SageMakerRuntimeClient) -> ClassifierError | None:
    """Call the endpoint as the SageMaker classifier does; the translated error, if any."""
    try:
        response = await client.invoke_endpoint(
            EndpointName="llama-guard-7b", Body=b'{"inputs": "x"}', ContentType="application/json"
        )
        async with response["Body"] as stream:
            await stream.read()
    except AWS_ERRORS as exc:
        return classifier_error_from(exc)
    return None


def client_error(code: str, status: int, message: str = "", **modeled: Any) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **modeled,
    }
    return ClientError(response, "InvokeEndpoint")


class TestSageMakerErrorsFromTheWire:
    @pytest.mark.parametrize(
        ("answer", "expected"),
        [
            pytest.param(
                StubAnswer(400, "ThrottlingException"), EndpointThrottled, id="throttling"
            ),
            pytest.param(
                StubAnswer(429, "ModelNotReadyException"), EndpointUnavailable, id="not-ready"
            ),
            pytest.param(
                StubAnswer(503, "ServiceUnavailable"), EndpointUnavailable, id="unavailable"
            ),
            pytest.param(StubAnswer(500, "InternalFailure"), EndpointUnavailable, id="internal"),
            pytest.param(
                StubAnswer(530, "InternalDependencyException"),
                EndpointUnavailable,
                id="dependency",
            ),
            pytest.param(StubAnswer(502), EndpointUnavailable, id="bare-502"),
            pytest.param(
                StubAnswer(403, "AccessDeniedException"), EndpointRejected, id="access-denied"
            ),
            pytest.param(
                StubAnswer(403, "UnrecognizedClientException"),
                EndpointRejected,
                id="unknown-credentials",
            ),
            pytest.param(StubAnswer(400, "ExpiredTokenException"), EndpointRejected, id="expired"),
            pytest.param(
                StubAnswer(400, "ValidationError", {"message": "Invalid content type"}),
                EndpointRejected,
                id="validation",
            ),
            pytest.param(StubAnswer(404), EndpointRejected, id="bare-404"),
        ],
    )
    async def test_service_error_is_classified_by_code_and_status(
        self,
        stub: SageMakerStub,
        sagemaker: SageMakerRuntimeClient,
        answer: StubAnswer,
        expected: type[ClassifierError],
    ) -> None:
        stub.answer = answer

        assert type(await invoke(sagemaker)) is expected

    async def test_validation_error_for_a_missing_endpoint_is_a_rejection_naming_it(
        self, stub: SageMakerStub, sagemaker: SageMakerRuntimeClient
    ) -> None:
        stub.answer = StubAnswer(
            400,
            "ValidationError",
            {"message": "Endpoint llama-guard-7b of account 123456789012 not found."},
        )

        error = await invoke(sagemaker)

        assert type(error) is EndpointRejected
        assert "Endpoint llama-guard-7b of account 123456789012 not found." in str(error)

    @pytest.mark.parametrize(
        ("original_status", "original_message", "expected"),
        [
            pytest.param(422, TGI_TOO_LONG, PromptTooLong, id="422-too-long"),
            pytest.param(422, TGI_OTHER_VALIDATION, EndpointRejected, id="422-other"),
            pytest.param(429, '{"error":"Model is overloaded"}', EndpointThrottled, id="429"),
            pytest.param(500, '{"error":"CUDA out of memory"}', EndpointUnavailable, id="500"),
            pytest.param(503, "upstream connect error", EndpointUnavailable, id="503"),
            pytest.param(408, "request timeout", EndpointUnavailable, id="408"),
            pytest.param(400, '{"error":"bad json"}', EndpointRejected, id="400"),
        ],
    )
    async def test_model_error_is_classified_by_the_containers_status(
        self,
        stub: SageMakerStub,
        sagemaker: SageMakerRuntimeClient,
        original_status: int,
        original_message: str,
        expected: type[ClassifierError],
    ) -> None:
        stub.answer = model_error(original_status, original_message)

        assert type(await invoke(sagemaker)) is expected

    async def test_read_timeout_is_unavailable(
        self, stub: SageMakerStub, sagemaker: SageMakerRuntimeClient
    ) -> None:
        stub.hang = True

        assert type(await invoke(sagemaker)) is EndpointUnavailable

    async def test_sagemaker_client_makes_a_single_attempt(
        self, stub: SageMakerStub, sagemaker: SageMakerRuntimeClient
    ) -> None:
        stub.answer = StubAnswer(503, "ServiceUnavailable")

        await invoke(sagemaker)

        assert stub.requests == 1

    async def test_translated_error_keeps_the_botocore_error_as_its_cause(
        self, stub: SageMakerStub, sagemaker: SageMakerRuntimeClient
    ) -> None:
        stub.answer = StubAnswer(400, "ThrottlingException")

        error = await invoke(sagemaker)

        assert isinstance(error, EndpointThrottled)
        assert isinstance(error.__cause__, ClientError)

    async def test_invalid_request_parameters_are_a_rejection(
        self, stub: SageMakerStub, sagemaker: SageMakerRuntimeClient
    ) -> None:
        """botocore refuses to build the request (a Body that is neither bytes nor a file):
        ``ParamValidationError``, nothing sent, our configuration to blame, not the message."""
        request: dict[str, Any] = {"EndpointName": "guard", "Body": 12345}
        try:
            await sagemaker.invoke_endpoint(**request)
        except AWS_ERRORS as exc:
            error: ClassifierError | None = classifier_error_from(exc)
        else:
            error = None

        assert type(error) is EndpointRejected
        assert isinstance(error.__cause__, ParamValidationError)
        assert str(error).startswith("invalid InvokeEndpoint request:")
        assert stub.requests == 0


class TestSageMakerErrorShapes:
    def test_original_status_code_is_read_from_the_top_level_of_the_response(self) -> None:
        # botocore merges a modeled error's members (OriginalStatusCode, OriginalMessage) into
        # the top level of ``exc.response``, next to "Error".
        exc = client_error("ModelError", 424, OriginalStatusCode=422, OriginalMessage=TGI_TOO_LONG)

        assert type(classifier_error_from(exc)) is PromptTooLong

    def test_model_error_without_original_status_is_unavailable(self) -> None:
        exc = client_error("ModelError", 424, "Received server error from primary")

        assert type(classifier_error_from(exc)) is EndpointUnavailable

    def test_original_status_code_inside_error_is_read_too(self) -> None:
        response: Any = {
            "Error": {"Code": "ModelError", "Message": "", "OriginalStatusCode": 429},
            "ResponseMetadata": {"HTTPStatusCode": 424},
        }

        error = classifier_error_from(ClientError(response, "InvokeEndpoint"))

        assert type(error) is EndpointThrottled
        assert str(error) == "ModelError: container answered 429: "

    @pytest.mark.parametrize(
        ("status", "message", "kind", "text"),
        [
            (500, "x" * 600, EndpointUnavailable, "x" * 500),  # the container's words, cut
            (500, None, EndpointUnavailable, ""),
            (429, "busy", EndpointThrottled, "busy"),
            (422, TGI_TOO_LONG, PromptTooLong, TGI_TOO_LONG),
            # "too long" in a 5xx is the server's trouble, not the prompt's
            (500, TGI_TOO_LONG, EndpointUnavailable, TGI_TOO_LONG),
        ],
        ids=["cut-to-500", "no-message", "throttled", "too-long", "too-long-in-a-500"],
    )
    def test_a_model_error_says_what_the_container_answered(
        self, status: int, message: str | None, kind: type[ClassifierError], text: str
    ) -> None:
        modeled: dict[str, Any] = {"OriginalStatusCode": status}
        if message is not None:
            modeled["OriginalMessage"] = message
        error = classifier_error_from(client_error("ModelError", 424, **modeled))

        assert type(error) is kind
        assert str(error) == f"ModelError: container answered {status}: {text}"

    @pytest.mark.parametrize(
        ("exc", "kind", "text"),
        [
            (
                client_error("ThrottlingException", 400, "Rate exceeded"),
                EndpointThrottled,
                "SageMaker throttled the request: ThrottlingException: Rate exceeded",
            ),
            (
                client_error("ModelNotReadyException", 429, "warming up"),
                EndpointUnavailable,
                "SageMaker endpoint unavailable: ModelNotReadyException: warming up",
            ),
            (
                client_error("SomethingNewOnTheServer", 502),
                EndpointUnavailable,
                "SageMaker endpoint unavailable: SomethingNewOnTheServer",
            ),
            (
                client_error("AccessDeniedException", 403, "no"),
                EndpointRejected,
                "SageMaker rejected the request: AccessDeniedException: no",
            ),
            (
                TimeoutError("read"),
                EndpointUnavailable,
                "SageMaker endpoint unreachable: TimeoutError: read",
            ),
        ],
        ids=["throttled", "not-ready", "server-side", "rejected", "unreachable"],
    )
    def test_each_error_says_what_sagemaker_did_and_names_the_aws_error(
        self, exc: BaseException, kind: type[ClassifierError], text: str
    ) -> None:
        error = classifier_error_from(exc)

        assert type(error) is kind
        assert str(error) == text

    def test_unknown_4xx_code_is_a_rejection(self) -> None:
        exc = client_error("SomethingNew", 400)

        assert type(classifier_error_from(exc)) is EndpointRejected

    def test_broken_response_stream_is_unavailable(self) -> None:
        exc = aiohttp.ClientPayloadError("Response payload is not completed")

        assert type(classifier_error_from(exc)) is EndpointUnavailable

    def test_asyncio_timeout_is_unavailable(self) -> None:
        assert type(classifier_error_from(TimeoutError())) is EndpointUnavailable


class TestConnectionErrors:
    async def test_refused_connection_to_sagemaker_is_unavailable(
        self, monkeypatch: pytest.MonkeyPatch, aws_session: AioSession
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{_free_port()}")
        async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as clients:
            error = await invoke(clients.sagemaker_runtime)

        assert type(error) is EndpointUnavailable
        assert isinstance(error.__cause__, EndpointConnectionError)

    def test_connection_error_on_sqs_is_a_source_error_naming_it(self) -> None:
        exc = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

        error = source_error_from(exc, operation="ReceiveMessage")

        assert isinstance(error, SourceError)
        assert "ReceiveMessage" in str(error)
        assert "EndpointConnectionError" in str(error)


class TestQueueAndTopicErrors:
    async def test_missing_queue_is_a_source_error_with_the_aws_code(
        self, sqs_client: SQSClient, local_resources: LocalResources
    ) -> None:
        try:
            await sqs_client.receive_message(QueueUrl=local_resources.queue_url + "-missing")
        except AWS_ERRORS as exc:
            error = source_error_from(exc, operation="ReceiveMessage")

        assert isinstance(error, SourceError)
        assert "AWS.SimpleQueueService.NonExistentQueue" in str(error)
        assert isinstance(error.__cause__, ClientError)

    async def test_missing_topic_is_a_sink_error_with_the_aws_code(
        self, sns_client: SNSClient, local_resources: LocalResources
    ) -> None:
        try:
            await sns_client.publish(TopicArn=local_resources.safe_topic_arn + "-x", Message="m")
        except AWS_ERRORS as exc:
            error = sink_error_from(exc, operation="Publish")

        assert isinstance(error, SinkError)
        assert "NotFound" in str(error)
        assert isinstance(error.__cause__, ClientError)

    @pytest.mark.parametrize(
        ("code", "message", "detail"),
        [
            ("InvalidParameter", "Message too long", "InvalidParameter: Message too long"),
            (None, "Message too long", "UnknownError: Message too long"),
            ("InvalidParameter", None, "InvalidParameter"),
            (None, None, "UnknownError"),
        ],
    )
    def test_rejected_batch_entry_is_a_sink_error_with_its_code(
        self, code: str | None, message: str | None, detail: str
    ) -> None:
        error = sink_entry_error(code, message, operation="PublishBatch")

        assert isinstance(error, SinkError)
        assert str(error) == f"SNS PublishBatch rejected the entry: {detail}"

    @pytest.mark.parametrize(
        ("exc", "detail"),
        [
            (
                client_error("QueueDoesNotExist", 400, "No such queue"),
                "QueueDoesNotExist: No such queue",
            ),
            (ClientError({"Error": {"Code": "AccessDenied"}}, "ReceiveMessage"), "AccessDenied"),
            (ClientError({}, "ReceiveMessage"), "UnknownError"),
            (OSError("network down"), "OSError: network down"),
            (OSError(), "OSError"),
        ],
        ids=["code-and-message", "code-only", "nothing", "exception", "exception-without-text"],
    )
    def test_a_source_error_names_the_aws_code_and_message_or_the_exception(
        self, exc: BaseException, detail: str
    ) -> None:
        error = source_error_from(exc, operation="ReceiveMessage")

        assert str(error) == f"SQS ReceiveMessage failed: {detail}"


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_aws_error_without_error_or_metadata_has_no_code_and_no_status() -> None:
    """botocore fills both for real answers; a bare ``ClientError`` is read without failing."""
    bare = ClientError({}, "InvokeEndpoint")

    assert (aws_error_code(bare), http_status(bare)) == (None, None)
    assert str(classifier_error_from(bare)) == "SageMaker rejected the request: UnknownError"
