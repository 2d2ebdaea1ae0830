"""Wiring: builds the worker's parts from settings and owns every client it creates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import structlog

from worker.adapters.aws import (
    QUEUES_ONLY,
    SAGEMAKER_ONLY,
    AwsClients,
    ServiceName,
    open_aws_clients,
)
from worker.adapters.openai import OpenAIClassifier
from worker.adapters.sagemaker import SageMakerClassifier
from worker.adapters.sns import SnsSink
from worker.adapters.sqs import SqsSource
from worker.adapters.tgi import TgiClassifier
from worker.backpressure import EndpointGuard, GuardPolicy
from worker.batching import BatchingSink
from worker.cache import AssessmentCache, CacheScope
from worker.core.errors import ConfigurationError
from worker.core.models import Turn
from worker.core.prompt import (
    DEFAULT_PARAMETERS,
    LLAMA3_TOKENIZER_FORMATS,
    check_parameters,
    render_prompt,
)
from worker.core.protocols import (
    OpenAICompletionsProtocol,
    ProtocolName,
    RequestProtocol,
    TgiProtocol,
)
from worker.core.taxonomy import PromptFormat
from worker.health import WorkerSignals
from worker.pipeline import ModerationPolicy, Moderator
from worker.ports import Classifier
from worker.retrying import RetryingClassifier, RetryPolicy
from worker.runner import Runner, RunnerConfig
from worker.settings import ModelSettings, Settings
from worker.taxonomy_file import load_taxonomy
from worker.tokenizer import load_llama3_tokenizer

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from worker.health import Health
    from worker.otel_spans import MessageTracing
    from worker.ports import VerdictSink


def policy_from(settings: ModelSettings) -> ModerationPolicy:
    prompt_format = PromptFormat(settings.prompt_format)
    # Loaded only for the formats it counts exactly; None without the ``tokens`` extra.
    tokenizer = load_llama3_tokenizer() if prompt_format in LLAMA3_TOKENIZER_FORMATS else None
    return ModerationPolicy(
        prompt_format=prompt_format,
        taxonomy=load_taxonomy(prompt_format, settings.taxonomy_file),
        unsafe_threshold=settings.unsafe_threshold,
        max_prompt_chars=settings.max_prompt_chars,
        max_conversation_chars=settings.max_conversation_chars,
        log_content=settings.log_content,
        tokenizer=tokenizer,
        max_prompt_tokens=settings.max_prompt_tokens,
    )


def model_parameters(settings: ModelSettings) -> dict[str, object]:
    """The TGI generation parameters: the defaults, overridden (or removed with null)."""
    parameters = {**DEFAULT_PARAMETERS, **(settings.model_parameters or {})}
    try:
        check_parameters(parameters)
    except ConfigurationError as exc:
        raise ConfigurationError(f"MODERATION_MODEL_PARAMETERS: {exc}") from exc
    return parameters


def protocol_name(settings: ModelSettings) -> ProtocolName:
    """The body the endpoint is sent: the HTTP backend's own, or the SageMaker setting's."""
    if settings.backend == "sagemaker":
        return settings.sagemaker_protocol
    return settings.backend


def request_protocol(settings: ModelSettings) -> RequestProtocol:
    """The configured request protocol; a parameter it refuses stops start-up, naming the variable.

    For the OpenAI protocol MODERATION_MODEL_PARAMETERS may change ``max_tokens`` and
    ``logprobs`` only: the body is otherwise fixed (greedy, temperature 0).
    """
    if protocol_name(settings) == "tgi":
        return TgiProtocol(model_parameters(settings))
    try:
        return OpenAICompletionsProtocol(settings.openai_model, settings.model_parameters)
    except ConfigurationError as exc:
        raise ConfigurationError(f"MODERATION_MODEL_PARAMETERS: {exc}") from exc


def runner_config_from(settings: Settings, *, burst: bool = False) -> RunnerConfig:
    return RunnerConfig(
        max_in_flight=settings.max_in_flight,
        visibility_timeout=settings.visibility_timeout,
        drain_timeout=settings.drain_timeout,
        wait_seconds=settings.receive_wait_seconds,
        burst=burst,
        release_delay_base=settings.release_delay_base,
        release_delay_max=settings.release_delay_max,
    )


def guard_policy_from(settings: Settings) -> GuardPolicy:
    return GuardPolicy(
        max_in_flight=settings.max_in_flight,
        failure_threshold=settings.circuit_failure_threshold,
        probe_interval=settings.circuit_probe_interval,
    )


def probe_prompt(policy: ModerationPolicy) -> str:
    """A harmless prompt in the configured format, sent to find out if the endpoint is back."""
    probe = (Turn(role="user", content="Hello"),)
    return render_prompt(probe, policy.prompt_format, policy.taxonomy).text


def retry_policy_from(settings: ModelSettings) -> RetryPolicy:
    return RetryPolicy(attempts=settings.retry_attempts, deadline=settings.retry_deadline)


def cache_from(
    settings: Settings, classifier: Classifier, policy: ModerationPolicy
) -> AssessmentCache | None:
    """The verdict cache, scoped to everything that shapes an answer; None when turned off."""
    if settings.cache_size == 0:
        return None
    routing = {
        "target_variant": settings.target_variant,
        "inference_component": settings.inference_component,
        "custom_attributes": settings.custom_attributes,
    }
    scope = CacheScope(
        backend=classifier.backend,
        endpoint=classifier.endpoint,
        prompt_format=str(policy.prompt_format),
        taxonomy=policy.taxonomy,
        parameters=model_parameters(settings),
        routing={name: value for name, value in routing.items() if value},
    )
    return AssessmentCache(scope, max_entries=settings.cache_size, ttl=settings.cache_ttl)


@dataclass(frozen=True, slots=True)
class Worker:
    """Everything ``run`` needs, wired and ready."""

    runner: Runner
    moderator: Moderator


async def build_classifier(
    settings: ModelSettings,
    stack: AsyncExitStack,
    *,
    pool_size: int,
    aws: AwsClients | None = None,
) -> Classifier:
    """The configured backend; a client it opens is entered on ``stack`` to close with the rest.

    The transport (SageMaker ``invoke_endpoint`` or plain HTTP) and the request protocol (TGI's
    body or OpenAI completions) are chosen separately; everything above them is shared.
    """
    protocol = request_protocol(settings)
    if settings.backend in ("tgi", "openai"):
        timeout = aiohttp.ClientTimeout(total=settings.request_timeout, connect=5)
        connector = aiohttp.TCPConnector(limit=pool_size)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=timeout, connector=connector)
        )
        if settings.backend == "tgi":
            return TgiClassifier(session, settings.tgi_url or "", model_parameters(settings))
        api_key = settings.openai_api_key
        return OpenAIClassifier(
            session,
            settings.openai_url or "",
            settings.openai_model or "",
            api_key=api_key.get_secret_value() if api_key is not None else None,
            overrides=settings.model_parameters,
        )
    if aws is None:
        aws = await stack.enter_async_context(
            open_aws_clients(
                max_pool_connections=pool_size,
                sagemaker_read_timeout=settings.request_timeout,
                services=SAGEMAKER_ONLY,
            )
        )
    return SageMakerClassifier(
        aws.sagemaker_runtime,
        settings.endpoint_name or "",
        protocol,
        target_variant=settings.target_variant,
        inference_component=settings.inference_component,
        custom_attributes=settings.custom_attributes,
    )


@asynccontextmanager
async def open_worker(
    settings: Settings,
    *,
    burst: bool = False,
    health: Health | None = None,
    tracing: MessageTracing | None = None,
) -> AsyncIterator[Worker]:
    """Create the clients once, wire the pipeline and close everything together on exit.

    With ``health``, the probes see the worker while it is open (and the loop beats); with
    ``tracing``, each message gets its spans (see ``worker.tracing``).
    """
    policy = policy_from(settings)
    request_protocol(settings)  # a forbidden parameter stops start-up before any connection
    measure, budget = policy.prompt_budget()
    log.info("prompt_budget", unit=measure.unit, max_prompt_size=budget)
    async with AsyncExitStack() as stack:
        services: tuple[ServiceName, ...] = QUEUES_ONLY
        if settings.backend == "sagemaker":
            services = (*QUEUES_ONLY, *SAGEMAKER_ONLY)
        aws = await stack.enter_async_context(
            open_aws_clients(
                max_pool_connections=settings.max_in_flight,
                sagemaker_read_timeout=settings.request_timeout,
                services=services,
            )
        )
        classifier = await build_classifier(
            settings, stack, pool_size=settings.max_in_flight, aws=aws
        )
        guard = EndpointGuard(classifier, guard_policy_from(settings), probe_prompt(policy))
        batching = BatchingSink(
            SnsSink(aws.sns, settings.safe_topic_arn, settings.unsafe_topic_arn),
            linger=settings.publish_linger,
            unsafe_linger=settings.unsafe_publish_linger,
            # Read only once verdicts are published, by then ``moderator`` (below) exists.
            handling=lambda: moderator.handling,
        )
        stack.push_async_callback(batching.aclose)
        model: Classifier = RetryingClassifier(guard, retry_policy_from(settings))
        sink: VerdictSink = batching
        if tracing is not None:
            model, sink = tracing.classifier(model), tracing.sink(sink)
        moderator = Moderator(model, sink, policy, cache=cache_from(settings, classifier, policy))
        # Received with the worker's own visibility timeout, so the heartbeat (every third of it)
        # always comes before the message could reappear, whatever the queue's default.
        source = SqsSource(
            aws.sqs,
            settings.queue_url,
            settings.dead_letter_queue_url,
            visibility_timeout=settings.visibility_timeout,
        )
        handler = moderator if tracing is None else tracing.handler(moderator)
        runner = Runner(source, handler, runner_config_from(settings, burst=burst), gate=guard)
        if health is not None:
            signals = WorkerSignals(
                last_poll=lambda: runner.last_poll, circuit_open=lambda: guard.circuit.is_open
            )
            stack.enter_context(health.watching(signals))
            await stack.enter_async_context(health.beating())
        yield Worker(runner=runner, moderator=moderator)
