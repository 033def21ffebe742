"""Figure 2: :func:`hamgrad.analysis.gradient_flow` (‖∂hᵗ/∂h⁰‖, ‖∂hᵗ/∂x‖, limits and bounds) of a contractive model
and of every solver configuration of figure 1."""

from __future__ import annotations

import torch

from .. import plots
from ..analysis import gradient_flow
from ..fixed_point import FixedPoint
from . import _common
from ._registry import register


def contractive_model(n: int = 32, m: int = 16, scale: float = 0.8, seed: int = 0):
    """A contractive user model ``F(h, x) = scale·tanh(W h + U x)`` with ``‖W‖₂ = 1`` (so ``‖J‖₂ <= scale``),
    read out by ``G(h, x) = V h``. Figure 2 uses it as the case where the paper's propositions hold
    (docs/theory.md §3).

    Args:
        n: the state's size (``h`` is ``(n, 4)``).
        m: the input's size (``x`` is ``(m, 4)``).
        scale: the contraction factor, a bound on ``‖J‖₂``.
        seed: seeds W, U, V, x and h0.

    Returns:
        ``(model, x, h0)``: a :class:`hamgrad.FixedPoint`, the input and the initial state ``(h,)``, in float64.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = W / torch.linalg.matrix_norm(W, ord=2)
    U = torch.randn(n, m, generator=g, dtype=torch.float64) / m ** 0.5
    V = torch.randn(8, n, generator=g, dtype=torch.float64) / n ** 0.5
    fp = FixedPoint(lambda h, x: (scale * torch.tanh(W @ h[0] + U @ x),), readout=lambda h, x: V @ h[0],
                    name=f"{scale}·tanh(Wh + Ux)")
    x = torch.randn(m, 4, generator=g, dtype=torch.float64)
    return fp, x, (torch.randn(n, 4, generator=g, dtype=torch.float64),)


def compute(quick: bool, **_) -> dict:
    """Figure 2's numbers: the limits where ``ρ(J_K) < 1``, the bounds where ``L_h < 1`` (``limit_reason`` says why
    not).

    Args:
        quick: the CI size instead of the full one (see figure 1).

    Returns:
        ``{"size", "runs": [...]}``, each run a :class:`hamgrad.analysis.GradientFlow`'s ``to_dict()`` plus its
        ``label``; the contractive model first.
    """
    size = _common.size(quick)
    fp, x, h0 = contractive_model()
    cases = [("contractive F: 0.8·tanh(Wh + Ux)", fp, x, fp.unroll(x, h0, size["K"]))]
    cases += list(_common.trajectories(quick))
    runs = []
    for label, model, x, traj in cases:
        flow = gradient_flow(model, x, traj[0], steps=size["K"], generator=torch.Generator().manual_seed(2))
        runs.append({"label": label, **flow.to_dict()})
    return {"size": size, "runs": runs}


#: Draw figure 2: ``plot(result) -> Figure`` for :func:`compute`'s result or its JSON.
plot = plots.vanishing_exploding


register("flow", compute, plot)
