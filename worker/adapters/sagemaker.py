"""The SageMaker transport: ``invoke_endpoint`` on a real-time endpoint serving Llama Guard.

The body is the configured protocol's: TGI's for a JumpStart TGI endpoint, the OpenAI
completions body for an LMI (vLLM) endpoint. Errors are translated in ``worker.adapters.aws``
whatever the protocol: a container's own answer arrives as ``ModelError`` with its status and
body.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from worker.adapters.aws import AWS_ERRORS, classifier_error_from
from worker.core.models import Completion
from worker.core.protocols import RequestProtocol

if TYPE_CHECKING:
    from types_aiobotocore_sagemaker_runtime import SageMakerRuntimeClient


class SageMakerClassifier:
    """A Llama Guard model behind a SageMaker real-time endpoint (e.g. a JumpStart deployment)."""

    backend = "sagemaker"

    def __init__(
        self,
        client: SageMakerRuntimeClient,
        endpoint_name: str,
        protocol: RequestProtocol,
        *,
        target_variant: str | None = None,
        inference_component: str | None = None,
        custom_attributes: str | None = None,
    ) -> None:
        self._client = client
        self._endpoint_name = endpoint_name
        self._protocol = protocol
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
        body = json.dumps(self._protocol.request_body(prompt), ensure_ascii=False)
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
        return self._protocol.decode(payload, prompt)
