"""The pipeline's two bounds on the calls one message may cost: at most three budget shrinks
after "prompt too long", and at most ``MAX_PROMPTS_PER_MESSAGE`` chunks (issue 10)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from structlog.testing import capture_logs
from support.builders import MOMENT

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.fakes import InMemorySink
from worker.adapters.tgi import TgiClassifier
from worker.core.prompt import DEFAULT_PARAMETERS
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.pipeline import MAX_PROMPTS_PER_MESSAGE, DeadLetter, ModerationPolicy, Moderator
from worker.ports import ReceivedMessage

FORMAT = PromptFormat.LLAMA_GUARD_1


def received(text: str) -> ReceivedMessage:
    return ReceivedMessage(
        message_id="sqs-1",
        receipt_handle="handle-1",
        body=json.dumps({"id": "post-1", "content": text}),
        receive_count=1,
        received_at=MOMENT,
    )


def moderator(url: str, session: aiohttp.ClientSession, max_prompt_chars: int) -> Moderator:
    return Moderator(
        TgiClassifier(session, url, DEFAULT_PARAMETERS),
        InMemorySink(),
        ModerationPolicy(
            prompt_format=FORMAT,
            taxonomy=default_taxonomy(FORMAT),
            max_prompt_chars=max_prompt_chars,
        ),
        clock=lambda: datetime(2026, 11, 26, 14, 0, 1, tzinfo=UTC),
    )


@pytest.fixture
async def tiny_model() -> AsyncIterator[RunningEmulator]:
    """A model whose context (64 tokens, about 256 characters) no prompt of ours fits."""
    async with run_emulator(EmulatorConfig(max_total_tokens=64)) as running:
        yield running


async def test_after_three_shrinks_a_prompt_still_too_long_is_dead_lettered(
    tiny_model: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    """One call, then three shrunk retries: four calls in all, never a fifth."""
    moderate = moderator(tiny_model.url, http_session, max_prompt_chars=12_000)

    with capture_logs() as logs:
        outcome = await moderate.handle(received("a long story " * 600))

    assert isinstance(outcome, DeadLetter)
    assert outcome.error_code == "prompt_too_long"
    assert tiny_model.stats.by_outcome["prompt_too_long"] == 4
    assert tiny_model.stats.requests == 4
    shrinks = [entry for entry in logs if entry["event"] == "prompt_budget_shrunk"]
    assert {entry["unit"] for entry in shrinks} == {"characters"}
    budgets = [entry["max_prompt_size"] for entry in shrinks]
    assert len(budgets) == 3
    assert budgets == sorted(budgets, reverse=True)


async def test_a_message_needing_more_than_the_prompt_limit_is_refused_before_any_call(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    """A budget that leaves room for a few words a chunk must not flood the endpoint."""
    moderate = moderator(emulator.url, http_session, max_prompt_chars=4_500)
    text = "word " * 19_000  # 95,000 characters: about 180 chunks of this budget

    outcome = await moderate.handle(received(text))

    assert isinstance(outcome, DeadLetter)
    assert outcome.error_code == "prompt_too_long"
    assert f"more than {MAX_PROMPTS_PER_MESSAGE}" in outcome.detail
    assert emulator.stats.requests == 0
