"""Combining parsed answers into a decision: threshold, chunks, fail-closed and flags."""

from __future__ import annotations

import pytest

from worker.core.completion import ParsedCompletion
from worker.core.decision import Assessment, Decision, decide, ordered_flags
from worker.core.verdict import Flag


def _safe(score: float | None = None) -> Assessment:
    return Assessment(ParsedCompletion("safe", (), (), (), None), score)


def _unsafe(
    *codes: str,
    unknown: tuple[str, ...] = (),
    anomalies: tuple[str, ...] = (),
    score: float | None = None,
) -> Assessment:
    return Assessment(ParsedCompletion("unsafe", codes, unknown, anomalies, None), score)


def _invalid(score: float | None = None) -> Assessment:
    parsed = ParsedCompletion("invalid", (), (), (), "the first line is not 'safe' or 'unsafe'")
    return Assessment(parsed, score)


# --- one answer -----------------------------------------------------------------------------------


def test_single_safe_answer_is_a_safe_decision_without_categories_or_flags() -> None:
    assert decide([_safe()], threshold=None) == Decision("safe", (), (), None, frozenset())


def test_single_unsafe_answer_is_an_unsafe_decision() -> None:
    assert decide([_unsafe("O3")], threshold=None).verdict == "unsafe"


def test_unsafe_answer_carries_its_categories_in_the_models_order() -> None:
    assert decide([_unsafe("S9", "S1", "S3")], threshold=None).categories == ("S9", "S1", "S3")


def test_unsafe_answer_carries_its_unknown_codes() -> None:
    assessment = _unsafe("S1", unknown=("S99", "X1"), anomalies=("unknown_codes",))

    assert decide([assessment], threshold=None).unknown_codes == ("S99", "X1")


def test_unsafe_answer_without_codes_is_still_unsafe() -> None:
    decision = decide([_unsafe(anomalies=("unsafe_without_codes",))], threshold=None)

    assert (decision.verdict, decision.categories) == ("unsafe", ())


def test_score_is_carried_onto_the_decision() -> None:
    assert decide([_unsafe("S1", score=0.93)], threshold=None).score == 0.93


def test_no_score_gives_a_decision_without_score() -> None:
    assert decide([_unsafe("S1")], threshold=None).score is None


def test_clean_answer_has_no_flags() -> None:
    assert decide([_unsafe("S1", score=0.9)], threshold=0.5).flags == frozenset()


# --- invalid output fails closed ------------------------------------------------------------------


def test_invalid_answer_is_unsafe() -> None:
    assert decide([_invalid()], threshold=None).verdict == "unsafe"


def test_invalid_answer_is_flagged_model_output_invalid() -> None:
    assert decide([_invalid()], threshold=None).flags == frozenset({Flag.MODEL_OUTPUT_INVALID})


def test_invalid_answer_has_no_categories_or_unknown_codes() -> None:
    decision = decide([_invalid()], threshold=None)

    assert (decision.categories, decision.unknown_codes) == ((), ())


@pytest.mark.parametrize("score", [0.0, 0.01, 0.49])
def test_low_score_does_not_rescue_an_invalid_answer(score: float) -> None:
    decision = decide([_invalid(score=score)], threshold=0.5)

    assert decision.verdict == "unsafe"
    assert decision.flags == frozenset({Flag.MODEL_OUTPUT_INVALID})


def test_invalid_answers_score_is_not_reported() -> None:
    assert decide([_invalid(score=0.2)], threshold=None).score is None


# --- anomalies ------------------------------------------------------------------------------------


def test_anomalies_give_the_model_output_anomaly_flag() -> None:
    assessment = _unsafe("S1", anomalies=("trailing_text_ignored", "duplicate_codes"))

    assert decide([assessment], threshold=None).flags == frozenset({Flag.MODEL_OUTPUT_ANOMALY})


