"""Reading deploy/ for the tests: the template, a small kustomize, and an unknown-key check.

There is no kustomize binary in the lock (nor on PyPI), so ``render`` implements the part of
kustomize that deploy/kubernetes uses, and refuses anything else rather than ignoring it:
``resources`` (files and directories), ``namespace``, ``images``, and ``patches`` given by
``path`` (a strategic-merge patch, or a JSON 6902 list of operations with a ``target``).
``test_kubernetes.py`` compares its output with ``kubectl kustomize`` where kubectl exists.

``unknown_keys`` walks a document alongside a pydantic model: pydantic ignores keys it does not
know, so a misspelt field in a KEDA resource would otherwise pass the schema check.
"""

from __future__ import annotations

import copy
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Final, Union, get_args, get_origin

import yaml
from cfnlint.decode import cfn_yaml
from pydantic import BaseModel

REPOSITORY: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPOSITORY / "deploy"
KUBERNETES: Final = DEPLOY / "kubernetes"
BASE: Final = KUBERNETES / "base"
OVERLAY: Final = KUBERNETES / "overlays" / "example"
TEMPLATE: Final = DEPLOY / "cloudformation" / "moderation-worker.yaml"

Document = dict[str, Any]

_SUPPORTED_KUSTOMIZATION_KEYS: Final = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
)
_CLUSTER_SCOPED_KINDS: Final = frozenset({"Namespace"})
# Strategic-merge keys of the Kubernetes API for the lists a patch here may touch; any other list
# is replaced whole, as kustomize does.
_MERGE_KEYS: Final = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


class UnsupportedKustomization(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def template() -> dict[str, Any]:
    """The CloudFormation template as plain JSON data (intrinsic functions in their long form)."""
    loaded = json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))
    assert isinstance(loaded, dict)
    return loaded


def load_documents(path: Path) -> list[Document]:
    """Every non-empty YAML document in a file."""
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document]


def render(directory: Path) -> list[Document]:
    """The resources ``kubectl kustomize directory`` would print (in file order)."""
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    unsupported = set(kustomization) - _SUPPORTED_KUSTOMIZATION_KEYS
    if unsupported:
        raise UnsupportedKustomization(f"{directory}: {sorted(unsupported)}")
    documents: list[Document] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        documents.extend(render(path) if path.is_dir() else load_documents(path))
    for patch in kustomization.get("patches", []):
        _apply_patch(documents, directory, patch)
    for image in kustomization.get("images", []):
        _set_image(documents, image)
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] not in _CLUSTER_SCOPED_KINDS:
                document["metadata"]["namespace"] = kustomization["namespace"]
    return documents


def find(documents: list[Document], kind: str, name: str | None = None) -> Document:
    """The one document of this kind (and name)."""
    [found] = [
        document
        for document in documents
        if document["kind"] == kind and name in (None, document["metadata"]["name"])
    ]
    return found


def _apply_patch(documents: list[Document], directory: Path, patch: dict[str, Any]) -> None:
    if set(patch) - {"path", "target"}:
        raise UnsupportedKustomization(f"patch {patch}")
    [content] = load_documents(directory / patch["path"])
    if isinstance(content, list):
        target = patch["target"]
        document = find(documents, target["kind"], target.get("name"))
        for operation in content:
            _json6902(document, operation)
        return
    document = find(documents, content["kind"], content["metadata"]["name"])
    group = document["apiVersion"].rpartition("/")[0]
    built_in = "." not in group or group.endswith(".k8s.io")
    merged = _strategic_merge(document, content, built_in=built_in)
    document.clear()
    document.update(merged)


def _strategic_merge(base: Any, patch: Any, *, built_in: bool, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = _strategic_merge(base.get(key), value, built_in=built_in, field=key)
        return merged
    merge_key = _MERGE_KEYS.get(field) if built_in else None
    if isinstance(base, list) and isinstance(patch, list) and merge_key is not None:
        merged_list = list(base)
        for item in patch:
            positions = [
                i for i, old in enumerate(merged_list) if old[merge_key] == item[merge_key]
            ]
            if positions:
                merged_list[positions[0]] = _strategic_merge(
                    merged_list[positions[0]], item, built_in=built_in
                )
            else:
                merged_list.append(item)
        return merged_list
    return copy.deepcopy(patch)


def _json6902(document: Document, operation: dict[str, Any]) -> None:
    if operation["op"] not in {"replace", "add"}:
        raise UnsupportedKustomization(f"JSON patch operation {operation['op']}")
    *parents, last = operation["path"].lstrip("/").split("/")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = operation["value"]
    elif operation["op"] == "replace" and last not in node:
        raise KeyError(f"replace of a missing field: {operation['path']}")
    else:
        node[last] = operation["value"]


def _set_image(documents: list[Document], image: dict[str, str]) -> None:
    for document in documents:
        pod = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            name, _, tag = container["image"].partition(":")
            if name != image["name"]:
                continue
            new_name = image.get("newName", name)
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


# --- unknown keys --------------------------------------------------------------------------------


def unknown_keys(model: type[BaseModel], data: Any, where: str = "") -> Iterator[str]:
    """Dotted paths of the keys in ``data`` that ``model`` (recursively) has no field for."""
    if not isinstance(data, dict):
        return
    fields = {field.alias or name: field.annotation for name, field in model.model_fields.items()}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            yield path
            continue
        yield from _unknown_in_value(fields[key], value, path)


def _unknown_in_value(annotation: Any, value: Any, where: str) -> Iterator[str]:
    # A union of models: a key is unknown only when no member knows it; report the closest.
    verdicts = [list(_unknown_in(model, value, where)) for model in _models_in(annotation)]
    if verdicts:
        yield from min(verdicts, key=len)


def _unknown_in(model: type[BaseModel], value: Any, where: str) -> Iterator[str]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from unknown_keys(model, item, f"{where}[{index}]")
    else:
        yield from unknown_keys(model, value, where)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold: through Optional, Union, List and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    if origin in {Union, types.UnionType, list, Annotated}:
        return [model for argument in get_args(annotation) for model in _models_in(argument)]
    return []
