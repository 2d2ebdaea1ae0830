"""Which trace headers are carried from a source message onto its verdict and dead-letter copy.

A producer controls these values, so only well-formed, bounded ones travel on:

- ``traceparent``: W3C Trace Context level 1. Version ``00`` is exactly
  ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`` in lowercase; ``ff`` is invalid; an
  all-zero trace id or parent id is invalid. A later version (``01``..``fe``) is accepted as the
  spec asks -- the same first 55 characters, optionally followed by ``-`` and more visible ASCII --
  but only up to ``MAX_TRACEPARENT_CHARS`` in all.
- ``AWSTraceHeader``: an X-Ray trace header, ``;``-separated ``Key=Value`` fields of visible
  ASCII (empty fields ignored), one of them ``Root=1-<8 hex>-<24 hex>``, at most
  ``MAX_AWS_TRACE_HEADER_CHARS`` long.

Each check returns None for a header worth forwarding, else a short reason (for the log line).
Every pattern is matched against a bounded prefix or a bounded string, so checking is linear.
"""

from __future__ import annotations

import re
from typing import Final

# Version 00 is 55 characters; later versions may append fields, within this bound.
MAX_TRACEPARENT_CHARS: Final = 256
# The X-Ray header names a root, a parent, a sampling decision and perhaps a lineage: a few
# hundred characters at most. A bound keeps a producer from riding kilobytes onto every verdict.
MAX_AWS_TRACE_HEADER_CHARS: Final = 512

_TRACEPARENT_LENGTH: Final = 55
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_VISIBLE_ASCII: Final = re.compile(r"[!-~]*")
_XRAY_FIELD: Final = re.compile(r"[A-Za-z]+=[!-:<>-~]+")  # visible ASCII except ';' and '='
_XRAY_ROOT: Final = re.compile(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}")


def traceparent_problem(value: str) -> str | None:
    """None when ``value`` is a W3C ``traceparent`` to forward, else why it is dropped."""
    if len(value) > MAX_TRACEPARENT_CHARS:
        return f"longer than {MAX_TRACEPARENT_CHARS} characters"
    match = _TRACEPARENT.fullmatch(value[:_TRACEPARENT_LENGTH])
    if match is None:
        return "not version-traceid-parentid-flags in lowercase hex"
    version, trace_id, parent_id = match.groups()
    invalid = {
        "version ff is invalid": version == "ff",
        "the trace id is all zeros": trace_id == "0" * 32,
        "the parent id is all zeros": parent_id == "0" * 16,
    }
    reason = next((reason for reason, applies in invalid.items() if applies), None)
    return reason or _extra_fields_problem(version, value[_TRACEPARENT_LENGTH:])


def _extra_fields_problem(version: str, rest: str) -> str | None:
    """What may follow the flags: nothing in version 00; ``-`` and more in a later version."""
    if not rest:
        return None
    if version == "00":
        return "version 00 has nothing after the flags"
    if not rest.startswith("-") or _VISIBLE_ASCII.fullmatch(rest) is None:
        return "a later version's extra fields must follow a '-' in visible ASCII"
    return None


def aws_trace_header_problem(value: str) -> str | None:
    """None when ``value`` is an X-Ray trace header to forward, else why it is dropped."""
    if len(value) > MAX_AWS_TRACE_HEADER_CHARS:
        return f"longer than {MAX_AWS_TRACE_HEADER_CHARS} characters"
    fields = [field for field in value.split(";") if field]  # a trailing ';' is harmless
    if not all(_XRAY_FIELD.fullmatch(field) for field in fields):
        return "not ';'-separated Key=Value fields in visible ASCII"
    if not any(_XRAY_ROOT.fullmatch(field) for field in fields):
        return "no Root=1-<8 hex>-<24 hex> field"
    return None
