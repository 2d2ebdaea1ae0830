"""Kept for the runner tests' old import path; the one home is ``support.conditions``."""

from __future__ import annotations

from support.conditions import CONDITION_TIMEOUT, wait_until

__all__ = ["CONDITION_TIMEOUT", "wait_until"]