def test_anomaly_flag_survives_a_threshold_override_to_safe() -> None:
    assessment = _unsafe("S1", anomalies=("categories_on_verdict_line",), score=0.1)

    flags = decide([assessment], threshold=0.5).flags

    assert flags == frozenset({Flag.MODEL_OUTPUT_ANOMALY, Flag.THRESHOLD_OVERRIDE})


# --- threshold ------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", [0.5, 0.51, 0.99, 1.0])
def test_score_at_or_above_threshold_makes_a_safe_text_unsafe(score: float) -> None:
    assert decide([_safe(score=score)], threshold=0.5).verdict == "unsafe"


def test_safe_text_overridden_to_unsafe_carries_threshold_override() -> None:
    flags = decide([_safe(score=0.7)], threshold=0.5).flags

    assert flags == frozenset({Flag.THRESHOLD_OVERRIDE})


def test_score_exactly_at_threshold_is_unsafe() -> None:
    assert decide([_safe(score=0.3)], threshold=0.3).verdict == "unsafe"


def test_unsafe_text_with_score_above_threshold_has_no_override() -> None:
    decision = decide([_unsafe("S2", score=0.8)], threshold=0.5)

    assert (decision.verdict, decision.flags) == ("unsafe", frozenset())


@pytest.mark.parametrize("score", [0.0, 0.2, 0.4999])
def test_score_below_threshold_makes_an_unsafe_text_safe(score: float) -> None:
    assert decide([_unsafe("S1", score=score)], threshold=0.5).verdict == "safe"


def test_unsafe_text_overridden_to_safe_carries_threshold_override() -> None:
    flags = decide([_unsafe("S1", score=0.2)], threshold=0.5).flags

    assert flags == frozenset({Flag.THRESHOLD_OVERRIDE})


def test_unsafe_text_overridden_to_safe_keeps_no_categories() -> None:
    decision = decide([_unsafe("S1", unknown=("X9",), score=0.2)], threshold=0.5)

    assert (decision.categories, decision.unknown_codes) == ((), ())


def test_safe_text_with_score_below_threshold_has_no_override() -> None:
    decision = decide([_safe(score=0.1)], threshold=0.5)

    assert (decision.verdict, decision.flags) == ("safe", frozenset())


def test_overridden_decision_keeps_the_score() -> None:
    assert decide([_safe(score=0.7)], threshold=0.5).score == 0.7


@pytest.mark.parametrize(("assessment", "verdict"), [(_safe(), "safe"), (_unsafe("S1"), "unsafe")])
def test_without_a_score_the_text_decides_even_with_a_threshold(
    assessment: Assessment, verdict: str
) -> None:
    decision = decide([assessment], threshold=0.5)

    assert (decision.verdict, decision.flags) == (verdict, frozenset())


def test_without_a_threshold_a_high_score_does_not_overrule_safe_text() -> None:
    decision = decide([_safe(score=0.99)], threshold=None)

    assert (decision.verdict, decision.flags) == ("safe", frozenset())


def test_without_a_threshold_a_low_score_does_not_overrule_unsafe_text() -> None:
    decision = decide([_unsafe("S1", score=0.01)], threshold=None)

    assert (decision.verdict, decision.categories, decision.flags) == (
        "unsafe",
        ("S1",),
        frozenset(),
    )


# --- chunks ---------------------------------------------------------------------------------------


def test_all_safe_chunks_are_safe() -> None:
    assert decide([_safe(), _safe(), _safe()], threshold=None).verdict == "safe"


@pytest.mark.parametrize("position", [0, 1, 2])
def test_any_unsafe_chunk_makes_the_message_unsafe(position: int) -> None:
    chunks = [_safe(), _safe(), _safe()]
    chunks[position] = _unsafe("S1")

    assert decide(chunks, threshold=None).verdict == "unsafe"


def test_chunk_categories_are_united_in_first_seen_order_without_duplicates() -> None:
    chunks = [_unsafe("S2", "S1"), _safe(), _unsafe("S1", "S3", "S2"), _unsafe("S4")]

    assert decide(chunks, threshold=None).categories == ("S2", "S1", "S3", "S4")


