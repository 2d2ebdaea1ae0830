"""Default taxonomies, custom taxonomy files and the {CATS} block."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest

from worker.core.errors import ConfigurationError
from worker.core.taxonomy import (
    Category,
    PromptFormat,
    Taxonomy,
    default_taxonomy,
    load_taxonomy_text,
    normalize_code,
    parse_taxonomy,
    render_categories,
)

LG1 = PromptFormat.LLAMA_GUARD_1
LG2 = PromptFormat.LLAMA_GUARD_2
LG3 = PromptFormat.LLAMA_GUARD_3
LG3_1B = PromptFormat.LLAMA_GUARD_3_1B

PROMPT_VECTORS = (
    Path(__file__).resolve().parents[1] / "data" / "llama-guard" / "prompt-vectors.json"
)


def _vector_block(fmt: PromptFormat) -> str:
    vectors = json.loads(PROMPT_VECTORS.read_text(encoding="utf-8"))
    prompt = next(v["expected_prompt"] for v in vectors if v["format"] == str(fmt))
    match = re.search(
        r"<BEGIN UNSAFE CONTENT CATEGORIES>\n(.*)\n<END UNSAFE CONTENT CATEGORIES>", prompt, re.S
    )
    assert match is not None
    return match.group(1)


# --- formats and defaults ----------------------------------------------------------------------


def test_prompt_format_values_are_the_configuration_words() -> None:
    assert [str(fmt) for fmt in PromptFormat] == [
        "llama-guard-1",
        "llama-guard-2",
        "llama-guard-3",
        "llama-guard-3-1b",
    ]


@pytest.mark.parametrize(
    ("fmt", "prefix", "count"), [(LG1, "O", 6), (LG2, "S", 11), (LG3, "S", 14), (LG3_1B, "S", 13)]
)
def test_default_taxonomy_has_the_formats_codes(fmt: PromptFormat, prefix: str, count: int) -> None:
    taxonomy = default_taxonomy(fmt)

    assert taxonomy.prefix == prefix
    assert taxonomy.codes == tuple(f"{prefix}{n}" for n in range(1, count + 1))


def test_llama_guard_1_default_names() -> None:
    names = [c.name for c in default_taxonomy(LG1).categories]

    assert names == [
        "Violence and Hate",
        "Sexual Content",
        "Criminal Planning",
        "Guns and Illegal Weapons",
        "Regulated or Controlled Substances",
        "Self-Harm",
    ]


def test_llama_guard_2_has_no_defamation_so_s5_is_specialized_advice() -> None:
    assert default_taxonomy(LG2).name_of("S5") == "Specialized Advice"
    assert default_taxonomy(LG3).name_of("S5") == "Defamation"


def test_llama_guard_3_1b_drops_code_interpreter_abuse() -> None:
    assert default_taxonomy(LG3).name_of("S14") == "Code Interpreter Abuse"
    assert default_taxonomy(LG3_1B).name_of("S14") is None


def test_only_llama_guard_1_defaults_carry_policy_text() -> None:
    assert all(c.description for c in default_taxonomy(LG1).categories)
    for fmt in (LG2, LG3, LG3_1B):
        assert all(c.description is None for c in default_taxonomy(fmt).categories)


def test_name_of_unknown_code_is_none() -> None:
    assert default_taxonomy(LG3).name_of("S99") is None


def test_name_of_is_exact_about_case() -> None:
    assert default_taxonomy(LG3).name_of("s1") is None


def test_taxonomy_membership_uses_codes() -> None:
    taxonomy = default_taxonomy(LG1)

    assert "O3" in taxonomy
    assert "S3" not in taxonomy


def test_taxonomy_rejects_duplicate_codes_when_built_directly() -> None:
    with pytest.raises(ValueError, match=r"^taxonomy codes must be unique$"):
        Taxonomy("S", (Category("S1", "A"), Category("S1", "B")))


def test_code_prefixes_include_custom_letters_and_the_default_prefix() -> None:
    taxonomy = Taxonomy("S", (Category("VIO1", "Violence"), Category("S2", "Spam")))

    assert taxonomy.code_prefixes == frozenset({"S", "VIO"})


def test_a_code_prefix_is_every_letter_before_the_number() -> None:
    taxonomy = Taxonomy("S", (Category("TOX1", "Toxicity"), Category("X2", "Other")))

    assert taxonomy.code_prefixes == frozenset({"S", "TOX", "X"})


def test_taxonomies_with_equal_categories_are_equal() -> None:
    assert Taxonomy("S", (Category("S1", "A"),)) == Taxonomy("S", (Category("S1", "A"),))


@pytest.mark.parametrize(
    ("token", "expected"),
    [("S1", "S1"), ("s01", "S1"), ("o6", "O6"), ("S0", "S0"), ("vio12", "VIO12")],
)
def test_normalize_code_canonicalises_case_and_leading_zeros(token: str, expected: str) -> None:
    assert normalize_code(token) == expected


@pytest.mark.parametrize("token", ["hate", "1", "S", "S1.", "S-1", "", "S1a"])
def test_normalize_code_rejects_tokens_that_are_not_code_shaped(token: str) -> None:
    assert normalize_code(token) is None


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(PromptFormat))
def test_default_block_renders_byte_exactly_as_the_vectors(fmt: PromptFormat) -> None:
    assert render_categories(default_taxonomy(fmt), fmt) == _vector_block(fmt)


def test_llama_guard_1_default_block_has_exactly_one_trailing_space() -> None:
    lines = render_categories(default_taxonomy(LG1), LG1).split("\n")

    assert [line for line in lines if line.endswith(" ")] == ["O1: Violence and Hate. "]


def test_llama_guard_1_bullets_have_no_leading_space() -> None:
    lines = render_categories(default_taxonomy(LG1), LG1).split("\n")

    assert not any(line.startswith(" ") for line in lines)
    assert sum(line.startswith("- ") for line in lines) == 27


def test_llama_guard_2_headings_keep_a_trailing_space() -> None:
    block = render_categories(default_taxonomy(LG2), LG2)

    assert block.split("\n")[0] == "S1: Violent Crimes. "
    assert all(line.endswith(". ") for line in block.split("\n"))


def test_llama_guard_3_headings_have_no_trailing_space() -> None:
    block = render_categories(default_taxonomy(LG3), LG3)

    assert all(line.endswith(".") for line in block.split("\n"))


def test_custom_category_with_description_renders_heading_then_description() -> None:
    taxonomy = Taxonomy("S", (Category("S1", "Spam", "Should not\n- Advertise."),))

    assert render_categories(taxonomy, LG3) == "S1: Spam.\nShould not\n- Advertise."


def test_custom_category_under_llama_guard_2_keeps_the_trailing_space() -> None:
    taxonomy = Taxonomy("S", (Category("S1", "Spam", "Do not advertise."),))

    assert render_categories(taxonomy, LG2) == "S1: Spam. \nDo not advertise."


def test_custom_llama_guard_1_category_follows_the_custom_rule() -> None:
    taxonomy = Taxonomy("O", (Category("O1", "Violence", "Should not\n- Hurt."),))

    assert render_categories(taxonomy, LG1) == "O1: Violence.\nShould not\n- Hurt."


def test_default_o1_keeps_its_trailing_space_in_an_exclude_subset() -> None:
    taxonomy = parse_taxonomy({"exclude": ["O3"]}, LG1)

    block = render_categories(taxonomy, LG1)

    assert block.startswith("O1: Violence and Hate. \nShould not\n")
    assert "O3:" not in block


def test_default_o1_renders_without_the_quirk_under_another_format() -> None:
    o1 = default_taxonomy(LG1).categories[0]

    block = render_categories(Taxonomy("O", (o1,)), LG3)

    assert block.startswith("O1: Violence and Hate.\n")


# --- custom taxonomies: accepted shapes --------------------------------------------------------


def test_list_of_names_gets_codes_numbered_by_position() -> None:
    taxonomy = parse_taxonomy([{"name": "Spam"}, {"name": "Scams"}], LG3)

    assert taxonomy.categories == (Category("S1", "Spam"), Category("S2", "Scams"))


def test_llama_guard_1_custom_codes_default_to_the_o_prefix() -> None:
    taxonomy = parse_taxonomy([{"name": "Spam"}], LG1)

    assert taxonomy.codes == ("O1",)
    assert taxonomy.prefix == "O"


def test_categories_key_is_accepted() -> None:
    taxonomy = parse_taxonomy({"categories": [{"name": "Spam"}]}, LG2)

    assert taxonomy.codes == ("S1",)


def test_categories_key_numbers_by_the_formats_prefix() -> None:
    taxonomy = parse_taxonomy({"categories": [{"name": "Spam"}]}, LG1)

    assert taxonomy.codes == ("O1",)


def test_explicit_codes_are_kept() -> None:
    taxonomy = parse_taxonomy([{"code": "S7", "name": "Spam"}, {"code": "VIO1", "name": "V"}], LG3)

    assert taxonomy.codes == ("S7", "VIO1")


def test_explicit_and_positional_codes_mix() -> None:
    taxonomy = parse_taxonomy([{"code": "S9", "name": "Spam"}, {"name": "Scams"}], LG3)

    assert taxonomy.codes == ("S9", "S2")


def test_description_is_kept_and_stripped_of_surrounding_whitespace() -> None:
    taxonomy = parse_taxonomy(
        [{"name": " Spam ", "description": "Should not\n- Advertise.\n"}], LG3
    )

    assert taxonomy.categories[0] == Category("S1", "Spam", "Should not\n- Advertise.")


def test_blank_or_null_description_means_none() -> None:
    taxonomy = parse_taxonomy(
        [{"name": "A", "description": "  "}, {"name": "B", "description": None}], LG3
    )

    assert [c.description for c in taxonomy.categories] == [None, None]


def test_exclude_keeps_default_codes_and_order() -> None:
    taxonomy = parse_taxonomy({"exclude": ["S5", "S13"]}, LG3)

    assert taxonomy.codes == (
        "S1",
        "S2",
        "S3",
        "S4",
        "S6",
        "S7",
        "S8",
        "S9",
        "S10",
        "S11",
        "S12",
        "S14",
    )
    assert taxonomy.name_of("S6") == "Specialized Advice"


def test_exclude_accepts_lower_case_and_leading_zeros() -> None:
    taxonomy = parse_taxonomy({"exclude": ["s05"]}, LG3)

    assert "S5" not in taxonomy


def test_empty_exclude_is_the_default_taxonomy() -> None:
    assert parse_taxonomy({"exclude": []}, LG3) == default_taxonomy(LG3)


def test_yaml_text_is_loaded() -> None:
    text = "categories:\n  - name: Spam\n    description: |\n      Should not\n      - Advertise.\n"

    taxonomy = load_taxonomy_text(text, LG3)

    assert taxonomy.categories == (Category("S1", "Spam", "Should not\n- Advertise."),)


def test_json_text_is_loaded() -> None:
    taxonomy = load_taxonomy_text('[{"code": "S2", "name": "Spam"}]', LG3)

    assert taxonomy.codes == ("S2",)


def test_yaml_exclude_text_is_loaded() -> None:
    taxonomy = load_taxonomy_text("exclude: [S5, S13]\n", LG3_1B)

    assert taxonomy.codes[-1] == "S12"


# --- custom taxonomies: every malformed input is a ConfigurationError --------------------------


_BAD_CODE = "a code is upper-case letters followed by a number without leading zeros, like S1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "taxonomy is empty"),
        ([], "taxonomy has no categories"),
        ({"categories": []}, "taxonomy has no categories"),
        ("Spam", "taxonomy must be a list of categories or a mapping, not a string"),
        (3, "taxonomy must be a list of categories or a mapping, not a number"),
        ({"categories": "Spam"}, "taxonomy 'categories' must be a list, not a string"),
        ({"categories": None}, "taxonomy 'categories' must be a list, not null"),
        ({"exclude": "S5"}, "taxonomy 'exclude' must be a list of codes, not a string"),
        (
            {"categories": [], "exclude": []},
            "taxonomy has both 'categories' and 'exclude'; give one of them",
        ),
        (
            {"category": []},
            "taxonomy has unknown key 'category'; expected 'categories' or 'exclude'",
        ),
        (
            {"categories": [], "category": []},
            "taxonomy has unknown key 'category'; expected 'categories' or 'exclude'",
        ),
        (
            {"exclude": [], "extra": []},
            "taxonomy has unknown key 'extra'; expected 'categories' or 'exclude'",
        ),
        ({}, "taxonomy mapping needs a 'categories' or an 'exclude' key"),
        ([{"name": "A"}, {"name": "B"}, {"description": "x"}], "taxonomy category 3 has no name"),
        ([{"name": "  "}], "taxonomy category 1 has no name"),
        ([{"name": 5}], "taxonomy category 1 name must be a string, not a number"),
        ([{"name": 1.5}], "taxonomy category 1 name must be a string, not a number"),
        ([{"name": True}], "taxonomy category 1 name must be a string, not a boolean"),
        ([{"name": {}}], "taxonomy category 1 name must be a string, not a mapping"),
        (
            [{"name": "A", "description": ["x"]}],
            "taxonomy category 1 description must be a string, not a list",
        ),
        (["Spam"], "taxonomy category 1 must be a mapping with a 'name', not a string"),
        (
            [{"name": "A", "nmae": "B"}],
            "taxonomy category 1 has unknown key 'nmae'; expected 'name', 'description' or 'code'",
        ),
        ([{"name": "A\nB"}], "taxonomy category 1 name must be a single line"),
        ([{"name": "A\rB"}], "taxonomy category 1 name must be a single line"),
        ([{"name": "A", "code": 1}], "taxonomy category 1 code must be a string, not a number"),
        (
            [{"name": "A", "code": "s1"}],
            f"taxonomy category 1 has code 's1'; {_BAD_CODE} (did you mean 'S1'?)",
        ),
        (
            [{"name": "A", "code": "S01"}],
            f"taxonomy category 1 has code 'S01'; {_BAD_CODE} (did you mean 'S1'?)",
        ),
        # S0 is code-shaped but numbered from zero: there is nothing better to suggest.
        ([{"name": "A", "code": "S0"}], f"taxonomy category 1 has code 'S0'; {_BAD_CODE}"),
        ([{"name": "A", "code": "S"}], f"taxonomy category 1 has code 'S'; {_BAD_CODE}"),
        ([{"name": "A", "code": "1"}], f"taxonomy category 1 has code '1'; {_BAD_CODE}"),
        ([{"name": "A", "code": "S-1"}], f"taxonomy category 1 has code 'S-1'; {_BAD_CODE}"),
        (
            [{"name": "A", "code": "S2"}, {"name": "B"}],
            "taxonomy categories 1 and 2 share the code 'S2'",
        ),
        (
            [{"name": "A", "code": "S1"}, {"name": "B", "code": "S1"}],
            "taxonomy categories 1 and 2 share the code 'S1'",
        ),
        (
            {"exclude": ["S15"]},
            "taxonomy 'exclude' lists 'S15', which is not a llama-guard-3 code (S1-S14)",
        ),
        (
            {"exclude": ["hate"]},
            "taxonomy 'exclude' lists 'hate', which is not a llama-guard-3 code (S1-S14)",
        ),
        ({"exclude": [5]}, "taxonomy 'exclude' entries must be codes like S1, not a number"),
        ({"exclude": [None]}, "taxonomy 'exclude' entries must be codes like S1, not null"),
        # A YAML date is none of the JSON types: its Python type is named.
        (
            {"exclude": [datetime.date(2024, 1, 1)]},
            "taxonomy 'exclude' entries must be codes like S1, not date",
        ),
        ({"exclude": ["S5", "s5"]}, "taxonomy 'exclude' lists 'S5' twice"),
        ({"exclude": [f"S{n}" for n in range(1, 15)]}, "taxonomy 'exclude' leaves no category"),
    ],
)
def test_malformed_taxonomy_raises_configuration_error_with_the_whole_message(
    data: object, message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_taxonomy(data, LG3)

    assert str(raised.value) == message


def test_exclude_of_an_llama_guard_3_code_is_unknown_under_llama_guard_1() -> None:
    with pytest.raises(ConfigurationError, match="not a llama-guard-1 code"):
        parse_taxonomy({"exclude": ["S1"]}, LG1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A parser error: its problem and where it is, 1-based, on one line.
        ("a: b\n  c: d\n", "mapping values are not allowed here at line 2, column 4"),
        (
            "categories: [\n",
            "expected the node content, but found '<stream end>' at line 2, column 1",
        ),
        # A reader error has no problem or mark: the first line of its text.
        ("\x01", "unacceptable character #x0001: special characters are not allowed"),
    ],
)
def test_invalid_yaml_raises_configuration_error_on_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_taxonomy_text(text, LG3)

    assert str(raised.value) == f"taxonomy is not valid YAML or JSON: {message}"


def test_empty_text_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="taxonomy is empty"):
        load_taxonomy_text("", LG3)
