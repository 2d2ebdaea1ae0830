"""The verdict cache: each prompt's assessment, kept for repeats of the same text (LRU with a TTL).

Chat repeats itself ("thanks!", "lol", copy-paste spam waves). An answer depends only on the
exact prompt text and on how it was asked: the backend and endpoint (with its routing), the
prompt format, the taxonomy and the generation parameters. ``CacheScope`` holds all of these
except the prompt; a key is the SHA-256 of the scope's digest and the prompt, so the cache keeps
32 bytes and one small ``Assessment`` per entry, never the prompt itself.

Concurrent requests for the same key share one call (single flight). When that call fails, every
request waiting on it fails with the same error: they asked the same endpoint the same question
at the same moment, so a second call would most likely fail the same way and double the load on
an endpoint already in trouble; each message is then released and retried by the runner. When
the call is cancelled instead (its message was drained at shutdown), a waiter makes the call
itself: the cancellation was about that one message, not about the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from worker import metrics
from worker.core.decision import Assessment
from worker.core.taxonomy import Taxonomy

DEFAULT_CACHE_SIZE: Final = 10_000
DEFAULT_CACHE_TTL: Final = 3_600.0


@dataclass(frozen=True, slots=True)
class CacheScope:
    """Everything besides the prompt text that determines the model's answer."""

    backend: str
    endpoint: str
    prompt_format: str
    taxonomy: Taxonomy
    parameters: Mapping[str, object]
    # Which deployment behind the endpoint answers (SageMaker variant, inference component,
    # custom attributes): two of them may run different models.
    routing: Mapping[str, str]

    def digest(self) -> bytes:
        """A stable digest of the scope (equal scopes give equal digests, in any process)."""
        document = {
            "backend": self.backend,
            "endpoint": self.endpoint,
            "prompt_format": self.prompt_format,
            "taxonomy": {
                "prefix": self.taxonomy.prefix,
                "categories": [
                    [category.code, category.name, category.description]
                    for category in self.taxonomy.categories
                ],
            },
            "parameters": dict(self.parameters),
            "routing": dict(self.routing),
        }
        canonical = json.dumps(document, sort_keys=True, ensure_ascii=False, default=repr)
        return hashlib.sha256(canonical.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Answer:
    """An assessment and whether it came without a call of the caller's own."""

    assessment: Assessment
    cached: bool


@dataclass(frozen=True, slots=True)
class _Entry:
    assessment: Assessment
    expires_at: float


class AssessmentCache:
    """An LRU of assessments by prompt, bounded by entry count and aged by a TTL.

    ``clock`` is monotonic seconds (injectable for tests). An entry older than ``ttl`` is a miss
    and is dropped when looked up; the least recently used entry goes when the cache is full.
    """

    def __init__(
        self,
        scope: CacheScope,
        *,
        max_entries: int = DEFAULT_CACHE_SIZE,
        ttl: float = DEFAULT_CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("a cache holds at least one entry (size 0 means no cache at all)")
        self._scope_digest = scope.digest()
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._calls: dict[bytes, asyncio.Future[Assessment]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, prompt: str) -> bytes:
        """The entry key of ``prompt`` within this cache's scope."""
        digest = hashlib.sha256(self._scope_digest)
        digest.update(prompt.encode("utf-8", "surrogatepass"))
        return digest.digest()

    async def answer(
        self,
        prompt: str,
        call: Callable[[], Awaitable[Assessment]],
        *,
        keep: Callable[[Assessment], bool],
    ) -> Answer:
        """The cached assessment of ``prompt``, or ``call()``'s, stored when ``keep`` says so.

        A request for a prompt whose call is already in flight waits for that call.
        """
        key = self.key(prompt)
        while True:
            found = self._lookup(key)
            if found is not None:
                metrics.CACHE_HITS.inc()
                return Answer(found, cached=True)
            in_flight = self._calls.get(key)
            if in_flight is None:
                break
            # Waits without being cancelled by the leader: a cancelled leader means "ask again".
            await asyncio.wait([in_flight])
            if not in_flight.cancelled():
                metrics.CACHE_HITS.inc()
                return Answer(in_flight.result(), cached=True)
        metrics.CACHE_MISSES.inc()
        return Answer(await self._lead(key, call, keep), cached=False)

    async def _lead(
        self,
        key: bytes,
        call: Callable[[], Awaitable[Assessment]],
        keep: Callable[[Assessment], bool],
    ) -> Assessment:
        shared: asyncio.Future[Assessment] = asyncio.get_running_loop().create_future()
        self._calls[key] = shared
        try:
            assessment = await call()
        except asyncio.CancelledError:
            shared.cancel()
            raise
        except Exception as exc:
            shared.set_exception(exc)
            shared.exception()  # retrieved: with no waiter, asyncio would log it as lost
            raise
        finally:
            del self._calls[key]
        shared.set_result(assessment)
        if keep(assessment):
            self._store(key, assessment)
        return assessment

    def _lookup(self, key: bytes) -> Assessment | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            del self._entries[key]
            metrics.CACHE_ENTRIES.set(len(self._entries))
            return None
        self._entries.move_to_end(key)
        return entry.assessment

    def _store(self, key: bytes, assessment: Assessment) -> None:
        self._entries[key] = _Entry(assessment, self._clock() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        metrics.CACHE_ENTRIES.set(len(self._entries))
