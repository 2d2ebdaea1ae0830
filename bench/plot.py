"""A small line-chart PNG writer with no dependencies (zlib and struct), for the bench's plot.

The bench draws one picture: per endpoint model, the worker's concurrency limit and its goodput
over time, both as a percentage of the endpoint's capacity, against the 100 % line. That needs
lines, axes, tick labels and a legend, not a plotting library: a raster ``Canvas``, a 5x7 bitmap
font (upper case, digits, a little punctuation) and a PNG encoder are enough.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

Color = tuple[int, int, int]
WHITE: Final[Color] = (255, 255, 255)
BLACK: Final[Color] = (0, 0, 0)
GREY: Final[Color] = (200, 200, 200)
BLUE: Final[Color] = (31, 119, 180)
ORANGE: Final[Color] = (230, 120, 20)
RED: Final[Color] = (200, 30, 30)

# Each glyph: seven rows of five pixels, the top row first, the leftmost pixel the high bit.
_GLYPHS: Final[dict[str, tuple[int, ...]]] = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F),
    "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11),
    "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11),
    "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D),
    "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E),
    "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A),
    "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04),
    "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    "%": (0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03),
    ".": (0, 0, 0, 0, 0, 0x0C, 0x0C),
    ",": (0, 0, 0, 0, 0x0C, 0x04, 0x08),
    ":": (0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0),
    "/": (0, 0x01, 0x02, 0x04, 0x08, 0x10, 0),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02),
    ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    "-": (0, 0, 0, 0x1F, 0, 0, 0),
    "+": (0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0),
    "=": (0, 0, 0x1F, 0, 0x1F, 0, 0),
    "_": (0, 0, 0, 0, 0, 0, 0x1F),
}
_GLYPH_WIDTH, _GLYPH_HEIGHT = 5, 7
_UNKNOWN_GLYPH: Final = (0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F)


class Canvas:
    """An RGB raster, white to start with; (0, 0) is the top-left pixel."""

    def __init__(self, width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise ValueError("a canvas needs at least one pixel")
        self.width = width
        self.height = height
        self._pixels = bytearray(WHITE * (width * height))

    def pixel(self, x: int, y: int) -> Color:
        offset = 3 * (y * self.width + x)
        red, green, blue = self._pixels[offset : offset + 3]
        return red, green, blue

    def dot(self, x: int, y: int, color: Color, size: int = 1) -> None:
        """A ``size`` x ``size`` square at (x, y); whatever falls outside is dropped."""
        for dy in range(size):
            for dx in range(size):
                px, py = x + dx, y + dy
                if 0 <= px < self.width and 0 <= py < self.height:
                    offset = 3 * (py * self.width + px)
                    self._pixels[offset : offset + 3] = bytes(color)

    def line(
        self, start: tuple[int, int], end: tuple[int, int], color: Color, size: int = 1
    ) -> None:
        """A straight line (Bresenham), ``size`` pixels thick."""
        (x0, y0), (x1, y1) = start, end
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        step_x, step_y = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error = dx + dy
        for _ in range(dx - dy + 1):  # bounded: one step per pixel of the longer side
            self.dot(x0, y0, color, size)
            if (x0, y0) == (x1, y1):
                return
            doubled = 2 * error
            if doubled >= dy:
                error += dy
                x0 += step_x
            if doubled <= dx:
                error += dx
                y0 += step_y

    def text(self, x: int, y: int, words: str, color: Color = BLACK, scale: int = 2) -> int:
        """Write ``words`` (upper-cased) with its top-left at (x, y); returns the end x."""
        for char in words.upper():
            rows = _GLYPHS.get(char, _UNKNOWN_GLYPH)
            for row, bits in enumerate(rows):
                for column in range(_GLYPH_WIDTH):
                    if bits & (1 << (_GLYPH_WIDTH - 1 - column)):
                        self.dot(x + column * scale, y + row * scale, color, scale)
            x += (_GLYPH_WIDTH + 1) * scale
        return x

    def png(self) -> bytes:
        """The canvas as a PNG file (8-bit RGB, no filtering)."""
        stride = 3 * self.width
        raw = b"".join(
            b"\x00" + bytes(self._pixels[row * stride : (row + 1) * stride])
            for row in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b"")
        )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def text_width(words: str, scale: int = 2) -> int:
    return len(words) * (_GLYPH_WIDTH + 1) * scale


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a panel: (x, y) points in data units."""

    label: str
    color: Color
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Panel:
    """One chart: a title, its lines, and horizontal reference lines (label, y)."""

    title: str
    series: tuple[Series, ...]
    references: tuple[tuple[str, float], ...] = ()
    x_label: str = "SECONDS"
    y_label: str = "% OF CAPACITY"
    y_ceiling: float = field(default=1000.0)


