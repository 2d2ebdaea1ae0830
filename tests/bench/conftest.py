"""Make the top-level ``bench`` package importable: it is not installed (it is not part of the
worker's distribution), and pytest puts only this test folder on ``sys.path``."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
