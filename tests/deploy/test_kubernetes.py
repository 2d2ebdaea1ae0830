"""deploy/kubernetes: the base and the example overlay, rendered and validated offline.

Built-in kinds go through ``kubernetes-validate --strict`` (a misspelt field fails only with
--strict); KEDA's kinds, which it has no schema for, through cloudcoil's KEDA models plus an
unknown-key walk (pydantic ignores unknown keys). The rest checks what no schema knows: the
settings the worker will read, the grace period against the drain, and the queue KEDA watches.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from deploy_manifests import BASE, OVERLAY, Document, find, render, unknown_keys

from worker.settings import Settings, load_settings

KUBERNETES_VERSION: Final = "1.37.0"
KEDA_KINDS: Final = {
    "ScaledObject": keda.ScaledObject,
    "TriggerAuthentication": keda.TriggerAuthentication,
}
RENDERINGS: Final = pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])


def built_in(documents: list[Document]) -> list[Document]:
    return [document for document in documents if document["kind"] not in KEDA_KINDS]


def kubernetes_validate(
    documents: list[Document], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    command = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run(  # noqa: S603 - our own venv's tool on our own file
        [command, "--strict", "--kubernetes-version", KUBERNETES_VERSION, manifest],
        capture_output=True,
        text=True,
        check=False,
    )


def container(documents: list[Document]) -> dict[str, Any]:
    [worker] = find(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(worker, dict)
    return worker


def configuration(documents: list[Document]) -> dict[str, str]:
    data = find(documents, "ConfigMap", "moderation-worker")["data"]
    assert isinstance(data, dict)
    return data


# --- rendering ------------------------------------------------------------------------------------


@RENDERINGS
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl to compare with")
def test_the_renderer_prints_what_kubectl_kustomize_prints(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    printed = subprocess.run(  # noqa: S603 - kubectl on our own directory
        [kubectl, "kustomize", directory], capture_output=True, text=True, check=True
    ).stdout

    def key(document: Document) -> tuple[str, str]:
        return document["kind"], document["metadata"]["name"]

    expected = sorted((d for d in yaml.safe_load_all(printed) if d), key=key)
    assert sorted(render(directory), key=key) == expected


# --- schemas --------------------------------------------------------------------------------------


@RENDERINGS
def test_every_built_in_resource_passes_kubernetes_validate_strict(
    directory: Path, tmp_path: Path
) -> None:
    documents = built_in(render(directory))

    result = kubernetes_validate(documents, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(documents)


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The control for the test above: a typo such as ``livenesProbe`` does fail."""
    documents = built_in(render(BASE))
    worker = container(documents)
    worker["livenesProbe"] = worker.pop("livenessProbe")

    result = kubernetes_validate(documents, tmp_path)

    assert result.returncode != 0
    assert "livenesProbe" in result.stdout + result.stderr


@RENDERINGS
@pytest.mark.parametrize("kind", sorted(KEDA_KINDS))
def test_keda_resources_match_the_keda_schema_without_unknown_keys(
    directory: Path, kind: str
) -> None:
    document = find(render(directory), kind)
    model = KEDA_KINDS[kind]

    model.model_validate(document)
    assert list(unknown_keys(model, document)) == []


def test_the_unknown_key_check_finds_a_misspelt_keda_field() -> None:
    """pydantic alone accepts the typos; the walk names them."""
    scaled_object = copy.deepcopy(find(render(BASE), "ScaledObject"))
    scaled_object["spec"]["pollingIntervall"] = 15
    scaled_object["spec"]["triggers"][0]["authenticationRef"]["nmae"] = "x"

    keda.ScaledObject.model_validate(scaled_object)
    assert sorted(unknown_keys(keda.ScaledObject, scaled_object)) == [
        "spec.pollingIntervall",
        "spec.triggers[0].authenticationRef.nmae",
    ]


@RENDERINGS
def test_every_trigger_metadata_value_is_a_string(directory: Path) -> None:
    """KEDA's CRD rejects unquoted numbers and booleans under ``triggers[].metadata``."""
    [trigger] = find(render(directory), "ScaledObject")["spec"]["triggers"]

    assert trigger["metadata"]
    assert {name: type(value) for name, value in trigger["metadata"].items()} == dict.fromkeys(
        trigger["metadata"], str
    )


