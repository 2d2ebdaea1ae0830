"""How each failure looks on the wire, per route: SageMaker runtime, TGI and vLLM errors.

Pure (no I/O). A request that fails raises ``Failure`` inside the server; the route then renders
it. SageMaker errors follow the ``sagemaker-runtime`` service model (rest-json): status from
the model, header ``x-amzn-ErrorType: <Code>``, JSON body with ``Message`` (botocore reads
``message`` or ``Message``) plus the modelled members of ``ModelError``. An error of the TGI
container behind SageMaker becomes ``ModelError`` (424) whose ``OriginalStatusCode`` is the
container's status and ``OriginalMessage`` the container's JSON body, as the real service does;
the container is TGI or, for an OpenAI completions body (an LMI endpoint), vLLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from devstack.emulator.tgi import TgiError
from devstack.emulator.vllm import VllmError, unknown_model

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"

FailureKind = Literal[
    "throttled",
    "not_ready",
    "server_error",
    "internal_failure",
    "model_error",
    "container",
    "endpoint_not_found",
    "unreadable_response",
]

#: What the "unreadable_response" fault answers, with status 200, on both routes.
UNREADABLE_BODY = "<html><body><h1>502 Bad Gateway</h1></body></html>"

# What the "model_error" fault makes the container answer: a crash during generation.
GENERATION_FAILURE = TgiError(
    424,
    "Request failed during generation: Server error: CUDA out of memory. "
    "Tried to allocate 2.00 GiB",
    "generation",
    outcome="model_error",
)
# The same fault in vLLM: its engine died during generation.
VLLM_GENERATION_FAILURE = VllmError(
    500,
    "EngineCore encountered an issue. See stack trace (above) for the root cause.",
    "InternalServerError",
    outcome="model_error",
)
# The model_error fault is reported by SageMaker with this original status.
MODEL_ERROR_ORIGINAL_STATUS = 500
_FIRST_SERVER_STATUS = 500


class Failure(Exception):
    """A request the emulator answers with an error; ``container`` is set for kind "container"."""

    def __init__(
        self, kind: FailureKind, container: TgiError | None = None, *, outcome: str | None = None
    ) -> None:
        super().__init__(kind)
        self.kind: FailureKind = kind
        self.container = container
        self._outcome = outcome

    @property
    def outcome(self) -> str:
        """The stats bucket this failure counts in."""
        if self._outcome is not None:
            return self._outcome
        if self.container is not None:
            return self.container.outcome
        return self.kind


@dataclass(frozen=True, slots=True)
class SageMakerError:
    """One SageMaker runtime error response."""

    code: str
    status: int
    message: str
    members: dict[str, object] = field(default_factory=dict)

    def body(self) -> dict[str, object]:
        """The JSON body botocore parses (``Message`` plus modelled members)."""
        return {"Message": self.message, **self.members}


_PLAIN_SAGEMAKER_ERRORS: dict[FailureKind, tuple[str, int, str]] = {
    "throttled": ("ThrottlingException", 400, "Rate exceeded"),
    "not_ready": (
        "ModelNotReadyException",
        429,
        "Model is not ready yet: it is still being loaded. Try your request again later.",
    ),
    "server_error": ("ServiceUnavailable", 503, "Service Unavailable"),
    "internal_failure": ("InternalFailure", 500, "An internal failure occurred."),
}

_TGI_ERRORS: dict[FailureKind, TgiError] = {
    "throttled": TgiError(429, "Model is overloaded", "overloaded", outcome="throttled"),
    "not_ready": TgiError(503, "Model is not ready", "unavailable", outcome="not_ready"),
    "server_error": TgiError(503, "Service Unavailable", "unavailable", outcome="server_error"),
    "internal_failure": TgiError(
        500, "Incomplete generation", "incomplete_generation", outcome="internal_failure"
    ),
    "model_error": GENERATION_FAILURE,
}


def sagemaker_error(failure: Failure, endpoint: str, *, vllm: bool = False) -> SageMakerError:
    """The SageMaker runtime's answer to ``failure`` on ``/endpoints/{endpoint}/invocations``.

    ``vllm``: the body was an OpenAI completions body, so the container is vLLM (LMI).
    """
    plain = _PLAIN_SAGEMAKER_ERRORS.get(failure.kind)
    if plain is not None:
        code, status, message = plain
        return SageMakerError(code=code, status=status, message=message)
    if failure.kind == "endpoint_not_found":
        return SageMakerError(
            code="ValidationError",
            status=400,
            message=f"Endpoint {endpoint} of account {ACCOUNT_ID} not found.",
        )
    if failure.kind == "model_error":
        crash = VLLM_GENERATION_FAILURE if vllm else GENERATION_FAILURE
        return model_error(crash, endpoint, original_status=MODEL_ERROR_ORIGINAL_STATUS)
    container = failure.container
    if container is None:
        raise ValueError(f"failure kind {failure.kind!r} needs a container error")
    return model_error(container, endpoint, original_status=container.status)


def model_error(container: TgiError, endpoint: str, *, original_status: int) -> SageMakerError:
    """``ModelError``: the container behind the endpoint answered ``original_status``."""
    original = container.body_text()
    side = "client" if original_status < _FIRST_SERVER_STATUS else "server"
    log_group = f"/aws/sagemaker/Endpoints/{endpoint}"
    message = (
        f'Received {side} error ({original_status}) from primary with message "{original}". '
        f"See https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}"
        f"#logEventViewer:group={log_group} in account {ACCOUNT_ID} for more information."
    )
    return SageMakerError(
        code="ModelError",
        status=424,
        message=message,
        members={
            "OriginalStatusCode": original_status,
            "OriginalMessage": original,
            "LogStreamArn": f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{log_group}",
        },
    )


def tgi_error(failure: Failure) -> TgiError:
    """TGI's answer to ``failure`` on ``/generate``."""
    if failure.container is not None:
        return failure.container
    known = _TGI_ERRORS.get(failure.kind)
    if known is not None:
        return known
    return TgiError(404, "Not Found", "not_found", outcome=failure.outcome)


_VLLM_ERRORS: dict[FailureKind, VllmError] = {
    # vLLM queues rather than refusing; a 429 comes from the gateway in front of it.
    "throttled": VllmError(
        429, "Too many requests: the server is at capacity", "RateLimitError", outcome="throttled"
    ),
    "not_ready": VllmError(
        503, "The model is still loading", "ServiceUnavailableError", outcome="not_ready"
    ),
    "server_error": VllmError(
        503, "Service Unavailable", "ServiceUnavailableError", outcome="server_error"
    ),
    "internal_failure": VllmError(
        500, "Internal Server Error", "InternalServerError", outcome="internal_failure"
    ),
    "model_error": VLLM_GENERATION_FAILURE,
}


def vllm_error(failure: Failure, model: str | None) -> VllmError:
    """vLLM's answer to ``failure`` on ``/v1/completions``; "not found" is an unknown model."""
    if isinstance(failure.container, VllmError):
        return failure.container
    known = _VLLM_ERRORS.get(failure.kind)
    if known is not None:
        return known
    return unknown_model(model)


def json_text(document: object) -> str:
    """Compact JSON, as both services send it."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)
