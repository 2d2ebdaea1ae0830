"""Budgets in tokens end to end: a long CJK conversation under llama-guard-3 needs no "too long".

The emulator counts Llama 3 prompts with the real tokenizer (the ``tokens`` extra), as vLLM
does, and answers 400 "maximum context length" above its 4,096 tokens. The worker, counting
the same tokens, plans prompts that fit: no request comes back too long. The control shows the
emulator would have refused: with the character budget the same conversation is sent whole
first, and only the "too long" shrink saves it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiohttp
import pytest
from worker_harness import (
    HTTP_OPENAI,
    SERVED_MODEL,
    point_model_at,
    published_verdicts,
    run_worker,
    send,
    worker_settings,
)

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.fakes import InMemorySink
from worker.adapters.openai import OpenAIClassifier
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.pipeline import Ack, ModerationPolicy, Moderator
from worker.ports import ReceivedMessage

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from devstack.moto_stack import LocalResources

LG3 = PromptFormat.LLAMA_GUARD_3
# Llama 3 reads these characters at about one token each: 9,250 characters fit the
# 12,000-character budget but are about 7,250 tokens, over a 4,096-token context.
CJK = "今天天气很好我们去公园散步吧你觉得怎么样这是一个很长的中文句子用来测试分词"
CONVERSATION = [
    {"role": "user", "content": CJK * 60},
    {"role": "assistant", "content": CJK * 40},
    {"role": "user", "content": CJK * 150},
]


@pytest.fixture
async def vllm() -> AsyncIterator[RunningEmulator]:
    """The emulator as a vLLM server with a 4,096-token context."""
    async with run_emulator(EmulatorConfig(max_total_tokens=4096)) as running:
        yield running


async def test_a_long_cjk_conversation_is_moderated_without_a_too_long_round_trip(
    monkeypatch: pytest.MonkeyPatch,
    sqs_client: SQSClient,
    local_resources: LocalResources,
    vllm: RunningEmulator,
) -> None:
    point_model_at(monkeypatch, vllm.url, HTTP_OPENAI)
    await send(sqs_client, local_resources.queue_url, {"id": "cjk-1", "messages": CONVERSATION})

    stats = await run_worker(worker_settings(local_resources, prompt_format=str(LG3)))

    assert stats.acked == 1
    assert vllm.stats.by_outcome["prompt_too_long"] == 0
    assert vllm.stats.requests >= 1
    [delivered] = (await published_verdicts(sqs_client, local_resources)).all
    assert delivered.document["model"]["backend"] == "openai"
    # The assessed message alone is about 4,350 tokens: it is chunked, and no earlier turn fits
    # beside a chunk.
    assert set(delivered.document["flags"]) == {"chunked", "context_truncated"}


async def test_with_the_character_budget_the_same_conversation_first_comes_back_too_long(
    vllm: RunningEmulator,
) -> None:
    policy = ModerationPolicy(prompt_format=LG3, taxonomy=default_taxonomy(LG3), tokenizer=None)
    message = ReceivedMessage(
        message_id="sqs-1",
        receipt_handle="handle-1",
        body=json.dumps({"id": "cjk-2", "messages": CONVERSATION}),
        receive_count=1,
        received_at=datetime(2026, 11, 26, 14, 0, tzinfo=UTC),
    )
    async with aiohttp.ClientSession() as session:
        classifier = OpenAIClassifier(session, vllm.url, SERVED_MODEL)
        outcome = await Moderator(classifier, InMemorySink(), policy).handle(message)

    assert isinstance(outcome, Ack)
    assert vllm.stats.by_outcome["prompt_too_long"] >= 1
