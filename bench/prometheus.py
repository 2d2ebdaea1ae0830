"""Reading the worker's Prometheus ``/metrics`` text: one sample's value by name and labels."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp


def sample_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of the sample ``name{labels}`` in exposition-format ``text``, or None if absent.

    Labels must match exactly (order does not matter); a sample without labels matches an empty
    or missing ``labels``.
    """
    wanted = dict(labels or {})
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample_name, sample_labels = _split_series(series)
        if sample_name == name and sample_labels == wanted:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _split_series(series: str) -> tuple[str, dict[str, str]]:
    name, brace, rest = series.partition("{")
    if not brace:
        return series.strip(), {}
    labels: dict[str, str] = {}
    # Label values here are simple words (outcome names, verdicts); no escaped quotes to handle.
    for pair in rest.rstrip("}").split(","):
        key, _, quoted = pair.partition("=")
        if key:
            labels[key.strip()] = quoted.strip().strip('"')
    return name, labels


async def scrape(session: aiohttp.ClientSession, url: str) -> str | None:
    """The text at ``url``, or None when it cannot be read (the worker is starting or gone)."""
    try:
        async with session.get(url) as response:
            if response.status != 200:  # noqa: PLR2004 - HTTP OK
                return None
            return await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
