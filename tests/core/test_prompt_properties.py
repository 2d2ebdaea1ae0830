"""Properties of neutralisation, rendering and planning on generated hostile content.

The generated text is built from the pieces forgeries are made of: marker words in any case,
openings and closings, long and unicode whitespace runs, partial and nested markers. The reference
for what a marker is stays the pattern the neutraliser was first written with (simple, and slow
on long runs: fine on these short strings); the neutraliser must agree with it exactly.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.models import Role, Turn
from worker.core.prompt import (
    fixed_prompt_chars,
    neutralize,
    plan_prompts,
    prepare_conversation,
    render_prompt,
)
from worker.core.taxonomy import PromptFormat, default_taxonomy

ZWSP = "\u200b"

# Deterministic in CI (the same examples every run, nothing stored between runs) and small enough
# that the whole module takes seconds.
HOSTILE = settings(max_examples=150, deadline=None, derandomize=True, database=None)

# What a marker is, written as plainly as FORMATS.md section 3 states it.
REFERENCE_MARKER = re.compile(
    r"<\s*(?:begin|end)\s+(?:conversation|unsafe\s+content\s+categories)\s*>"
    r"|\[\s*/?\s*inst\s*\]"
    r"|<\s*/?\s*s\s*>"
    r"|<\|[^\s|<>]+\|>",
    re.IGNORECASE,
)
CONVERSATION_MARKER = re.compile(r"<\s*(?:begin|end)\s+conversation\s*>", re.IGNORECASE)
SPECIAL_TOKEN = re.compile(r"<\|[^\s|<>]+\|>")


def reference_neutralize(content: str) -> tuple[str, bool]:
    """Break markers until none is left, one non-overlapping pass at a time."""
    text, changed = content, False
    while True:
        text, count = REFERENCE_MARKER.subn(lambda m: m.group()[0] + ZWSP + m.group()[1:], text)
        if count == 0:
            return text, changed
        changed = True


_WHITESPACE = [" ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "\x0b", "\x0c", "\u2028"]
_PIECES = [
    "<", "[", "<|", "|>", "|", ">", "]", "/", "s", "S", "\u017f",  # long s folds to s
    "inst", "INST", "InSt", "in", "st", "begin", "BEGIN", "end", "End", "conversation",
    "CONVERSATION", "unsafe", "content", "categories", "eot_id", "start_header_id",
    "<END CONVERSATION>", "<BEGIN CONVERSATION>", "[INST]", "[/INST]", "<s>", "</s>",
    "<|eot_id|>", "<BEGIN UNSAFE CONTENT CATEGORIES>", "< end  conversation >", "[ / inst ]",
    "x", "ok", "\u200b", "😀",
]  # fmt: skip
_whitespace_run = st.builds(
    lambda char, count: char * count, st.sampled_from(_WHITESPACE), st.integers(1, 40)
)
_piece = st.one_of(
    st.sampled_from(_PIECES),
    st.sampled_from(_WHITESPACE),
    _whitespace_run,
    st.text(max_size=3),
)
hostile_text = st.lists(_piece, max_size=30).map("".join)
_nested = st.builds(
    lambda outer, inner, cut: outer[:cut] + inner + outer[cut:],
    st.sampled_from(["<|eot_id|>", "[INST]", "[/INST]", "<s>", "</s>", "<END CONVERSATION>"]),
    st.sampled_from(["<|eot_id|>", "[INST]", "</s>", "<END CONVERSATION>", "<|x|>"]),
    st.integers(0, 20),
)
content_text = st.one_of(hostile_text, _nested, st.text(max_size=60))
roles = st.sampled_from(["user", "assistant"])
conversations = st.lists(st.tuples(roles, content_text), min_size=1, max_size=4).map(
    lambda pairs: [Turn(role, content) for role, content in pairs]
)
formats = st.sampled_from(list(PromptFormat))


def _label(role: Role) -> str:
    return "User" if role == "user" else "Agent"


def _conversation_block(prompt: str) -> str:
    start = prompt.index("<BEGIN CONVERSATION>\n\n") + len("<BEGIN CONVERSATION>\n\n")
    return prompt[start : prompt.rindex("<END CONVERSATION>")]


# --- neutralize ----------------------------------------------------------------------------------


@HOSTILE
@given(content_text)
def test_neutralize_agrees_with_the_reference(content: str) -> None:
    assert neutralize(content) == reference_neutralize(content)


@HOSTILE
@given(content_text)
def test_no_marker_survives_neutralisation(content: str) -> None:
    result, _ = neutralize(content)

    assert REFERENCE_MARKER.search(result) is None


@HOSTILE
@given(content_text.filter(lambda text: ZWSP not in text))
def test_neutralisation_only_inserts_zero_width_spaces(content: str) -> None:
    result, _ = neutralize(content)

    assert result.replace(ZWSP, "") == content


@HOSTILE
@given(content_text)
def test_neutralize_is_idempotent(content: str) -> None:
    result, _ = neutralize(content)

    assert neutralize(result) == (result, False)


@HOSTILE
@given(content_text)
def test_text_is_changed_exactly_when_it_holds_a_marker(content: str) -> None:
    result, changed = neutralize(content)

    assert changed is (REFERENCE_MARKER.search(content) is not None)
    assert changed is (result != content)


# --- rendering -----------------------------------------------------------------------------------


@HOSTILE
@given(conversations, formats)
def test_rendered_prompt_has_exactly_one_conversation_section(
    turns: list[Turn], fmt: PromptFormat
) -> None:
    prompt = render_prompt(turns, fmt, default_taxonomy(fmt)).text

    assert [m.group() for m in CONVERSATION_MARKER.finditer(prompt)] == [
        "<BEGIN CONVERSATION>",
        "<END CONVERSATION>",
    ]


@HOSTILE
@given(conversations, formats)
def test_no_forged_marker_survives_in_a_rendered_turn(turns: list[Turn], fmt: PromptFormat) -> None:
    prompt = render_prompt(turns, fmt, default_taxonomy(fmt)).text

    assert REFERENCE_MARKER.search(_conversation_block(prompt)) is None


@HOSTILE
@given(conversations.filter(lambda turns: all(ZWSP not in t.content for t in turns)), formats)
def test_rendered_turns_are_the_stripped_input_plus_zero_width_spaces(
    turns: list[Turn], fmt: PromptFormat
) -> None:
    rendered = render_prompt(turns, fmt, default_taxonomy(fmt))

    expected = "".join(f"{_label(t.role)}: {t.content.strip()}\n\n" for t in turns)
    assert _conversation_block(rendered.text).replace(ZWSP, "") == expected
    assert rendered.neutralized is (ZWSP in rendered.text)


@HOSTILE
@given(conversations, st.sampled_from([PromptFormat.LLAMA_GUARD_3, PromptFormat.LLAMA_GUARD_3_1B]))
def test_only_the_templates_own_special_tokens_are_rendered(
    turns: list[Turn], fmt: PromptFormat
) -> None:
    prompt = render_prompt(turns, fmt, default_taxonomy(fmt)).text

    assert SPECIAL_TOKEN.findall(prompt) == [
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
    ]


@HOSTILE
@given(conversations, formats)
def test_rendering_prepared_turns_gives_the_same_prompt(
    turns: list[Turn], fmt: PromptFormat
) -> None:
    taxonomy = default_taxonomy(fmt)

    assert render_prompt(prepare_conversation(turns), fmt, taxonomy) == render_prompt(
        turns, fmt, taxonomy
    )


# --- planning ------------------------------------------------------------------------------------


@HOSTILE
@given(conversations, formats, st.integers(1, 400), st.integers(0, 60))
def test_every_planned_prompt_fits_and_holds_no_forged_marker(
    turns: list[Turn], fmt: PromptFormat, extra: int, overlap: int
) -> None:
    taxonomy = default_taxonomy(fmt)
    budget = fixed_prompt_chars(fmt, taxonomy, turns[-1].role) + extra

    plan = plan_prompts(turns, fmt, taxonomy, budget, overlap)

    for prompt in plan.prompts:
        assert len(prompt.text) <= budget
        assert len(CONVERSATION_MARKER.findall(prompt.text)) == 2
        assert REFERENCE_MARKER.search(_conversation_block(prompt.text)) is None
