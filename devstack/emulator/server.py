"""The emulator's HTTP server: routes, the life of one request, fault injection, start and stop.

Routes (see the package docstring for the wire formats):
- ``POST /endpoints/{name}/invocations``: SageMaker runtime ``InvokeEndpoint``; list body.
- ``POST /generate``: TGI; object body.
- ``POST /v1/completions``: vLLM's OpenAI-compatible completions (``vllm``). The SageMaker route
  takes that body too (an LMI endpoint) and answers vLLM's object as it is.
- ``GET /health``, ``GET /ping``: 200, or 503 while the fault plan says ``down``.
- ``GET /info``: a minimal TGI ``/info``.
- ``GET /emulator/stats`` (``DELETE`` resets), ``GET``/``PUT /emulator/faults``: admin.

One inference request: down? -> 503; unknown endpoint name? -> ValidationError; over capacity?
-> throttled at once (a hard cap) or queued for a slot, throttled only when the queue is full
(a queueing server); then the fault plan's draw (error, hang, disconnect, unreadable body, or
malformed output); then the protocol's request checks and token budget (TGI's or vLLM's); then
latency; then the keyword rules answer.
Nothing here logs a request body or message text.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from devstack.emulator.completion import MALFORMED_ANSWERS, Completion, render_completion
from devstack.emulator.config import EmulatorConfig, EmulatorStats, FaultKind, FaultPlan
from devstack.emulator.rules import assess_prompt
from devstack.emulator.tgi import (
    TgiError,
    check_token_budget,
    count_prompt_tokens,
    generation_payload,
    parse_request,
)
from devstack.emulator.vllm import (
    check_context_length,
    completions_payload,
    is_completions_body,
    parse_completions_request,
)
from devstack.emulator.wire import (
    UNREADABLE_BODY,
    Failure,
    FailureKind,
    SageMakerError,
    json_text,
    sagemaker_error,
    tgi_error,
    vllm_error,
)

# The settings types are re-exported so callers can take everything from this module.
__all__ = [
    "EMULATOR_KEY",
    "EmulatorConfig",
    "EmulatorState",
    "EmulatorStats",
    "FaultPlan",
    "RunningEmulator",
    "build_app",
    "run_emulator",
]

# SageMaker's InvokeEndpoint accepts payloads up to 6 MB.
MAX_BODY_BYTES = 6 * 1024 * 1024
# How long stopping waits for requests still in flight (pauses end at once on stop).
SHUTDOWN_TIMEOUT_SECONDS = 2.0
_IMMEDIATE_FAULTS: dict[FaultKind, FailureKind] = {
    "throttle": "throttled",
    "not_ready": "not_ready",
    "server_error": "server_error",
    "internal_failure": "internal_failure",
    "model_error": "model_error",
    "not_found": "endpoint_not_found",
    "unreadable_response": "unreadable_response",
}


class EmulatorState:
    """Everything one emulator app shares between requests: settings, faults, counters, RNG."""

    def __init__(self, config: EmulatorConfig, faults: FaultPlan | None = None) -> None:
        self.config = config
        self.faults = faults if faults is not None else FaultPlan()
        self.stats = EmulatorStats()
        self.rng = random.Random(config.seed)  # noqa: S311 - reproducible faults, not security
        self.closing = asyncio.Event()
        self._admitted = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def serve(
        self, request: web.Request, route: str, endpoint: str | None, *, vllm: bool = False
    ) -> dict[str, object]:
        """Run one inference request and return the success body, or raise ``Failure``.

        ``vllm``: the body is an OpenAI completions body, answered as vLLM does; else TGI's.
        """
        self.stats.started(route)
        outcome = "cancelled"
        try:
            payload, outcome = await self._serve(request, endpoint, vllm=vllm)
        except Failure as failure:
            outcome = failure.outcome
            raise
        finally:
            self.stats.finished(outcome)
        return payload

    async def _serve(
        self, request: web.Request, endpoint: str | None, *, vllm: bool
    ) -> tuple[dict[str, object], str]:
        if self.faults.down:
            raise Failure("server_error")
        allowed = self.config.endpoint_names
        if endpoint is not None and allowed is not None and endpoint not in allowed:
            raise Failure("endpoint_not_found")
        async with self._admission() as admitted_at:
            fault = self.faults.draw(self.rng)
            if fault is not None:
                self.stats.faults_injected[fault] += 1
                await self._inject(fault, request)
            malformed = fault == "invalid_output"
            if vllm:
                return await self._complete(request, admitted_at, malformed=malformed)
            return await self._generate(request, admitted_at, malformed=malformed)

    @asynccontextmanager
    async def _admission(self) -> AsyncIterator[float]:
        """Hold a serving slot for the block; queue for one or be throttled when all are taken.

        Yields when the slot was taken (``time.monotonic``); the time it was held is counted.
        """
        capacity = self.config.capacity
        if capacity is None:
            self.stats.admitted_after(None)
            yield time.monotonic()
            return
        if self._admitted < capacity and not self._waiting:
            self._admitted += 1
            self.stats.admitted_after(None)
        else:
            await self._wait_for_slot()
        admitted_at = time.monotonic()
        try:
            yield admitted_at
        finally:
            self._release_slot()
            self.stats.slot_seconds += time.monotonic() - admitted_at

    async def _wait_for_slot(self) -> None:
        if len(self._waiting) >= self.config.queue_size:
            raise Failure("throttled")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        self.stats.queue_changed(len(self._waiting))
        started = time.monotonic()
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                # The slot was handed over just as this request went away: pass it on.
                self._release_slot()
            elif turn in self._waiting:
                self._waiting.remove(turn)
                self.stats.queue_changed(len(self._waiting))
            raise
        self.stats.admitted_after(time.monotonic() - started)

    def _release_slot(self) -> None:
        """Hand the slot straight to the first request still waiting, or free it."""
        while self._waiting:
            turn = self._waiting.popleft()
            self.stats.queue_changed(len(self._waiting))
            if not turn.done():
                turn.set_result(None)
                return
        self._admitted -= 1

    def close(self) -> None:
        """The server is stopping: pauses end, and every queued request fails as unavailable."""
        self.closing.set()
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_exception(Failure("server_error"))
        self.stats.queue_changed(0)

    async def _inject(self, fault: FaultKind, request: web.Request) -> None:
        immediate = _IMMEDIATE_FAULTS.get(fault)
        if immediate is not None:
            raise Failure(immediate)
        if fault == "hang":
            await self._pause(self.faults.hang_seconds)
        elif fault == "disconnect":
            if request.transport is not None:
                request.transport.abort()
            # Nobody reads the answer: the connection is already gone.
            raise Failure("server_error", outcome="disconnected")

    async def _generate(
        self, request: web.Request, admitted_at: float, *, malformed: bool
    ) -> tuple[dict[str, object], str]:
        try:
            body = await request.read()
            generate = parse_request(
                body, request.content_type, max_top_n_tokens=self.config.max_top_n_tokens
            )
            max_new_tokens = check_token_budget(
                generate, max_total_tokens=self.config.max_total_tokens
            )
        except (web.HTTPRequestEntityTooLarge, TgiError) as exc:
            raise _container_failure(exc) from exc
        completion, outcome = await self._answer(generate.inputs, admitted_at, malformed=malformed)
        payload = generation_payload(
            generate,
            completion,
            max_new_tokens=max_new_tokens,
            echo_default=self.config.echo_prompt_by_default,
        )
        return payload, outcome

    async def _complete(
        self, request: web.Request, admitted_at: float, *, malformed: bool
    ) -> tuple[dict[str, object], str]:
        """vLLM's /v1/completions: the same model behind the OpenAI protocol."""
        try:
            body = await request.read()
            completions = parse_completions_request(
                body, request.content_type, served_models=self.config.served_model_names
            )
            prompt_tokens = count_prompt_tokens(completions.prompt)
            check_context_length(
                completions, prompt_tokens, max_model_len=self.config.max_total_tokens
            )
        except (web.HTTPRequestEntityTooLarge, TgiError) as exc:
            raise _container_failure(exc) from exc
        completion, outcome = await self._answer(
            completions.prompt, admitted_at, malformed=malformed
        )
        payload = completions_payload(
            completions, completion, prompt_tokens=prompt_tokens, model=self.config.model_id
        )
        return payload, outcome

    async def _answer(
        self, prompt: str, admitted_at: float, *, malformed: bool
    ) -> tuple[Completion, str]:
        """The configured latency after admission (reading and parsing the request are part of
        it, as a real server's are), then the keyword rules' completion and the outcome."""
        await self._pause(self._latency_seconds() - (time.monotonic() - admitted_at))
        assessment = assess_prompt(prompt)
        broken = self.rng.choice(MALFORMED_ANSWERS) if malformed else None
        completion = render_completion(assessment, malformed=broken)
        invalid = malformed or assessment.verdict == "invalid"
        return completion, "invalid_output" if invalid else assessment.verdict

    def _latency_seconds(self) -> float:
        jitter = self.config.latency_jitter_ms
        extra = self.rng.uniform(0.0, jitter) if jitter > 0 else 0.0
        return (self.config.latency_ms + extra) / 1000.0

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, cut short (as an unavailable answer) when the server is stopping."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self.closing.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise Failure("server_error")


