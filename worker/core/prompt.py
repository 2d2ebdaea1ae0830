"""Llama Guard prompts: the per-format template, neutralisation, the budget and the request body.

Content is only ever concatenated into the template, never expanded (no ``str.format``/``%`` on
it), so ``$x``, ``{x}`` and ``%s`` stay literal. No begin-of-text token is rendered: TGI adds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from worker.core.errors import ConfigurationError, PromptTooLong
from worker.core.models import Role, Turn
from worker.core.taxonomy import PromptFormat, Taxonomy, render_categories
from worker.core.tokens import CHARACTERS, PromptMeasure

_LABELS: dict[Role, str] = {"user": "User", "assistant": "Agent"}

_INSTRUCTION_1 = (
    "Provide your safety assessment for {A} in the above conversation:\n"
    "- First line must read 'safe' or 'unsafe'.\n"
    "- If unsafe, a second line must include a comma-separated list of violated categories."
)
_INSTRUCTION_2 = (
    "Provide your safety assessment for ONLY THE LAST {A} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
)
_LLAMA_3_OPEN = "<|start_header_id|>user<|end_header_id|>\n\n"
_LLAMA_3_CLOSE = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"

# --- neutralisation ----------------------------------------------------------------------------

# Why U+200B ZERO WIDTH SPACE is the breaking character, inserted right after the opening
# ``<``/``[`` of a marker:
# - the special-token matcher of every Llama tokenizer needs the exact contiguous string, so
#   ``<\u200b|eot_id|>`` can never become a control token;
# - Llama tokenizers keep it as text of its own (Llama 2's SentencePiece uses the identity
#   normaliser and Llama 3's BPE has none, so nothing drops it), so ``<`` stays apart from the
#   marker word and the model no longer sees the marker's own token sequence;
# - it is invisible, so the text stays readable;
# - it is not whitespace for ``str.strip`` or ``\s``, so the flexible-whitespace patterns below
#   cannot match a broken marker again, and stripping never removes it.
_BREAK = "\u200b"

# Text markers are matched case-insensitively and with any inner whitespace, because the model
# reads a varied forgery much like the original. Special tokens (``<|...|>``) are matched exactly
# as tokenizers do: ``<|`` + a run with no whitespace, ``|``, ``<`` or ``>`` + ``|>``.
#
# The pattern is a lookahead, so it reports every position where a marker STARTS, overlapping
# ones included (``<|[INST]|>`` starts two), in one left-to-right pass. It is linear in the text
# whatever the text, because no attempt can backtrack or rescan:
# - every quantifier is possessive (``*+``, ``++``) and is followed by a character its class
#   cannot match (``/``, a letter, ``>``, ``]``, ``|``), so a run is consumed once and never
#   given back (``\s*/?\s*`` used to split a run of n spaces n ways before failing);
# - an attempt starts only at ``<`` or ``[``, and the span it reads holds no other ``<`` (and
#   for text markers no ``[``), so the spans read from different starts overlap by at most a
#   special token's body, which holds no whitespace: each character is read a bounded number
#   of times.
_MARKER_START = re.compile(
    r"(?="
    r"<\s*+(?:begin|end)\s++(?:conversation|unsafe\s++content\s++categories)\s*+>"
    r"|\[\s*+(?:/\s*+)?inst\s*+\]"
    r"|<\s*+(?:/\s*+)?s\s*+>"
    r"|<\|[^\s|<>]++\|>"
    r")",
    re.IGNORECASE,
)


def neutralize(content: str) -> tuple[str, bool]:
    """Break every forged template marker in ``content``; return the text and whether any was.

    U+200B goes right after the opening ``<``/``[`` of every position where a marker starts,
    nested and overlapping ones included, so nothing can reassemble: U+200B is neither
    whitespace nor part of any marker word, so a broken opening never matches again, and it
    adds no opening either (inside a special token's body it is just one more body character).
    Hence one pass reaches the fixed point, and a second call changes nothing. Content without
    markers is returned unchanged.
    """
    if "<" not in content and "[" not in content:
        # Every marker starts with one of them; most chat has neither, and a scan for a
        # character is far cheaper than trying the pattern at every position.
        return content, False
    pieces: list[str] = []
    copied = 0
    for match in _MARKER_START.finditer(content):
        opening_end = match.start() + 1
        pieces.append(content[copied:opening_end])
        pieces.append(_BREAK)
        copied = opening_end
    if not pieces:
        return content, False
    pieces.append(content[copied:])
    return "".join(pieces), True


# --- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt ready to send, the role it assesses and whether content had markers broken."""

    text: str
    assessed_role: Role
    neutralized: bool


def _wrap(fmt: PromptFormat, label: str, categories: str, conversation: str) -> str:
    """The whole prompt around an already rendered ``{TURNS}`` block."""
    body = (
        f"Task: Check if there is unsafe content in '{label}' messages in conversations according"
        " our safety policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{conversation}<END CONVERSATION>\n\n"
    )
    if fmt is PromptFormat.LLAMA_GUARD_1:
        return "[INST] " + body + _INSTRUCTION_1.replace("{A}", label) + " [/INST]"
    instruction = _INSTRUCTION_2.replace("{A}", label)
    if fmt is PromptFormat.LLAMA_GUARD_2:
        return "[INST] " + body + instruction + " [/INST]"
    # The 1B model's template puts one space before <|eot_id|>; the 8B model's does not.
    close = " " + _LLAMA_3_CLOSE if fmt is PromptFormat.LLAMA_GUARD_3_1B else _LLAMA_3_CLOSE
    return _LLAMA_3_OPEN + body + instruction + close


def _turn_text(turn: Turn) -> str:
    return _LABELS[turn.role] + ": " + turn.content + "\n\n"


def _turn_chars(turn: Turn) -> int:
    """``len(_turn_text(turn))`` without building the text."""
    return len(_LABELS[turn.role]) + len(turn.content) + 4


@dataclass(frozen=True)
class PreparedConversation:
    """Turns neutralised and stripped once: what is measured, planned and rendered.

    Preparing reads every character, so a caller that plans the same conversation several
    times (a budget that shrinks) prepares it once and passes this value instead of the turns.
    """

    turns: tuple[Turn, ...]
    neutralized: bool


def prepare_conversation(turns: Sequence[Turn]) -> PreparedConversation:
    """Neutralise and strip every turn."""
    prepared: list[Turn] = []
    any_neutralized = False
    for turn in turns:
        content, neutralized = neutralize(turn.content)
        any_neutralized = any_neutralized or neutralized
        prepared.append(Turn(turn.role, content.strip()))
    return PreparedConversation(tuple(prepared), any_neutralized)


def _prepared(conversation: Sequence[Turn] | PreparedConversation) -> PreparedConversation:
    if isinstance(conversation, PreparedConversation):
        return conversation
    return prepare_conversation(conversation)


def _render_prepared(
    turns: Sequence[Turn], fmt: PromptFormat, categories: str, neutralized: bool
) -> RenderedPrompt:
    role = turns[-1].role
    conversation = "".join(_turn_text(turn) for turn in turns)
    text = _wrap(fmt, _LABELS[role], categories, conversation)
    return RenderedPrompt(text, role, neutralized)


def render_prompt(
    conversation: Sequence[Turn] | PreparedConversation, fmt: PromptFormat, taxonomy: Taxonomy
) -> RenderedPrompt:
    """Render the conversation in ``fmt``; the last turn is the one assessed."""
    prepared = _prepared(conversation)
    if not prepared.turns:
        raise ValueError("cannot render a prompt without turns")
    return _render_prepared(
        prepared.turns, fmt, render_categories(taxonomy, fmt), prepared.neutralized
    )


# --- prompt budget ---------------------------------------------------------------------------

# When the assessed message must be chunked, at most this share of the room left for turns goes
# to context (the most recent turns that fit); the rest is the chunk size. Context helps the
# verdict, but the assessed text is what must be covered, so it gets most of the room.
CONTEXT_SHARE_WHEN_CHUNKING = 0.25

#: The formats whose model reads prompts with the Llama 3 tokenizer (counted exactly in tokens
#: when it is installed); llama-guard-1 reads them with Llama 2's.
LLAMA3_TOKENIZER_FORMATS = frozenset(
    {PromptFormat.LLAMA_GUARD_2, PromptFormat.LLAMA_GUARD_3, PromptFormat.LLAMA_GUARD_3_1B}
)


@dataclass(frozen=True)
class PromptPlan:
    """The prompts that together moderate one conversation within the budget."""

    prompts: tuple[RenderedPrompt, ...]
    context_truncated: bool
    chunked: bool


def fixed_prompt_chars(fmt: PromptFormat, taxonomy: Taxonomy, role: Role) -> int:
    """Characters of a prompt whose only turn, of ``role``, is empty: what no content shrinks."""
    return _fixed_size(fmt, render_categories(taxonomy, fmt), role, CHARACTERS)


def _fixed_size(fmt: PromptFormat, categories: str, role: Role, measure: PromptMeasure) -> int:
    """The template with an empty turn, what the server adds, and the content's two seams."""
    template = _wrap(fmt, _LABELS[role], categories, _turn_text(Turn(role, "")))
    return measure.size(template) + measure.server_added + 2 * measure.slack


def _turn_size(turn: Turn, measure: PromptMeasure) -> int:
    if measure.unit == "characters":
        return _turn_chars(turn)  # without building the text
    return measure.size(_turn_text(turn)) + measure.slack


def _recent_context(context: Sequence[Turn], room: int, measure: PromptMeasure) -> list[Turn]:
    """The most recent context turns whose rendered size fits in ``room``, oldest first.

    Stops at the first turn that does not fit, so the kept context has no gaps (and no older
    turn is ever measured).
    """
    kept: list[Turn] = []
    used = 0
    for turn in reversed(context):
        size = _turn_size(turn, measure)
        if used + size > room:
            break
        kept.append(turn)
        used += size
    kept.reverse()
    return kept


def plan_prompts(
    conversation: Sequence[Turn] | PreparedConversation,
    fmt: PromptFormat,
    taxonomy: Taxonomy,
    max_prompt_size: int,
    chunk_overlap: int | None = None,
    *,
    max_prompts: int | None = None,
    measure: PromptMeasure = CHARACTERS,
) -> PromptPlan:
    """Fit the conversation into prompts of at most ``max_prompt_size`` units each.

    ``measure`` says what a unit is: characters (a conservative stand-in for tokens) or the
    model's tokens, the begin-of-text token the server adds included. Every piece is measured
    once, never the whole prompt again, so planning is linear in the conversation. In order:
    1. the whole conversation fits: one prompt;
    2. the assessed (last) turn fits: drop the oldest context turns until the rest fits;
    3. otherwise chunk the assessed content: the most recent context turns that fit into
       ``CONTEXT_SHARE_WHEN_CHUNKING`` of the room are kept, the rest of the room is the chunk
       size, and every chunk is rendered with that same context. Chunks overlap by
       ``chunk_overlap`` units (by default the measure's: 200 characters or 50 tokens).
    Raises ``PromptTooLong`` when the template and categories alone leave no room for content,
    or when chunking would take more than ``max_prompts`` prompts (checked before any is
    rendered: a budget close to the template would otherwise render thousands of copies of it).
    Pass a ``PreparedConversation`` to plan the same conversation again without preparing it.
    """
    prepared = _prepared(conversation)
    if not prepared.turns:
        raise ValueError("cannot plan prompts without turns")
    if max_prompt_size < 1:
        raise ValueError(f"max_prompt_size must be positive, not {max_prompt_size}")
    overlap = measure.default_overlap if chunk_overlap is None else chunk_overlap
    if overlap < 0:
        raise ValueError(f"chunk_overlap must not be negative, not {overlap}")
    neutralized = prepared.neutralized
    categories = render_categories(taxonomy, fmt)
    *context, assessed = prepared.turns
    fixed = _fixed_size(fmt, categories, assessed.role, measure)
    room = max_prompt_size - fixed
    if room < 0 or (room == 0 and assessed.content):
        raise PromptTooLong(
            f"the {fmt} template with its categories takes {fixed} {measure.unit}, which leaves"
            f" no room for the message within the budget of {max_prompt_size} {measure.unit}"
        )
    content_size = measure.size(assessed.content)
    if room >= content_size:
        kept = _recent_context(context, room - content_size, measure)
        prompt = _render_prepared([*kept, assessed], fmt, categories, neutralized)
        return PromptPlan((prompt,), context_truncated=len(kept) < len(context), chunked=False)
    kept = _recent_context(context, int(room * CONTEXT_SHARE_WHEN_CHUNKING), measure)
    # A chunk cut out of the whole text may count a little more on its own, at its two ends.
    chunk_size = room - sum(_turn_size(turn, measure) for turn in kept) - 2 * measure.slack
    if chunk_size < 1:
        raise PromptTooLong(
            f"the budget of {max_prompt_size} {measure.unit} leaves no room for a chunk of the"
            " message"
        )
    starts = measure.unit_starts(assessed.content)
    chunks = split_into_chunks(assessed.content, chunk_size, overlap, unit_starts=starts)
    if max_prompts is not None and len(chunks) > max_prompts:
        raise PromptTooLong(
            f"moderating this message within a budget of {max_prompt_size} {measure.unit} would"
            f" take {len(chunks)} model calls, more than {max_prompts}"
        )
    prompts = tuple(
        _render_prepared([*kept, Turn(assessed.role, chunk)], fmt, categories, neutralized)
        for chunk in chunks
    )
    return PromptPlan(prompts, context_truncated=len(kept) < len(context), chunked=True)


def split_into_chunks(
    text: str,
    chunk_chars: int,
    overlap_chars: int,
    *,
    unit_starts: Sequence[int] | None = None,
) -> list[str]:
    """Split ``text`` into stripped pieces of at most ``chunk_chars`` units that overlap.

    A unit is a character, or, with ``unit_starts`` (the character offset at which each unit
    starts, ascending from 0), a token: pieces are then cut only where a token starts. A piece
    ends after the last unit ending in whitespace in the second half of its window when there
    is one, and the next piece starts at a word start within the last ``overlap_chars`` units,
    so words are rarely cut. The overlap is capped at half a chunk so every piece moves forward.
    Whitespace-only pieces are left out.
    """
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be positive, not {chunk_chars}")
    starts: Sequence[int] = range(len(text)) if unit_starts is None else unit_starts
    units = len(starts)

    def offset(unit: int) -> int:
        return starts[unit] if unit < units else len(text)

    overlap = min(max(overlap_chars, 0), chunk_chars // 2)
    chunks: list[str] = []
    start = 0
    while True:
        end = min(start + chunk_chars, units)
        if end < units:
            lowest = start + max(overlap + 1, chunk_chars // 2)
            end = _cut_after_whitespace(text, offset, lowest, end)
        piece = text[offset(start) : offset(end)].strip()
        if piece:
            chunks.append(piece)
        if end >= units:
            return chunks
        start = _word_start(text, offset, end - overlap, end)


def _cut_after_whitespace(text: str, offset: Callable[[int], int], lowest: int, end: int) -> int:
    """The unit after the last one in ``[lowest, end)`` that ends in whitespace, else ``end``."""
    for unit in range(end - 1, lowest - 1, -1):
        last_char = offset(unit + 1) - 1
        if last_char >= 0 and text[last_char].isspace():
            return unit + 1
    return end


def _word_start(text: str, offset: Callable[[int], int], lowest: int, end: int) -> int:
    """The first unit in ``[lowest, end)`` that starts a word, else ``lowest``."""
    for unit in range(lowest, end):
        position = offset(unit)
        if not text[position].isspace() and (position == 0 or text[position - 1].isspace()):
            return unit
    return lowest


# --- request body ------------------------------------------------------------------------------

# Greedy decoding with details: deterministic verdicts and meaningful log-probabilities for the
# score; 32 new tokens are plenty for a verdict line and a category line.
DEFAULT_PARAMETERS: Mapping[str, object] = MappingProxyType(
    {
        "max_new_tokens": 32,
        "return_full_text": False,
        "details": True,
        "top_n_tokens": 5,
        "do_sample": False,
    }
)

# Any sampling parameter switches TGI to sampling (random verdicts, meaningless log-probabilities;
# temperature=0 and top_p=1.0 are even rejected with 422), and ``truncate`` keeps the END of the
# prompt, cutting the task and the categories. None of them may ever be sent.
FORBIDDEN_PARAMETERS = frozenset({"temperature", "top_p", "top_k", "truncate"})


def check_parameters(parameters: Mapping[str, object]) -> None:
    """Refuse generation parameters that would make verdicts random or cut the prompt.

    Meant for start-up; ``build_request_body`` checks again so nothing slips through.
    """
    forbidden = sorted(FORBIDDEN_PARAMETERS.intersection(parameters))
    if forbidden:
        raise ConfigurationError(
            f"generation parameter {forbidden[0]!r} must not be sent to Llama Guard: sampling"
            " makes verdicts random and 'truncate' cuts the task out of the prompt"
        )


def build_request_body(prompt: str, parameters: Mapping[str, object]) -> dict[str, object]:
    """The JSON body for SageMaker ``invoke_endpoint`` and TGI ``/generate`` alike.

    A parameter whose value is None is left out, so configuration can remove a default that an
    endpoint rejects. ``parameters`` is copied, never kept.
    """
    check_parameters(parameters)
    kept = {name: value for name, value in parameters.items() if value is not None}
    return {"inputs": prompt, "parameters": kept}
