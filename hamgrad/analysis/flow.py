"""Gradient flow through an unrolled solve (docs/theory.md §3 and §5): how ``∂hᵗ/∂h⁰`` vanishes and ``∂hᵗ/∂x`` grows.

Convention (docs/theory.md §3): ``h^{t+1} = F(hᵗ, x)``, ``J_t = ∂F/∂h (hᵗ, x)`` and ``B_t = ∂F/∂x (hᵗ, x)`` for
``t = 0 … K`` (``J_t`` at the state *before* step ``t + 1``), so that

- ``∂hᵗ/∂h⁰ = J_{t−1} ⋯ J_0`` and ``∂hᵗ/∂x = Σ_{s=0}^{t−1} J_{t−1} ⋯ J_{s+1} B_s``;
- the readout ``y = G(h^K, x)`` has ``∂y/∂x = ∂G/∂h · ∂h^K/∂x + ∂G/∂x``.

:func:`gradient_flow` measures matrix-free, for ``t = 1 … K``, ``‖∂hᵗ/∂h⁰‖₂`` and ``‖∂hᵗ/∂x‖₂`` (chains of step
JVPs/VJPs) and the forward residual ``‖hᵗ − h^{t−1}‖``; for ``t = 0 … K``, ``ρ(J_t)``, ``‖J_t‖₂`` and ``‖B_t‖₂``;
and the paper's propositions next to what the run shows:

- Proposition 1, the linear rate of the residuals (:func:`empirical_rate`), beside ``ρ(J_K)``;
- Proposition 2, the limits at the last iterate ``h^K`` (taken as the fixed point ``h*``): the state limit
  ``‖(I − J_K)⁻¹ B_K‖₂`` (what ``‖∂hᵗ/∂x‖`` tends to) and the output limit ``‖∂G/∂h (I − J_K)⁻¹ B_K + ∂G/∂x‖₂``
  (what ``‖∂y/∂x‖`` tends to), each product solving ``(I − J_K) z = B_K v`` (or its transpose) by GMRES. They are
  reported only where the measured ``ρ(J_K)`` is below 1 by more than the spectra's ``tol`` (then the Neumann series
  ``Σ J_Kⁱ B_K`` converges) and every inner solve converged; at ``ρ(J_K) = 1`` (an exact invariance, as for NMF or
  balanced Sinkhorn) the series may still converge, but hamgrad does not claim either way;
- Proposition 3, the bounds ``‖∂hᵗ/∂x‖ <= L_x / (1 − L_h)`` for every ``t <= K`` and ``‖∂y/∂x‖ <= L_G L_x / (1 − L_h)
  + ‖∂G/∂x‖`` after K steps, with ``L_h = max_{t<K} ‖J_t‖`` and ``L_x = max_{t<K} ‖B_t‖`` over the factors that
  enter ``∂h^K/∂x`` (``J_0 … J_{K−1}``, ``B_0 … B_{K−1}``) and ``L_G = ‖∂G/∂h (h^K)‖`` — reported only where
  ``L_h < 1``.

Where a limit or a bound is not reported, ``GradientFlow.limit_reason`` says why.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from .._checks import check_steps
from ..fixed_point import state_residual
from ..grad import as_fixed_point
from ..linalg import IdentityOperator, InverseOperator
from .linearize import linearize
from .operators import analysis_point, check_trajectory, linear_operator
from .spectra import default_tol, eigvals, svdvals

__all__ = ["GradientFlow", "gradient_flow", "implicit_jacobian", "empirical_rate"]


@dataclass
class GradientFlow:
    """What :func:`gradient_flow` measured (see the module docstring for the formulas and the index convention).

    Attributes:
        t: ``1 … K``, the index of ``dh_dh0``, ``dh_dx`` and ``residuals``.
        dh_dh0, dh_dx: ``‖∂hᵗ/∂h⁰‖₂`` and ``‖∂hᵗ/∂x‖₂``.
        residuals: ``‖hᵗ − h^{t−1}‖``.
        t_J: ``0 … K``, the index of ``rho_J``, ``norm_J`` and ``norm_B``.
        rho_J, norm_J, norm_B: ``ρ(J_t)``, ``‖J_t‖₂``, ``‖B_t‖₂`` at ``hᵗ``.
        L_h, L_x: ``max ‖J_t‖`` and ``max ‖B_t‖`` over ``t = 0 … K−1``.
        L_G, L_Gx: ``‖∂G/∂h‖₂`` and ``‖∂G/∂x‖₂`` at ``h^K`` (``L_Gx = 0`` for a readout that ignores ``x``).
        state_bound: ``L_x / (1 − L_h)``, a bound on every ``‖∂hᵗ/∂x‖``, ``t <= K``; ``None`` unless ``L_h < 1``.
        output_bound: ``L_G L_x / (1 − L_h) + L_Gx``, a bound on ``‖∂y/∂x‖`` after K steps; ``None`` unless
            ``L_h < 1``.
        state_limit: ``‖(I − J_K)⁻¹ B_K‖₂``; ``None`` unless ``ρ(J_K) < 1 − tol`` and every inner solve converged.
        output_limit: ``‖∂G/∂h (I − J_K)⁻¹ B_K + ∂G/∂x‖₂``; ``None`` under the same conditions.
        limit_reason: ``None`` when both limits and both bounds are reported, else why not: what was measured
            (e.g. ``ρ(J_K) = 1``), never a claim that was not.
        rate: Proposition 1's empirical rate (:func:`empirical_rate`), ``nan`` without a usable ratio.
        rate_spread: ``max − min`` of the residual ratios the rate averages (small once the ratio has settled).
        rate_steps: how many ratios it averages.
        rho_last: ``ρ(J_K)``, what ``rate`` estimates once the residual ratio has settled.
        converged: every spectrum converged (``nan`` marks each one that did not).
        matvecs, seconds: the work of the spectra and the wall time.
    """

    t: list = field(default_factory=list)
    dh_dh0: list = field(default_factory=list)
    dh_dx: list = field(default_factory=list)
    residuals: list = field(default_factory=list)
    t_J: list = field(default_factory=list)
    rho_J: list = field(default_factory=list)
    norm_J: list = field(default_factory=list)
    norm_B: list = field(default_factory=list)
    L_h: float = math.nan
    L_x: float = math.nan
    L_G: float = math.nan
    L_Gx: float = math.nan
    state_bound: float | None = None
    output_bound: float | None = None
    state_limit: float | None = None
    output_limit: float | None = None
    limit_reason: str | None = None
    rate: float = math.nan
    rate_spread: float = math.nan
    rate_steps: int = 0
    rho_last: float = math.nan
    converged: bool = True
    matvecs: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain data (floats, lists, bools, ``None``; ``nan`` stays a float)."""
        return asdict(self)

    def _deprecated(self, old: str, new: str):
        warnings.warn(f"GradientFlow.{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)

    @property
    def implicit_limit(self) -> float:
        """Deprecated: ``output_limit`` (``nan`` where it is ``None``)."""
        self._deprecated("implicit_limit", "output_limit (and state_limit, the limit of ‖∂hᵗ/∂x‖)")
        return math.nan if self.output_limit is None else self.output_limit

    @property
    def implicit_converged(self) -> bool:
        """Deprecated: ``output_limit is not None``."""
        self._deprecated("implicit_converged", "output_limit is not None (limit_reason says why not)")
        return self.output_limit is not None

    @property
    def bound(self) -> float | None:
        """Deprecated: ``output_bound`` (and ``state_bound``, the bound on ``‖∂hᵗ/∂x‖``)."""
        self._deprecated("bound", "output_bound (and state_bound, the bound on ‖∂hᵗ/∂x‖)")
        return self.output_bound


def implicit_jacobian(model, h, x: torch.Tensor, *, readout: bool = True, tol: float | None = None,
                      max_iter: int = 500):
    """The implicit-function-theorem Jacobian at a (near-)fixed point ``h`` (docs/theory.md §3, Proposition 2), as an
    operator whose products each solve ``(I − J) z = B v`` (or ``(I − Jᵀ) w = u``) by GMRES.

    Args:
        model: a solver or a :class:`hamgrad.FixedPoint`.
        h: the state (a tuple of tensors), ideally a fixed point ``h* = F(h*, x)``.
        x: the input.
        readout: ``True`` for ``∂y/∂x = ∂G/∂h (I − J)⁻¹ B + ∂G/∂x``; ``False`` for the state's ``∂h*/∂x =
            (I − J)⁻¹ B``.
        tol: the inner solves' relative residual (default ``1e-2 ·`` :func:`default_tol` of ``x``'s dtype).
        max_iter: the inner solves' iteration limit.

    Returns:
        ``(operator, solves)``: the :class:`LinearOperator` ``(I − J)⁻¹ B`` (then ``∂G/∂h (I − J)⁻¹ B + ∂G/∂x``),
        built from :class:`JacobianOperator` and :mod:`hamgrad.linalg`'s :class:`IdentityOperator` and
        :class:`InverseOperator`; ``solves`` is the list that collects each inner solve's
        :class:`hamgrad.LinearSolveResult` (check their ``converged``).

    Raises:
        TypeError, ValueError: for a model, ``x`` or ``h`` that :func:`hamgrad.solve` would reject.
    """
    fp = as_fixed_point(model)
    x, h = analysis_point(x, h, model=fp)
    tol = default_tol(x.dtype) * 1e-2 if tol is None else tol
    step = linearize(fp, h, x, steps=1)
    J, B = linear_operator(step, "h", h, x, "J"), linear_operator(step, "x", h, x, "B")
    solve = InverseOperator(IdentityOperator(J.shape[0], dtype=J.dtype, device=J.device) - J, tol, max_iter)
    op = solve @ B  # ∂h*/∂x = (I − J)⁻¹ B
    if readout:
        out = linearize(fp, h, x, steps=0, readout=True)
        op = linear_operator(out, "h", h, x, "dG/dh") @ op + linear_operator(out, "x", h, x, "dG/dx")
    op.name = "implicit dy/dx" if readout else "implicit dh*/dx"
    return op, solve.solves


def empirical_rate(residuals: list, eps: float) -> tuple[float, float, int]:
    """Proposition 1's linear rate from the forward residuals ``r_t = ‖hᵗ − h^{t−1}‖``, ``t = 1 … K``.

    The residuals are used from the first one up to (excluding) the first that falls to the rounding floor
    (``1e4 · eps`` times the largest: a converged solve's later residuals are noise). Of these, the second half
    (the ratio settles as the iterates approach ``h*``, where ``r_{t+1} / r_t → ρ(J*)`` for a real, simple dominant
    eigenvalue) gives the rate: the geometric mean of its ``n`` successive ratios ``r_{t+1} / r_t``, i.e.
    ``(r_last / r_first)^{1/n}``.

    Args:
        residuals: ``r_1 … r_K``.
        eps: the machine epsilon of the dtype they were computed in.

    Returns:
        ``(rate, spread, n)``: ``spread = max − min`` of those ratios (a rate has settled when it is small against
        the rate) and ``n``; ``(nan, nan, 0)`` when fewer than two residuals are left for it.
    """
    floor = 1e4 * eps * max(residuals, default=0.0)
    valid = []
    for r in residuals:
        if not r > floor:
            break
        valid.append(r)
    tail = valid[len(valid) // 2:]
    if len(tail) < 2:
        return math.nan, math.nan, 0
    ratios = [b / a for a, b in zip(tail, tail[1:])]
    return (tail[-1] / tail[0]) ** (1.0 / len(ratios)), max(ratios) - min(ratios), len(ratios)


def _max(values: list) -> float:
    """The largest value, ``nan`` if any is ``nan`` (a spectrum that did not converge)."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def gradient_flow(model, x: torch.Tensor, h0=None, steps: int = 6, *, generator: torch.Generator | None = None,
                  tol: float | None = None, implicit: bool = True, progress: bool = False) -> GradientFlow:
    """Per-step Jacobian norms and spectra along ``h^{t+1} = F(hᵗ, x)``, the limits and the bounds (see the module
    docstring).

    Args:
        model: a :class:`hamgrad.FixedPoint` or a solver.
        x: the input.
        h0: the initial state; ``None`` draws it with ``model.init(x, generator)``.
        steps: K >= 1.
        generator: for the initial state (when ``h0`` is None) and the spectra's start vectors.
        tol: relative residual tolerance of every spectrum (default :func:`default_tol` of ``x.dtype``).
        implicit: also compute the limits (Proposition 2; GMRES inside every product) where ``ρ(J_K) < 1 − tol``.
        progress: show a tqdm bar over the steps.

    Returns:
        :class:`GradientFlow`.

    Raises:
        TypeError, ValueError: for a model, ``x``, ``h0`` or ``steps`` that :func:`hamgrad.solve` would reject; a
            trajectory whose state stops being finite (the message names the step); a step that draws random
            numbers or has no autograd graph to its inputs (:mod:`hamgrad.analysis.linearize`).

    The cost grows as K² (the products of t steps for each t): meant for small and medium sizes.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    fp = as_fixed_point(model)
    check_steps(steps)
    x, h0 = analysis_point(x, h0, "h0", model=fp)
    tol = default_tol(x.dtype) if tol is None else tol
    with torch.no_grad():
        h0 = fp.init(x, generator=generator) if h0 is None else h0
        traj = fp.unroll(x, h0, steps)
    check_trajectory(traj)
    flow = GradientFlow()
    spectra = []

    def norm(op):
        """``‖op‖₂`` (``nan`` if its spectrum did not converge); the spectrum is kept for the totals."""
        spectra.append(svdvals(op, k=1, tol=tol, generator=generator))
        return float(spectra[-1].values[0]) if spectra[-1].converged else math.nan

    for t in tqdm(range(0, steps + 1), desc="gradient flow", disable=not progress):
        at_t = linearize(fp, traj[t], x, steps=1)
        J_t = linear_operator(at_t, "h", traj[t], x, f"J_{t}")
        spectra.append(eigvals(J_t, k=1, tol=tol, generator=generator))
        flow.t_J.append(t)
        flow.rho_J.append(float(spectra[-1].values[0].abs()) if spectra[-1].converged else math.nan)
        flow.norm_J.append(norm(J_t))
        flow.norm_B.append(norm(linear_operator(at_t, "x", traj[t], x, f"B_{t}")))
        if t == 0:
            continue
        flow.t.append(t)
        to_t = linearize(fp, h0, x, steps=t)
        flow.dh_dh0.append(norm(linear_operator(to_t, "h", h0, x, f"dh^{t}/dh^0")))
        flow.dh_dx.append(norm(linear_operator(to_t, "x", h0, x, f"dh^{t}/dx")))
        flow.residuals.append(float(state_residual(traj[t], traj[t - 1])))

    G = linearize(fp, traj[-1], x, steps=0, readout=True)
    flow.L_G = norm(linear_operator(G, "h", traj[-1], x, "dG/dh"))
    flow.L_Gx = norm(linear_operator(G, "x", traj[-1], x, "dG/dx"))
    flow.L_h, flow.L_x = _max(flow.norm_J[:-1]), _max(flow.norm_B[:-1])
    flow.rate, flow.rate_spread, flow.rate_steps = empirical_rate(flow.residuals, torch.finfo(x.dtype).eps)
    flow.rho_last = flow.rho_J[-1]
    reasons = []
    if flow.L_h < 1:
        flow.state_bound = flow.L_x / (1 - flow.L_h)
        flow.output_bound = flow.L_G * flow.state_bound + flow.L_Gx
    else:
        reasons.append(f"no bound: L_h = max_(t<K) ‖J_t‖₂ = {flow.L_h:.4g} is not < 1")
    if not implicit:
        reasons.append("no limit: not computed (implicit=False)")
    elif math.isnan(flow.rho_last):
        reasons.append("no limit: ρ(J_K) was not measured (its eigenvalue did not converge)")
    elif not flow.rho_last < 1 - tol:
        reasons.append(f"no limit: measured ρ(J_K) = {flow.rho_last:.6g}, not below 1 by more than tol = {tol:.1g}; "
                       "the limits are computed only where it is (whether Σ J_Kⁱ B_K converges was not measured)")
    else:
        limits = []
        for readout in (False, True):
            op, solves = implicit_jacobian(fp, traj[-1], x, readout=readout)
            limits.append(norm(op))
            if not all(s.converged for s in solves):
                worst = max(s.residual for s in solves)
                reasons.append(f"no limit: an inner GMRES solve of (I − J_K) z = b did not converge (relative "
                               f"residual {worst:.3g})")
                break
        else:
            if any(math.isnan(v) for v in limits):
                reasons.append("no limit: the spectrum of the implicit Jacobian did not converge")
            else:
                flow.state_limit, flow.output_limit = limits
    flow.limit_reason = "; ".join(reasons) or None
    flow.converged = all(s.converged for s in spectra)
    flow.matvecs = sum(s.matvecs for s in spectra)
    flow.seconds = time.perf_counter() - start
    return flow
