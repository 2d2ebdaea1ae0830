"""The local stack: moto's server in-process and the queues, topics and subscriptions on it.

Used by ``moderation-worker local`` and by the tests, so both run against the same shape of
resources: a source queue redriving to a dead-letter queue (which is also where the worker puts
invalid messages), a safe and an unsafe topic, and one raw-delivery subscriber queue per topic to
read the verdicts back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

LOCAL_REGION: Final = "us-east-1"
# moto accepts any credentials; these make botocore sign requests without looking further.
LOCAL_ACCESS_KEY: Final = "testing"
DEFAULT_VISIBILITY_TIMEOUT: Final = 60


@dataclass(frozen=True, slots=True)
class LocalResources:
    """What ``provision`` created: every URL and ARN the worker and a reader need."""

    queue_url: str
    safe_topic_arn: str
    unsafe_topic_arn: str
    safe_subscriber_queue_url: str
    unsafe_subscriber_queue_url: str
    dead_letter_queue_url: str | None = None
    fifo: bool = False

    def environment(self) -> dict[str, str]:
        """The ``MODERATION_*`` variables that point the worker at these resources."""
        variables = {
            "MODERATION_QUEUE_URL": self.queue_url,
            "MODERATION_SAFE_TOPIC_ARN": self.safe_topic_arn,
            "MODERATION_UNSAFE_TOPIC_ARN": self.unsafe_topic_arn,
        }
        if self.dead_letter_queue_url is not None:
            variables["MODERATION_DEAD_LETTER_QUEUE_URL"] = self.dead_letter_queue_url
        return variables


def local_aws_environment(endpoint_url: str, *, region: str = LOCAL_REGION) -> dict[str, str]:
    """The standard ``AWS_*`` variables that send every AWS client to a local endpoint."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": LOCAL_ACCESS_KEY,
    }


@contextmanager
def start_moto_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run moto's server (all services) in a thread; yields its base URL with the bound port."""
    # Imported here: moto is an optional dependency (the ``local`` extra), needed only for this.
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    # werkzeug logs every request to stderr unless its logger already has a level; the local
    # stack's own output (and the worker's structured logs) would drown in it.
    werkzeug_logger = logging.getLogger("werkzeug")
    if werkzeug_logger.level == logging.NOTSET:
        werkzeug_logger.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        # With port 0 the OS picks the port; the server socket knows which one it got.
        bound_host, bound_port = server.get_host_and_port()
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.stop()


async def provision(
    sqs: SQSClient,
    sns: SNSClient,
    *,
    prefix: str = "moderation",
    fifo: bool = False,
    with_dlq: bool = True,
    redrive_max_receive_count: int = 5,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
) -> LocalResources:
    """Create the queues, topics and subscriptions (idempotent: existing ones are reused)."""
    # Three independent chains, created concurrently: the demo starts faster, and so do tests.
    (queue_url, dead_letter_queue_url), safe, unsafe = await asyncio.gather(
        _create_source_queues(
            sqs,
            prefix,
            fifo=fifo,
            with_dlq=with_dlq,
            redrive_max_receive_count=redrive_max_receive_count,
            visibility_timeout=visibility_timeout,
        ),
        _create_topic_with_reader(sqs, sns, f"{prefix}-safe", fifo=fifo),
        _create_topic_with_reader(sqs, sns, f"{prefix}-unsafe", fifo=fifo),
    )
    return LocalResources(
        queue_url=queue_url,
        safe_topic_arn=safe[0],
        unsafe_topic_arn=unsafe[0],
        safe_subscriber_queue_url=safe[1],
        unsafe_subscriber_queue_url=unsafe[1],
        dead_letter_queue_url=dead_letter_queue_url,
        fifo=fifo,
    )


async def _create_source_queues(
    sqs: SQSClient,
    prefix: str,
    *,
    fifo: bool,
    with_dlq: bool,
    redrive_max_receive_count: int,
    visibility_timeout: int,
) -> tuple[str, str | None]:
    attributes: dict[QueueAttributeNameType, str] = {"VisibilityTimeout": str(visibility_timeout)}
    dead_letter_queue_url = None
    if with_dlq:
        dead_letter_queue_url = await _create_queue(sqs, f"{prefix}-dead-letter", fifo=fifo)
        redrive_policy = {
            "deadLetterTargetArn": await _queue_arn(sqs, dead_letter_queue_url),
            "maxReceiveCount": str(redrive_max_receive_count),
        }
        attributes["RedrivePolicy"] = json.dumps(redrive_policy)
    queue_url = await _create_queue(sqs, f"{prefix}-requests", fifo=fifo, attributes=attributes)
    return queue_url, dead_letter_queue_url


async def _create_queue(
    sqs: SQSClient,
    name: str,
    *,
    fifo: bool,
    attributes: dict[QueueAttributeNameType, str] | None = None,
) -> str:
    attributes = dict(attributes or {})
    if fifo:
        name += ".fifo"
        # Off, so that deduplication follows the explicit MessageDeduplicationId we send.
        attributes |= {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    response = await sqs.create_queue(QueueName=name, Attributes=attributes)
    return response["QueueUrl"]


async def _queue_arn(sqs: SQSClient, queue_url: str) -> str:
    response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return response["Attributes"]["QueueArn"]


async def _create_topic(sns: SNSClient, name: str, *, fifo: bool) -> str:
    attributes = {}
    if fifo:
        name += ".fifo"
        attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"}
    response = await sns.create_topic(Name=name, Attributes=attributes)
    return response["TopicArn"]


async def _create_topic_with_reader(
    sqs: SQSClient, sns: SNSClient, topic_name: str, *, fifo: bool
) -> tuple[str, str]:
    """A topic and a queue subscribed to it with raw delivery; returns (topic ARN, queue URL)."""
    topic_arn, (queue_url, queue_arn) = await asyncio.gather(
        _create_topic(sns, topic_name, fifo=fifo),
        _create_queue_with_arn(sqs, f"{topic_name}-verdicts", fifo=fifo),
    )
    # moto does not check queue policies, but real SQS drops SNS deliveries without this one.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    await sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    # Raw delivery: the verdict JSON is the SQS body and SNS attributes become SQS attributes.
    await sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return topic_arn, queue_url


async def _create_queue_with_arn(sqs: SQSClient, name: str, *, fifo: bool) -> tuple[str, str]:
    queue_url = await _create_queue(sqs, name, fifo=fifo)
    return queue_url, await _queue_arn(sqs, queue_url)


async def take_messages(
    sqs: SQSClient, queue_url: str, *, wait_seconds: int = 0
) -> list[MessageTypeDef]:
    """Receive up to ten messages with all their attributes, and delete them at once.

    How the demo, the chaos harness and the tests read subscriber queues and dead-letter queues:
    deleting straight away also lets a FIFO queue hand out the next message of a group.
    """
    response = await sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_seconds,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    messages = response.get("Messages", [])
    if messages:
        await sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(messages)
            ],
        )
    return messages