EMULATOR_KEY = web.AppKey("emulator_state", EmulatorState)


def build_app(config: EmulatorConfig, *, faults: FaultPlan | None = None) -> web.Application:
    """The emulator as an aiohttp application; its state is ``app[EMULATOR_KEY]``."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[EMULATOR_KEY] = EmulatorState(config, faults)
    app.router.add_post("/endpoints/{name}/invocations", _invocations)
    app.router.add_post("/generate", _generate)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/health", _health)
    app.router.add_get("/ping", _health)
    app.router.add_get("/info", _info)
    app.router.add_get("/emulator/stats", _get_stats)
    app.router.add_delete("/emulator/stats", _reset_stats)
    app.router.add_get("/emulator/faults", _get_faults)
    app.router.add_put("/emulator/faults", _put_faults)
    return app


async def _invocations(request: web.Request) -> web.Response:
    # Auth headers (SigV4) and optional X-Amzn-SageMaker-* headers are accepted and ignored.
    endpoint = request.match_info["name"]
    # An OpenAI completions body makes this an LMI (vLLM) endpoint; anything else is TGI's.
    try:
        vllm = is_completions_body(await request.read())
    except web.HTTPRequestEntityTooLarge:
        vllm = False  # TGI's route answers it as the container would
    try:
        payload = await request.app[EMULATOR_KEY].serve(request, "invocations", endpoint, vllm=vllm)
    except Failure as failure:
        if failure.kind == "unreadable_response":
            return _unreadable_response()
        return _sagemaker_error_response(sagemaker_error(failure, endpoint, vllm=vllm))
    headers = {
        "x-amzn-RequestId": str(uuid.uuid4()),
        "x-Amzn-Invoked-Production-Variant": "AllTraffic",
    }
    # LMI answers the OpenAI object as it is; TGI's JumpStart container, a list of one.
    body: object = payload if vllm else [payload]
    return web.json_response(body, headers=headers, dumps=json_text)


async def _generate(request: web.Request) -> web.Response:
    try:
        payload = await request.app[EMULATOR_KEY].serve(request, "generate", None)
    except Failure as failure:
        if failure.kind == "unreadable_response":
            return _unreadable_response()
        error = tgi_error(failure)
        return web.json_response(error.body(), status=error.status, dumps=json_text)
    return web.json_response(payload, dumps=json_text)


async def _completions(request: web.Request) -> web.Response:
    # Authorization (an API key) is accepted and ignored, as by vLLM started without --api-key.
    try:
        payload = await request.app[EMULATOR_KEY].serve(request, "completions", None, vllm=True)
    except Failure as failure:
        if failure.kind == "unreadable_response":
            return _unreadable_response()
        error = vllm_error(failure, await _requested_model(request))
        return web.json_response(error.body(), status=error.status, dumps=json_text)
    return web.json_response(payload, dumps=json_text)


async def _requested_model(request: web.Request) -> str | None:
    """The ``model`` a completions request named, for vLLM's "does not exist" message."""
    try:
        document = json.loads(await request.read())
    except (ValueError, web.HTTPRequestEntityTooLarge):
        return None
    model = document.get("model") if isinstance(document, dict) else None
    return model if isinstance(model, str) else None


