"""deploy/cloudformation: cfn-lint clean, and what cfn-lint does not check.

cfn-lint misses undefined ids in metric math, bad ``FilterPolicyScope`` values and a Fargate
``StopTimeout`` above 120 s; the task role must grant exactly the actions the README lists.
The template deployed into moto, with the worker on it, is ``test_stack_in_moto.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from deploy_manifests import REPOSITORY, TEMPLATE, template

# cfn-lint's exit code is a bitmask: 2 errors, 4 warnings, 8 informational.
CFN_LINT_ERROR: Final = 2
CFN_LINT_WARNING: Final = 4
CFN_LINT_INFORMATIONAL: Final = 8
FARGATE_MAX_STOP_TIMEOUT: Final = 120


def resource(kind: str) -> list[dict[str, Any]]:
    return [r for r in template()["Resources"].values() if r["Type"] == kind]


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "cfn-lint"
    return subprocess.run(  # noqa: S603 - our own venv's cfn-lint on our own file
        [command, "--", path], capture_output=True, text=True, check=False
    )


def test_cfn_lint_reports_no_error_and_no_warning() -> None:
    result = cfn_lint(TEMPLATE)

    # Warnings fail too: the template has none, and a new one deserves a look.
    assert result.returncode in {0, CFN_LINT_INFORMATIONAL}, result.stdout + result.stderr


def test_cfn_lint_fails_a_template_with_an_error(tmp_path: Path) -> None:
    """The control for the test above: a long poll above SQS's 20 s is an error."""
    broken = tmp_path / "broken.yaml"
    text = TEMPLATE.read_text(encoding="utf-8")
    broken.write_text(
        text.replace("ReceiveMessageWaitTimeSeconds: 20", "ReceiveMessageWaitTimeSeconds: 21")
    )

    result = cfn_lint(broken)

    assert result.returncode & CFN_LINT_ERROR, result.stdout
    assert "E3034 21 is greater than the maximum of 20" in result.stdout


def readme_actions() -> set[str]:
    """The IAM actions in the README's sentence "The worker's role needs ..."."""
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    start = readme.index("The worker's role needs")
    paragraph = readme[start : readme.index("\n\n", start)]
    return set(re.findall(r"`((?:sqs|sns|sagemaker):[A-Za-z]+)`", paragraph))


def task_role_statements() -> dict[str, dict[str, Any]]:
    roles = template()["Resources"]
    [policy] = roles["TaskRole"]["Properties"]["Policies"]
    return {statement["Sid"]: statement for statement in policy["PolicyDocument"]["Statement"]}


def actions_of(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_the_task_role_grants_exactly_the_readme_actions_plus_the_key() -> None:
    statements = task_role_statements()
    granted = {action for statement in statements.values() for action in actions_of(statement)}

    assert readme_actions() == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "sns:Publish",
        "sagemaker:InvokeEndpoint",
    }
    assert granted == readme_actions() | {"kms:GenerateDataKey", "kms:Decrypt"}
    assert all(statement["Effect"] == "Allow" for statement in statements.values())
    assert all("*" not in json.dumps(statement["Resource"]) for statement in statements.values())


def test_each_task_role_action_is_on_its_own_resource() -> None:
    statements = task_role_statements()

    assert statements["ConsumeSourceQueue"]["Resource"] == {"Fn::GetAtt": ["SourceQueue", "Arn"]}
    assert statements["DeadLetterInvalidMessages"]["Resource"] == {
        "Fn::GetAtt": ["InvalidMessageQueue", "Arn"]
    }
    assert statements["PublishVerdicts"]["Resource"] == [
        {"Ref": "SafeTopic"},
        {"Ref": "UnsafeTopic"},
    ]
    assert "endpoint/${EndpointName}" in statements["InvokeModel"]["Resource"]["Fn::Sub"]
    assert statements["UseQueueAndTopicKey"]["Resource"] == {"Fn::GetAtt": ["Key", "Arn"]}


def container() -> dict[str, Any]:
    [task] = resource("AWS::ECS::TaskDefinition")
    [worker] = task["Properties"]["ContainerDefinitions"]
    assert isinstance(worker, dict)
    return worker


def test_the_container_stops_after_the_drain_and_within_fargates_limit() -> None:
    worker = container()
    environment = {variable["Name"]: variable["Value"] for variable in worker["Environment"]}

    assert float(environment["MODERATION_DRAIN_TIMEOUT"]) < worker["StopTimeout"]
    assert worker["StopTimeout"] <= FARGATE_MAX_STOP_TIMEOUT


def test_the_container_is_read_only_non_root_and_health_checked() -> None:
    worker = container()

    assert worker["ReadonlyRootFilesystem"] is True
    assert worker["User"] == "10001"
    assert "/healthz" in " ".join(worker["HealthCheck"]["Command"])


def test_the_scaling_expression_uses_only_defined_metrics() -> None:
    [policy] = resource("AWS::ApplicationAutoScaling::ScalingPolicy")
    configuration = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    metrics = {m["Id"]: m for m in configuration["CustomizedMetricSpecification"]["Metrics"]}
    [expression] = [m for m in metrics.values() if "Expression" in m]

    assert set(re.findall(r"\b[a-z]\w*\b", expression["Expression"])) <= set(metrics)
    assert expression["ReturnData"] is True
    assert [m["Id"] for m in metrics.values() if m.get("ReturnData", True)] == [expression["Id"]]
    queue = metrics["m1"]["MetricStat"]["Metric"]
    tasks = metrics["m2"]["MetricStat"]["Metric"]
    assert (queue["Namespace"], queue["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert (tasks["Namespace"], tasks["MetricName"]) == (
        "ECS/ContainerInsights",
        "RunningTaskCount",
    )


def test_scaling_never_goes_below_one_task_and_insights_are_on() -> None:
    """RunningTaskCount has no data at 0 tasks, and exists only with Container Insights."""
    parameters = template()["Parameters"]
    [target] = resource("AWS::ApplicationAutoScaling::ScalableTarget")
    [cluster] = resource("AWS::ECS::Cluster")

    assert target["Properties"]["MinCapacity"] == {"Ref": "MinTasks"}
    assert parameters["MinTasks"]["MinValue"] >= 1
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["Properties"][
        "ClusterSettings"
    ]


def test_the_example_subscription_filters_on_the_verdict_attribute() -> None:
    [subscription] = resource("AWS::SNS::Subscription")
    properties = subscription["Properties"]

    assert properties["FilterPolicyScope"] in {"MessageAttributes", "MessageBody"}
    assert properties["FilterPolicyScope"] == "MessageAttributes"
    assert "verdict" in properties["FilterPolicy"]
    assert properties["RawMessageDelivery"] is True
