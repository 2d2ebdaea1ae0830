"""Completion parsing (FORMATS.md section 6), echo stripping and the P(unsafe) score (section 5)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from worker.core.completion import (
    ParsedCompletion,
    parse_completion,
    strip_echoed_prompt,
    unsafe_probability,
)
from worker.core.taxonomy import Category, PromptFormat, Taxonomy, default_taxonomy

OUTPUT_VECTORS = (
    Path(__file__).resolve().parents[1] / "data" / "llama-guard" / "output-vectors.json"
)

# The vectors' "version" is the Llama Guard generation; 4 is read with the llama-guard-3 table.
VERSION_FORMATS = {
    1: PromptFormat.LLAMA_GUARD_1,
    2: PromptFormat.LLAMA_GUARD_2,
    3: PromptFormat.LLAMA_GUARD_3,
    4: PromptFormat.LLAMA_GUARD_3,
}
LG1 = default_taxonomy(PromptFormat.LLAMA_GUARD_1)
LG2 = default_taxonomy(PromptFormat.LLAMA_GUARD_2)
LG3 = default_taxonomy(PromptFormat.LLAMA_GUARD_3)


def _load() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(OUTPUT_VECTORS.read_text(encoding="utf-8"))
    return vectors


VECTORS = _load()


@pytest.mark.parametrize("vector", VECTORS, ids=[str(v["id"]) for v in VECTORS])
def test_output_vector_parses_as_expected(vector: dict[str, Any]) -> None:
    taxonomy = default_taxonomy(VERSION_FORMATS[vector["version"]])

    parsed = parse_completion(vector["raw"], taxonomy)

    expected = vector["expected"]
    assert parsed.verdict == expected["verdict"]
    assert list(parsed.categories) == expected["categories"]
    assert list(parsed.unknown_codes) == expected["unknown_codes"]


@pytest.mark.parametrize("vector", VECTORS, ids=[str(v["id"]) for v in VECTORS])
def test_output_vector_has_a_reason_exactly_when_invalid(vector: dict[str, Any]) -> None:
    parsed = parse_completion(vector["raw"], default_taxonomy(VERSION_FORMATS[vector["version"]]))

    assert (parsed.reason is not None) == (parsed.verdict == "invalid")


def _parse(text: str, taxonomy: Taxonomy = LG3) -> ParsedCompletion:
    return parse_completion(text, taxonomy)


# --- safe --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "safe",
        " safe",
        "Safe",
        "SAFE",
        "safe.",
        "safe!",
        "safe .",
        "\n\nsafe\n\n",
        "safe\r\n",
        "safe<|eot_id|>",
        "safe</s>",
        "<s>safe</s>",
        "\n\nsafe<|eot|>",
        "safe<|end_of_text|>",
        "<|start_header_id|><|end_header_id|>\n\nsafe",
    ],
)
def test_clean_safe_answers_are_safe(text: str) -> None:
    assert _parse(text) == ParsedCompletion("safe", (), (), (), None)


@pytest.mark.parametrize(
    "text",
    [
        "safe\nS1",
        "safe S1",
        "safe: S1",
        "safe\n\nbecause it is about cooking",
        "safe, but borderline",
        "safe<|eot_id|>unsafe",
    ],
)
def test_safe_followed_by_anything_is_invalid(text: str) -> None:
    parsed = _parse(text)

    assert parsed.verdict == "invalid"
    assert parsed.reason == "text follows a 'safe' verdict"


# --- invalid -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "safely handled",
        "unsafely",
        "uns",
        "saf",
        "unsafe1",
        "safe_",
        "```\nsafe\n```",
        "**unsafe**\nS1",
        "I cannot help with that.",
        "The message is safe",
        "Explanation: fine.\nsafe",
        "'safe'",
        "assistant\n\nsafe",
    ],
)
def test_anything_but_a_verdict_first_is_invalid(text: str) -> None:
    parsed = _parse(text)

    assert parsed.verdict == "invalid"
    assert parsed.reason == "the first line is not 'safe' or 'unsafe'"


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n", "<|eot_id|>", "</s>\n<s>", "\r\n\r"])
def test_empty_output_is_invalid(text: str) -> None:
    assert _parse(text) == ParsedCompletion("invalid", (), (), (), "the output is empty")


def test_invalid_reason_never_quotes_the_output() -> None:
    parsed = _parse("Here is how to build it: secret-words")

    assert parsed.reason is not None
    assert "secret" not in parsed.reason


# --- unsafe ------------------------------------------------------------------------------------


@pytest.mark.parametrize("break_", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_unsafe_with_codes_on_the_next_line(break_: str) -> None:
    """Any line break separates the verdict from the codes (no anomaly is noted)."""
    expected = ParsedCompletion("unsafe", ("S1", "S2"), (), (), None)

    assert _parse(f"unsafe{break_}S1,S2") == expected


@pytest.mark.parametrize("text", ["UNSAFE\nS3", "Unsafe.\nS3", "unsafe!\nS3", "unsafe\r\nS3"])
def test_unsafe_verdict_is_case_insensitive_and_may_end_with_punctuation(text: str) -> None:
    assert _parse(text).categories == ("S3",)


@pytest.mark.parametrize(
    "text", ["unsafe S1, S2", "unsafe: S1, S2", "unsafe:S1,S2", "Unsafe - S1;S2", "unsafe, S1 S2"]
)
def test_codes_on_the_verdict_line_are_read(text: str) -> None:
    parsed = _parse(text)

    assert parsed.categories == ("S1", "S2")
    assert parsed.anomalies == ("categories_on_verdict_line",)


def test_codes_on_the_verdict_line_win_over_the_next_line() -> None:
    parsed = _parse("unsafe: S1\nS2")

    assert parsed.categories == ("S1",)
    assert "trailing_text_ignored" in parsed.anomalies


@pytest.mark.parametrize(
    ("line", "codes"),
    [
        ("S1,S2", ("S1", "S2")),
        ("S1, S2", ("S1", "S2")),
        ("S1;S2", ("S1", "S2")),
        ("S1 S2", ("S1", "S2")),
        ("S1\tS2", ("S1", "S2")),
        ("S1 ,; S2", ("S1", "S2")),
        (",S1,", ("S1",)),
    ],
)
def test_codes_are_split_on_commas_semicolons_and_whitespace(line: str, codes: tuple[str]) -> None:
    assert _parse(f"unsafe\n{line}").categories == codes


@pytest.mark.parametrize(
    ("token", "code"), [("s1", "S1"), ("s01", "S1"), ("S007", "S7"), ("s14", "S14")]
)
def test_codes_are_normalised_to_upper_case_without_leading_zeros(token: str, code: str) -> None:
    assert _parse(f"unsafe\n{token}").categories == (code,)


def test_model_order_is_kept() -> None:
    assert _parse("unsafe\nS10,S2,S7").categories == ("S10", "S2", "S7")


def test_duplicate_codes_are_dropped_and_noted() -> None:
    parsed = _parse("unsafe\nS2,S1,s02,S1")

    assert parsed.categories == ("S2", "S1")
    assert parsed.anomalies == ("duplicate_codes",)


def test_duplicate_unknown_tokens_are_dropped() -> None:
    parsed = _parse("unsafe\nhate hate S99 s099")

    assert parsed.unknown_codes == ("hate", "S99")
    assert parsed.anomalies == ("unknown_codes", "duplicate_codes", "unsafe_without_codes")


def test_code_outside_the_table_is_unknown_in_canonical_form() -> None:
    parsed = _parse("unsafe\ns015")

    assert parsed.categories == ()
    assert parsed.unknown_codes == ("S15",)


def test_non_code_tokens_are_unknown_as_written() -> None:
    assert _parse("unsafe\nS1 Hate. (S2)").unknown_codes == ("Hate.", "(S2)")


def test_a_code_of_32_characters_is_still_read_as_a_code() -> None:
    token = "S" + "0" * 30 + "1"  # 32 characters, the longest token read as a code

    assert _parse(f"unsafe\n{token}") == ParsedCompletion("unsafe", ("S1",), (), (), None)


def test_token_too_long_to_be_a_code_is_unknown_as_written() -> None:
    """Thousands of digits are never converted (above 4300, Python refuses to)."""
    token = "S" + "1" * 5000

    parsed = _parse(f"unsafe\nS1 {token}")

    assert parsed.categories == ("S1",)
    assert parsed.unknown_codes == (token,)


def test_unclosed_special_token_in_the_output_is_kept_as_text() -> None:
    parsed = _parse("unsafe\nS1 <|" + "a" * 1000)

    assert parsed.unknown_codes == ("<|" + "a" * 1000,)


def test_code_of_another_generation_is_unknown() -> None:
    parsed = _parse("unsafe\nO3", LG3)

    assert parsed.verdict == "unsafe"
    assert parsed.unknown_codes == ("O3",)


def test_llama_guard_1_codes_are_read_with_the_o_prefix() -> None:
    assert _parse("unsafe\no3, O6", LG1).categories == ("O3", "O6")


def test_llama_guard_2_table_has_no_s12() -> None:
    assert _parse("unsafe\nS11,S12", LG2).unknown_codes == ("S12",)


def test_codes_are_read_from_the_next_non_blank_line() -> None:
    assert _parse("unsafe\n\n\n  \nS2").categories == ("S2",)


def test_later_lines_are_ignored_and_noted() -> None:
    parsed = _parse("unsafe\nS1\nThe user asks for S2 material.")

    assert parsed.categories == ("S1",)
    assert parsed.anomalies == ("trailing_text_ignored",)


def test_special_token_ends_the_category_line() -> None:
    parsed = _parse("unsafe\nS1<|eot_id|>")

    assert parsed == ParsedCompletion("unsafe", ("S1",), (), (), None)


def test_text_after_an_end_token_is_ignored_as_a_later_line() -> None:
    parsed = _parse("unsafe\nS1<|eot_id|>S2")

    assert parsed.categories == ("S1",)
    assert parsed.anomalies == ("trailing_text_ignored",)


@pytest.mark.parametrize("text", ["unsafe", "\n\nunsafe", "unsafe.", "unsafe\n\n", "unsafe</s>"])
def test_unsafe_without_codes_is_still_unsafe(text: str) -> None:
    assert _parse(text) == ParsedCompletion("unsafe", (), (), ("unsafe_without_codes",), None)


def test_unsafe_with_only_unknown_tokens_is_still_unsafe() -> None:
    parsed = _parse("unsafe\nviolence")

    assert parsed.verdict == "unsafe"
    assert parsed.anomalies == ("unknown_codes", "unsafe_without_codes")


def test_explanation_instead_of_codes_is_unknown_tokens() -> None:
    parsed = _parse("unsafe\nThe user wants S9")

    assert parsed.categories == ("S9",)
    assert parsed.unknown_codes == ("The", "user", "wants")


def test_custom_taxonomy_codes_are_valid() -> None:
    taxonomy = Taxonomy("S", (Category("S1", "Spam"), Category("VIO2", "Violence")))

    parsed = _parse("unsafe\nvio02, S1, S2", taxonomy)

    assert parsed.categories == ("VIO2", "S1")
    assert parsed.unknown_codes == ("S2",)


def test_excluded_default_code_is_unknown() -> None:
    taxonomy = Taxonomy("S", tuple(c for c in LG3.categories if c.code != "S5"))

    assert _parse("unsafe\nS5,S6", taxonomy).unknown_codes == ("S5",)


# --- echoed prompt -----------------------------------------------------------------------------

PROMPT = "[INST] Task: check this [/INST]"


@pytest.mark.parametrize(
    "generated",
    [
        PROMPT + " safe",
        "<s>" + PROMPT + " safe",
        " <s>" + PROMPT + " safe",
        "<s> " + PROMPT + " safe",
        "\n" + PROMPT + " safe",
        "<|begin_of_text|>" + PROMPT + " safe",
    ],
)
def test_echoed_prompt_is_stripped(generated: str) -> None:
    assert strip_echoed_prompt(generated, PROMPT) == " safe"


@pytest.mark.parametrize("generated", ["safe", " safe", "\n\nunsafe\nS1", "", "[INST] Task: other"])
def test_text_without_an_echo_is_unchanged(generated: str) -> None:
    assert strip_echoed_prompt(generated, PROMPT) == generated


def test_prompt_appearing_later_is_not_stripped() -> None:
    generated = "safe " + PROMPT

    assert strip_echoed_prompt(generated, PROMPT) == generated


def test_empty_prompt_strips_nothing() -> None:
    assert strip_echoed_prompt(" safe", "") == " safe"


def test_echo_without_a_completion_leaves_empty_text() -> None:
    assert strip_echoed_prompt(PROMPT, PROMPT) == ""


# --- score -------------------------------------------------------------------------------------


def _token(
    text: str, logprob: float, *, special: bool = False, token_id: int = 1
) -> dict[str, Any]:
    return {"id": token_id, "text": text, "logprob": logprob, "special": special}


def _ln(p: float) -> float:
    return math.log(p)


def test_score_from_top_tokens_is_the_two_way_softmax() -> None:
    details = {
        "tokens": [_token("unsafe", _ln(0.6))],
        "top_tokens": [
            [_token("unsafe", _ln(0.6)), _token("safe", _ln(0.2)), _token("I", _ln(0.1))]
        ],
    }

    assert unsafe_probability(details) == pytest.approx(0.75)


def test_score_skips_leading_newline_tokens_of_llama_guard_3() -> None:
    details = {
        "tokens": [_token("\n\n", -0.01), _token("safe", _ln(0.9)), _token("<|eot_id|>", 0.0)],
        "top_tokens": [
            [_token("\n\n", -0.01)],
            [_token("safe", _ln(0.9)), _token("unsafe", _ln(0.1))],
            [_token("<|eot_id|>", 0.0, special=True)],
        ],
    }

    assert unsafe_probability(details) == pytest.approx(0.1)


def test_score_skips_special_tokens_before_the_verdict() -> None:
    details = {
        "tokens": [_token("<|start_header_id|>", 0.0, special=True), _token("unsafe", _ln(0.8))],
        "top_tokens": [[], [_token("unsafe", _ln(0.8)), _token("safe", _ln(0.2))]],
    }

    assert unsafe_probability(details) == pytest.approx(0.8)


def test_score_matches_candidates_with_leading_spaces() -> None:
    details = {
        "tokens": [_token(" unsafe", _ln(0.3))],
        "top_tokens": [[_token(" safe", _ln(0.6)), _token(" unsafe", _ln(0.3))]],
    }

    assert unsafe_probability(details) == pytest.approx(1 / 3)


def test_score_matches_partial_word_candidates() -> None:
    details = {
        "tokens": [_token("uns", _ln(0.5))],
        "top_tokens": [[_token("uns", _ln(0.5)), _token("s", _ln(0.4)), _token("x", _ln(0.1))]],
    }

    assert unsafe_probability(details) == pytest.approx(5 / 9)


def test_score_uses_the_best_candidate_of_each_kind() -> None:
    details = {
        "tokens": [_token("safe", _ln(0.5))],
        "top_tokens": [
            [
                _token(" un", _ln(0.05)),
                _token("safe", _ln(0.5)),
                _token("unsafe", _ln(0.3)),
                _token(" safe", _ln(0.1)),
            ]
        ],
    }

    assert unsafe_probability(details) == pytest.approx(0.3 / 0.8)


def test_score_candidates_match_case_insensitively() -> None:
    details = {
        "tokens": [_token("Safe", _ln(0.5))],
        "top_tokens": [[_token("Safe", _ln(0.5)), _token("UNSAFE", _ln(0.5))]],
    }

    assert unsafe_probability(details) == pytest.approx(0.5)


def test_score_ignores_whitespace_only_candidates() -> None:
    details = {
        "tokens": [_token("safe", _ln(0.5))],
        "top_tokens": [[_token(" ", _ln(0.4)), _token("safe", _ln(0.5)), _token("un", _ln(0.1))]],
    }

    assert unsafe_probability(details) == pytest.approx(1 / 6)


def test_score_with_only_an_unsafe_candidate_is_its_probability() -> None:
    details = {
        "tokens": [_token("unsafe", _ln(0.7))],
        "top_tokens": [[_token("unsafe", _ln(0.7)), _token("The", _ln(0.2))]],
    }

    assert unsafe_probability(details) == pytest.approx(0.7)


def test_score_with_only_a_safe_candidate_is_its_complement() -> None:
    details = {
        "tokens": [_token("safe", _ln(0.9))],
        "top_tokens": [[_token("safe", _ln(0.9))]],
    }

    assert unsafe_probability(details) == pytest.approx(0.1)


def test_score_falls_back_to_the_chosen_unsafe_token() -> None:
    assert unsafe_probability({"tokens": [_token("unsafe", _ln(0.83))]}) == pytest.approx(0.83)


def test_score_falls_back_to_the_chosen_safe_token() -> None:
    assert unsafe_probability({"tokens": [_token("safe", _ln(0.83))]}) == pytest.approx(0.17)


def test_score_falls_back_when_top_tokens_stop_before_the_verdict() -> None:
    details = {
        "tokens": [_token("\n\n", -0.01), _token("unsafe", _ln(0.6))],
        "top_tokens": [[_token("\n\n", -0.01)]],
    }

    assert unsafe_probability(details) == pytest.approx(0.6)


def test_score_falls_back_when_no_top_candidate_matches() -> None:
    details = {
        "tokens": [_token("safe", _ln(0.6))],
        "top_tokens": [[_token("The", _ln(0.3))]],
    }

    assert unsafe_probability(details) == pytest.approx(0.4)


def test_score_is_none_when_the_chosen_token_is_no_verdict() -> None:
    assert unsafe_probability({"tokens": [_token("I", _ln(0.9))]}) is None


def test_score_is_none_without_a_non_whitespace_token() -> None:
    assert unsafe_probability({"tokens": [_token("\n\n", -0.1), _token(" ", -0.1)]}) is None


def test_score_is_numerically_stable_for_tiny_log_probabilities() -> None:
    details = {
        "tokens": [_token("safe", -1000.0)],
        "top_tokens": [[_token("safe", -1000.0), _token("unsafe", -1001.0)]],
    }

    assert unsafe_probability(details) == pytest.approx(1 / (1 + math.e))


def test_score_is_clamped_when_a_log_probability_is_positive() -> None:
    assert unsafe_probability({"tokens": [_token("unsafe", 0.5)]}) == 1.0
    assert unsafe_probability({"tokens": [_token("safe", 0.5)]}) == 0.0


def test_certain_verdicts_score_zero_and_one() -> None:
    assert unsafe_probability({"tokens": [_token("unsafe", 0.0)]}) == 1.0
    assert unsafe_probability({"tokens": [_token("safe", 0.0)]}) == 0.0


@pytest.mark.parametrize(
    "details",
    [
        None,
        "details",
        [],
        {},
        {"tokens": None},
        {"tokens": "safe"},
        {"tokens": []},
        {"tokens": ["safe"]},
        {"tokens": [{"logprob": -0.1}]},
        {"tokens": [{"text": 5, "logprob": -0.1}]},
        {"tokens": [{"text": "safe"}]},
        {"tokens": [{"text": "safe", "logprob": None}]},
        {"tokens": [{"text": "safe", "logprob": "-0.1"}]},
        {"tokens": [{"text": "safe", "logprob": True}]},
        {"tokens": [{"text": "safe", "logprob": float("nan")}]},
        {"tokens": [{"text": "safe", "logprob": float("-inf")}]},
        {"tokens": [{"text": "safe", "logprob": None}], "top_tokens": "x"},
        {"tokens": [{"text": "safe", "logprob": None}], "top_tokens": [None]},
        {
            "tokens": [{"text": "safe", "logprob": None}],
            "top_tokens": [[None, 3, {"text": "safe"}]],
        },
    ],
)
def test_score_is_none_for_missing_or_malformed_details(details: object) -> None:
    assert unsafe_probability(details) is None


def test_malformed_top_candidates_are_skipped() -> None:
    details = {
        "tokens": [_token("unsafe", _ln(0.5))],
        "top_tokens": [
            [None, {"text": "safe"}, _token("unsafe", _ln(0.5)), _token("safe", _ln(0.5))]
        ],
    }

    assert unsafe_probability(details) == pytest.approx(0.5)


def test_integer_log_probabilities_are_accepted() -> None:
    assert unsafe_probability({"tokens": [{"id": 1, "text": "unsafe", "logprob": 0}]}) == 1.0
