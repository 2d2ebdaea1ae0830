"""P(unsafe) from OpenAI completions ``logprobs``: the same rules as for TGI's ``details``."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.core.completion import unsafe_probability

CLAMPED_MINUS_INFINITY = -9999.0


def logprobs(
    tokens: list[str], chosen: list[float | None], top: list[dict[str, float] | None] | None
) -> dict[str, object]:
    document: dict[str, object] = {"tokens": tokens, "token_logprobs": chosen}
    if top is not None:
        document["top_logprobs"] = top
    document["text_offset"] = list(range(len(tokens)))
    return document


def test_the_score_is_taken_at_the_first_token_that_is_not_whitespace() -> None:
    # Llama Guard 3 answers "\n\n" first; the verdict is the second position.
    details = logprobs(
        ["\n\n", "unsafe", "\n", "S", "2"],
        [-0.001, -0.1, -0.001, -0.02, -0.02],
        [{"\n\n": -0.001}, {"unsafe": math.log(0.9), "safe": math.log(0.1)}, {}, {}, {}],
    )

    assert unsafe_probability(details) == pytest.approx(0.9)


def test_empty_special_token_text_is_skipped_like_whitespace() -> None:
    details = logprobs(["", "safe"], [-0.001, math.log(0.8)], [{"": -0.001}, None])

    assert unsafe_probability(details) == pytest.approx(0.2)


def test_a_candidate_clamped_to_minus_9999_counts_as_probability_zero() -> None:
    details = logprobs(["unsafe"], [-0.01], [{"unsafe": -0.01, "safe": CLAMPED_MINUS_INFINITY}])

    assert unsafe_probability(details) == pytest.approx(1.0)


def test_without_top_logprobs_the_chosen_tokens_own_probability_is_used() -> None:
    details = logprobs(["safe"], [math.log(0.97)], None)

    assert unsafe_probability(details) == pytest.approx(0.03)


def test_candidates_match_by_prefix_and_case_as_for_tgi() -> None:
    details = logprobs(
        ["Un"], [math.log(0.7)], [{"Un": math.log(0.7), " Saf": math.log(0.3), "I": -5.0}]
    )

    assert unsafe_probability(details) == pytest.approx(0.7)


def test_a_first_token_that_is_neither_verdict_gives_no_score() -> None:
    details = logprobs(["I"], [-0.1], [{"I": -0.1, "The": -3.0}])

    assert unsafe_probability(details) is None


def test_no_tokens_give_no_score() -> None:
    assert unsafe_probability(logprobs([], [], [])) is None


@pytest.mark.parametrize(
    "details",
    [
        {"tokens": ["safe"], "token_logprobs": "x", "top_logprobs": "y"},
        {"tokens": ["safe", 3], "token_logprobs": [None], "top_logprobs": [None]},
        {"tokens": ["\n", None], "token_logprobs": [], "top_logprobs": []},
        {"tokens": ["safe"], "token_logprobs": [True], "top_logprobs": [{"safe": "high"}]},
        {"tokens": ["safe"], "token_logprobs": [math.nan], "top_logprobs": [{"safe": math.inf}]},
    ],
)
def test_malformed_logprobs_give_no_score_never_an_error(details: dict[str, object]) -> None:
    assert unsafe_probability(details) is None


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.integers(),
)


@given(
    st.lists(st.one_of(st.text(max_size=8), _VALUES), max_size=6),
    st.lists(_VALUES, max_size=6),
    st.lists(st.one_of(st.none(), st.dictionaries(st.text(max_size=8), _VALUES)), max_size=6),
)
def test_any_logprobs_give_a_probability_or_none(
    tokens: list[object], chosen: list[object], top: list[object]
) -> None:
    score = unsafe_probability({"tokens": tokens, "token_logprobs": chosen, "top_logprobs": top})

    assert score is None or 0.0 <= score <= 1.0
