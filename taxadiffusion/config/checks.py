"""Checks of one params value each: every failure is a one-line :class:`UserError` naming the key and what
was expected (``params.yaml train.steps=0: expected an integer >= 1``)."""

from __future__ import annotations

import math
from typing import Any, Optional

from taxadiffusion.core.errors import UserError


def bad(where: str, value: Any, expected: str) -> UserError:
    return UserError(f"params.yaml {where}={value!r}: expected {expected}")


def check_int(where: str, value: Any, minimum: int | None = None) -> int:
    """An integer (``2.7`` or ``"ten"`` is an error, not ``2``), optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(where, value, "an integer" + (f" >= {minimum}" if minimum is not None else ""))
    if minimum is not None and value < minimum:
        raise bad(where, value, f"an integer >= {minimum}")
    return value


def check_float(where: str, value: Any, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> float:
    """A finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``). Strings such as ``1e-4`` (which YAML 1.1
    reads as text) are accepted when they are numbers."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise bad(where, value, "a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(where, value, "a finite number")
    value = float(value)
    if (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
        left = "(" if lo_open else "["
        raise bad(where, value, f"a number in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")
    return value


def check_choice(where: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise bad(where, value, "one of " + ", ".join(str(c) for c in choices))
    return value


def check_str(where: str, value: Any, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise bad(where, value, "a non-empty string" + (" or null" if optional else ""))
    return value


def check_mapping(where: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise bad(where, value, "a mapping")
    return value


def check_list(where: str, value: Any) -> list:
    if not isinstance(value, list):
        raise bad(where, value, "a list")
    return value
