"""The dependency-free PNG writer: a valid file, and lines and text where they were drawn."""

from __future__ import annotations

import struct
import zlib

import pytest

from bench.plot import BLUE, ORANGE, RED, WHITE, Canvas, Panel, Series, render

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(png: bytes) -> dict[bytes, bytes]:
    """The chunks of a PNG by type, checking each CRC on the way."""
    assert png.startswith(PNG_SIGNATURE)
    chunks: dict[bytes, bytes] = {}
    offset = len(PNG_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        data = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + data
        offset += 12 + length
    return chunks


def _decoded(png: bytes) -> tuple[int, int, bytes]:
    chunks = _chunks(png)
    width, height, depth, color_type, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, color_type) == (8, 2)  # 8-bit RGB
    return width, height, zlib.decompress(chunks[b"IDAT"])


def test_a_canvas_encodes_as_a_png_of_its_size_with_its_pixels() -> None:
    canvas = Canvas(3, 2)
    canvas.dot(2, 1, BLUE)

    width, height, raw = _decoded(canvas.png())

    assert (width, height) == (3, 2)
    # Each row: filter byte 0, then RGB triples.
    assert raw == b"\x00" + bytes(WHITE) * 3 + b"\x00" + bytes(WHITE) * 2 + bytes(BLUE)


def test_a_line_covers_both_of_its_ends_and_its_middle() -> None:
    canvas = Canvas(20, 20)

    canvas.line((2, 3), (17, 13), RED)

    assert canvas.pixel(2, 3) == RED
    assert canvas.pixel(17, 13) == RED
    assert RED in {canvas.pixel(x, 8) for x in range(20)}


def test_text_is_drawn_in_its_colour_and_returns_where_it_ends() -> None:
    canvas = Canvas(100, 30)

    end = canvas.text(0, 0, "Ok 1", ORANGE, scale=1)

    assert end == 4 * 6
    drawn = {canvas.pixel(x, y) for x in range(end) for y in range(7)}
    assert drawn == {WHITE, ORANGE}


def test_render_stacks_one_panel_per_chart_and_draws_each_series() -> None:
    panel = Panel(
        title="hard cap endpoint",
        series=(Series("limit", BLUE, ((0.0, 50.0), (10.0, 100.0))),),
        references=(("capacity", 100.0),),
    )

    width, height, raw = _decoded(render([panel, panel]))

    assert (width, height) == (1000, 720)
    assert bytes(BLUE) in raw
    assert bytes(RED) in raw


def test_render_refuses_an_empty_picture() -> None:
    with pytest.raises(ValueError, match="nothing to plot"):
        render([])


def test_a_line_above_the_ceiling_is_clipped_to_the_top_not_dropped() -> None:
    panel = Panel(
        title="queueing",
        series=(Series("limit", BLUE, ((0.0, 5000.0), (10.0, 5000.0))),),
        y_ceiling=1000.0,
    )

    width, _, raw = _decoded(render([panel]))

    # The plot area's top edge is 60 pixels down; the clipped line runs along it.
    assert _pixel(raw, width, 500, 60) == bytes(BLUE)


def _pixel(raw: bytes, width: int, x: int, y: int) -> bytes:
    start = y * (1 + 3 * width) + 1 + 3 * x
    return raw[start : start + 3]
