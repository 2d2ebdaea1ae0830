"""How prompts are measured for the budget: characters, or Llama 3 tokens where that is exact.

Llama Guard 2, 3 and 3-1B use the Llama 3 tokenizer (128,256 ids: a byte-level BPE of 128,000
ranks read with tiktoken, plus 256 special tokens); ``worker.tokenizer`` loads it when the
optional ``tokens`` extra is installed, and these formats are then counted exactly. Llama Guard 1
uses Llama 2's SentencePiece tokenizer, which no package ships: it is measured in characters, a
conservative stand-in. Pure: the tokenizer is handed in, already loaded.

Counting is linear in the text. tiktoken cannot take a run of more than about 25,000
whitespace or non-whitespace characters in one piece, nor more than 400,000 characters at once,
so the text is cut into segments below both limits, as Meta's own tokenizer does; a cut inside
a run may count a token more than the server does, never fewer than the slack covers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    import tiktoken

Unit = Literal["characters", "tokens"]

# The pre-tokenizer pattern and the special tokens of Meta's Llama 3 tokenizer (its
# llama_models/llama3/tokenizer.py): 12 named tokens then reserved ones up to 256 in all.
LLAMA3_PATTERN: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NAMED_SPECIAL_TOKENS: Final = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
)
SPECIAL_TOKEN_COUNT: Final = 256
LLAMA3_VOCABULARY_SIZE: Final = 128_256


def llama3_special_tokens() -> list[str]:
    """The 256 special tokens in id order (their ids follow the 128,000 ranks)."""
    reserved = SPECIAL_TOKEN_COUNT - len(NAMED_SPECIAL_TOKENS)
    return [
        *NAMED_SPECIAL_TOKENS,
        *(f"<|reserved_special_token_{2 + index}|>" for index in range(reserved)),
    ]


# tiktoken's limits (Meta's tokenizer cuts at the same places).
_MAX_RUN_CHARS: Final = 25_000
_MAX_SEGMENT_CHARS: Final = 400_000
_RUNS: Final = re.compile(r"\s+|\S+")


@dataclass(frozen=True)
class PromptMeasure:
    """How prompt sizes are counted: the unit, a counter, and where each unit of a text starts.

    ``server_added`` is what the server puts before the prompt (the begin-of-text token) and
    ``slack`` what joining two separately counted pieces may add at their seam (a tokenizer
    merges across it differently); both are 0 for characters.
    """

    unit: Unit
    size: Callable[[str], int]
    unit_starts: Callable[[str], Sequence[int]]
    server_added: int = 0
    slack: int = 0
    default_overlap: int = 200


def _character_starts(text: str) -> Sequence[int]:
    return range(len(text))


CHARACTERS: Final = PromptMeasure("characters", len, _character_starts)


class Llama3Tokenizer:
    """Counts Llama 3 tokens of a text as a server tokenising the same prompt does."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding

    @property
    def vocabulary_size(self) -> int:
        """How many ids the tokenizer knows: 128,256."""
        return int(self._encoding.n_vocab)

    def count(self, text: str) -> int:
        """Tokens of ``text``; special-token strings count as the one token a server reads."""
        return sum(len(self._encode(text[start:end])) for start, end in _segments(text))

    def token_starts(self, text: str) -> list[int]:
        """The character offset at which each token of ``text`` starts, in order."""
        starts: list[int] = []
        for start, end in _segments(text):
            _, offsets = self._encoding.decode_with_offsets(self._encode(text[start:end]))
            starts.extend(start + offset for offset in offsets)
        return starts

    def _encode(self, text: str) -> list[int]:
        return self._encoding.encode(text, allowed_special="all")

    def measure(self) -> PromptMeasure:
        """Budgets in tokens: the server's begin-of-text token, and 2 tokens at each seam."""
        return PromptMeasure(
            "tokens",
            self.count,
            self.token_starts,
            server_added=1,
            slack=2,
            default_overlap=50,
        )


def _segments(text: str) -> Iterator[tuple[int, int]]:
    """Spans covering ``text`` with no longer run and no longer segment than tiktoken takes."""
    if len(text) <= _MAX_RUN_CHARS:
        yield 0, len(text)
        return
    start = 0
    for run in _RUNS.finditer(text):
        run_start, run_end = run.span()
        if run_end - run_start > _MAX_RUN_CHARS or run_end - start > _MAX_SEGMENT_CHARS:
            if run_start > start:
                yield start, run_start
            start = run_start
            while run_end - start > _MAX_RUN_CHARS:
                yield start, start + _MAX_RUN_CHARS
                start += _MAX_RUN_CHARS
    if start < len(text):
        yield start, len(text)
