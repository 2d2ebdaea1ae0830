"""Loading the Llama 3 tokenizer from the optional ``tokens`` extra (tiktoken and llama-models).

Meta's ``llama-models`` package ships the tokenizer's ranks file,
``llama_models/llama3/tokenizer.model``. Only that file is read, through
``importlib.resources``: no code of llama-models runs, so none of its own (heavier) dependencies
is imported. Without the extra, ``load_llama3_tokenizer`` returns None and budgets stay in
characters.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from importlib import resources
from importlib.util import find_spec
from typing import Final

from worker.core.tokens import LLAMA3_PATTERN, Llama3Tokenizer, llama3_special_tokens

_TOKENIZER_PACKAGE: Final = "llama_models"
_TOKENIZER_RESOURCE: Final = ("llama_models.llama3", "tokenizer.model")


@lru_cache(maxsize=1)
def load_llama3_tokenizer() -> Llama3Tokenizer | None:
    """The Llama 3 tokenizer when the ``tokens`` extra is installed, else None (read once)."""
    if find_spec("tiktoken") is None or find_spec(_TOKENIZER_PACKAGE) is None:
        return None
    import tiktoken  # noqa: PLC0415 - optional: only with the ``tokens`` extra

    package, name = _TOKENIZER_RESOURCE
    try:
        ranks_file = resources.files(package).joinpath(name).read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return None
    ranks = _read_ranks(ranks_file)
    specials = llama3_special_tokens()
    encoding = tiktoken.Encoding(
        name="llama3",
        pat_str=LLAMA3_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={token: len(ranks) + index for index, token in enumerate(specials)},
    )
    return Llama3Tokenizer(encoding)


def _read_ranks(text: str) -> dict[bytes, int]:
    """tiktoken's ranks format: one ``base64-token rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    for line in text.splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks
