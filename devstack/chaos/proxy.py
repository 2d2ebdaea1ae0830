"""A fault-injecting reverse proxy for AWS traffic: it forwards everything and fails chosen calls.

It listens on 127.0.0.1 in front of moto's server (or any HTTP server) and forwards every request
unchanged: method, path, query, headers (``Host`` included, so the queue URLs moto builds name the
proxy) and body; the answer comes back unchanged too. For the operations its ``ProxyFaultPlan``
names, it fails a seeded share of the calls the way AWS fails them:

- ``internal_error`` (500 ``InternalError``) and ``service_unavailable`` (503
  ``ServiceUnavailable``), each in the protocol's own error shape: SQS speaks JSON 1.0 and names
  the operation in ``X-Amz-Target``; SNS speaks the query protocol (``Action=`` in the form body)
  and answers XML;
- ``drop_request``: the connection is cut before the call reaches the server;
- ``drop_response``: the call is forwarded and applied, then the connection is cut before the
  answer is sent. The caller cannot tell that it succeeded: the classic source of duplicates.

In front of the model (SageMaker's ``InvokeEndpoint`` route) it can also play a redeploy: while
the plan's ``endpoint_not_found`` is set, every invocation is answered the way SageMaker answers
for an endpoint that does not exist (a blue/green swap, a typo in the name): 400 with
``x-amzn-ErrorType: ValidationError:...`` and ``{"message": "Endpoint NAME of account N not
found."}``, which botocore reads as a ``ClientError`` with code ``ValidationError``.

botocore retries all of these (standard mode, ``QUEUE_MAX_ATTEMPTS`` attempts per call), so most
never reach the worker. ``ProxyStats.exhausted`` counts the calls whose every attempt failed,
recognised by the same operation and body arriving again after a failure: those are the failures
the worker itself saw. Nothing here logs a request body.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Literal, get_args
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from worker.adapters.aws import QUEUE_MAX_ATTEMPTS

ProxyFaultKind = Literal["internal_error", "service_unavailable", "drop_request", "drop_response"]
PROXY_FAULT_KINDS: Final[frozenset[str]] = frozenset(get_args(ProxyFaultKind))
#: What the proxy can answer in place of the upstream: a drawn fault, or the not-found window.
InjectedFault = ProxyFaultKind | Literal["endpoint_not_found"]
#: What SageMaker's runtime answers for an endpoint that does not exist; botocore keeps the part
#: of the error type before the first colon as the error code.
SAGEMAKER_NOT_FOUND_STATUS: Final = 400
SAGEMAKER_NOT_FOUND_ERROR_TYPE: Final = (
    "ValidationError:http://internal.amazon.com/coral/com.amazon.coral.validate/"
)
#: The account named in the not-found message (AWS's documentation example account).
NOT_FOUND_ACCOUNT_ID: Final = "123456789012"
#: The calls the worker settles messages with; the ones the chaos runs fail.
SNS_PUBLISH_OPERATIONS: Final = ("Publish", "PublishBatch")
SQS_BATCH_OPERATIONS: Final = ("DeleteMessageBatch", "ChangeMessageVisibilityBatch")

# Headers that describe one hop, not the message; aiohttp sets its own for the next hop.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "internal_error": (500, "InternalError"),
    "service_unavailable": (503, "ServiceUnavailable"),
}
_JSON_NAMESPACES: Final = {"AmazonSQS": "com.amazonaws.sqs"}
_QUERY_NAMESPACE: Final = "https://sns.amazonaws.com/doc/2010-03-31/"
_INVOCATIONS: Final = re.compile(r"/endpoints/(?P<name>[^/]+)/invocations")
# moto's long polls are short here, but a proxy must never be the thing that hangs a run.
_UPSTREAM_TIMEOUT_SECONDS: Final = 60.0
_UPSTREAM_CONNECTIONS: Final = 256
_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
_SHUTDOWN_TIMEOUT_SECONDS: Final = 1.0


@dataclass(slots=True)
class ProxyFaultPlan:
    """Which operations fail, how often, and how; change it while the proxy runs via ``update``.

    ``rates`` maps an AWS operation name (``PublishBatch``, ``DeleteMessageBatch``, ...) to the
    share of its calls that fail; the kind of each failure is drawn evenly from ``kinds``.
    While ``endpoint_not_found`` is set, every ``InvokeEndpoint`` call is answered as SageMaker
    answers for a missing endpoint (no draw, nothing forwarded).
    """

    rates: dict[str, float] = field(default_factory=dict)
    kinds: tuple[ProxyFaultKind, ...] = ("internal_error", "service_unavailable", "drop_response")
    endpoint_not_found: bool = False

    def __post_init__(self) -> None:
        self.update(rates=self.rates, kinds=self.kinds)

    def update(
        self,
        *,
        rates: Mapping[str, float] | None = None,
        kinds: Sequence[ProxyFaultKind] | None = None,
        endpoint_not_found: bool | None = None,
    ) -> None:
        """Replace the rates, the kinds and/or the not-found window; raises ``ValueError`` and
        changes nothing if bad."""
        new_rates = dict(self.rates if rates is None else rates)
        new_kinds = tuple(self.kinds if kinds is None else kinds)
        bad_rates = sorted(name for name, rate in new_rates.items() if not 0.0 <= rate <= 1.0)
        if bad_rates:
            raise ValueError(f"fault rates must be within [0, 1]: {bad_rates}")
        unknown = sorted(set(new_kinds) - PROXY_FAULT_KINDS)
        if not new_kinds or unknown:
            raise ValueError(f"kinds must be a non-empty choice of {sorted(PROXY_FAULT_KINDS)}")
        self.rates, self.kinds = new_rates, new_kinds
        if endpoint_not_found is not None:
            self.endpoint_not_found = endpoint_not_found

    def draw(self, operation: str, rng: random.Random) -> InjectedFault | None:
        """The fault for one call of ``operation``, or None to forward it."""
        if operation == "InvokeEndpoint" and self.endpoint_not_found:
            return "endpoint_not_found"
        rate = self.rates.get(operation, 0.0)
        if rate <= 0.0 or rng.random() >= rate:
            return None
        return rng.choice(self.kinds)


@dataclass(frozen=True, slots=True)
class ProxyCall:
    """One request as the proxy saw it; ``at`` is wall-clock time, like the worker's log times."""

    at: float
    operation: str
    fault: InjectedFault | None


