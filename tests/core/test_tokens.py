"""Prompt budgets in Llama 3 tokens (the ``tokens`` extra): exact counts, linear, within budget.

The test environment installs the extra (``make lock`` includes it), so the tokenizer is the
real one read from llama-models' file.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.models import Turn
from worker.core.prompt import plan_prompts, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.core.tokens import (
    CHARACTERS,
    LLAMA3_VOCABULARY_SIZE,
    Llama3Tokenizer,
    llama3_special_tokens,
)
from worker.pipeline import ModerationPolicy
from worker.tokenizer import load_llama3_tokenizer

LG3 = PromptFormat.LLAMA_GUARD_3
BUDGET = 4_064
# Chinese punctuation (fullwidth comma and question mark) is part of the point.
CJK = "今天天气很好，我们去公园散步吧。你觉得怎么样？这是一个很长的中文句子，用来测试分词。"  # noqa: RUF001


@pytest.fixture(scope="module")
def tokenizer() -> Llama3Tokenizer:
    loaded = load_llama3_tokenizer()
    assert loaded is not None, "the tokens extra is part of the test environment"
    return loaded


def test_the_tokenizer_has_the_llama3_vocabulary(tokenizer: Llama3Tokenizer) -> None:
    assert tokenizer.vocabulary_size == LLAMA3_VOCABULARY_SIZE == 128_256


def test_the_tokenizer_is_loaded_once() -> None:
    assert load_llama3_tokenizer() is load_llama3_tokenizer()


def test_the_special_tokens_are_llama3s_256_in_id_order() -> None:
    """The 12 named ones, then reserved_special_token_2 up to _245 (0 and 1 are named)."""
    tokens = llama3_special_tokens()

    assert len(tokens) == len(set(tokens)) == 256
    assert tokens[:3] == ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"]
    assert tokens[12] == "<|reserved_special_token_2|>"
    assert tokens[-1] == "<|reserved_special_token_245|>"


def test_the_token_measure_adds_the_begin_of_text_token_and_two_tokens_at_each_seam(
    tokenizer: Llama3Tokenizer,
) -> None:
    """Its figures, as the budget uses them: 1 token the server adds, 2 of slack, 50 overlap."""
    measure = tokenizer.measure()

    assert (measure.unit, measure.server_added, measure.slack) == ("tokens", 1, 2)
    assert measure.default_overlap == 50
    assert measure.size("Hello world") == 2
    assert list(measure.unit_starts("Hello world")) == [0, 5]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("Hello world", 2),
        ("<|eot_id|>", 1),
        ("<|reserved_special_token_2|>", 1),
        ("<|reserved_special_token_245|>", 1),
        ("<|start_header_id|>user<|end_header_id|>\n\n", 4),
    ],
)
def test_known_texts_count_as_the_llama3_tokenizer_does(
    tokenizer: Llama3Tokenizer, text: str, tokens: int
) -> None:
    assert tokenizer.count(text) == tokens


def test_dense_text_counts_far_more_tokens_per_character_than_english(
    tokenizer: Llama3Tokenizer,
) -> None:
    english = "The weather is lovely today, shall we go for a walk in the park? " * 10

    assert tokenizer.count(english) < len(english) / 3
    assert tokenizer.count(CJK * 10) > len(CJK * 10) / 2


@given(st.text(max_size=300))
@settings(max_examples=60)
def test_token_starts_cover_the_text_in_order(text: str) -> None:
    tokenizer = load_llama3_tokenizer()
    assert tokenizer is not None
    starts = tokenizer.token_starts(text)

    assert len(starts) == tokenizer.count(text)
    assert starts == sorted(starts)
    assert not starts or starts[0] == 0
    assert all(0 <= start < len(text) for start in starts)


@pytest.mark.parametrize(
    "text",
    ["a" * 60_000, " " * 60_000, ("word " * 20_000) + "x" * 30_000, "猫" * 60_000],
    ids=["letters", "spaces", "words-then-a-long-run", "cjk"],
)
def test_runs_longer_than_tiktoken_takes_are_counted_in_segments(
    tokenizer: Llama3Tokenizer, text: str
) -> None:
    assert len(tokenizer.token_starts(text)) == tokenizer.count(text) > 0


def test_a_run_longer_than_tiktoken_takes_is_cut_every_25000_characters(
    tokenizer: Llama3Tokenizer,
) -> None:
    """The text before the run is one piece, then the run in pieces of 25,000 characters."""
    text = "I " + "x" * 30_000

    expected = tokenizer.count("I ") + tokenizer.count("x" * 25_000) + tokenizer.count("x" * 5_000)
    assert tokenizer.count(text) == expected


def test_a_run_of_exactly_25000_characters_is_not_cut_from_the_text_before_it(
    tokenizer: Llama3Tokenizer,
) -> None:
    text = "I " + "x" * 25_000

    # Cut at the run, the space would be counted apart from it: one token fewer.
    assert tokenizer.count(text) != tokenizer.count("I ") + tokenizer.count("x" * 25_000)


def test_text_longer_than_400000_characters_is_cut_at_the_run_that_crosses_the_limit(
    tokenizer: Llama3Tokenizer,
) -> None:
    """ "word " * 80,000 is exactly 400,000 characters: the cut falls where the next word starts."""
    text = "word " * 90_000

    expected = tokenizer.count("word " * 80_000) + tokenizer.count("word " * 10_000)
    assert tokenizer.count(text) == expected


def _exact_size(tokenizer: Llama3Tokenizer, prompt: str) -> int:
    """What the server counts: the prompt's tokens and its begin-of-text token."""
    return tokenizer.count(prompt) + 1


TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. " * 600,
    "cjk": CJK * 300,
    "emoji": "🙂👍🏽🎉 " * 2_000,
    "mixed": ("Hello 世界! 🎉 " + "données ") * 900,
    "no-spaces": "x" * 40_000,
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
@pytest.mark.parametrize("budget", [BUDGET, 2_000, 900])
def test_every_planned_prompt_fits_the_token_budget_exactly_counted(
    tokenizer: Llama3Tokenizer, text: str, budget: int
) -> None:
    turns = [Turn("user", text[:3_000]), Turn("assistant", "ok"), Turn("user", text)]

    plan = plan_prompts(turns, LG3, default_taxonomy(LG3), budget, measure=tokenizer.measure())

    assert plan.chunked
    assert all(_exact_size(tokenizer, prompt.text) <= budget for prompt in plan.prompts)


@given(st.text(min_size=1, max_size=4_000), st.integers(min_value=700, max_value=2_000))
@settings(max_examples=40, deadline=None)
def test_any_message_is_planned_within_any_token_budget(text: str, budget: int) -> None:
    tokenizer = load_llama3_tokenizer()
    assert tokenizer is not None

    plan = plan_prompts(
        [Turn("user", text)], LG3, default_taxonomy(LG3), budget, measure=tokenizer.measure()
    )

    assert all(_exact_size(tokenizer, prompt.text) <= budget for prompt in plan.prompts)


def test_a_long_cjk_conversation_is_planned_within_the_default_token_budget(
    tokenizer: Llama3Tokenizer,
) -> None:
    """12,000 characters fit the character budget, but as tokens they overflow 4,096."""
    turns = [Turn("user", CJK * 60), Turn("assistant", CJK * 40), Turn("user", CJK * 150)]
    rendered = render_prompt(turns, LG3, default_taxonomy(LG3)).text
    assert _exact_size(tokenizer, rendered) > BUDGET

    plan = plan_prompts(turns, LG3, default_taxonomy(LG3), BUDGET, measure=tokenizer.measure())

    assert all(_exact_size(tokenizer, prompt.text) <= BUDGET for prompt in plan.prompts)
    assert plan.chunked
    covered = "".join(prompt.text for prompt in plan.prompts)
    assert CJK[:20] in covered


def test_the_policy_budgets_llama3_formats_in_tokens_and_llama_guard_1_in_characters(
    tokenizer: Llama3Tokenizer,
) -> None:
    def policy(fmt: PromptFormat) -> ModerationPolicy:
        return ModerationPolicy(
            prompt_format=fmt,
            taxonomy=default_taxonomy(fmt),
            tokenizer=tokenizer,
            max_prompt_chars=12_000,
            max_prompt_tokens=BUDGET,
        )

    for fmt in (
        PromptFormat.LLAMA_GUARD_2,
        PromptFormat.LLAMA_GUARD_3,
        PromptFormat.LLAMA_GUARD_3_1B,
    ):
        measure, budget = policy(fmt).prompt_budget()
        assert (measure.unit, budget) == ("tokens", BUDGET)
    assert policy(PromptFormat.LLAMA_GUARD_1).prompt_budget() == (CHARACTERS, 12_000)


def test_without_the_tokenizer_every_format_is_budgeted_in_characters() -> None:
    policy = ModerationPolicy(prompt_format=LG3, taxonomy=default_taxonomy(LG3), tokenizer=None)

    assert policy.prompt_budget() == (CHARACTERS, 12_000)
