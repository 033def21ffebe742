"""Analysis of optimisation-defined layers (docs/theory.md §3 and §5), matrix-free by default.

- :mod:`.operators`: :class:`LinearOperator`, :func:`jacobian` (one step, ``wrt="h" | "x"``), :func:`unrolled_jacobian`
  (``∂y/∂x``, ``∂h^K/∂h^0`` of K steps); :mod:`.linearize` holds the JVP/VJP implementations behind them.
- :mod:`.spectra`: :func:`eigvals`, :func:`svdvals`, :func:`spectral_radius`, :func:`spectral_norm` → :class:`Spectrum`.
- :mod:`.flow`: :func:`gradient_flow` → :class:`GradientFlow`; :func:`implicit_jacobian`.
- :mod:`.agreement`: :func:`compare_gradients` → :class:`GradientComparison`.
- :mod:`.ratio`: :func:`accumulative_ratio` → a tensor.

Every result object has ``.to_dict()`` (plain data for JSON, plots and notebooks).
"""

from .agreement import GradientComparison, ModeGradient, compare_gradients
from .flow import GradientFlow, gradient_flow, implicit_jacobian
from .operators import LinearOperator, jacobian, unrolled_jacobian
from .ratio import accumulative_ratio
from .spectra import Spectrum, eigvals, spectral_norm, spectral_radius, svdvals

__all__ = [
    "LinearOperator", "jacobian", "unrolled_jacobian",
    "Spectrum", "eigvals", "svdvals", "spectral_radius", "spectral_norm",
    "GradientFlow", "gradient_flow", "implicit_jacobian",
    "GradientComparison", "ModeGradient", "compare_gradients",
    "accumulative_ratio",
]
