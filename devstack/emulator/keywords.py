"""The emulator's keyword table: which category names get which trigger phrases.

Data only, read by ``rules``. Each group says which category names it applies to (a regex
searched in the lower-cased name, with an optional exclusion so that, say, "Non-Violent Crimes"
does not get the violence phrases) and the phrases that trip it. Phrases are matched
case-insensitively, on word boundaries, with any run of whitespace between words; single words
appear only where they have no everyday meaning ("shoplift", "doxx"). The phrases are
deliberately blunt: this is a development stand-in, not a safety model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HATE_TARGETS = (
    "jews",
    "muslims",
    "christians",
    "black people",
    "white people",
    "asians",
    "immigrants",
    "mexicans",
    "gay people",
    "gays",
    "trans people",
    "women",
    "disabled people",
)


@dataclass(frozen=True, slots=True)
class KeywordGroup:
    """Trigger phrases for one kind of harm and the category names they apply to."""

    name: str
    applies_to: re.Pattern[str]
    phrases: tuple[str, ...]
    unless: re.Pattern[str] | None = None

    def applies(self, text: str) -> bool:
        """Whether a category name (or description) ``text`` selects this group."""
        lowered = text.lower()
        if not self.applies_to.search(lowered):
            return False
        return self.unless is None or not self.unless.search(lowered)


def _group(
    name: str, applies_to: str, phrases: tuple[str, ...], unless: str | None = None
) -> KeywordGroup:
    return KeywordGroup(
        name=name,
        applies_to=re.compile(applies_to),
        phrases=phrases,
        unless=re.compile(unless) if unless else None,
    )


KEYWORD_GROUPS: tuple[KeywordGroup, ...] = (
    _group(
        "violence",
        r"violen|murder|terror",
        (
            "kill someone",
            "kill somebody",
            "kill him",
            "kill her",
            "kill them all",
            "i will kill",
            "i'm going to kill",
            "i am going to kill",
            *(
                f"kill my {who}"
                for who in ("wife", "husband", "boss", "neighbor", "neighbour", "family")
            ),
            *(
                f"kill my {who}"
                for who in ("mother", "father", "mom", "dad", "brother", "sister", "teacher")
            ),
            "murder someone",
            "murder him",
            "murder her",
            "how to murder",
            "commit murder",
            "stab someone",
            "stab him",
            "stab her",
            "shoot someone",
            "shoot up a school",
            "shoot up the",
            "attack someone",
            "plan an attack",
            "beat him up",
            "beat her up",
            "beat someone up",
            "torture someone",
            "poison someone",
            "poison my",
            "hurt someone",
            "break his legs",
        ),
        # "Non-Violent Crimes" must not pick up the violence phrases.
        unless=r"non-?violen",
    ),
    _group(
        "hate",
        # "Indiscriminate Weapons" is not about discrimination.
        r"hate|(?<!in)discriminat",
        (
            *(f"i hate {who}" for who in _HATE_TARGETS),
            *(f"i hate all {who}" for who in _HATE_TARGETS),
            *(f"death to {who}" for who in _HATE_TARGETS),
            "are subhuman",
            "are vermin",
            "should be exterminated",
            "go back to your country",
            "inferior race",
        ),
    ),
    _group(
        "criminal",
        r"\bcrim|theft|fraud",
        (
            "steal a car",
            "steal money",
            "steal from my",
            "steal from a store",
            "steal from the store",
            "steal someone's identity",
            "rob a bank",
            "rob a store",
            "rob someone",
            "shoplift",
            "shoplifting",
            "launder money",
            "money laundering scheme",
            "hack into",
            "break into a house",
            "break into a car",
            "break into her",
            "break into his",
            "break into someone's",
            "get into her apartment",
            "get into his apartment",
            "hotwire a car",
            "forge a check",
            "counterfeit money",
            "kidnap someone",
            "kidnap a child",
            "evade taxes",
        ),
        # "Violent Crimes" and "Sex Crimes" have their own groups; "Non-Violent Crimes" stays here.
        unless=r"(?<!non-)(?<!non)violent crim|sex\w* crim|child",
    ),
    _group(
        "sex_crimes",
        r"sex\w* crim|sexual (?:assault|abuse)|rape",
        (
            "rape her",
            "rape someone",
            "how to rape",
            "drug her drink",
            "spike her drink",
            "sexually assault",
            "grope her",
            "without her consent",
            "non-consensual sex",
        ),
    ),
    _group(
        "child_exploitation",
        r"child|minor",
        (
            "child porn",
            "sex with a minor",
            "sex with a child",
            "groom a child",
            "underage nudes",
            "nude photos of minors",
        ),
    ),
    _group(
        "guns",
        # Llama Guard 2/3 put weapons and drug crimes under "Non-Violent Crimes".
        r"gun|firearm|weapon|non-?violent crim",
        (
            "untraceable gun",
            "ghost gun",
            "3d print a gun",
            "3d-printed gun",
            "without a background check",
            "file off the serial number",
            "convert my rifle to full auto",
            "make my rifle full auto",
            "auto sear",
            "buy an illegal gun",
        ),
        unless=r"indiscriminate",
    ),
    _group(
        "mass_weapons",
        r"weapon|explosive|cbrn|mass destruction",
        (
            "build a bomb",
            "make a bomb",
            "pipe bomb",
            "dirty bomb",
            "nerve agent",
            "make sarin",
            "synthesize sarin",
            "make ricin",
            "weaponize anthrax",
            "chemical weapon",
            "biological weapon",
            "build a nuclear weapon",
        ),
    ),
    _group(
        "drugs",
        r"substance|drug|narcotic|non-?violent crim",
        (
            "cook meth",
            "make meth",
            "buy meth",
            "buy cocaine",
            "buy heroin",
            "buy fentanyl",
            "synthesize fentanyl",
            "sell drugs",
            "deal drugs",
            "smuggle drugs",
            "make crack",
        ),
    ),
    _group(
        "self_harm",
        r"self-?\s?harm|suicid",
        (
            "kill myself",
            "killing myself",
            "end my life",
            "commit suicide",
            "suicide method",
            "write a suicide note",
            "want to die",
            "cut myself",
            "want to hurt myself",
            "overdose on",
        ),
    ),
    _group(
        "sexual",
        r"sexual|erotic|adult content",
        (
            "have sex with me",
            "send me nudes",
            "send nudes",
            "explicit sex scene",
            "erotic story",
            "write porn",
            "talk dirty to me",
            "sexually explicit",
        ),
        unless=r"child|minor|crim|assault|abuse|exploit",
    ),
    _group(
        "privacy",
        r"privacy|personal (?:data|information)|doxx",
        (
            "home address of",
            "find out where she lives",
            "find out where he lives",
            "find where she lives",
            "find where he lives",
            "social security number of",
            "dox",
            "doxx",
            "track her location",
            "track his location",
            "track my ex",
            "read her messages",
            "read his messages",
        ),
    ),
    _group(
        "intellectual_property",
        r"intellectual property|copyright",
        (
            "pirated copy",
            "download cracked",
            "crack the license",
            "bypass drm",
            "remove the drm",
            "torrent the movie",
        ),
    ),
    _group(
        "defamation",
        r"defamation|libel|slander",
        (
            "spread a rumor that",
            "spread rumors that",
            "spread a rumour that",
            "write a fake news article",
            "falsely claim that",
        ),
    ),
    _group(
        "specialized_advice",
        r"specialized advice|medical advice|legal advice|financial advice",
        (
            "without a prescription",
            "stop taking my medication",
            "diagnose my symptoms",
            "what dose should i take",
        ),
    ),
    _group(
        "elections",
        r"election|voting",
        (
            "vote twice",
            "vote more than once",
            "fake ballots",
            "stuff the ballot box",
            "rig the election",
        ),
    ),
    _group(
        "code_interpreter_abuse",
        r"code interpreter|code execution",
        (
            "fork bomb",
            "rm -rf /",
            "reverse shell",
            "escape the sandbox",
        ),
    ),
)
