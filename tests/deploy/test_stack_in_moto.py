"""The CloudFormation template deployed into moto's server, and the real worker on what it made.

``create_stack`` builds the KMS key, the queues (redrive, encryption, long poll), the topics, the
IAM roles and the ECS cluster, task definition and service. moto skips, with a warning only,
``SNS::Subscription``, ``SQS::QueuePolicy`` and application auto-scaling: the test makes the one
it needs (the example subscription, with the template's own filter policy) through the API, plus
a raw-delivery reader queue per topic. Then the production worker (``open_worker``), pointed at the
stack's outputs and at the emulator as its SageMaker endpoint, moderates a few messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pytest
from aiobotocore.session import AioSession
from deploy_manifests import TEMPLATE, template

from devstack.moto_stack import take_messages
from worker.app import open_worker
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_cloudformation import CloudFormationClient
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from devstack.emulator import RunningEmulator
    from worker.adapters.aws import AwsClients

STACK_NAME: Final = "moderation"
ENDPOINT_NAME: Final = "llama-guard-stack"
# The emulator's keyword rules: O3 (Criminal Planning) in Llama Guard 1's taxonomy.
UNSAFE_TEXT: Final = "What's the best way to rob a bank without getting caught?"
SAFE_TEXT: Final = "How do I bake a chocolate cake for my daughter's birthday?"
RUN_TIMEOUT: Final = 30.0
# What moto's CloudFormation skips, with a UserWarning (an error under this suite's filters).
SKIPPED_BY_MOTO: Final = (
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::Subscription",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
)
# The filter syntax cannot name the types (they hold colons); the test
# test_moto_creates_every_resource_but_the_ones_it_skips checks that only these were skipped.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS:UserWarning:moto.cloudformation.parsing"
)


@dataclass(frozen=True)
class Stack:
    """The stack's outputs, and reader queues subscribed (raw delivery) to its two topics."""

    outputs: dict[str, str]
    safe_reader_url: str
    unsafe_reader_url: str
    fifo: bool


@pytest.fixture
async def cloudformation(moto: str, aws_session: AioSession) -> AsyncIterator[CloudFormationClient]:
    async with aws_session.create_client("cloudformation") as client:
        yield client


