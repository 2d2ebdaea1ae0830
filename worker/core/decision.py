"""Turning the model's answers for one message into a verdict: threshold, chunks and flags."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from worker.core.completion import ParsedCompletion
from worker.core.verdict import Flag


@dataclass(frozen=True, slots=True)
class Assessment:
    """The parsed answer to one prompt, and P(unsafe) when log-probabilities came back."""

    parsed: ParsedCompletion
    score: float | None


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict fields that depend on the model's answers."""

    verdict: Literal["safe", "unsafe"]
    categories: tuple[str, ...]
    unknown_codes: tuple[str, ...]
    score: float | None
    flags: frozenset[Flag]


def decide(assessments: Sequence[Assessment], *, threshold: float | None) -> Decision:
    """Combine the answers for every prompt of a message (one, or one per chunk).

    The message is unsafe when any answer is. An answer that could not be parsed is unsafe
    (fail closed) and its score is ignored: a score never rescues unparseable output. With a
    threshold and a score, the score decides; disagreeing with the text is flagged.
    """
    if not assessments:
        raise ValueError("decide() needs at least one assessment")
    singles = [_decide_one(assessment, threshold) for assessment in assessments]
    unsafe = [single for single in singles if single.verdict == "unsafe"]
    scores = [single.score for single in singles if single.score is not None]
    return Decision(
        verdict="unsafe" if unsafe else "safe",
        categories=_unique(code for single in unsafe for code in single.categories),
        unknown_codes=_unique(code for single in unsafe for code in single.unknown_codes),
        score=max(scores) if scores else None,
        flags=frozenset(flag for single in singles for flag in single.flags),
    )


def _decide_one(assessment: Assessment, threshold: float | None) -> Decision:
    parsed = assessment.parsed
    if parsed.verdict == "invalid":
        return Decision("unsafe", (), (), None, frozenset({Flag.MODEL_OUTPUT_INVALID}))
    flags = {Flag.MODEL_OUTPUT_ANOMALY} if parsed.anomalies else set()
    verdict: Literal["safe", "unsafe"] = parsed.verdict
    if threshold is not None and assessment.score is not None:
        verdict = "unsafe" if assessment.score >= threshold else "safe"
        if verdict != parsed.verdict:
            flags.add(Flag.THRESHOLD_OVERRIDE)
    if verdict == "safe":
        return Decision("safe", (), (), assessment.score, frozenset(flags))
    return Decision(
        "unsafe", parsed.categories, parsed.unknown_codes, assessment.score, frozenset(flags)
    )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def ordered_flags(flags: Iterable[Flag]) -> tuple[Flag, ...]:
    """Flags in the vocabulary's fixed order, so equal verdicts serialise identically."""
    present = set(flags)
    return tuple(flag for flag in Flag if flag in present)