def _unreadable_response() -> web.Response:
    return web.Response(status=200, text=UNREADABLE_BODY, content_type="text/html")


def _sagemaker_error_response(error: SageMakerError) -> web.Response:
    headers = {"x-amzn-ErrorType": error.code, "x-amzn-RequestId": str(uuid.uuid4())}
    return web.json_response(error.body(), status=error.status, headers=headers, dumps=json_text)


async def _health(request: web.Request) -> web.Response:
    down = request.app[EMULATOR_KEY].faults.down
    return web.Response(status=503 if down else 200)


async def _info(request: web.Request) -> web.Response:
    config = request.app[EMULATOR_KEY].config
    info = {
        "model_id": config.model_id,
        "model_dtype": "torch.float16",
        "model_device_type": "emulator",
        "max_concurrent_requests": config.capacity or 128,
        "max_top_n_tokens": config.max_top_n_tokens,
        "max_input_tokens": config.max_total_tokens - 1,
        "max_total_tokens": config.max_total_tokens,
        "router": "llama-guard-emulator",
        "version": "emulator",
    }
    return web.json_response(info, dumps=json_text)


async def _get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMULATOR_KEY].stats.as_json(), dumps=json_text)


async def _reset_stats(request: web.Request) -> web.Response:
    stats = request.app[EMULATOR_KEY].stats
    stats.reset()
    return web.json_response(stats.as_json(), dumps=json_text)


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMULATOR_KEY].faults.as_json(), dumps=json_text)