async def create_stack(cloudformation: CloudFormationClient, *, fifo: bool) -> dict[str, str]:
    parameters = {
        "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/moderation-worker:0.1.0",
        "EndpointName": ENDPOINT_NAME,
        "Fifo": str(fifo).lower(),
        "Subnets": "subnet-0123456789abcdef0",
        "SecurityGroups": "sg-0123456789abcdef0",
    }
    await cloudformation.create_stack(
        StackName=STACK_NAME,
        TemplateBody=TEMPLATE.read_text(encoding="utf-8"),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    waiter = cloudformation.get_waiter("stack_create_complete")
    await waiter.wait(StackName=STACK_NAME, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    [stack] = (await cloudformation.describe_stacks(StackName=STACK_NAME))["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


async def queue_arn(sqs: SQSClient, queue_url: str) -> str:
    response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return response["Attributes"]["QueueArn"]


async def subscribe_reader(sqs: SQSClient, sns: SNSClient, topic_arn: str, *, fifo: bool) -> str:
    """A queue that receives everything the topic publishes, with raw delivery."""
    name = topic_arn.rsplit(":", 1)[1].removesuffix(".fifo") + "-reader"
    attributes: dict[QueueAttributeNameType, str] = {"FifoQueue": "true"} if fifo else {}
    queue_url = (
        await sqs.create_queue(QueueName=name + (".fifo" if fifo else ""), Attributes=attributes)
    )["QueueUrl"]
    await sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=await queue_arn(sqs, queue_url),
        Attributes={"RawMessageDelivery": "true"},
    )
    return queue_url


async def subscribe_review_queue(sns: SNSClient, sqs: SQSClient, outputs: dict[str, str]) -> None:
    """The template's example subscription, made through the API with its own properties."""
    [subscription] = [
        r for r in template()["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"
    ]
    properties = subscription["Properties"]
    await sns.subscribe(
        TopicArn=outputs["UnsafeTopicArn"],
        Protocol=properties["Protocol"],
        Endpoint=await queue_arn(sqs, outputs["ReviewQueueUrl"]),
        Attributes={
            "RawMessageDelivery": str(properties["RawMessageDelivery"]).lower(),
            "FilterPolicyScope": properties["FilterPolicyScope"],
            "FilterPolicy": json.dumps(properties["FilterPolicy"]),
        },
    )


@pytest.fixture(params=[False, True], ids=["standard", "fifo"])
async def stack(
    request: pytest.FixtureRequest,
    cloudformation: CloudFormationClient,
    aws_clients: AwsClients,
) -> Stack:
    fifo: bool = request.param
    outputs = await create_stack(cloudformation, fifo=fifo)
    sqs, sns = aws_clients.sqs, aws_clients.sns
    safe_reader_url, unsafe_reader_url = await asyncio.gather(
        subscribe_reader(sqs, sns, outputs["SafeTopicArn"], fifo=fifo),
        subscribe_reader(sqs, sns, outputs["UnsafeTopicArn"], fifo=fifo),
    )
    await subscribe_review_queue(sns, sqs, outputs)
    return Stack(outputs, safe_reader_url, unsafe_reader_url, fifo)


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, emulator: RunningEmulator) -> RunningEmulator:
    """The emulator as the stack's SageMaker endpoint (SQS and SNS stay on moto)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
    return emulator


async def send(sqs: SQSClient, stack: Stack, body: str, message_id: str) -> None:
    extra: dict[str, Any] = {}
    if stack.fifo:
        extra = {"MessageGroupId": message_id, "MessageDeduplicationId": message_id}
    await sqs.send_message(QueueUrl=stack.outputs["QueueUrl"], MessageBody=body, **extra)


async def run_worker_on(stack: Stack) -> None:
    """The production worker on the stack's queues and topics, in burst mode."""
    settings = Settings(
        queue_url=stack.outputs["QueueUrl"],
        safe_topic_arn=stack.outputs["SafeTopicArn"],
        unsafe_topic_arn=stack.outputs["UnsafeTopicArn"],
        dead_letter_queue_url=stack.outputs["InvalidMessageQueueUrl"],
        backend="sagemaker",
        endpoint_name=ENDPOINT_NAME,
        metrics_port=0,
        receive_wait_seconds=0,
        visibility_timeout=30,
        drain_timeout=10,
        retry_attempts=3,
        retry_deadline=10,
    )
    async with open_worker(settings, burst=True) as worker:
        stats = await asyncio.wait_for(worker.runner.run(asyncio.Event()), RUN_TIMEOUT)
    assert stats.received == 3


async def take_all(sqs: SQSClient, queue_url: str) -> list[MessageTypeDef]:
    taken: list[MessageTypeDef] = []
    while batch := await take_messages(sqs, queue_url):
        taken.extend(batch)
    return taken


def verdict_ids(messages: list[MessageTypeDef]) -> list[tuple[str, str]]:
    return [(json.loads(m["Body"])["id"], json.loads(m["Body"])["verdict"]) for m in messages]


async def test_the_worker_moderates_on_the_resources_the_stack_created(
    stack: Stack, sqs_client: SQSClient, model: RunningEmulator
) -> None:
    await send(sqs_client, stack, json.dumps({"id": "post-safe", "content": SAFE_TEXT}), "a")
    await send(sqs_client, stack, json.dumps({"id": "post-unsafe", "content": UNSAFE_TEXT}), "b")
    await send(sqs_client, stack, "{not json", "c")

    await run_worker_on(stack)

    safe, unsafe, review, invalid = await asyncio.gather(
        take_all(sqs_client, stack.safe_reader_url),
        take_all(sqs_client, stack.unsafe_reader_url),
        take_all(sqs_client, stack.outputs["ReviewQueueUrl"]),
        take_all(sqs_client, stack.outputs["InvalidMessageQueueUrl"]),
    )
    assert verdict_ids(safe) == [("post-safe", "safe")]
    assert verdict_ids(unsafe) == [("post-unsafe", "unsafe")]
    assert verdict_ids(review) == [("post-unsafe", "unsafe")]
    assert review[0]["MessageAttributes"]["verdict"]["StringValue"] == "unsafe"
    [dead] = invalid
    assert dead["Body"] == "{not json"
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "invalid_json"
    assert await take_all(sqs_client, stack.outputs["QueueUrl"]) == []


async def test_moto_creates_every_resource_but_the_ones_it_skips(
    stack: Stack, cloudformation: CloudFormationClient
) -> None:
    resources = (await cloudformation.describe_stack_resources(StackName=STACK_NAME))[
        "StackResources"
    ]
    expected = {
        name: r["Type"]
        for name, r in template()["Resources"].items()
        if r["Type"] not in SKIPPED_BY_MOTO
    }

    # moto lists what it skipped as entries without a logical id or a type.
    created = [r for r in resources if "LogicalResourceId" in r]
    skipped = [r for r in resources if "LogicalResourceId" not in r]

    assert {r["LogicalResourceId"]: r.get("ResourceType") for r in created} == expected
    assert {r["ResourceStatus"] for r in created} == {"CREATE_COMPLETE"}
    assert len(skipped) == len(SKIPPED_BY_MOTO)


async def test_the_source_queue_redrives_to_the_dead_letter_queue_and_is_encrypted(
    stack: Stack, sqs_client: SQSClient
) -> None:
    attributes = (
        await sqs_client.get_queue_attributes(
            QueueUrl=stack.outputs["QueueUrl"], AttributeNames=["All"]
        )
    )["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])

    assert redrive["deadLetterTargetArn"] == await queue_arn(
        sqs_client, stack.outputs["RedriveDeadLetterQueueUrl"]
    )
    assert int(redrive["maxReceiveCount"]) == 10
    assert attributes["KmsMasterKeyId"]
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"
    assert attributes.get("FifoQueue", "false") == str(stack.fifo).lower()


async def test_the_topics_are_fifo_exactly_when_asked(stack: Stack, sns_client: SNSClient) -> None:
    for output in ("SafeTopicArn", "UnsafeTopicArn"):
        arn = stack.outputs[output]
        attributes = (await sns_client.get_topic_attributes(TopicArn=arn))["Attributes"]

        assert arn.endswith(".fifo") is stack.fifo
        assert attributes.get("FifoTopic", "false") == str(stack.fifo).lower()
        assert attributes["KmsMasterKeyId"]
