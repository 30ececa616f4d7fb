"""The one integer check: an int (numpy's too, never a bool) within bounds, or a named error.

`is_int` is the rule, `check_int` raises on it.
Every layer's parameter checks call it (the session's `params` with `ParameterError`), so the
rule and the wording are written once.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def is_int(value, lo: Optional[int] = None, hi: Optional[int] = None) -> bool:
    """Whether ``value`` is an integer (numpy's too, never a bool) in ``lo..hi`` (each bound optional)."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) \
        and (lo is None or value >= lo) and (hi is None or value <= hi)


def check_int(value, name: str, lo: int, hi: Optional[int] = None, *, accepted: Optional[str] = None,
              error: type = ValueError) -> int:
    """``int(value)`` if it is an integer in ``lo..hi`` (``>= lo`` without ``hi``); else ``error`` naming
    ``name``, what is accepted and the value."""
    if not is_int(value, lo, hi):
        accepted = accepted or (f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}")
        raise error(f"{name}: expected {accepted}, got {value!r}")
    return int(value)
