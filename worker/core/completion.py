"""Reading the model's answer: echo stripping, verdict parsing and the P(unsafe) score.

Parsing never guesses (FORMATS.md section 6): anything that is not a clean ``safe`` or an
``unsafe`` verdict is ``invalid`` and the pipeline fails closed. Answers that parse but are
irregular carry short snake_case ``anomalies``:

- ``categories_on_verdict_line``: the codes followed ``unsafe`` on its own line (``unsafe: S1``);
- ``trailing_text_ignored``: lines after the category line were ignored;
- ``unknown_codes``: tokens on the category line that are not codes of the taxonomy;
- ``duplicate_codes``: a code (or unknown token) was listed more than once;
- ``unsafe_without_codes``: ``unsafe`` with no valid code.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from worker.core.taxonomy import Taxonomy, code_prefix, normalize_code

Verdict = Literal["safe", "unsafe", "invalid"]


@dataclass(frozen=True)
class ParsedCompletion:
    """One parsed completion; ``reason`` says why it is invalid, ``anomalies`` what was odd."""

    verdict: Verdict
    categories: tuple[str, ...]
    unknown_codes: tuple[str, ...]
    anomalies: tuple[str, ...]
    reason: str | None


# Special-token strings a server may leave in the text: every <|...|> token, and Llama 2's BOS/EOS.
# The body's quantifier is possessive and its class excludes "|" and "<", so an unclosed "<|..."
# is read once and each attempt's span ends before the next "<": linear in any output.
_SPECIAL_TOKEN = re.compile(r"<\|[^\s|<>]++\|>|</?s>")
# The verdict word must not run on into another word ("safely", "unsafe1").
_VERDICT_LINE = re.compile(r"(unsafe|safe)(?!\w)(.*)", re.IGNORECASE | re.DOTALL)
_CODE_SEPARATORS = re.compile(r"[,;\s]+")
# No code of any taxonomy is this long. A longer token is reported as written without being
# read as a number: converting thousands of digits is slow, and above 4300 it raises.
_MAX_CODE_CHARS = 32


def _invalid(reason: str) -> ParsedCompletion:
    # The reason never quotes the output: it may echo the user's content, which is not logged.
    return ParsedCompletion("invalid", (), (), (), reason)


def _lines(text: str) -> list[str]:
    """Stripped lines with special tokens turned into line breaks and no blank ends."""
    text = _SPECIAL_TOKEN.sub("\n", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    first = next((index for index, line in enumerate(lines) if line), len(lines))
    return lines[first:]


def _is_punctuation(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def _without_leading_punctuation(text: str) -> str:
    start = next((i for i, char in enumerate(text) if not _is_punctuation(char)), len(text))
    return text[start:]


def parse_completion(text: str, taxonomy: Taxonomy) -> ParsedCompletion:
    """Parse a Llama Guard completion against the code table the prompt used."""
    lines = _lines(text)
    if not lines:
        return _invalid("the output is empty")
    match = _VERDICT_LINE.fullmatch(lines[0])
    if match is None:
        return _invalid("the first line is not 'safe' or 'unsafe'")
    word, rest = match.groups()
    if word.lower() == "unsafe":
        return _parse_unsafe(rest, lines[1:], taxonomy)
    if len(lines) > 1 or not all(_is_punctuation(char) for char in rest):
        return _invalid("text follows a 'safe' verdict")
    return ParsedCompletion("safe", (), (), (), None)


def _parse_unsafe(rest: str, later: Sequence[str], taxonomy: Taxonomy) -> ParsedCompletion:
    anomalies: list[str] = []
    category_line = _without_leading_punctuation(rest)
    remaining: Sequence[str] = later
    if category_line:
        anomalies.append("categories_on_verdict_line")
    else:
        index = next((i for i, line in enumerate(later) if line), None)
        if index is not None:
            category_line, remaining = later[index], later[index + 1 :]
    if any(remaining):
        anomalies.append("trailing_text_ignored")
    tokens = [token for token in _CODE_SEPARATORS.split(category_line) if token]
    categories, unknown, duplicated = _classify(tokens, taxonomy)
    if unknown:
        anomalies.append("unknown_codes")
    if duplicated:
        anomalies.append("duplicate_codes")
    if not categories:
        anomalies.append("unsafe_without_codes")
    return ParsedCompletion("unsafe", categories, unknown, tuple(anomalies), None)


def _classify(
    tokens: Sequence[str], taxonomy: Taxonomy
) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """Split tokens into known codes and unknown ones, in order, without duplicates.

    A code-shaped token with one of the taxonomy's prefixes is reported in canonical form
    (``s01`` -> ``S1``) whether known or not; any other token is reported as written.
    """
    prefixes = taxonomy.code_prefixes
    known: list[str] = []
    unknown: list[str] = []
    seen: set[str] = set()
    duplicated = False
    for token in tokens:
        code = normalize_code(token) if len(token) <= _MAX_CODE_CHARS else None
        key = code if code is not None and code_prefix(code) in prefixes else token
        if key in seen:
            duplicated = True
            continue
        seen.add(key)
        (known if key in taxonomy else unknown).append(key)
    return tuple(known), tuple(unknown), duplicated


# --- echoed prompt -----------------------------------------------------------------------------

_BEGIN_OF_TEXT = ("<s>", "<|begin_of_text|>")


def strip_echoed_prompt(generated_text: str, prompt: str) -> str:
    """Remove a leading copy of ``prompt`` (some TGI versions echo it), else return the text.

    The copy may be preceded by whitespace and a begin-of-text token, as a decoder renders it.
    """
    text = generated_text.lstrip()
    for begin in _BEGIN_OF_TEXT:
        if text.startswith(begin):
            text = text[len(begin) :]
            break
    for candidate in (text, text.lstrip()):
        if prompt and candidate.startswith(prompt):
            return candidate[len(prompt) :]
    return generated_text


# --- score -------------------------------------------------------------------------------------

_Kind = Literal["unsafe", "safe"]


def unsafe_probability(details: object) -> float | None:
    """P(unsafe) at the verdict token from the answer's log-probabilities; None when unknown.

    ``details`` is what the server sent: TGI's ``details`` (``tokens`` are objects, alternatives
    in ``top_tokens``) or OpenAI's ``logprobs`` (``tokens`` are strings, their log-probabilities
    in ``token_logprobs``, alternatives in ``top_logprobs`` as ``{text: logprob}`` objects, with
    -inf sent as -9999.0). The rules are the same for both:
    the verdict token is the first generated token that is neither special nor whitespace
    (Llama Guard 3 emits "\\n\\n" first). From the top tokens there: e^u / (e^u + e^s) with the
    best ``unsafe``-like and ``safe``-like candidates; when only one kind is listed, or only the
    chosen token is known, its own probability p gives p (unsafe) or 1 - p (safe). A chosen token
    that is neither kind gives None, as do missing or malformed details: never an exception.
    """
    if not isinstance(details, Mapping):
        return None
    tokens = details.get("tokens")
    if not isinstance(tokens, list):
        return None
    if tokens and isinstance(tokens[0], str):
        return _openai_unsafe_probability(details, tokens)
    position = _verdict_position(tokens)
    if position is None:
        return None
    score = _score_from_top_tokens(details.get("top_tokens"), position)
    if score is None:
        score = _score_from_candidates([tokens[position]])
    return score


def _openai_unsafe_probability(logprobs: Mapping[str, Any], tokens: list[Any]) -> float | None:
    """The same score from OpenAI's ``logprobs`` (parallel lists, one entry per position)."""
    position = next(
        (index for index, text in enumerate(tokens) if not isinstance(text, str) or text.strip()),
        None,
    )
    if position is None or not isinstance(tokens[position], str):
        return None
    score = None
    alternatives = _at(logprobs.get("top_logprobs"), position)
    if isinstance(alternatives, Mapping):
        score = _score_from_candidates(
            [{"text": text, "logprob": logprob} for text, logprob in alternatives.items()]
        )
    if score is None:
        logprob = _at(logprobs.get("token_logprobs"), position)
        score = _score_from_candidates([{"text": tokens[position], "logprob": logprob}])
    return score


def _at(values: object, position: int) -> object:
    return values[position] if isinstance(values, list) and position < len(values) else None


def _verdict_position(tokens: Sequence[object]) -> int | None:
    for position, token in enumerate(tokens):
        if not isinstance(token, Mapping):
            return None
        text = token.get("text")
        if not isinstance(text, str):
            return None
        if token.get("special") is True or not text.strip():
            continue
        return position
    return None


def _score_from_top_tokens(top_tokens: object, position: int) -> float | None:
    if not isinstance(top_tokens, list) or position >= len(top_tokens):
        return None
    candidates = top_tokens[position]
    if not isinstance(candidates, list):
        return None
    return _score_from_candidates(candidates)


def _score_from_candidates(candidates: Sequence[object]) -> float | None:
    best: dict[_Kind, float] = {}
    for entry in candidates:
        candidate = _candidate(entry)
        if candidate is None:
            continue
        kind, logprob = candidate
        if kind not in best or logprob > best[kind]:
            best[kind] = logprob
    if "unsafe" in best and "safe" in best:
        return _two_way(best["unsafe"], best["safe"])
    if "unsafe" in best:
        return _clamp(math.exp(best["unsafe"]))
    if "safe" in best:
        return _clamp(1.0 - math.exp(best["safe"]))
    return None


def _candidate(entry: object) -> tuple[_Kind, float] | None:
    """The kind and log-probability of a well-formed ``unsafe``/``safe`` prefix token."""
    if not isinstance(entry, Mapping):
        return None
    text = entry.get("text")
    logprob = _finite_number(entry.get("logprob"))
    if not isinstance(text, str) or logprob is None:
        return None
    word = text.strip().lower()
    # The two words start differently ("u" vs "s"), so a prefix matches at most one of them.
    kinds: tuple[_Kind, ...] = ("unsafe", "safe")
    kind = next((kind for kind in kinds if word and kind.startswith(word)), None)
    return None if kind is None else (kind, logprob)


def _finite_number(value: object) -> float | None:
    # bool is an int subclass, but a JSON true is no log-probability.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _two_way(unsafe_logprob: float, safe_logprob: float) -> float:
    """e^u / (e^u + e^s), shifted by the larger log-probability so nothing overflows."""
    shift = max(unsafe_logprob, safe_logprob)
    unsafe_weight = math.exp(unsafe_logprob - shift)
    safe_weight = math.exp(safe_logprob - shift)
    return _clamp(unsafe_weight / (unsafe_weight + safe_weight))


def _clamp(probability: float) -> float:
    return min(1.0, max(0.0, probability))
