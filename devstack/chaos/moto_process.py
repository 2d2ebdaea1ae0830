"""moto's server in a process of its own, for chaos runs.

In-process (``start_moto_server``), moto's request threads and the harness's event loop (fault
proxy, emulator, collector) share one interpreter lock, and a run of a few hundred messages spends
most of its time waiting for it. In a separate process the two use separate cores.

Run as a module, it serves moto (via ``start_moto_server``, with its logging settings), prints its
URL on the first line of stdout and serves until its stdin closes, so it also ends when the
harness dies without stopping it.

One moto cost is taken out in that process: for every message ``ReceiveMessage`` hands out, moto
checks the retention period by computing *all* the queue's attributes, several of which walk every
message in the queue, so a receive of ten from a queue of a few hundred took half a second.
``_patch_retention_check`` reads the one attribute it needs instead, with the same result.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from devstack.child_server import child_server
from devstack.moto_stack import start_moto_server

_START_TIMEOUT_SECONDS: Final = 60.0  # importing moto takes a second or two, more when busy
_STOP_TIMEOUT_SECONDS: Final = 30.0


@contextmanager
def moto_server_process() -> Iterator[str]:
    """Start moto's server in a child process; yields its base URL; stops it on exit."""
    with child_server(
        [sys.executable, "-m", "devstack.chaos.moto_process"],
        name="moto's server process",
        start_seconds=_START_TIMEOUT_SECONDS,
        stop_seconds=_STOP_TIMEOUT_SECONDS,
    ) as url:
        yield url


def _patch_retention_check() -> None:
    """Make moto's per-message retention check O(1) (same answer; see the module docstring)."""
    from moto.core.utils import unix_time  # noqa: PLC0415 - moto is only needed in this process
    from moto.sqs.models import SQSBackend  # noqa: PLC0415 - same

    def is_retained(self: Any, queue_name: str, message: Any) -> bool:
        queue = self.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return bool(retain_until > unix_time())

    # Only if moto still has the method: a later moto without it needs no patch.
    if hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        # A deliberate monkeypatch of a third-party method, in this process only.
        SQSBackend.is_message_valid_based_on_retention_period = is_retained  # type: ignore[method-assign]


def _serve() -> None:
    _patch_retention_check()
    with start_moto_server() as url:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the parent closes it (or dies)


if __name__ == "__main__":
    _serve()