async def _put_faults(request: web.Request) -> web.Response:
    faults = request.app[EMULATOR_KEY].faults
    try:
        changes = json.loads(await request.read())
    except ValueError:
        return _admin_error("the body is not JSON")
    if not isinstance(changes, dict):
        return _admin_error("the body must be a JSON object of fault settings")
    try:
        faults.update(changes)
    except (TypeError, ValueError) as exc:
        return _admin_error(str(exc))
    return web.json_response(faults.as_json(), dumps=json_text)


def _admin_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400, dumps=json_text)


@dataclass(frozen=True, slots=True)
class RunningEmulator:
    """A started emulator: where it listens and the live objects to inspect or change."""

    url: str
    host: str
    port: int
    app: web.Application

    @property
    def state(self) -> EmulatorState:
        """The shared state of the running app."""
        return self.app[EMULATOR_KEY]

    @property
    def config(self) -> EmulatorConfig:
        """The settings it was started with."""
        return self.state.config

    @property
    def faults(self) -> FaultPlan:
        """The live fault plan: change its fields to change what the next requests meet."""
        return self.state.faults

    @property
    def stats(self) -> EmulatorStats:
        """The live counters."""
        return self.state.stats


@asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    faults: FaultPlan | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator on ``host:port`` (0: any free port) until the block exits."""
    app = build_app(config if config is not None else EmulatorConfig(), faults=faults)
    # handler_cancellation: a client that gives up (timeout) ends its hung request too.
    runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        url_host = f"[{host}]" if ":" in host else host
        yield RunningEmulator(
            url=f"http://{url_host}:{bound_port}", host=host, port=bound_port, app=app
        )
    finally:
        app[EMULATOR_KEY].close()
        await runner.cleanup()


def _container_failure(exc: web.HTTPRequestEntityTooLarge | TgiError) -> Failure:
    """A request the model server itself refuses, as the failure the routes answer with."""
    if isinstance(exc, TgiError):
        return Failure("container", exc)
    return Failure("container", TgiError(413, "Payload Too Large", "validation"))
