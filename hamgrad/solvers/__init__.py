"""The hams (NMF, soft VQ, concept decomposition) as pure tensor functions, and the solver registry."""

from .base import Solver, available_solvers, compute_dtype, get_solver, register_solver
from .hams import CD, NMF, SoftVQ

__all__ = ["Solver", "NMF", "SoftVQ", "CD", "get_solver", "register_solver", "available_solvers", "compute_dtype"]
