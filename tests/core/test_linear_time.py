"""Every per-message step takes time linear in its input, whatever the input.

Each test measures a step on an input and on one four times as large, and asserts on the ratio,
never on a duration: linear work gives about 4, quadratic work about 16 (the old neutraliser gave
16 on these shapes). ``support.timing.best_ratio`` measures CPU time, best of interleaved runs;
the threshold of 8 leaves room for cache effects. The inputs are the shapes
that froze the worker (issue 6: ``[`` + 95,000 spaces + ``x``, ``<`` + spaces, ``[/`` + tabs)
and their relatives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import pytest
from support.timing import best_ratio

from worker.core.completion import parse_completion
from worker.core.messages import decode_request
from worker.core.models import Turn
from worker.core.prompt import neutralize, plan_prompts, prepare_conversation, split_into_chunks
from worker.core.response import decode_generation
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.tokenizer import load_llama3_tokenizer

SMALL = 50_000
LARGE = 4 * SMALL
MAX_RATIO = 8.0

Input = TypeVar("Input")

LG1 = PromptFormat.LLAMA_GUARD_1
# The budgets the pipeline tries for one message: the default, then three shrinks by 0.75.
SHRINKING_BUDGETS = (12_000, 9_000, 6_750, 5_062)

# Each shape makes a text of about n characters.
HOSTILE_SHAPES: dict[str, Callable[[int], str]] = {
    "bracket_then_spaces": lambda n: "[" + " " * n + "x",
    "angle_then_spaces": lambda n: "<" + " " * n + "x",
    "bracket_slash_then_tabs": lambda n: "[/" + "\t" * n + "x",
    "angle_slash_then_spaces": lambda n: "< /" + " " * n + "x",
    "end_then_ideographic_spaces": lambda n: "<end" + "\u3000" * n + "x",
    "unsafe_content_then_spaces": lambda n: "<END UNSAFE CONTENT" + " " * n + "x",
    "unclosed_special_token": lambda n: "<|" + "a" * n,
    "special_token_of_brackets": lambda n: "<|" + "[" * n,
    "many_openings_with_spaces": lambda n: "[ \u00a0" * (n // 3),
    "many_angles": lambda n: "<" * n,
    "many_markers": lambda n: "<|eot_id|>[INST]" * (n // 16),
    "no_whitespace": lambda n: "x" * n,
    "only_whitespace_around_a_word": lambda n: "a" + " " * n + "b",
}
ISSUE_SHAPES = {
    name: HOSTILE_SHAPES[name]
    for name in ("bracket_then_spaces", "angle_then_spaces", "bracket_slash_then_tabs")
}


def _assert_linear(
    make: Callable[[int], Input], step: Callable[[Input], object], *, small: int = SMALL
) -> None:
    small_input, large_input = make(small), make(4 * small)
    ratio = best_ratio(lambda: step(small_input), lambda: step(large_input))
    assert ratio < MAX_RATIO, f"4x the input took {ratio:.1f}x the time: not linear"


@pytest.mark.parametrize("shape", HOSTILE_SHAPES.values(), ids=HOSTILE_SHAPES.keys())
def test_neutralize_is_linear(shape: Callable[[int], str]) -> None:
    _assert_linear(shape, neutralize)


def _plan_with_every_shrink(text: str) -> None:
    conversation = prepare_conversation(
        [Turn("assistant", "earlier turn " + text), Turn("user", text)]
    )
    for budget in SHRINKING_BUDGETS:
        plan_prompts(conversation, LG1, default_taxonomy(LG1), budget)


@pytest.mark.parametrize("shape", HOSTILE_SHAPES.values(), ids=HOSTILE_SHAPES.keys())
def test_planning_with_every_budget_shrink_is_linear(shape: Callable[[int], str]) -> None:
    _assert_linear(shape, _plan_with_every_shrink)


LG3 = PromptFormat.LLAMA_GUARD_3
# The token budgets the pipeline tries for a Llama 3 format: the default, then three shrinks.
SHRINKING_TOKEN_BUDGETS = (4_064, 3_048, 2_286, 1_714)
# Tokenising costs more per character than the character measure: fewer shapes (those that
# stress the tokenizer's runs and the chunker), a quarter of the size.
TOKEN_SHAPES: dict[str, Callable[[int], str]] = {
    "bracket_then_spaces": HOSTILE_SHAPES["bracket_then_spaces"],
    "many_markers": HOSTILE_SHAPES["many_markers"],
    "no_whitespace": HOSTILE_SHAPES["no_whitespace"],
    "only_whitespace_around_a_word": HOSTILE_SHAPES["only_whitespace_around_a_word"],
    # These are several tokens a character: half as many characters.
    "cjk_without_spaces": lambda n: "今天天气很好我们去公园散步吧" * (n // 28),
    "emoji": lambda n: "🙂👍🏽" * (n // 6),
}
# Token planning has a fixed cost that still shows at 12,500 characters (a ratio near 6.5 for
# text without whitespace, against 4.5 from 25,000 on), so it is compared from 25,000 up.
TOKEN_SMALL = SMALL // 2


def _plan_in_tokens_with_every_shrink(text: str) -> None:
    tokenizer = load_llama3_tokenizer()
    assert tokenizer is not None
    conversation = prepare_conversation(
        [Turn("assistant", "earlier turn " + text), Turn("user", text)]
    )
    for budget in SHRINKING_TOKEN_BUDGETS:
        plan_prompts(conversation, LG3, default_taxonomy(LG3), budget, measure=tokenizer.measure())


@pytest.mark.parametrize("shape", TOKEN_SHAPES.values(), ids=TOKEN_SHAPES.keys())
def test_planning_in_tokens_with_every_budget_shrink_is_linear(
    shape: Callable[[int], str],
) -> None:
    _assert_linear(shape, _plan_in_tokens_with_every_shrink, small=TOKEN_SMALL)


@pytest.mark.parametrize(("chunk_chars", "overlap_chars"), [(9_000, 200), (100, 50)])
@pytest.mark.parametrize("shape", HOSTILE_SHAPES.values(), ids=HOSTILE_SHAPES.keys())
def test_split_into_chunks_is_linear(
    shape: Callable[[int], str], chunk_chars: int, overlap_chars: int
) -> None:
    _assert_linear(shape, lambda text: split_into_chunks(text, chunk_chars, overlap_chars))


MODEL_OUTPUTS: dict[str, Callable[[int], str]] = {
    "many_codes": lambda n: "unsafe\n" + "S1, " * (n // 4),
    "unclosed_special_token": lambda n: "unsafe\n<|" + "a" * n,
    "angle_then_spaces": lambda n: "<" + " " * n + "safe",
    "safe_then_spaces": lambda n: "safe" + " " * n + "!",
    "blank_lines_first": lambda n: "\n" * n + "safe",
    "one_long_code": lambda n: "unsafe\nS" + "1" * n,
    "verdict_then_tabs": lambda n: "unsafe" + "\t" * n + "S1",
    "many_trailing_lines": lambda n: "unsafe\nS1\n" + "x\n" * (n // 2),
}


@pytest.mark.parametrize("shape", MODEL_OUTPUTS.values(), ids=MODEL_OUTPUTS.keys())
def test_parse_completion_is_linear(shape: Callable[[int], str]) -> None:
    taxonomy = default_taxonomy(PromptFormat.LLAMA_GUARD_3)

    _assert_linear(shape, lambda text: parse_completion(text, taxonomy))


def _echoing_response(n: int) -> tuple[str, str]:
    """A response body whose generation starts with a copy of the prompt, and the prompt."""
    prompt = "[INST] [" + " " * n + "x [/INST]"
    return json.dumps([{"generated_text": " <s>" + prompt + " unsafe\nS1"}]), prompt


def test_decode_generation_with_an_echoed_prompt_is_linear() -> None:
    _assert_linear(_echoing_response, lambda response: decode_generation(*response))


@pytest.mark.parametrize("shape", ISSUE_SHAPES.values(), ids=ISSUE_SHAPES.keys())
def test_decode_request_is_linear(shape: Callable[[int], str]) -> None:
    def body(n: int) -> str:
        return json.dumps({"id": "m-1", "content": shape(n)})

    _assert_linear(body, lambda text: decode_request(text, max_conversation_chars=10 * LARGE))


def test_decode_request_of_many_messages_is_linear() -> None:
    def body(n: int) -> str:
        turn = {"role": "user", "content": "[ \t"}
        return json.dumps({"id": "m-1", "messages": [turn] * (n // 40)})

    _assert_linear(body, lambda text: decode_request(text, max_conversation_chars=10 * LARGE))
