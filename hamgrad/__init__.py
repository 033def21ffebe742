"""hamgrad: gradients through optimisation-defined layers (the Hamburger paper, ICLR 2021).

    import hamgrad as hg
    s = hg.NMF(rank=8)
    y, info = hg.solve(s, x, steps=6, grad="one-step")

``import hamgrad`` loads the core (solvers, gradient modes, analysis, ``hg.nn``); the submodules that pull in the
data sets, the experiment runner, matplotlib or tqdm (``hg.experiments``, ``hg.data``, ``hg.plots``,
``hg.figures``) are imported on first attribute access (``hg.paper``, the figures' deprecated old name, too).
"""

import importlib

from .fixed_point import FixedPoint
from .grad import (GRAD_MODES, ConvergenceError, ConvergenceWarning, LinearSolveResult, SolveInfo, implicit_gradient,
                   solve)
from .solvers import CD, NMF, Solver, SoftVQ, available_solvers, get_solver, register_solver
from .analysis import (accumulative_ratio, compare_gradients, eigvals, gradient_flow, jacobian, spectral_norm,
                       spectral_radius, svdvals)
from . import analysis, linalg, nn

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("experiments", "data", "plots", "style", "figures", "paper")

__all__ = [
    "NMF", "SoftVQ", "CD", "Solver", "get_solver", "register_solver", "available_solvers",
    "FixedPoint", "solve", "SolveInfo", "implicit_gradient", "LinearSolveResult", "GRAD_MODES", "ConvergenceWarning",
    "ConvergenceError",
    "nn", "experiments", "data", "plots", "style", "figures",
    "linalg", "analysis", "jacobian", "eigvals", "svdvals", "spectral_radius", "spectral_norm", "gradient_flow",
    "compare_gradients", "accumulative_ratio",
]


def __getattr__(name: str):
    """Import the heavier submodules on first use (``hg.experiments``, ``hg.data``, ``hg.plots``, ``hg.figures``)."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