def test_chunk_unknown_codes_are_united_in_first_seen_order_without_duplicates() -> None:
    chunks = [_unsafe(unknown=("X2", "X1")), _unsafe("S1", unknown=("X1", "X3"))]

    assert decide(chunks, threshold=None).unknown_codes == ("X2", "X1", "X3")


def test_chunk_decision_score_is_the_highest_score() -> None:
    chunks = [_safe(score=0.2), _unsafe("S1", score=0.7), _safe(score=0.4), _safe()]

    assert decide(chunks, threshold=None).score == 0.7


def test_chunks_without_any_score_give_no_score() -> None:
    assert decide([_safe(), _unsafe("S1")], threshold=None).score is None


def test_invalid_chunk_beside_a_safe_chunk_makes_the_message_unsafe() -> None:
    decision = decide([_safe(score=0.01), _invalid()], threshold=0.5)

    assert decision.verdict == "unsafe"
    assert Flag.MODEL_OUTPUT_INVALID in decision.flags


def test_invalid_chunks_score_is_left_out_of_the_maximum() -> None:
    assert decide([_safe(score=0.1), _invalid(score=0.9)], threshold=None).score == 0.1


def test_chunk_flags_are_united() -> None:
    chunks = [_invalid(), _unsafe("S1", anomalies=("duplicate_codes",)), _safe(score=0.8)]

    flags = decide(chunks, threshold=0.5).flags

    assert flags == frozenset(
        {Flag.MODEL_OUTPUT_INVALID, Flag.MODEL_OUTPUT_ANOMALY, Flag.THRESHOLD_OVERRIDE}
    )


def test_categories_of_a_chunk_overridden_to_safe_are_left_out() -> None:
    chunks = [_unsafe("S1", score=0.1), _unsafe("S2", score=0.9)]

    assert decide(chunks, threshold=0.5).categories == ("S2",)


def test_threshold_applies_to_each_chunk_by_its_own_score() -> None:
    chunks = [_unsafe("S1", score=0.1), _unsafe("S2", score=0.2)]

    assert decide(chunks, threshold=0.5).verdict == "safe"


def test_no_assessments_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^decide\(\) needs at least one assessment$"):
        decide([], threshold=None)


# --- ordered_flags --------------------------------------------------------------------------------


def test_ordered_flags_follow_the_vocabularys_declaration_order() -> None:
    shuffled = [
        Flag.CACHED,
        Flag.THRESHOLD_OVERRIDE,
        Flag.CHUNKED,
        Flag.MODEL_OUTPUT_ANOMALY,
        Flag.CONTENT_NEUTRALIZED,
        Flag.MODEL_OUTPUT_INVALID,
        Flag.CONTEXT_TRUNCATED,
    ]

    assert ordered_flags(shuffled) == tuple(Flag)


def test_ordered_flags_of_a_subset_keep_declaration_order() -> None:
    flags = frozenset({Flag.THRESHOLD_OVERRIDE, Flag.CONTEXT_TRUNCATED, Flag.MODEL_OUTPUT_INVALID})

    assert ordered_flags(flags) == (
        Flag.CONTEXT_TRUNCATED,
        Flag.MODEL_OUTPUT_INVALID,
        Flag.THRESHOLD_OVERRIDE,
    )


def test_ordered_flags_drop_duplicates() -> None:
    assert ordered_flags([Flag.CHUNKED, Flag.CHUNKED]) == (Flag.CHUNKED,)


def test_ordered_flags_of_nothing_is_empty() -> None:
    assert ordered_flags([]) == ()


def test_flag_vocabulary_is_the_designs_in_its_order() -> None:
    assert [str(flag) for flag in Flag] == [
        "content_neutralized",
        "context_truncated",
        "chunked",
        "model_output_invalid",
        "model_output_anomaly",
        "threshold_override",
        "cached",
    ]
