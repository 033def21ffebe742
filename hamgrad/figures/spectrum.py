"""Figure 1: the top-k eigenvalues of ``J_t = ∂F/∂h (hᵗ, x)``, ``ρ(J_t)`` and ``‖J_t‖₂`` for ``t = 0 … K``, for
NMF, soft VQ at several temperatures and CD on synthetic features."""

from __future__ import annotations


from .. import plots
from ..analysis import eigvals, jacobian, svdvals
from . import _common
from ._registry import register


def compute(quick: bool, **_) -> dict:
    """Figure 1's numbers.

    Args:
        quick: the CI size (d, n, r = 16, 48, 4) instead of the full one (64, 256, 8).

    Returns:
        ``{"size", "note", "runs": [{"label", "solver", "hparams", "t", "eigvals", "rho", "sigma"}]}``, one run per
        solver configuration; ``eigvals[t]`` the ``[re, im]`` pairs of ``J_t``'s top-k eigenvalues.
    """
    size = _common.size(quick)
    runs = []
    for label, s, x, traj in _common.trajectories(quick):
        eig, rho, sigma = [], [], []
        for h in traj:
            J = jacobian(s, h, x, wrt="h")
            spec = eigvals(J, k=size["k"])
            eig.append(spec.to_dict()["values"])
            rho.append(float(spec.values[0].abs()))
            sigma.append(float(svdvals(J, k=1).values[0]))
        runs.append({"label": label, "solver": s.name, "hparams": s.hparams(), "t": list(range(size["K"] + 1)),
                     "eigvals": eig, "rho": rho, "sigma": sigma})
    return {"size": size, "note": "J_t = dF/dh (h^t, x), t = 0..K", "runs": runs}


#: Draw figure 1: ``plot(result) -> Figure`` for :func:`compute`'s result or its JSON.
plot = plots.jacobian_spectrum


register("spectrum", compute, plot)
