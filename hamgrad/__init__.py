"""hamgrad: gradients through optimisation-defined layers (the Hamburger paper, ICLR 2021).

    import hamgrad as hg
    s = hg.NMF(rank=8)
    y, info = hg.solve(s, x, steps=6, grad="one-step")
"""

from .fixed_point import FixedPoint
from .grad import (GRAD_MODES, ConvergenceError, ConvergenceWarning, LinearSolveResult, SolveInfo, implicit_gradient,
                   solve)
from .solvers import CD, NMF, Solver, SoftVQ, available_solvers, get_solver, register_solver
from .analysis import (accumulative_ratio, compare_gradients, eigvals, gradient_flow, jacobian, spectral_norm,
                       spectral_radius, svdvals)
from . import analysis, experiments, nn

__version__ = "0.1.0"

__all__ = [
    "NMF", "SoftVQ", "CD", "Solver", "get_solver", "register_solver", "available_solvers",
    "FixedPoint", "solve", "SolveInfo", "implicit_gradient", "LinearSolveResult", "GRAD_MODES", "ConvergenceWarning",
    "ConvergenceError",
    "nn", "experiments",
    "analysis", "jacobian", "eigvals", "svdvals", "spectral_radius", "spectral_norm", "gradient_flow",
    "compare_gradients", "accumulative_ratio",
]
