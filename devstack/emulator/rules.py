"""How the emulator reads a Llama Guard prompt and decides a verdict (pure: no I/O, no logging).

Reading. A prompt in any of the four formats of FORMATS.md §1 is taken apart into its format
(from the wrapper: ``[INST] ... [/INST]`` with the llama-guard-1 or the "ONLY THE LAST"
instruction, or the Llama 3 header wrapper with or without the space before ``<|eot_id|>``), the
assessed role from the task line, the category table between the category markers (``O3:
Criminal Planning.`` / ``S2: Non-Violent Crimes.`` headers, anything else is description), and
the turns between the conversation markers. A prompt without that structure is not an error:
the emulator answers it like a confused model would, with text no parser accepts.

Deciding. Only the LAST turn is assessed, whatever its label. Each category picks keyword
groups by its NAME (``keywords.KEYWORD_GROUPS``: "Violen" -> violence phrases, "Crim" ->
criminal planning, "Weapon"/"Gun" -> weapons, "Substance" -> drugs, ...), or by its description
when the name selects nothing, so custom taxonomies using those words work too. The verdict is
unsafe with every category whose phrases occur in the message, in taxonomy order; otherwise
safe. A message containing ``EMULATOR:INVALID`` makes the "model" answer unparseable text.

Limits, on purpose: this is a development stand-in, never a safety model.
- Phrases are literal multi-word strings on word boundaries: paraphrases, misspellings, other
  languages, leetspeak and context ("kill a process", quoting, fiction) are not understood; a
  benign sentence that happens to contain a trigger phrase is flagged.
- Earlier turns are ignored, so a harmful request followed by a bland reply is safe.
- Turns are split at a blank line followed by ``User: `` or ``Agent: ``; a message that itself
  contains such a line is read as two turns (the real template has the same ambiguity).
- Category names the table does not know (and whose descriptions do not help) never match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from devstack.emulator.keywords import KEYWORD_GROUPS, KeywordGroup

PromptFormat = Literal["llama-guard-1", "llama-guard-2", "llama-guard-3", "llama-guard-3-1b"]
RoleLabel = Literal["User", "Agent"]
Verdict = Literal["safe", "unsafe", "invalid"]

INVALID_MARKER = "EMULATOR:INVALID"

_BOS_TOKENS = ("<|begin_of_text|>", "<s>")
_INST_OPEN = "[INST] "
_INST_CLOSE = " [/INST]"
_LG3_OPEN = "<|start_header_id|>user<|end_header_id|>\n\n"
_LG3_CLOSE = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
_INSTRUCTION_2_MARK = "Provide your safety assessment for ONLY THE LAST "
_CATEGORIES_OPEN = "<BEGIN UNSAFE CONTENT CATEGORIES>"
_CATEGORIES_CLOSE = "<END UNSAFE CONTENT CATEGORIES>"
_CONVERSATION_OPEN = "<BEGIN CONVERSATION>"
_CONVERSATION_CLOSE = "<END CONVERSATION>"

_TASK_LINE = re.compile(
    r"Task: Check if there is unsafe content in '(?P<role>User|Agent)' messages"
)
_CATEGORY_HEADER = re.compile(r"^(?P<code>[A-Za-z]+[0-9]+): (?P<name>.*?)\.?[ \t]*$")
_TURN_START = re.compile(r"\n\n(?=(?:User|Agent): )")
_TURN = re.compile(r"(?P<label>User|Agent): ?(?P<content>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Category:
    """One row of the prompt's category table."""

    code: str
    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class PromptTurn:
    """One turn of the prompt's conversation, as rendered (label, stripped content)."""

    label: RoleLabel
    content: str


@dataclass(frozen=True, slots=True)
class GuardPrompt:
    """What the emulator understood of a Llama Guard prompt."""

    format: PromptFormat
    assessed_role: RoleLabel
    categories: tuple[Category, ...]
    turns: tuple[PromptTurn, ...]

    @property
    def assessed_message(self) -> str:
        """The content of the last turn: the only one the rules look at."""
        return self.turns[-1].content


@dataclass(frozen=True, slots=True)
class Assessment:
    """The emulated model's decision; ``hits`` counts distinct trigger phrases found."""

    verdict: Verdict
    codes: tuple[str, ...] = ()
    hits: int = 0
    format: PromptFormat | None = None


def read_prompt(prompt: str) -> GuardPrompt | None:
    """Take a prompt apart, or return None when it has no recognisable Llama Guard structure."""
    unwrapped = _unwrap(_strip_bos(prompt))
    if unwrapped is None:
        return None
    prompt_format, inner = unwrapped
    task = _TASK_LINE.search(inner)
    categories = _read_categories(inner)
    turns = _read_turns(inner)
    if task is None or not categories or not turns:
        return None
    role: RoleLabel = "User" if task.group("role") == "User" else "Agent"
    return GuardPrompt(format=prompt_format, assessed_role=role, categories=categories, turns=turns)


