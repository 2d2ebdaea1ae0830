"""The pipeline's two bounds on the calls one message may cost: at most three budget shrinks
after "prompt too long", and at most ``MAX_PROMPTS_PER_MESSAGE`` chunks (issue 10); and a budget
in Llama 3 tokens, planned and shrunk in tokens (the real tokenizer of the ``tokens`` extra, which
the emulator counts with too)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from structlog.testing import capture_logs
from support.builders import MOMENT

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.emulator.tgi import count_prompt_tokens
from devstack.fakes import InMemorySink
from worker.adapters.tgi import TgiClassifier
from worker.core.models import Completion
from worker.core.prompt import DEFAULT_PARAMETERS
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.core.tokens import Llama3Tokenizer
from worker.core.verdict import Flag
from worker.pipeline import MAX_PROMPTS_PER_MESSAGE, Ack, DeadLetter, ModerationPolicy, Moderator
from worker.ports import ClassifierInFront, ReceivedMessage
from worker.tokenizer import load_llama3_tokenizer

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


# --- budgets in tokens ----------------------------------------------------------------------------

# llama-guard-2 is budgeted in Llama 3 tokens. Its prompt starts with "[INST]", not with the
# begin-of-text token, so a server counts one token more than the prompt's text holds: the
# measure's ``server_added``.
TOKEN_FORMAT = PromptFormat.LLAMA_GUARD_2
# 65 characters and 15 tokens: English runs at over four characters a token.
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "


class RecordingClassifier(ClassifierInFront):
    """The real TGI adapter, keeping every prompt it is asked to send, in order."""

    def __init__(self, inner: TgiClassifier) -> None:
        super().__init__(inner)
        self.prompts: list[str] = []

    async def classify(self, prompt: str) -> Completion:
        self.prompts.append(prompt)
        return await super().classify(prompt)


@pytest.fixture(scope="module")
def tokenizer() -> Llama3Tokenizer:
    loaded = load_llama3_tokenizer()
    assert loaded is not None, "the tokens extra is part of the test environment"
    return loaded


def token_moderator(
    classifier: RecordingClassifier, tokenizer: Llama3Tokenizer, max_prompt_tokens: int
) -> Moderator:
    return Moderator(
        classifier,
        InMemorySink(),
        ModerationPolicy(
            prompt_format=TOKEN_FORMAT,
            taxonomy=default_taxonomy(TOKEN_FORMAT),
            tokenizer=tokenizer,
            max_prompt_tokens=max_prompt_tokens,
        ),
    )


async def test_a_token_budget_is_spent_in_tokens_not_characters(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession, tokenizer: Llama3Tokenizer
) -> None:
    """A prompt of 8,500 characters, 1,870 tokens, goes whole under a 4,064-token budget."""
    budget = 4_064
    classifier = RecordingClassifier(TgiClassifier(http_session, emulator.url, DEFAULT_PARAMETERS))

    outcome = await token_moderator(classifier, tokenizer, budget).handle(received(SENTENCE * 120))

    assert isinstance(outcome, Ack)
    assert Flag.CHUNKED not in outcome.verdict.flags
    [prompt] = classifier.prompts
    assert len(prompt) > budget  # over the budget in characters, within it in tokens
    assert count_prompt_tokens(prompt) <= budget


async def test_after_too_many_tokens_the_budget_shrinks_to_three_quarters_of_the_servers_count(
    http_session: aiohttp.ClientSession, tokenizer: Llama3Tokenizer
) -> None:
    """The server's count of the longest prompt includes the token it adds (begin-of-text)."""
    # 1,024 tokens of context less the answer's 32: this prompt of 1,100 tokens is refused.
    async with run_emulator(EmulatorConfig(max_total_tokens=1_024)) as small:
        classifier = RecordingClassifier(TgiClassifier(http_session, small.url, DEFAULT_PARAMETERS))
        with capture_logs() as logs:
            outcome = await token_moderator(classifier, tokenizer, 1_200).handle(
                received(SENTENCE * 65)
            )

    assert isinstance(outcome, Ack)
    assert small.stats.by_outcome["prompt_too_long"] == 1
    refused, *shrunk = classifier.prompts
    [shrink] = [entry for entry in logs if entry["event"] == "prompt_budget_shrunk"]
    # The emulator counts a prompt as the server does; the refused prompt was the plan's only one.
    assert shrink == {
        "event": "prompt_budget_shrunk",
        "log_level": "info",
        "max_prompt_size": int(count_prompt_tokens(refused) * 0.75),
        "unit": "tokens",
    }
    assert shrunk
    assert all(count_prompt_tokens(prompt) <= shrink["max_prompt_size"] for prompt in shrunk)
