"""Argument checks for the datasets: each error names the argument and what was expected."""

from __future__ import annotations

import math

from .._checks import check_int

__all__ = ["check_pair", "check_nonnegative", "check_index"]


def check_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``; an int ``n`` means ``(n, n)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return check_int(value[0], f"{name}[0]", minimum), check_int(value[1], f"{name}[1]", minimum)
    n = check_int(value, name, minimum)
    return n, n


def check_nonnegative(value, name: str) -> float:
    """A finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_index(index, length: int) -> int:
    """A sequence index in ``[-length, length)``, returned as a non-negative int."""
    if isinstance(index, bool):
        raise TypeError(f"index must be an int, got {index!r}")
    try:
        i = index.__index__()
    except AttributeError:
        raise TypeError(f"index must be an int, got {type(index).__name__}") from None
    if not -length <= i < length:
        raise IndexError(f"index {i} out of range for a dataset of length {length}")
    return i % length
