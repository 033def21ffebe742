"""The accumulative ratio of a feature matrix's spectrum (docs/theory.md §5; the paper's "Accumulative Ratio" plot)."""

from __future__ import annotations

import torch

from .._checks import check_finite, check_float_tensor
from ..solvers import compute_dtype

__all__ = ["accumulative_ratio"]


def accumulative_ratio(Z: torch.Tensor, p: float = 2) -> torch.Tensor:
    """``ratio(k) = Σ_{i≤k} σ_i^p / Σ_i σ_i^p`` for ``k = 1 … min(d, n)``, batched over leading dimensions.

    Args:
        Z: feature matrices ``(..., d, n)`` (channels × positions), e.g. a Hamburger's input or output.
        p: 2 (energy, the default) or 1.

    Returns:
        A tensor ``(..., min(d, n))`` on ``Z``'s device, in ``Z``'s dtype (float32 for float16/bfloat16 input, which
        is computed in float32): non-decreasing, ending at 1 (``ratio[..., k-1]`` is the share of the top k singular
        values). Each matrix is divided by its largest absolute entry first (the ratio does not change), so tiny
        or huge finite values neither underflow nor overflow in ``σ^p``. Plain data with ``.tolist()``.

    Raises:
        TypeError, ValueError: ``Z`` not a floating tensor of at least 2 dimensions, ``p`` not 1 or 2, ``Z`` with NaN
            or Inf, or an all-zero matrix (its ratio is undefined).

    Examples:
        Singular values 4 and 3: the top one holds 16/25 of the energy (``p=2``) and 4/7 of the sum (``p=1``).

        >>> import torch, hamgrad as hg
        >>> Z = torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))
        >>> hg.accumulative_ratio(Z).tolist()
        [0.64, 1.0]
        >>> [round(v, 6) for v in hg.accumulative_ratio(Z, p=1).tolist()]
        [0.571429, 1.0]
    """
    check_float_tensor(Z, "Z", min_dim=2)
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    check_finite(Z, "Z")
    Z = Z.detach().to(compute_dtype(Z.dtype))
    scale = Z.abs().amax(dim=(-2, -1), keepdim=True)
    if bool((scale == 0).any()):
        raise ValueError("Z contains an all-zero matrix: its accumulative ratio is undefined")
    powered = torch.linalg.svdvals(Z / scale) ** p
    return torch.cumsum(powered, dim=-1) / powered.sum(dim=-1, keepdim=True)
