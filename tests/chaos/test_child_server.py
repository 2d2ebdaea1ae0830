"""The harnesses' child servers: the URL a child prints is yielded, and closing stdin stops it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devstack.child_server import child_server

# Prints a URL, then serves until its stdin closes, and says so on a file given as argv[1].
SERVES_UNTIL_STDIN_CLOSES = """
import sys
from pathlib import Path
print("http://127.0.0.1:1", flush=True)
sys.stdin.read()
open(sys.argv[1], "w").write("stopped")
"""


def test_the_url_is_yielded_and_the_child_stops_when_its_stdin_closes(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    command = [sys.executable, "-c", SERVES_UNTIL_STDIN_CLOSES, str(marker)]

    with child_server(command, name="a child", start_seconds=30, stop_seconds=30) as url:
        assert url == "http://127.0.0.1:1"

    assert marker.read_text(encoding="utf-8") == "stopped"  # written only once stdin closed


def test_a_child_that_prints_no_url_is_named_in_the_error() -> None:
    command = [sys.executable, "-c", "print('not a url')"]

    with (
        pytest.raises(RuntimeError, match=r"^a child did not start$"),
        child_server(command, name="a child", start_seconds=30, stop_seconds=30),
    ):
        pass
