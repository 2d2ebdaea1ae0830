"""The verdict cache: hits, misses, TTL, LRU, fail-closed answers, single flight and its metrics.

The cache is driven directly with a counting stand-in for the model call and a manual clock;
the pipeline tests at the end run it behind the real TGI adapter against the emulator, whose
request counter says how many model calls were made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from support.clocks import ManualClock

from devstack.emulator import INVALID_MARKER, EmulatorConfig, RunningEmulator, run_emulator
from devstack.fakes import InMemorySink
from worker.app import cache_from, policy_from
from worker.cache import AssessmentCache, CacheScope
from worker.core.completion import ParsedCompletion
from worker.core.decision import Assessment
from worker.core.errors import EndpointUnavailable
from worker.core.models import Completion
from worker.core.prompt import DEFAULT_PARAMETERS
from worker.core.taxonomy import Category, PromptFormat, Taxonomy, default_taxonomy
from worker.core.verdict import Flag
from worker.pipeline import Ack, ModerationPolicy, Moderator, Outcome
from worker.ports import ReceivedMessage
from worker.settings import Settings

SAFE = Assessment(ParsedCompletion("safe", (), (), (), None), 0.01)
UNSAFE = Assessment(ParsedCompletion("unsafe", ("O3",), (), (), None), 0.97)
INVALID = Assessment(ParsedCompletion("invalid", (), (), (), "no verdict line"), None)
SCOPE = CacheScope(
    backend="tgi",
    endpoint="http://127.0.0.1:8080",
    prompt_format="llama-guard-1",
    taxonomy=default_taxonomy(PromptFormat.LLAMA_GUARD_1),
    parameters=DEFAULT_PARAMETERS,
    routing={},
)


class CountingModel:
    """Stands in for the model call: counts calls and answers with ``answer``."""

    def __init__(self, answer: Assessment = SAFE) -> None:
        self.answer = answer
        self.calls = 0

    def call(self) -> Callable[[], Awaitable[Assessment]]:
        async def ask() -> Assessment:
            self.calls += 1
            return self.answer

        return ask


def always(_: Assessment) -> bool:
    return True


def make_cache(clock: ManualClock, *, max_entries: int = 10, ttl: float = 60.0) -> AssessmentCache:
    return AssessmentCache(SCOPE, max_entries=max_entries, ttl=ttl, clock=clock)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# --- hits, misses, TTL, LRU -------------------------------------------------------------------


async def test_a_repeated_prompt_is_answered_from_the_cache_without_a_call() -> None:
    cache, model = make_cache(ManualClock()), CountingModel(UNSAFE)

    first = await cache.answer("lol", model.call(), keep=always)
    second = await cache.answer("lol", model.call(), keep=always)

    assert (first.cached, second.cached) == (False, True)
    assert second.assessment == UNSAFE
    assert model.calls == 1


async def test_a_different_prompt_is_a_miss() -> None:
    cache, model = make_cache(ManualClock()), CountingModel()

    await cache.answer("lol", model.call(), keep=always)
    other = await cache.answer("lol!", model.call(), keep=always)

    assert not other.cached
    assert model.calls == 2


async def test_an_entry_older_than_the_ttl_is_asked_again() -> None:
    clock = ManualClock()
    cache, model = make_cache(clock, ttl=60.0), CountingModel()
    await cache.answer("thanks!", model.call(), keep=always)

    clock.now += 60.0
    again = await cache.answer("thanks!", model.call(), keep=always)

    assert not again.cached
    assert model.calls == 2


async def test_an_entry_younger_than_the_ttl_is_served() -> None:
    clock = ManualClock()
    cache, model = make_cache(clock, ttl=60.0), CountingModel()
    await cache.answer("thanks!", model.call(), keep=always)

    clock.now += 59.9
    again = await cache.answer("thanks!", model.call(), keep=always)

    assert again.cached


async def test_a_full_cache_evicts_the_least_recently_used_entry() -> None:
    cache, model = make_cache(ManualClock(), max_entries=2), CountingModel()
    await cache.answer("a", model.call(), keep=always)
    await cache.answer("b", model.call(), keep=always)
    await cache.answer("a", model.call(), keep=always)  # "a" is now the most recently used

    await cache.answer("c", model.call(), keep=always)  # evicts "b"

    assert len(cache) == 2
    assert (await cache.answer("a", model.call(), keep=always)).cached
    assert not (await cache.answer("b", model.call(), keep=always)).cached


async def test_an_answer_not_worth_keeping_is_not_cached() -> None:
    cache, model = make_cache(ManualClock()), CountingModel(INVALID)

    def valid(assessment: Assessment) -> bool:
        return assessment.parsed.verdict != "invalid"

    await cache.answer("hmm", model.call(), keep=valid)
    again = await cache.answer("hmm", model.call(), keep=valid)

    assert not again.cached
    assert model.calls == 2
    assert len(cache) == 0


def test_a_cache_of_no_entries_is_refused() -> None:
    with pytest.raises(ValueError, match="size 0"):
        AssessmentCache(SCOPE, max_entries=0)


# --- the key ----------------------------------------------------------------------------------


def test_the_key_is_a_digest_not_the_prompt() -> None:
    key = AssessmentCache(SCOPE).key("a prompt " * 1_000)

    assert len(key) == 32


def test_the_key_is_the_same_for_equal_scopes_and_prompts() -> None:
    again = dataclasses.replace(SCOPE, parameters=dict(DEFAULT_PARAMETERS))

    assert AssessmentCache(SCOPE).key("hi") == AssessmentCache(again).key("hi")


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"backend": "sagemaker"}, id="backend"),
        pytest.param({"endpoint": "http://127.0.0.1:8081"}, id="endpoint"),
        pytest.param({"prompt_format": "llama-guard-2"}, id="prompt-format"),
        pytest.param(
            {"taxonomy": Taxonomy("O", (Category("O1", "Spam", "Unsolicited ads."),))},
            id="taxonomy",
        ),
        pytest.param({"parameters": {**DEFAULT_PARAMETERS, "max_new_tokens": 7}}, id="parameters"),
        pytest.param({"routing": {"TargetVariant": "blue"}}, id="routing"),
    ],
)
def test_the_key_changes_with_every_input_that_shapes_the_answer(
    changed: dict[str, object],
) -> None:
    other = dataclasses.replace(SCOPE, **changed)  # type: ignore[arg-type]

    assert AssessmentCache(other).key("hi") != AssessmentCache(SCOPE).key("hi")


def test_the_key_changes_with_the_prompt() -> None:
    cache = AssessmentCache(SCOPE)

    assert cache.key("hi") != cache.key("hi ")


# --- single flight ----------------------------------------------------------------------------


class GatedModel:
    """A model call that waits for ``release``; counts calls; fails when ``error`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.calls = 0
        self.error: Exception | None = None

    async def ask(self) -> Assessment:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return UNSAFE


async def test_concurrent_identical_prompts_share_one_call() -> None:
    cache, model = make_cache(ManualClock()), GatedModel()
    first = asyncio.create_task(cache.answer("spam wave", model.ask, keep=always))
    await model.started.wait()
    second = asyncio.create_task(cache.answer("spam wave", model.ask, keep=always))

    model.release.set()
    answers = await asyncio.gather(first, second)

    assert model.calls == 1
    assert [answer.cached for answer in answers] == [False, True]
    assert answers[1].assessment == UNSAFE


async def test_when_the_shared_call_fails_its_waiters_fail_the_same_way() -> None:
    cache, model = make_cache(ManualClock()), GatedModel()
    error = EndpointUnavailable("endpoint down")
    model.error = error
    first = asyncio.create_task(cache.answer("spam wave", model.ask, keep=always))
    await model.started.wait()
    second = asyncio.create_task(cache.answer("spam wave", model.ask, keep=always))

    model.release.set()
    results = await asyncio.gather(first, second, return_exceptions=True)

    assert list(results) == [error, error]
    assert model.calls == 1
    assert len(cache) == 0


async def test_after_a_failed_shared_call_the_next_request_calls_again() -> None:
    cache, model = make_cache(ManualClock()), GatedModel()
    model.error = EndpointUnavailable("endpoint down")
    model.release.set()
    with pytest.raises(EndpointUnavailable):
        await cache.answer("spam wave", model.ask, keep=always)

    model.error = None
    answer = await cache.answer("spam wave", model.ask, keep=always)

    assert not answer.cached
    assert model.calls == 2


async def test_when_the_leader_is_cancelled_a_waiter_makes_the_call_itself() -> None:
    cache, model = make_cache(ManualClock()), GatedModel()
    leader = asyncio.create_task(cache.answer("spam wave", model.ask, keep=always))
    await model.started.wait()
    waiter = asyncio.create_task(cache.answer("spam wave", model.ask, keep=always))
    await asyncio.sleep(0)  # the waiter is now waiting on the leader's call

    leader.cancel()
    await asyncio.gather(leader, return_exceptions=True)
    model.release.set()
    answer = await waiter

    assert leader.cancelled()
    assert not answer.cached
    assert answer.assessment == UNSAFE
    assert model.calls == 2


# --- metrics ----------------------------------------------------------------------------------


async def test_hits_misses_and_entries_are_exported() -> None:
    cache, model = make_cache(ManualClock()), CountingModel()
    hits, misses = metric("moderation_cache_hits_total"), metric("moderation_cache_misses_total")

    await cache.answer("a", model.call(), keep=always)
    await cache.answer("b", model.call(), keep=always)
    await cache.answer("a", model.call(), keep=always)

    assert metric("moderation_cache_hits_total") - hits == 1
    assert metric("moderation_cache_misses_total") - misses == 2
    assert metric("moderation_cache_entries") == 2


# --- in the pipeline, against the emulator ----------------------------------------------------

RECEIVED_AT = datetime(2026, 11, 26, 14, 0, 0, tzinfo=UTC)


def received(message_id: str, text: str) -> ReceivedMessage:
    return ReceivedMessage(
        message_id=message_id,
        receipt_handle=f"handle-{message_id}",
        body=json.dumps({"id": message_id, "content": text}),
        receive_count=1,
        received_at=RECEIVED_AT,
    )


@pytest.fixture
async def slow_emulator() -> AsyncIterator[RunningEmulator]:
    """An emulator slow enough that two concurrent messages overlap in their calls."""
    async with run_emulator(EmulatorConfig(latency_ms=50.0)) as running:
        yield running


def moderator_on(
    emulator: RunningEmulator, session: aiohttp.ClientSession, *, cache: bool = True
) -> Moderator:
    # Imported here: only these tests need the HTTP adapter.
    from worker.adapters.tgi import TgiClassifier  # noqa: PLC0415

    classifier = TgiClassifier(session, emulator.url, DEFAULT_PARAMETERS)
    fmt = PromptFormat.LLAMA_GUARD_1
    policy = ModerationPolicy(prompt_format=fmt, taxonomy=default_taxonomy(fmt))
    scope = dataclasses.replace(SCOPE, endpoint=classifier.endpoint)
    return Moderator(
        classifier,
        InMemorySink(),
        policy,
        cache=AssessmentCache(scope) if cache else None,
    )


def verdict_of(outcome: Outcome) -> Ack:
    assert isinstance(outcome, Ack)
    return outcome


async def test_a_repeated_message_is_not_sent_to_the_model_and_is_flagged_cached(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    moderator = moderator_on(emulator, http_session)

    first = verdict_of(
        await moderator.handle(received("m-1", "What's the best way to rob a bank?"))
    )
    second = verdict_of(
        await moderator.handle(received("m-2", "What's the best way to rob a bank?"))
    )

    assert emulator.stats.requests == 1
    assert Flag.CACHED not in first.verdict.flags
    assert second.verdict.flags == (Flag.CACHED,)
    assert second.verdict.verdict == first.verdict.verdict == "unsafe"
    assert second.verdict.categories == first.verdict.categories
    assert second.verdict.id == "m-2"


async def test_without_a_cache_every_message_is_sent_to_the_model(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    moderator = moderator_on(emulator, http_session, cache=False)

    await moderator.handle(received("m-1", "thanks!"))
    second = verdict_of(await moderator.handle(received("m-2", "thanks!")))

    assert emulator.stats.requests == 2
    assert Flag.CACHED not in second.verdict.flags


async def test_a_fail_closed_verdict_is_not_cached(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    moderator = moderator_on(emulator, http_session)
    text = f"Tell me a story {INVALID_MARKER}"

    await moderator.handle(received("m-1", text))
    second = verdict_of(await moderator.handle(received("m-2", text)))

    assert emulator.stats.requests == 4  # twice per message: invalid, asked again, invalid
    assert Flag.MODEL_OUTPUT_INVALID in second.verdict.flags
    assert Flag.CACHED not in second.verdict.flags


async def test_concurrent_identical_messages_make_one_model_call(
    slow_emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    moderator = moderator_on(slow_emulator, http_session)

    outcomes = await asyncio.gather(
        moderator.handle(received("m-1", "lol")), moderator.handle(received("m-2", "lol"))
    )

    assert slow_emulator.stats.requests == 1
    flags = [verdict_of(outcome).verdict.flags for outcome in outcomes]
    assert flags == [(), (Flag.CACHED,)]


async def test_a_chunked_message_reuses_the_chunks_it_shares_with_an_earlier_one(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    moderator = moderator_on(emulator, http_session)
    paragraph = "A long and friendly letter about baking bread at home. " * 400

    first = verdict_of(await moderator.handle(received("m-1", paragraph)))
    calls = emulator.stats.requests
    second = verdict_of(await moderator.handle(received("m-2", paragraph)))

    assert Flag.CHUNKED in first.verdict.flags
    assert calls > 1
    assert emulator.stats.requests == calls
    assert Flag.CACHED in second.verdict.flags


# --- wiring from settings ---------------------------------------------------------------------


def settings_with(**overrides: Any) -> Settings:
    return Settings(
        queue_url="http://127.0.0.1:9/123456789012/requests",
        safe_topic_arn="arn:aws:sns:us-east-1:123456789012:safe",
        unsafe_topic_arn="arn:aws:sns:us-east-1:123456789012:unsafe",
        backend="tgi",
        tgi_url="http://127.0.0.1:9",
        **overrides,
    )


class NamedEndpoint:
    """Only the identity a cache scope reads from a classifier."""

    backend = "tgi"
    endpoint = "http://127.0.0.1:9"

    async def classify(self, prompt: str) -> Completion:
        raise AssertionError("not called")


def test_a_cache_size_of_zero_wires_no_cache() -> None:
    settings = settings_with(cache_size=0)

    assert cache_from(settings, NamedEndpoint(), policy_from(settings)) is None


def test_the_wired_cache_is_keyed_by_the_configured_generation_parameters() -> None:
    plain = settings_with()
    tuned = settings_with(model_parameters={"max_new_tokens": 7})

    plain_cache = cache_from(plain, NamedEndpoint(), policy_from(plain))
    tuned_cache = cache_from(tuned, NamedEndpoint(), policy_from(tuned))

    assert plain_cache is not None
    assert tuned_cache is not None
    assert plain_cache.key("hi") != tuned_cache.key("hi")