@dataclass(slots=True)
class ProxyStats:
    """What went through the proxy and what it injected.

    ``exhausted`` counts, per operation, calls that failed ``attempts_per_call`` times in a row
    with the same body: botocore gave up on those, so the worker saw the failure.
    """

    attempts_per_call: int = QUEUE_MAX_ATTEMPTS
    requests: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    injected_by_kind: Counter[str] = field(default_factory=Counter)
    exhausted: Counter[str] = field(default_factory=Counter)
    calls: list[ProxyCall] = field(default_factory=list)
    _streaks: dict[str, int] = field(default_factory=dict)

    def record(self, operation: str, fingerprint: str | None, fault: InjectedFault | None) -> None:
        """Count one request; ``fingerprint`` (operation and body) is None when not tracked."""
        self.requests[operation] += 1
        self.calls.append(ProxyCall(at=time.time(), operation=operation, fault=fault))
        if fault is not None:
            self.injected[operation] += 1
            self.injected_by_kind[fault] += 1
        if fingerprint is None:
            return
        if fault is None:
            self._streaks.pop(fingerprint, None)
            return
        streak = self._streaks.get(fingerprint, 0) + 1
        self._streaks[fingerprint] = streak
        if streak % self.attempts_per_call == 0:
            self.exhausted[operation] += 1

    def calls_of(self, operation: str) -> list[ProxyCall]:
        """The requests of one operation, in arrival order."""
        return [call for call in self.calls if call.operation == operation]

    def dropped_answers(self, operations: Iterable[str]) -> int:
        """Calls of ``operations`` forwarded (so applied upstream) whose answer was cut off."""
        wanted = frozenset(operations)
        return sum(
            call.operation in wanted and call.fault == "drop_response" for call in self.calls
        )

    def as_json(self) -> dict[str, dict[str, int]]:
        """The counters (not the call list) as a JSON object."""
        return {
            "requests": dict(self.requests),
            "injected": dict(self.injected),
            "injected_by_kind": dict(self.injected_by_kind),
            "exhausted": dict(self.exhausted),
        }


