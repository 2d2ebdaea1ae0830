"""The emulated model's generated text and token details (pure: no I/O, no logging).

Text follows each model family: llama-guard-1/-2 answer ``safe`` or ``unsafe\\nO3`` (codes
comma-joined, no space); llama-guard-3/-3-1b first emit ``\\n\\n`` and then the same. Tokens are
split roughly as the Llama 2 / Llama 3 tokenizers would (letters, digits, punctuation, newlines)
and end with the end-of-sequence token (``</s>`` / ``<|eot_id|>``, ``special: true``), which TGI
counts and lists but leaves out of ``generated_text``. Token ids are stable across runs but are
not guaranteed to be the real vocabulary ids; consumers must read ``text``.

Probabilities are deterministic. The verdict token (the first one that is not whitespace) has
p = 0.97 for safe and p = min(0.99, 0.88 + 0.03 * hits) for unsafe, where hits counts the trigger
phrases found; an unparseable answer starts with p = 0.6. At every position the alternatives are
softmax-consistent: the chosen token is the most likely, the alternatives share what is left
(90 % to the first, then halving), so the probabilities never sum past 1. At the verdict position
the first alternative is the other verdict word, so P(unsafe) from the top tokens agrees with the
chosen answer.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Literal

from devstack.emulator.rules import Assessment, PromptFormat

Family = Literal["llama2", "llama3"]

CONFUSED_ANSWER = "I'm not sure what you would like me to assess."
REFUSAL_ANSWER = "I cannot help with that."
MALFORMED_ANSWERS: tuple[str, ...] = (
    "I'm sorry, but I can't assess this conversation.",
    "```\nunsafe\nS1\n```",
    "uns",
    "safely handled",
    "Explanation: the conversation looks fine.\nsafe",
    "",
)

_SAFE_P = 0.97
_UNSAFE_BASE_P = 0.88
_UNSAFE_STEP_P = 0.03
_UNSAFE_MAX_P = 0.99
_INVALID_P = 0.6
_STRUCTURE_P = 0.999
_CONTENT_P = 0.98
_FIRST_ALTERNATIVE_SHARE = 0.9

_TOKEN_PATTERNS: dict[Family, re.Pattern[str]] = {
    # Llama 2's SentencePiece splits every digit; Llama 3's BPE keeps up to three together and
    # has a single token for a blank line.
    "llama2": re.compile(r"\n| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+| +|[\s\S]"),
    "llama3": re.compile(r"\n\n|\n| ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]+| +|[\s\S]"),
}
_EOS: dict[Family, tuple[int, str]] = {"llama2": (2, "</s>"), "llama3": (128009, "<|eot_id|>")}
_KNOWN_IDS: dict[Family, dict[str, int]] = {
    "llama2": {"safe": 9109, "unsafe": 25110, "\n": 13},
    "llama3": {"safe": 19193, "unsafe": 39257, "\n\n": 271, "\n": 198},
}
_VOCAB_SIZE: dict[Family, int] = {"llama2": 32000, "llama3": 128000}
_FILLERS = ("\n", " ", ",", ".", ":", "-", "I", "The", "**", "No", "Yes", "\n\n")
_DIGITS = tuple(str(digit) for digit in range(10))


@dataclass(frozen=True, slots=True)
class Token:
    """One generated token as TGI reports it in ``details``."""

    id: int
    text: str
    logprob: float
    special: bool = False

    def as_json(self) -> dict[str, object]:
        """The token in TGI's wire shape."""
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


@dataclass(frozen=True, slots=True)
class Completion:
    """Generated tokens with, per position, the chosen token first and then its alternatives."""

    candidates: tuple[tuple[Token, ...], ...]

    @property
    def tokens(self) -> tuple[Token, ...]:
        """The chosen (greedy) token at each position."""
        return tuple(position[0] for position in self.candidates)

    @property
    def text(self) -> str:
        """The generated text as TGI returns it: special tokens left out."""
        return "".join(token.text for token in self.tokens if not token.special)

    def truncated(self, max_new_tokens: int) -> tuple[Completion, str]:
        """The completion cut to ``max_new_tokens`` tokens and TGI's finish reason."""
        if len(self.candidates) <= max_new_tokens:
            return self, "eos_token"
        return Completion(self.candidates[:max_new_tokens]), "length"