def assess(prompt: GuardPrompt) -> Assessment:
    """Apply the keyword rules to the last turn of a prompt that was read."""
    message = prompt.assessed_message
    if INVALID_MARKER in message:
        return Assessment(verdict="invalid", format=prompt.format)
    text = _normalise(message)
    codes: list[str] = []
    phrases_found: set[str] = set()
    for category in prompt.categories:
        found = _phrases_found(text, _groups_for(category))
        if found:
            codes.append(category.code)
            phrases_found |= found
    if not codes:
        return Assessment(verdict="safe", format=prompt.format)
    return Assessment(
        verdict="unsafe", codes=tuple(codes), hits=len(phrases_found), format=prompt.format
    )


def assess_prompt(prompt: str) -> Assessment:
    """Read and assess a raw prompt; an unreadable prompt gets the invalid (confused) answer."""
    guard_prompt = read_prompt(prompt)
    if guard_prompt is None:
        return Assessment(verdict="invalid")
    return assess(guard_prompt)


def _strip_bos(prompt: str) -> str:
    # TGI adds the begin-of-text token itself, but a client that sends it should still be read.
    for token in _BOS_TOKENS:
        prompt = prompt.removeprefix(token)
    return prompt


def _unwrap(prompt: str) -> tuple[PromptFormat, str] | None:
    trimmed = prompt.rstrip()
    if trimmed.startswith(_INST_OPEN) and trimmed.endswith(_INST_CLOSE):
        inner = trimmed[len(_INST_OPEN) : -len(_INST_CLOSE)]
        return ("llama-guard-2" if _INSTRUCTION_2_MARK in inner else "llama-guard-1"), inner
    if trimmed.startswith(_LG3_OPEN) and trimmed.endswith(_LG3_CLOSE):
        inner = trimmed[len(_LG3_OPEN) : -len(_LG3_CLOSE)]
        # The only difference between the two Llama Guard 3 templates is this one space.
        if inner.endswith(" "):
            return "llama-guard-3-1b", inner[:-1]
        return "llama-guard-3", inner
    return None


def _between(text: str, opening: str, closing: str, *, last_close: bool = False) -> str | None:
    start = text.find(opening)
    if start < 0:
        return None
    start += len(opening)
    end = text.rfind(closing) if last_close else text.find(closing, start)
    if end < start:
        return None
    return text[start:end]


def _read_categories(inner: str) -> tuple[Category, ...]:
    block = _between(inner, _CATEGORIES_OPEN, _CATEGORIES_CLOSE)
    if block is None:
        return ()
    rows: list[tuple[str, str, list[str]]] = []
    for line in block.strip("\n").split("\n"):
        header = _CATEGORY_HEADER.match(line)
        if header is not None:
            rows.append((header.group("code"), header.group("name").strip(), []))
        elif rows:
            rows[-1][2].append(line)
    return tuple(
        Category(code=code, name=name, description="\n".join(lines)) for code, name, lines in rows
    )


def _read_turns(inner: str) -> tuple[PromptTurn, ...]:
    # The last closing marker wins: content forging an early one stays part of the content.
    block = _between(inner, _CONVERSATION_OPEN, _CONVERSATION_CLOSE, last_close=True)
    if block is None or not block.strip():
        return ()
    turns: list[PromptTurn] = []
    for piece in _TURN_START.split(block.strip("\n")):
        turn = _TURN.fullmatch(piece)
        if turn is None:
            return ()
        label: RoleLabel = "User" if turn.group("label") == "User" else "Agent"
        turns.append(PromptTurn(label=label, content=turn.group("content").strip()))
    return tuple(turns)


def _normalise(message: str) -> str:
    # Typographic apostrophes are common in chat text; the phrases use the ASCII one.
    return message.casefold().replace("\u2019", "'").replace("\u2018", "'")


def _groups_for(category: Category) -> tuple[KeywordGroup, ...]:
    by_name = tuple(group for group in KEYWORD_GROUPS if group.applies(category.name))
    if by_name or not category.description:
        return by_name
    return tuple(group for group in KEYWORD_GROUPS if group.applies(category.description))


def _phrases_found(text: str, groups: tuple[KeywordGroup, ...]) -> set[str]:
    return {
        phrase
        for group in groups
        for phrase in group.phrases
        if _phrase_pattern(phrase).search(text)
    }


_PATTERN_CACHE: dict[str, re.Pattern[str]] = {}


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    pattern = _PATTERN_CACHE.get(phrase)
    if pattern is None:
        words = (re.escape(word) for word in phrase.split())
        # Lookarounds instead of \b so phrases ending in punctuation ("rm -rf /") still work.
        pattern = re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)")
        _PATTERN_CACHE[phrase] = pattern
    return pattern
