"""Adapter paths no test used to reach (issue 10): a dead-lettered copy keeping AWSTraceHeader,
an SNS batch entry with no result, and TGI error bodies that are not JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest
from endpoint_stub import run_stub_endpoint
from sns_stub import publish_batch_answer, run_sns_stub
from support.builders import AWS_TRACE_HEADER, TRACEPARENT, make_verdict

from worker.adapters.aws import QUEUES_ONLY, open_aws_clients
from worker.adapters.sns import SnsSink
from worker.adapters.sqs import SqsSource
from worker.adapters.tgi import TgiClassifier
from worker.core.errors import EndpointRejected, EndpointUnavailable, SinkError
from worker.core.prompt import DEFAULT_PARAMETERS
from worker.ports import Publication, TraceContext

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from types_aiobotocore_sqs import SQSClient

    from devstack.moto_stack import LocalResources


async def test_a_dead_lettered_copy_keeps_the_aws_trace_header(
    sqs_client: SQSClient, local_resources: LocalResources
) -> None:
    """X-Ray traces continue through the dead-letter queue, as they do onto verdicts."""
    assert local_resources.dead_letter_queue_url is not None
    await sqs_client.send_message(
        QueueUrl=local_resources.queue_url,
        MessageBody="not json",
        MessageSystemAttributes={
            "AWSTraceHeader": {"DataType": "String", "StringValue": AWS_TRACE_HEADER}
        },
    )
    source = SqsSource(sqs_client, local_resources.queue_url, local_resources.dead_letter_queue_url)
    [message] = await source.receive(10, 0)
    assert message.trace.aws_trace_header == AWS_TRACE_HEADER

    assert await source.dead_letter(message, "invalid_json", "the body is not valid JSON")

    response = await sqs_client.receive_message(
        QueueUrl=local_resources.dead_letter_queue_url,
        MessageSystemAttributeNames=["AWSTraceHeader"],
    )
    [copy] = response["Messages"]
    assert copy["Body"] == "not json"
    assert copy.get("Attributes", {}).get("AWSTraceHeader") == AWS_TRACE_HEADER


async def test_a_batch_entry_sns_neither_accepted_nor_refused_is_a_failure(
    monkeypatch: pytest.MonkeyPatch, aws_session: AioSession
) -> None:
    """Not assumed published: its message is kept, so it comes back and is published again."""
    async with run_sns_stub() as stub:
        # SNS accepted entry 0 and said nothing about entry 1.
        stub.answer = publish_batch_answer(successful=["0"], failed=[])
        monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", stub.url)
        async with open_aws_clients(services=QUEUES_ONLY, session=aws_session) as aws:
            sink = SnsSink(
                aws.sns, "arn:aws:sns:us-east-1:1:safe", "arn:aws:sns:us-east-1:1:unsafe"
            )
            trace = TraceContext(TRACEPARENT, AWS_TRACE_HEADER)
            results = await sink.publish(
                [Publication(make_verdict("a"), trace), Publication(make_verdict("b"), trace)]
            )

    assert stub.actions == ["PublishBatch"]
    assert results[0] is None
    assert isinstance(results[1], SinkError)
    assert str(results[1]) == "SNS PublishBatch returned no result for the entry"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(502, EndpointUnavailable), (403, EndpointRejected)],
    ids=["gateway-502", "proxy-403"],
)
async def test_a_tgi_error_body_that_is_not_json_is_reported_in_its_own_words(
    http_session: aiohttp.ClientSession, status: int, expected: type[Exception]
) -> None:
    """A proxy in front of TGI answers HTML: classified by status, its text kept in the error."""
    async with run_stub_endpoint() as stub:
        stub.status = status
        stub.body = "<html><body>upstream said no</body></html>"
        classifier = TgiClassifier(http_session, stub.url, DEFAULT_PARAMETERS)

        with pytest.raises(expected) as caught:
            await classifier.classify("prompt")

    assert str(caught.value) == (
        f"TGI answered {status}: <html><body>upstream said no</body></html>"
    )
