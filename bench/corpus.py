"""The messages a bench run sends: chat lines, one in ten unsafe, optionally with repeats.

Texts come from the chaos corpus's labelled lines (the emulator's keyword rules fix their
verdicts); a running number makes each one unique, unless it is chosen to repeat an earlier text
exactly, as chat repeats "thanks!" or a spam wave. Bodies are ``content`` messages, the common case.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime
from typing import Final

from devstack.chaos.corpus import LABELLED

_SAFE: Final = tuple(
    text for context, role, text, expected in LABELLED if expected.verdict == "safe"
)
_UNSAFE: Final = tuple(
    text for context, role, text, expected in LABELLED if expected.verdict == "unsafe"
)
UNSAFE_EVERY: Final = 10  # one message in ten is unsafe


def fresh_text(n: int) -> str:
    """The ``n``-th unique text: unsafe when ``n`` is the last of each ten."""
    pool = _UNSAFE if n % UNSAFE_EVERY == UNSAFE_EVERY - 1 else _SAFE
    return f"{pool[n % len(pool)]} (message {n})"


def texts(count: int, *, repeat_share: float = 0.0, seed: int = 0) -> list[str]:
    """``count`` texts in send order; ``repeat_share`` of them (rounded) repeat an earlier one,
    at random places, so the distinct texts are exactly the rest: the floor of endpoint calls."""
    if not 0.0 <= repeat_share < 1.0:
        raise ValueError("repeat_share must be within [0, 1)")
    rng = random.Random(seed)  # noqa: S311 - a reproducible stream, not security
    repeats = min(round(count * repeat_share), max(count - 1, 0))
    repeating = set(rng.sample(range(1, count), repeats)) if repeats else set()
    chosen: list[str] = []
    fresh = 0
    for position in range(count):
        if position in repeating:
            chosen.append(rng.choice(chosen))
        else:
            chosen.append(fresh_text(fresh))
            fresh += 1
    return chosen


def body(message_id: str, text: str) -> str:
    """One SQS body: a ``content`` message."""
    return json.dumps({"id": message_id, "content": text})


def verdict_id(verdict_json: str) -> str | None:
    """The ``id`` a published verdict carries, or None if the text is not a verdict."""
    try:
        document = json.loads(verdict_json)
    except ValueError:
        return None
    found = document.get("id") if isinstance(document, dict) else None
    return found if isinstance(found, str) else None


def verdict_moments(verdict_json: str) -> tuple[float, float]:
    """A published verdict's ``received_at`` and ``decided_at`` as epoch seconds (NaN if absent)."""
    try:
        document = json.loads(verdict_json)
        return (
            datetime.fromisoformat(document["received_at"]).timestamp(),
            datetime.fromisoformat(document["decided_at"]).timestamp(),
        )
    except (ValueError, KeyError, TypeError):
        return (math.nan, math.nan)


def bodies(count: int, *, prefix: str, repeat_share: float = 0.0, seed: int = 0) -> list[str]:
    """SQS bodies with ids ``{prefix}-{n}`` and the texts of ``texts``."""
    chosen = texts(count, repeat_share=repeat_share, seed=seed)
    return [body(f"{prefix}-{n}", text) for n, text in enumerate(chosen)]
