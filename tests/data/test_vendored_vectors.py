"""The vendored Llama Guard vectors still match the shared originals, when those are beside us.

The tests read the vectors from ``tests/data/llama-guard/`` so that a clone passes on its own. The
project's shared folder (``../shared/llama-guard/`` next to the repository) is where they come
from; when it is there, the copies must not have drifted from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

VENDORED: Final = Path(__file__).resolve().parent / "llama-guard"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SHARED: Final = REPO_ROOT.parent / "shared" / "llama-guard"
VECTOR_FILES: Final = ("prompt-vectors.json", "output-vectors.json")


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_vendored_vectors_are_in_the_repository(name: str) -> None:
    assert (VENDORED / name).is_file()


@pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"no shared vectors beside the repository ({SHARED})"
)
@pytest.mark.parametrize("name", VECTOR_FILES)
def test_vendored_vectors_are_byte_identical_to_the_shared_ones(name: str) -> None:
    assert (VENDORED / name).read_bytes() == (SHARED / name).read_bytes()
