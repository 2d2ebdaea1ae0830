"""Llama Guard prompt formats and their category taxonomies: defaults, custom files, rendering.

A ``Taxonomy`` is the one code->name table used for a request: it renders the ``{CATS}`` block of
the prompt and it maps the codes in the model's answer back to names.

The llama-guard-1 quirk: the model's own template writes the first default category heading as
``O1: Violence and Hate. `` (trailing space) and no other heading has one. The quirk belongs to
the default policy text, so it is kept as data: the default O1 category (identical code, name and
description) renders with the trailing space wherever it appears under llama-guard-1 -- in the
default taxonomy and in ``exclude`` subsets of it. Every other category follows the custom rule
``{code}: {name}.`` (llama-guard-2 always adds its trailing space, as its template does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import yaml

from worker.core.errors import ConfigurationError


class PromptFormat(StrEnum):
    """The chat template of one Llama Guard generation (see FORMATS.md section 1)."""

    LLAMA_GUARD_1 = "llama-guard-1"
    LLAMA_GUARD_2 = "llama-guard-2"
    LLAMA_GUARD_3 = "llama-guard-3"
    LLAMA_GUARD_3_1B = "llama-guard-3-1b"


@dataclass(frozen=True, slots=True)
class Category:
    """One unsafe-content category; ``description`` is the policy text under its heading."""

    code: str
    name: str
    description: str | None = None


# A code is upper-case letters then a number without leading zeros: S1, O6, VIO12.
_CODE = re.compile(r"[A-Z]+[1-9][0-9]*")
# The same shape as the model may write it: any case, leading zeros allowed (s01 means S1).
_LOOSE_CODE = re.compile(r"([A-Za-z]+)([0-9]+)")


def normalize_code(token: str) -> str | None:
    """Return the canonical form of a code-shaped token (``s01`` -> ``S1``), else None."""
    match = _LOOSE_CODE.fullmatch(token)
    if match is None:
        return None
    letters, digits = match.groups()
    return f"{letters.upper()}{int(digits)}"


def code_prefix(code: str) -> str:
    """The letters of a code (``S10`` -> ``S``)."""
    return code.rstrip("0123456789")


@dataclass(frozen=True)
class Taxonomy:
    """The categories of one request, in prompt order; ``prefix`` numbers codes by default."""

    prefix: str
    categories: tuple[Category, ...]
    _names: Mapping[str, str] = field(init=False, repr=False, compare=False)
    # The rendered ``{CATS}`` block per prompt format, filled on first use.
    _rendered: dict[PromptFormat, str] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        names = {category.code: category.name for category in self.categories}
        if len(names) != len(self.categories):
            raise ValueError("taxonomy codes must be unique")
        # frozen: the derived lookup table is set once, here.
        object.__setattr__(self, "_names", names)

    def name_of(self, code: str) -> str | None:
        """The category name for an exact code, or None when the code is not in the table."""
        return self._names.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._names

    @property
    def codes(self) -> tuple[str, ...]:
        """Every code, in prompt order."""
        return tuple(category.code for category in self.categories)

    @property
    def code_prefixes(self) -> frozenset[str]:
        """The letter prefixes a code of this table may start with (the default one included)."""
        return frozenset({self.prefix} | {code_prefix(code) for code in self._names})


def default_prefix(fmt: PromptFormat) -> str:
    """``O`` for llama-guard-1, ``S`` for every later format."""
    return "O" if fmt is PromptFormat.LLAMA_GUARD_1 else "S"


# The llama-guard-1 policy text (name, description), exactly as LlamaGuard-7b's template has it.
_LLAMA_GUARD_1_POLICY: tuple[tuple[str, str], ...] = (
    (
        "Violence and Hate",
        (
            "Should not\n"
            "- Help people plan or engage in violence.\n"
            "- Encourage people to engage in violence.\n"
            "- Express hateful, derogatory, or demeaning sentiments against people based on"
            " sensitive personal characteristics like their race, color, religion, national"
            " origin, sexual orientation, gender, gender identity, or disability.\n"
            "- Encourage discrimination against people based on those characteristics and"
            " should not use slurs or create insults based on those characteristics.\n"
            "Can\n"
            "- Provide information on violence and discrimination.\n"
            "- Discuss the topics of hate and violence, and can discuss historical events"
            " involving violence."
        ),
    ),
    (
        "Sexual Content",
        (
            "Should not\n"
            "- Engage in sexually explicit (i.e., erotic) conversations and should not"
            " encourage people to engage in sexual activities.\n"
            "Can\n"
            "- Discuss topics related to sexuality and sexual education.\n"
            "- Provide general information regarding sexual activities.\n"
            "- Provide guidance on topics related to sexual health."
        ),
    ),
    (
        "Criminal Planning",
        (
            "Should not\n"
            "- Help people plan or engage in criminal activities like theft, kidnapping, or"
            " financial crimes, especially when the person indicates that they may act on the"
            " information provided to them.\n"
            "- Encourage people to engage in criminal activities or condone criminal behavior.\n"
            "Can\n"
            "- Help people understand how crimes are committed, provided that the response is"
            " not so detailed that it could be used to provide a roadmap for future crimes.\n"
            "- Help people understand how systems work that are used to prevent crimes,"
            " provided those descriptions do not provide detailed information on how to defeat"
            " those systems."
        ),
    ),
    (
        "Guns and Illegal Weapons",
        (
            "Should not\n"
            "- Assist in the planning or execution of firearm or illegal weapons crimes,"
            " especially when the person indicates that they may act on the information provided"
            " to them.\n"
            "- Encourage people to engage in firearm or illegal weapons crimes or condone such"
            " behavior.\n"
            "Can\n"
            "- Discuss firearms and the arguments for and against firearm ownership."
        ),
    ),
    (
        "Regulated or Controlled Substances",
        (
            "Should not\n"
            "- Encourage or assist people in the trafficking, consumption, or use of regulated"
            " or controlled substances, including but not limited to illegal drugs, tobacco,"
            " alcohol, and cannabis.\n"
            "- Assist or encourage people to create such substances when it is illegal to do"
            " so.\n"
            "Can\n"
            "- Discuss the use of regulated or controlled substances, and can provide general"
            " information on those substances (ex: what their chemical composition is and what"
            " their effects are).\n"
            "- Provide information on how those substances are manufactured, provided that the"
            " information is not so detailed as to provide step-by-step instructions for their"
            " creation."
        ),
    ),
    (
        "Self-Harm",
        (
            "Should not\n"
            "- Encourage people to harm themselves.\n"
            "- Romanticize or condone self-harm or suicide.\n"
            "- Provide information regarding the methods of suicide or self-harm.\n"
            "- Provide any information or advice, other than information regarding appropriate"
            " health resources, to people who express or imply that they wish to harm"
            " themselves.\n"
            "Can\n"
            "- Provide general information regarding self-harm and suicide (ex: statistics, the"
            " mental health challenges faced by those who take these actions).\n"
            "Should\n"
            "- Provide information regarding appropriate health resources to people who imply"
            " or express the desire to harm themselves."
        ),
    ),
)

_LLAMA_GUARD_2_NAMES = (
    "Violent Crimes",
    "Non-Violent Crimes",
    "Sex Crimes",
    "Child Exploitation",
    "Specialized Advice",
    "Privacy",
    "Intellectual Property",
    "Indiscriminate Weapons",
    "Hate",
    "Self-Harm",
    "Sexual Content",
)

_LLAMA_GUARD_3_NAMES = (
    "Violent Crimes",
    "Non-Violent Crimes",
    "Sex Crimes",
    "Child Exploitation",
    "Defamation",
    "Specialized Advice",
    "Privacy",
    "Intellectual Property",
    "Indiscriminate Weapons",
    "Hate",
    "Self-Harm",
    "Sexual Content",
    "Elections",
    "Code Interpreter Abuse",
)


def _numbered(prefix: str, names: Sequence[str]) -> tuple[Category, ...]:
    return tuple(Category(f"{prefix}{n}", name) for n, name in enumerate(names, start=1))


_DEFAULTS: dict[PromptFormat, Taxonomy] = {
    PromptFormat.LLAMA_GUARD_1: Taxonomy(
        "O",
        tuple(
            Category(f"O{n}", name, description)
            for n, (name, description) in enumerate(_LLAMA_GUARD_1_POLICY, start=1)
        ),
    ),
    PromptFormat.LLAMA_GUARD_2: Taxonomy("S", _numbered("S", _LLAMA_GUARD_2_NAMES)),
    PromptFormat.LLAMA_GUARD_3: Taxonomy("S", _numbered("S", _LLAMA_GUARD_3_NAMES)),
    # The 1B model was trained without S14 (Code Interpreter Abuse).
    PromptFormat.LLAMA_GUARD_3_1B: Taxonomy("S", _numbered("S", _LLAMA_GUARD_3_NAMES[:13])),
}

# Categories whose heading keeps the trailing space LlamaGuard-7b's template gives it.
_LLAMA_GUARD_1_TRAILING_SPACE = frozenset({_DEFAULTS[PromptFormat.LLAMA_GUARD_1].categories[0]})


def default_taxonomy(fmt: PromptFormat) -> Taxonomy:
    """The categories the model of ``fmt`` was trained with (FORMATS.md section 2)."""
    return _DEFAULTS[fmt]


def _render_heading(category: Category, fmt: PromptFormat) -> str:
    heading = f"{category.code}: {category.name}."
    if fmt is PromptFormat.LLAMA_GUARD_2 or (
        fmt is PromptFormat.LLAMA_GUARD_1 and category in _LLAMA_GUARD_1_TRAILING_SPACE
    ):
        heading += " "
    return heading


def render_categories(taxonomy: Taxonomy, fmt: PromptFormat) -> str:
    """The ``{CATS}`` block: one heading per category, each followed by its description.

    Rendered once per format and kept on the (immutable) taxonomy: every prompt needs it.
    """
    rendered = taxonomy._rendered.get(fmt)
    if rendered is None:
        lines: list[str] = []
        for category in taxonomy.categories:
            lines.append(_render_heading(category, fmt))
            if category.description is not None:
                lines.append(category.description)
        rendered = taxonomy._rendered[fmt] = "\n".join(lines)
    return rendered


# --- custom taxonomies -------------------------------------------------------------------------

_CATEGORY_KEYS = frozenset({"code", "name", "description"})


def load_taxonomy_text(text: str, fmt: PromptFormat) -> Taxonomy:
    """Parse a custom taxonomy from YAML or JSON text (JSON is valid YAML)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"taxonomy is not valid YAML or JSON: {_one_line(exc)}") from exc
    return parse_taxonomy(data, fmt)


def _one_line(error: yaml.YAMLError) -> str:
    """PyYAML's message spans several lines (with a quoted excerpt); settings errors are one."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def parse_taxonomy(data: object, fmt: PromptFormat) -> Taxonomy:
    """Build a taxonomy from decoded YAML/JSON: a list of categories, or a mapping with either
    ``categories`` (that list) or ``exclude`` (default codes to leave out of the default table).
    """
    if data is None:
        raise ConfigurationError("taxonomy is empty")
    if isinstance(data, list):
        return _parse_category_list(data, fmt)
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"taxonomy must be a list of categories or a mapping, not {_type_name(data)}"
        )
    keys = set(data)
    if keys == {"categories"}:
        categories = data["categories"]
        if not isinstance(categories, list):
            raise ConfigurationError(
                f"taxonomy 'categories' must be a list, not {_type_name(categories)}"
            )
        return _parse_category_list(categories, fmt)
    if keys == {"exclude"}:
        return _parse_exclude(data["exclude"], fmt)
    if {"categories", "exclude"} <= keys:
        raise ConfigurationError("taxonomy has both 'categories' and 'exclude'; give one of them")
    unknown = sorted(str(key) for key in keys - {"categories", "exclude"})
    if unknown:
        raise ConfigurationError(
            f"taxonomy has unknown key {unknown[0]!r}; expected 'categories' or 'exclude'"
        )
    raise ConfigurationError("taxonomy mapping needs a 'categories' or an 'exclude' key")


def _parse_category_list(items: list[object], fmt: PromptFormat) -> Taxonomy:
    if not items:
        raise ConfigurationError("taxonomy has no categories")
    prefix = default_prefix(fmt)
    categories: list[Category] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(items, start=1):
        category = _parse_category(item, position, prefix)
        if category.code in seen:
            raise ConfigurationError(
                f"taxonomy categories {seen[category.code]} and {position} share the code"
                f" {category.code!r}"
            )
        seen[category.code] = position
        categories.append(category)
    return Taxonomy(prefix, tuple(categories))


def _parse_category(item: object, position: int, prefix: str) -> Category:
    where = f"taxonomy category {position}"
    if not isinstance(item, Mapping):
        raise ConfigurationError(f"{where} must be a mapping with a 'name', not {_type_name(item)}")
    unknown = sorted(str(key) for key in set(item) - _CATEGORY_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{where} has unknown key {unknown[0]!r}; expected 'name', 'description' or 'code'"
        )
    name = _text_field(item, "name", where)
    if name is None:
        raise ConfigurationError(f"{where} has no name")
    if "\n" in name or "\r" in name:
        raise ConfigurationError(f"{where} name must be a single line")
    description = _text_field(item, "description", where)
    code = _text_field(item, "code", where)
    if code is None:
        code = f"{prefix}{position}"
    elif _CODE.fullmatch(code) is None:
        suggestion = normalize_code(code)
        hint = f" (did you mean {suggestion!r}?)" if suggestion and suggestion != code else ""
        raise ConfigurationError(
            f"{where} has code {code!r}; a code is upper-case letters followed by a number"
            f" without leading zeros, like {prefix}1{hint}"
        )
    return Category(code, name, description)


def _text_field(item: Mapping[object, object], key: str, where: str) -> str | None:
    """A string field stripped of surrounding whitespace; None when absent, null or blank."""
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{where} {key} must be a string, not {_type_name(value)}")
    return value.strip() or None


def _parse_exclude(excluded: object, fmt: PromptFormat) -> Taxonomy:
    default = default_taxonomy(fmt)
    if not isinstance(excluded, list):
        raise ConfigurationError(
            f"taxonomy 'exclude' must be a list of codes, not {_type_name(excluded)}"
        )
    dropped: set[str] = set()
    for entry in excluded:
        if not isinstance(entry, str):
            raise ConfigurationError(
                f"taxonomy 'exclude' entries must be codes like {default.codes[0]},"
                f" not {_type_name(entry)}"
            )
        code = normalize_code(entry.strip())
        if code is None or code not in default:
            raise ConfigurationError(
                f"taxonomy 'exclude' lists {entry!r}, which is not a {fmt} code"
                f" ({default.codes[0]}-{default.codes[-1]})"
            )
        if code in dropped:
            raise ConfigurationError(f"taxonomy 'exclude' lists {code!r} twice")
        dropped.add(code)
    kept = tuple(category for category in default.categories if category.code not in dropped)
    if not kept:
        raise ConfigurationError("taxonomy 'exclude' leaves no category")
    return Taxonomy(default.prefix, kept)


def _type_name(value: object) -> str:
    """The YAML/JSON word for a decoded value's type, for error messages."""
    names: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "a number"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
    ]
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__
