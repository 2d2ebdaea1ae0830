"""Reading the configured taxonomy file: the edge between a path in the settings and the core."""

from __future__ import annotations

from pathlib import Path

from worker.core.errors import ConfigurationError
from worker.core.taxonomy import PromptFormat, Taxonomy, default_taxonomy, load_taxonomy_text


def load_taxonomy(
    prompt_format: PromptFormat, path: Path | None, *, setting: str = "MODERATION_TAXONOMY_FILE"
) -> Taxonomy:
    """The configured taxonomy: the format's default, or the custom file's categories.

    A problem is a one-line ``ConfigurationError`` naming ``setting`` (the variable or option).
    """
    if path is None:
        return default_taxonomy(prompt_format)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{setting}: cannot read {path}: {exc}") from exc
    try:
        return load_taxonomy_text(text, prompt_format)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{setting}: {path}: {exc}") from exc
