"""The hams (NMF, soft VQ, concept decomposition) as pure tensor functions, and the solver registry."""

from .base import (ENTRY_POINT_GROUP, Solver, available_solvers, compute_dtype, get_solver, register_solver,
                   solver_factory)
from .hams import CD, NMF, SoftVQ

__all__ = ["Solver", "NMF", "SoftVQ", "CD", "get_solver", "register_solver", "available_solvers", "solver_factory",
           "compute_dtype", "ENTRY_POINT_GROUP"]
