"""The SageMaker backend: ``invoke_endpoint`` on a real-time endpoint serving Llama Guard."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from worker.adapters.aws import AWS_ERRORS, classifier_error_from
from worker.core.models import Completion
from worker.core.prompt import build_request_body
from worker.core.response import decode_generation

if TYPE_CHECKING:
    from types_aiobotocore_sagemaker_runtime import SageMakerRuntimeClient


class SageMakerClassifier:
    """A Llama Guard model behind a SageMaker real-time endpoint (e.g. a JumpStart deployment)."""

    backend = "sagemaker"

    def __init__(
        self,
        client: SageMakerRuntimeClient,
        endpoint_name: str,
        parameters: Mapping[str, Any],
        *,
        target_variant: str | None = None,
        inference_component: str | None = None,
        custom_attributes: str | None = None,
    ) -> None:
        self._client = client
        self._endpoint_name = endpoint_name
        self._parameters = dict(parameters)
        self._routing: dict[str, str] = {}
        if target_variant:
            self._routing["TargetVariant"] = target_variant
        if inference_component:
            self._routing["InferenceComponentName"] = inference_component
        if custom_attributes:
            self._routing["CustomAttributes"] = custom_attributes

    @property
    def endpoint(self) -> str:
        return self._endpoint_name

    async def classify(self, prompt: str) -> Completion:
        body = json.dumps(build_request_body(prompt, self._parameters), ensure_ascii=False)
        try:
            response = await self._client.invoke_endpoint(
                EndpointName=self._endpoint_name,
                Body=body.encode("utf-8"),
                ContentType="application/json",
                Accept="application/json",
                **self._routing,
            )
            async with response["Body"] as stream:
                payload = await stream.read()
        except AWS_ERRORS as exc:
            raise classifier_error_from(exc) from exc
        return decode_generation(payload, prompt)
