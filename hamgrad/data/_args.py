"""Argument checks for the datasets: each error names the argument and what was expected."""

from __future__ import annotations

from .._checks import check_nonnegative, check_pair

__all__ = ["check_pair", "check_nonnegative", "check_index"]


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
