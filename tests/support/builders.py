"""Builders of the values many tests need: a verdict, the trace headers carried onto it, and a
verdict as the chaos runs read it back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

from devstack.chaos.report import VerdictCopy
from worker.core.verdict import ModelRef, Verdict

TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID: Final = "00f067aa0ba902b7"
TRACEPARENT: Final = f"00-{TRACE_ID}-{PARENT_ID}-01"
AWS_TRACE_HEADER: Final = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
#: The fields of a verdict document, as DESIGN.md lists them.
VERDICT_FIELDS: Final = frozenset(
    {
        "schema",
        "id",
        "conversation_id",
        "verdict",
        "categories",
        "unknown_codes",
        "score",
        "assessed_role",
        "model",
        "flags",
        "attributes",
        "received_at",
        "decided_at",
    }
)
MOMENT: Final = datetime(2026, 11, 26, 14, 0, 0, 120_000, tzinfo=UTC)
MODEL: Final = ModelRef(
    backend="sagemaker", endpoint="llama-guard-7b", prompt_format="llama-guard-1"
)


def make_verdict(verdict_id: str = "post-8f2c", *, unsafe: bool = False, **fields: Any) -> Verdict:
    """A valid verdict: safe (or unsafe) with no categories, any field replaced by ``fields``."""
    values: dict[str, Any] = {
        "id": verdict_id,
        "conversation_id": None,
        "verdict": "unsafe" if unsafe else "safe",
        "categories": (),
        "unknown_codes": (),
        "score": None,
        "assessed_role": "user",
        "model": MODEL,
        "flags": (),
        "attributes": {},
        "received_at": MOMENT,
        "decided_at": MOMENT,
    }
    values.update(fields)
    return Verdict(**values)


def verdict_copy(
    message_id: str,
    kind: Literal["safe", "unsafe"] = "safe",
    *codes: str,
    flags: tuple[str, ...] = (),
    topic: Literal["safe", "unsafe"] | None = None,
) -> VerdictCopy:
    """A verdict read back from a subscriber queue: on its own topic unless ``topic`` says."""
    return VerdictCopy(message_id, kind, codes, flags, kind if topic is None else topic)
