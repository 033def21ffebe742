"""Analysis of optimisation-defined layers (docs/theory.md §3 and §5), matrix-free by default.

- :mod:`.operators`: :class:`LinearOperator` and its compositions, sums, multiples, :class:`IdentityOperator`,
  :class:`InverseOperator`, :class:`JacobianOperator`; :func:`jacobian` (one step, ``wrt="h" | "x"``),
  :func:`unrolled_jacobian` (``∂y/∂x``, ``∂h^K/∂h^0`` of K steps); :mod:`.linearize` holds the JVP/VJP
  implementations behind them and :func:`register_linearization` for a solver's hand-derived one.
- :mod:`.spectra`: :func:`eigvals`, :func:`svdvals`, :func:`spectral_radius`, :func:`spectral_norm` → :class:`Spectrum`.
- :mod:`.flow`: :func:`gradient_flow` → :class:`GradientFlow`; :func:`implicit_jacobian`.
- :mod:`.agreement`: :func:`compare_gradients` → :class:`GradientComparison`.
- :mod:`.ratio`: :func:`accumulative_ratio` → a tensor.
- :mod:`.codes`: :func:`code_information` → :class:`CodeInformation` (what a block's codes know of a labelling).

Every result object has ``.to_dict()`` (plain data for JSON, plots and notebooks).
"""

from .agreement import GradientComparison, ModeGradient, compare_gradients
from .codes import CodeInformation, code_information
from .flow import GradientFlow, gradient_flow, implicit_jacobian
from .linearize import register_linearization
from .operators import IdentityOperator, InverseOperator, JacobianOperator, LinearOperator, jacobian, unrolled_jacobian
from .ratio import accumulative_ratio
from .spectra import Spectrum, eigvals, spectral_norm, spectral_radius, svdvals

__all__ = [
    "LinearOperator", "IdentityOperator", "InverseOperator", "JacobianOperator", "jacobian", "unrolled_jacobian",
    "register_linearization",
    "Spectrum", "eigvals", "svdvals", "spectral_radius", "spectral_norm",
    "GradientFlow", "gradient_flow", "implicit_jacobian",
    "GradientComparison", "ModeGradient", "compare_gradients",
    "accumulative_ratio",
    "CodeInformation", "code_information",
]