# --- what the worker needs ------------------------------------------------------------------------


@RENDERINGS
def test_the_configmap_is_a_valid_worker_configuration(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = configuration(render(directory))
    for name, value in data.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.queue_url == data["MODERATION_QUEUE_URL"]
    assert settings.drain_timeout == float(data["MODERATION_DRAIN_TIMEOUT"])


def test_every_moderation_variable_in_the_configmap_is_a_setting() -> None:
    """Settings ignore unknown variables, so a misspelt name would be silently dropped."""
    names = {name for name in configuration(render(BASE)) if name.startswith("MODERATION_")}

    assert {name.removeprefix("MODERATION_").lower() for name in names} <= set(
        Settings.model_fields
    )


@RENDERINGS
def test_the_deployment_leaves_the_replica_count_to_keda(directory: Path) -> None:
    documents = render(directory)

    assert "replicas" not in find(documents, "Deployment")["spec"]
    assert find(documents, "ScaledObject")["spec"]["scaleTargetRef"]["name"] == "moderation-worker"


@RENDERINGS
def test_the_grace_period_outlasts_the_drain_timeout(directory: Path) -> None:
    documents = render(directory)
    grace = find(documents, "Deployment")["spec"]["template"]["spec"]
    drain = float(configuration(documents)["MODERATION_DRAIN_TIMEOUT"])

    assert grace["terminationGracePeriodSeconds"] > drain


def test_the_container_runs_locked_down() -> None:
    documents = render(BASE)
    pod = find(documents, "Deployment")["spec"]["template"]["spec"]
    security = container(documents)["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "limits" in container(documents)["resources"]


def test_the_probes_ask_the_health_endpoints_on_the_metrics_port() -> None:
    documents = render(BASE)
    worker = container(documents)
    [port] = worker["ports"]

    assert port["containerPort"] == int(configuration(documents)["MODERATION_METRICS_PORT"])
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}


@RENDERINGS
def test_keda_watches_the_queue_the_worker_consumes(directory: Path) -> None:
    documents = render(directory)
    [trigger] = find(documents, "ScaledObject")["spec"]["triggers"]
    data = configuration(documents)

    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["metadata"]["queueURL"] == data["MODERATION_QUEUE_URL"]
    assert trigger["metadata"]["awsRegion"] == data["AWS_REGION"]
    assert trigger["metadata"]["scaleOnInFlight"] == "true"
    assert trigger["authenticationRef"]["name"] == "moderation-worker"


def test_keda_authenticates_with_the_workloads_pod_identity() -> None:
    authentication = find(render(BASE), "TriggerAuthentication")

    assert authentication["spec"] == {
        "podIdentity": {"provider": "aws", "identityOwner": "workload"}
    }


@RENDERINGS
def test_the_pods_use_the_service_account_with_the_irsa_role(directory: Path) -> None:
    documents = render(directory)
    account = find(documents, "ServiceAccount")
    pod = find(documents, "Deployment")["spec"]["template"]["spec"]

    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )


def test_the_disruption_budget_selects_the_workers_pods() -> None:
    documents = render(BASE)
    labels = find(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    budget = find(documents, "PodDisruptionBudget")["spec"]

    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1


def test_the_network_policy_admits_only_the_metrics_port() -> None:
    documents = render(BASE)
    labels = find(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    policy = find(documents, "NetworkPolicy")["spec"]

    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9102}]}]


def test_the_overlay_sets_image_queue_role_and_replica_bounds() -> None:
    base, overlay = render(BASE), render(OVERLAY)

    assert container(overlay)["image"].endswith("/moderation-worker:0.1.0")
    assert (
        configuration(overlay)["MODERATION_QUEUE_URL"]
        != configuration(base)["MODERATION_QUEUE_URL"]
    )
    role = "eks.amazonaws.com/role-arn"
    assert (
        find(overlay, "ServiceAccount")["metadata"]["annotations"][role]
        != find(base, "ServiceAccount")["metadata"]["annotations"][role]
    )
    spec = find(overlay, "ScaledObject")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 30)
    assert {d["metadata"].get("namespace") for d in overlay if d["kind"] != "Namespace"} == {
        "moderation"
    }
