"""The emulated completion: text per model family, tokens, and softmax-consistent alternatives."""

from __future__ import annotations

import math

import pytest

from devstack.emulator.completion import (
    MALFORMED_ANSWERS,
    REFUSAL_ANSWER,
    Completion,
    render_completion,
    token_id,
    verdict_probability,
)
from devstack.emulator.rules import Assessment, PromptFormat

SAFE_LG1 = Assessment(verdict="safe", format="llama-guard-1")
UNSAFE_LG1 = Assessment(verdict="unsafe", codes=("O3",), hits=1, format="llama-guard-1")
SAFE_LG3 = Assessment(verdict="safe", format="llama-guard-3")
UNSAFE_LG3 = Assessment(verdict="unsafe", codes=("S1", "S10"), hits=2, format="llama-guard-3")


def _verdict_position(completion: Completion) -> int:
    return next(i for i, token in enumerate(completion.tokens) if not token.text.isspace())


@pytest.mark.parametrize(
    ("assessment", "text"),
    [
        (SAFE_LG1, "safe"),
        (UNSAFE_LG1, "unsafe\nO3"),
        (
            Assessment(verdict="unsafe", codes=("S1", "S2"), hits=1, format="llama-guard-2"),
            "unsafe\nS1,S2",
        ),
        (SAFE_LG3, "\n\nsafe"),
        (UNSAFE_LG3, "\n\nunsafe\nS1,S10"),
        (Assessment(verdict="safe", format="llama-guard-3-1b"), "\n\nsafe"),
    ],
)
def test_generated_text_follows_the_model_family(assessment: Assessment, text: str) -> None:
    assert render_completion(assessment).text == text


@pytest.mark.parametrize("assessment", [SAFE_LG1, UNSAFE_LG1, SAFE_LG3, UNSAFE_LG3])
def test_tokens_spell_the_text_and_end_with_a_special_eos(assessment: Assessment) -> None:
    completion = render_completion(assessment)
    tokens = completion.tokens

    assert "".join(token.text for token in tokens[:-1]) == completion.text
    assert tokens[-1].special
    assert not any(token.special for token in tokens[:-1])


def test_llama_guard_3_starts_with_a_blank_line_token() -> None:
    first = render_completion(SAFE_LG3).tokens[0]

    assert first.text == "\n\n"
    assert not first.special


def test_llama_guard_1_starts_with_the_verdict_token() -> None:
    assert render_completion(UNSAFE_LG1).tokens[0].text == "unsafe"


def test_eos_token_differs_by_family() -> None:
    assert render_completion(SAFE_LG1).tokens[-1].text == "</s>"
    assert render_completion(SAFE_LG3).tokens[-1].text == "<|eot_id|>"


def test_safe_verdict_probability_is_fixed() -> None:
    assert verdict_probability(SAFE_LG3) == pytest.approx(0.97)


@pytest.mark.parametrize(("hits", "probability"), [(1, 0.91), (2, 0.94), (3, 0.97), (9, 0.99)])
def test_unsafe_verdict_probability_grows_with_hits_up_to_a_cap(
    hits: int, probability: float
) -> None:
    assessment = Assessment(verdict="unsafe", codes=("S1",), hits=hits, format="llama-guard-3")

    assert verdict_probability(assessment) == pytest.approx(probability)


@pytest.mark.parametrize("assessment", [SAFE_LG1, UNSAFE_LG1, SAFE_LG3, UNSAFE_LG3])
def test_verdict_token_logprob_matches_the_verdict_probability(assessment: Assessment) -> None:
    completion = render_completion(assessment)
    verdict = completion.tokens[_verdict_position(completion)]

    assert verdict.text == assessment.verdict
    assert math.exp(verdict.logprob) == pytest.approx(verdict_probability(assessment))


@pytest.mark.parametrize("assessment", [SAFE_LG1, UNSAFE_LG3])
def test_chosen_token_is_the_most_likely_candidate_everywhere(assessment: Assessment) -> None:
    for position in render_completion(assessment).candidates:
        chosen, *alternatives = position
        assert all(chosen.logprob > other.logprob for other in alternatives)


@pytest.mark.parametrize("assessment", [SAFE_LG1, UNSAFE_LG3])
def test_candidate_probabilities_never_sum_past_one(assessment: Assessment) -> None:
    for position in render_completion(assessment).candidates:
        assert sum(math.exp(token.logprob) for token in position) <= 1.0 + 1e-9


@pytest.mark.parametrize(("assessment", "other"), [(SAFE_LG3, "unsafe"), (UNSAFE_LG1, "safe")])
def test_other_verdict_word_is_the_first_alternative(assessment: Assessment, other: str) -> None:
    completion = render_completion(assessment)

    assert completion.candidates[_verdict_position(completion)][1].text == other


@pytest.mark.parametrize("assessment", [SAFE_LG1, UNSAFE_LG1, SAFE_LG3, UNSAFE_LG3])
def test_score_from_the_top_tokens_agrees_with_the_verdict(assessment: Assessment) -> None:
    completion = render_completion(assessment)
    position = completion.candidates[_verdict_position(completion)]
    logprobs = {token.text: token.logprob for token in position}

    p_unsafe = math.exp(logprobs["unsafe"]) / (
        math.exp(logprobs["unsafe"]) + math.exp(logprobs["safe"])
    )

    assert (p_unsafe >= 0.5) == (assessment.verdict == "unsafe")


def test_fillers_are_never_mistaken_for_a_verdict_candidate() -> None:
    completion = render_completion(UNSAFE_LG3)
    fillers = completion.candidates[_verdict_position(completion)][2:]

    assert all(not token.text.strip().lower().startswith(("s", "u")) for token in fillers)


def test_digit_positions_offer_other_digits() -> None:
    completion = render_completion(UNSAFE_LG1)
    digit_position = next(p for p in completion.candidates if p[0].text == "3")

    assert all(token.text.isdigit() for token in digit_position)


def test_truncation_keeps_the_first_tokens_and_reports_length() -> None:
    truncated, finish_reason = render_completion(UNSAFE_LG3).truncated(1)

    assert truncated.text == "\n\n"
    assert finish_reason == "length"


def test_completion_within_the_limit_finishes_on_eos() -> None:
    completion = render_completion(UNSAFE_LG3)

    same, finish_reason = completion.truncated(32)

    assert same == completion
    assert finish_reason == "eos_token"


@pytest.mark.parametrize("prompt_format", ["llama-guard-1", "llama-guard-3"])
def test_invalid_assessment_answers_with_a_refusal(prompt_format: PromptFormat) -> None:
    completion = render_completion(Assessment(verdict="invalid", format=prompt_format))

    assert completion.text.strip() == REFUSAL_ANSWER


@pytest.mark.parametrize("malformed", MALFORMED_ANSWERS)
def test_malformed_answer_replaces_the_verdict(malformed: str) -> None:
    completion = render_completion(SAFE_LG3, malformed=malformed)

    assert completion.text == "\n\n" + malformed


def test_rendering_is_deterministic() -> None:
    assert render_completion(UNSAFE_LG3) == render_completion(UNSAFE_LG3)


def test_token_ids_are_stable_per_text_and_family() -> None:
    assert token_id("S", "llama3") == token_id("S", "llama3")
    assert token_id("\n\n", "llama3") == 271
    assert 0 < token_id("anything", "llama2") < 32000
