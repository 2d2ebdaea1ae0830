"""A classifier in front of another one, for tests that watch or hold the calls going through."""

from __future__ import annotations

from worker.core.models import Completion
from worker.ports import Classifier


class InFront:
    """Passes every call to ``inner``; a subclass overrides ``classify`` to watch or hold it."""

    def __init__(self, inner: Classifier) -> None:
        self._inner = inner

    @property
    def backend(self) -> str:
        return self._inner.backend

    @property
    def endpoint(self) -> str:
        return self._inner.endpoint

    async def classify(self, prompt: str) -> Completion:
        return await self._inner.classify(prompt)