def family_of(prompt_format: PromptFormat | None) -> Family:
    """Which tokenizer family answers a prompt; an unreadable prompt gets Llama 2's."""
    return "llama3" if prompt_format in ("llama-guard-3", "llama-guard-3-1b") else "llama2"


def answer_text(assessment: Assessment) -> str:
    """The text a model of the prompt's family emits for a safe or unsafe assessment."""
    lead = "\n\n" if family_of(assessment.format) == "llama3" else ""
    if assessment.verdict == "unsafe":
        return f"{lead}unsafe\n{','.join(assessment.codes)}"
    return f"{lead}safe"


def verdict_probability(assessment: Assessment) -> float:
    """How sure the emulated model is of its first real token."""
    if assessment.verdict == "safe":
        return _SAFE_P
    if assessment.verdict == "unsafe":
        return min(_UNSAFE_MAX_P, _UNSAFE_BASE_P + _UNSAFE_STEP_P * assessment.hits)
    return _INVALID_P


def render_completion(assessment: Assessment, *, malformed: str | None = None) -> Completion:
    """The completion for an assessment; ``malformed`` replaces the answer with broken text."""
    family = family_of(assessment.format)
    if malformed is not None or assessment.verdict == "invalid":
        body = malformed if malformed is not None else _invalid_answer(assessment)
        text = ("\n\n" if family == "llama3" else "") + body
        return _build(text, family, first_p=_INVALID_P, rest_p=_CONTENT_P)
    return _build(answer_text(assessment), family, first_p=verdict_probability(assessment))


def _invalid_answer(assessment: Assessment) -> str:
    # A prompt read but carrying the test marker gets a refusal; an unreadable one, confusion.
    return REFUSAL_ANSWER if assessment.format is not None else CONFUSED_ANSWER


def _build(text: str, family: Family, *, first_p: float, rest_p: float = _CONTENT_P) -> Completion:
    pieces = _TOKEN_PATTERNS[family].findall(text)
    positions: list[tuple[Token, ...]] = []
    verdict_seen = False
    for piece in pieces:
        if piece.isspace():
            positions.append(_position(piece, _STRUCTURE_P, family, is_verdict=False))
        elif not verdict_seen:
            verdict_seen = True
            positions.append(_position(piece, first_p, family, is_verdict=True))
        else:
            positions.append(_position(piece, rest_p, family, is_verdict=False))
    eos_id, eos_text = _EOS[family]
    eos = Token(id=eos_id, text=eos_text, logprob=math.log(_STRUCTURE_P), special=True)
    positions.append((eos, *_alternatives(eos_text, _STRUCTURE_P, family, _FILLERS)))
    return Completion(tuple(positions))


def _position(
    piece: str, probability: float, family: Family, *, is_verdict: bool
) -> tuple[Token, ...]:
    chosen = Token(id=token_id(piece, family), text=piece, logprob=math.log(probability))
    pool: tuple[str, ...] = _FILLERS
    if is_verdict and piece in ("safe", "unsafe"):
        pool = ("unsafe" if piece == "safe" else "safe", *_FILLERS)
    elif piece.strip().isdigit():
        pool = _DIGITS
    return (chosen, *_alternatives(piece, probability, family, pool))


def _alternatives(
    chosen: str, probability: float, family: Family, pool: tuple[str, ...]
) -> tuple[Token, ...]:
    left = 1.0 - probability
    share = _FIRST_ALTERNATIVE_SHARE
    alternatives: list[Token] = []
    for text in pool:
        if text == chosen:
            continue
        mass = left * share
        alternatives.append(Token(id=token_id(text, family), text=text, logprob=math.log(mass)))
        # After the first alternative the rest of the mass is halved down the list.
        share = (1.0 - _FIRST_ALTERNATIVE_SHARE) / 2 if len(alternatives) == 1 else share / 2
    return tuple(alternatives)


def token_id(text: str, family: Family) -> int:
    """A stable id for a token text (a few are the real ids, the rest are hashed)."""
    known = _KNOWN_IDS[family].get(text)
    if known is not None:
        return known
    return 1000 + zlib.crc32(text.encode("utf-8")) % (_VOCAB_SIZE[family] - 1000)
