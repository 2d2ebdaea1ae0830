"""Reading a TGI-shaped generation response (SageMaker's list form or TGI's object form)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from worker.core.completion import strip_echoed_prompt
from worker.core.errors import UnreadableResponse
from worker.core.models import Completion


def decode_generation(payload: bytes | str, prompt: str) -> Completion:
    """Turn a response body into a ``Completion``; a body of the wrong shape is unreadable.

    SageMaker returns ``[{"generated_text": ..., "details": ...}]`` and TGI returns the object
    alone. Some TGI versions echo the prompt before the generation; a leading copy is stripped.
    """
    try:
        document: Any = json.loads(payload)
    # ValueError covers JSONDecodeError, UnicodeDecodeError and integers too long to convert.
    except (ValueError, RecursionError) as exc:
        raise UnreadableResponse(f"the endpoint answered with invalid JSON: {exc}") from exc
    if isinstance(document, list):
        if len(document) != 1:
            raise UnreadableResponse(
                f"the endpoint answered with a list of {len(document)} generations, expected 1"
            )
        document = document[0]
    if not isinstance(document, Mapping) or not isinstance(document.get("generated_text"), str):
        raise UnreadableResponse("the endpoint's answer has no string 'generated_text'")
    details = document.get("details")
    return Completion(
        generated_text=strip_echoed_prompt(document["generated_text"], prompt),
        details=details if isinstance(details, Mapping) else None,
    )