_PANEL_HEIGHT: Final = 360
_WIDTH: Final = 1000
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 90, 30, 60, 60


def render(panels: Sequence[Panel]) -> bytes:
    """The panels stacked top to bottom, as one PNG."""
    if not panels:
        raise ValueError("nothing to plot")
    canvas = Canvas(_WIDTH, _PANEL_HEIGHT * len(panels))
    for index, panel in enumerate(panels):
        _draw_panel(canvas, panel, top=index * _PANEL_HEIGHT)
    return canvas.png()


def _draw_panel(canvas: Canvas, panel: Panel, *, top: int) -> None:
    left, right = _MARGIN_LEFT, _WIDTH - _MARGIN_RIGHT
    upper, lower = top + _MARGIN_TOP, top + _PANEL_HEIGHT - _MARGIN_BOTTOM
    x_max = _nice_ceiling(max((x for s in panel.series for x, _ in s.points), default=1.0))
    highest = max(
        [y for s in panel.series for _, y in s.points] + [y for _, y in panel.references] + [1.0]
    )
    y_max = _nice_ceiling(min(highest * 1.1, panel.y_ceiling))

    def at(x: float, y: float) -> tuple[int, int]:
        y = min(max(y, 0.0), y_max)
        px = left + round((right - left) * x / x_max)
        py = lower - round((lower - upper) * y / y_max)
        return px, py

    canvas.text(left, top + 14, panel.title, scale=2)
    for tick in _ticks(y_max):
        _, py = at(0.0, tick)
        canvas.line((left, py), (right, py), GREY)
        label = f"{tick:g}"
        canvas.text(left - 8 - text_width(label), py - 7, label)
    for tick in _ticks(x_max):
        px, _ = at(tick, 0.0)
        canvas.line((px, lower), (px, lower + 5), BLACK)
        label = f"{tick:g}"
        canvas.text(px - text_width(label) // 2, lower + 10, label)
    canvas.line((left, upper), (left, lower), BLACK, 2)
    canvas.line((left, lower), (right, lower), BLACK, 2)
    canvas.text(right - text_width(panel.x_label), lower + 32, panel.x_label)
    canvas.text(8, upper - 24, panel.y_label)
    for label, y in panel.references:
        _, py = at(0.0, y)
        for x in range(left, right, 12):  # dashed
            canvas.line((x, py), (min(x + 6, right), py), RED, 2)
        canvas.text(right - text_width(label), py - 18, label, RED)
    legend_x = left + 12
    for series in panel.series:
        _draw_series(canvas, series, at)
        canvas.line((legend_x, upper + 12), (legend_x + 24, upper + 12), series.color, 3)
        legend_x = canvas.text(legend_x + 30, upper + 6, series.label, series.color) + 24


def _draw_series(
    canvas: Canvas, series: Series, at: Callable[[float, float], tuple[int, int]]
) -> None:
    points = [at(x, y) for x, y in series.points if math.isfinite(x) and math.isfinite(y)]
    for start, end in itertools.pairwise(points):
        canvas.line(start, end, series.color, 2)
    if len(points) == 1:
        canvas.dot(*points[0], series.color, 3)


def _nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) that
    is >= ``value`` (and > 0), so that five even ticks read well."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        if step * power >= value:
            return step * power
    return 10.0 * power


def _ticks(top: float) -> list[float]:
    """Five even steps from 0 to ``top``."""
    return [top * index / 5 for index in range(6)]