class FaultProxy:
    """The request handler: name the operation, maybe fail it, else forward it unchanged."""

    def __init__(
        self, upstream: str, plan: ProxyFaultPlan, session: aiohttp.ClientSession, *, seed: int
    ) -> None:
        self.plan = plan
        self.stats = ProxyStats()
        self._upstream = upstream.rstrip("/")
        self._session = session
        self._rng = random.Random(seed)  # noqa: S311 - reproducible faults, not security

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = operation_of(request.method, request.path, request.headers, body)
        fault = self.plan.draw(operation, self._rng)
        tracked = operation in self.plan.rates
        self.stats.record(operation, _fingerprint(operation, body) if tracked else None, fault)
        if fault == "endpoint_not_found":
            return sagemaker_not_found_response(request.path)
        if fault == "drop_request":
            return _drop_connection(request)
        if fault in _ERRORS:
            return aws_error_response(request.headers, fault, operation)
        response = await self._forward(request, body)
        if fault == "drop_response":
            return _drop_connection(request)
        return response

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        # encoded=True: the path and query go out byte for byte (no re-quoting).
        url = URL(self._upstream + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method,
                url,
                headers=_end_to_end(request.headers),
                data=body or None,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                return web.Response(
                    status=upstream.status, body=payload, headers=_end_to_end(upstream.headers)
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"upstream failed: {type(exc).__name__}")


def operation_of(method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
    """The AWS operation a request calls (JSON target, query ``Action``, SageMaker route)."""
    target = headers.get("X-Amz-Target")
    if target:
        return target.rpartition(".")[2]
    if headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return action[0]
    if _INVOCATIONS.fullmatch(path):
        return "InvokeEndpoint"
    return f"{method} {path}"


def aws_error_response(
    headers: Mapping[str, str], fault: ProxyFaultKind, operation: str
) -> web.Response:
    """A server-side AWS error in the request's protocol: JSON 1.0 (SQS) or query XML (SNS)."""
    status, code = _ERRORS[fault]
    message = f"{code}: injected by the chaos proxy into {operation}"
    request_id = str(uuid.uuid4())
    target = headers.get("X-Amz-Target")
    if target:
        namespace = _JSON_NAMESPACES.get(target.partition(".")[0], "com.amazonaws")
        return web.json_response(
            {"__type": f"{namespace}#{code}", "message": message},
            status=status,
            content_type="application/x-amz-json-1.0",
            headers={"x-amzn-RequestId": request_id, "x-amzn-query-error": f"{code};Receiver"},
        )
    xml = (
        f'<ErrorResponse xmlns="{_QUERY_NAMESPACE}"><Error><Type>Receiver</Type>'
        f"<Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return web.Response(
        status=status, text=xml, content_type="text/xml", headers={"x-amzn-RequestId": request_id}
    )


def sagemaker_not_found_response(path: str) -> web.Response:
    """SageMaker's answer to an invocation of an endpoint that does not exist (see the header)."""
    match = _INVOCATIONS.fullmatch(path)
    name = match["name"] if match else "unknown"
    return web.json_response(
        {"message": f"Endpoint {name} of account {NOT_FOUND_ACCOUNT_ID} not found."},
        status=SAGEMAKER_NOT_FOUND_STATUS,
        headers={
            "x-amzn-ErrorType": SAGEMAKER_NOT_FOUND_ERROR_TYPE,
            "x-amzn-RequestId": str(uuid.uuid4()),
        },
    )


def _drop_connection(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.abort()
    # Never sent: the connection is already gone. aiohttp needs a response to finish the handler.
    return web.Response(status=500)


def _end_to_end(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict(
        (name, value) for name, value in headers.items() if name.lower() not in _HOP_BY_HOP
    )


def _fingerprint(operation: str, body: bytes) -> str:
    return hashlib.sha256(operation.encode() + b"\0" + body).hexdigest()


@dataclass(frozen=True, slots=True)
class RunningProxy:
    """A started proxy: where it listens, and its live plan and counters."""

    url: str
    proxy: FaultProxy

    @property
    def plan(self) -> ProxyFaultPlan:
        return self.proxy.plan

    @property
    def stats(self) -> ProxyStats:
        return self.proxy.stats


@asynccontextmanager
async def run_fault_proxy(
    upstream: str,
    *,
    plan: ProxyFaultPlan | None = None,
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[RunningProxy]:
    """Serve a proxy to ``upstream`` on ``host:port`` (0: any free port) until the block exits."""
    timeout = aiohttp.ClientTimeout(total=_UPSTREAM_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=_UPSTREAM_CONNECTIONS)
    # auto_decompress=False: an encoded answer is passed on as it came, with its header.
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, auto_decompress=False
    ) as session:
        proxy = FaultProxy(upstream, plan or ProxyFaultPlan(), session, seed=seed)
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        # handler_cancellation: a caller that goes away (a SIGKILLed worker) ends its forwarded
        # long poll too, instead of leaving it to run out.
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_port = int(runner.addresses[0][1])
            yield RunningProxy(url=f"http://{host}:{bound_port}", proxy=proxy)
        finally:
            await runner.cleanup()
