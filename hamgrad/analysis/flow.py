"""Gradient flow through an unrolled solve (MATH.md §3 and §5): how ``∂h^t/∂h^0`` vanishes and ``∂h^t/∂x`` grows.

For ``t = 1 … K``, :func:`gradient_flow` measures matrix-free

- ``‖∂h^t/∂h^0‖₂`` (``J_{t−1} ⋯ J_0``) and ``‖∂h^t/∂x‖₂`` (``Σ_i J_{t−1} ⋯ J_{i+1} B_i``), as chains of step JVPs/VJPs;
- ``ρ(J_t)``, ``‖J_t‖₂``, ``‖B_t‖₂`` with ``J_t = ∂F/∂h (h^t, x)``, ``B_t = ∂F/∂x (h^t, x)``;
- the forward residual ``‖h^t − h^{t−1}‖``;

and, at the end, the paper's propositions next to what the run shows:

- Proposition 1: the empirical linear rate of the residuals beside ``ρ(J_K)``;
- Proposition 2: ``‖∂y/∂h (I − J_K)⁻¹ B_K + ∂y/∂x‖₂``, the implicit (infinitely many steps) Jacobian's norm, each
  product solving ``(I − J_K) z = B_K v`` (or its transpose) by GMRES;
- Proposition 3: the bound ``L_G · L_x / (1 − L_h)`` with ``L_h = max_t ‖J_t‖``, ``L_x = max_t ‖B_t‖``,
  ``L_G = ‖∂G/∂h (h^K)‖`` — ``None`` when ``L_h ≥ 1`` (not a contraction, no bound).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from .._checks import check_steps
from .._krylov import gmres
from ..fixed_point import state_residual
from ..grad import as_fixed_point
from .linearize import linearize
from .operators import LinearOperator, flatten_block, unflatten_block, analysis_point, linear_operator
from .spectra import default_tol, eigvals, svdvals

__all__ = ["GradientFlow", "gradient_flow", "implicit_jacobian"]


@dataclass
class GradientFlow:
    """Per-step norms of an unrolled solve (lists indexed by ``t = 1 … K``) and the propositions' quantities.

    ``nan`` marks a spectrum that did not converge (see ``converged``); ``bound`` is ``None`` when ``L_h >= 1``.
    """

    t: list = field(default_factory=list)
    dh_dh0: list = field(default_factory=list)
    dh_dx: list = field(default_factory=list)
    rho_J: list = field(default_factory=list)
    norm_J: list = field(default_factory=list)
    norm_B: list = field(default_factory=list)
    residuals: list = field(default_factory=list)
    L_G: float = math.nan
    L_h: float = math.nan
    L_x: float = math.nan
    bound: float | None = None
    implicit_limit: float = math.nan
    implicit_converged: bool = False
    rate: float = math.nan
    rho_last: float = math.nan
    converged: bool = True
    matvecs: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain data (floats, lists, bools; ``nan`` stays a float)."""
        return asdict(self)


def implicit_jacobian(model, h, x: torch.Tensor, *, tol: float | None = None, max_iter: int = 500):
    """``∂y/∂x = ∂G/∂h (I − J)⁻¹ B + ∂G/∂x`` at a (near-)fixed point ``h`` (MATH.md §3, Proposition 2), as an
    operator whose products each solve ``(I − J) z = B v`` (or ``(I − Jᵀ) w = ∂G/∂hᵀ u``) by GMRES.

    Returns ``(operator, solves)``: ``solves`` is a list that collects each inner solve's
    :class:`hamgrad._krylov.LinearSolveResult` (check their ``converged``).
    """
    fp = as_fixed_point(model)
    x, h = analysis_point(x, h)
    step, out = linearize(fp, h, x, steps=1), linearize(fp, h, x, steps=0, readout=True)
    tol = default_tol(x.dtype) * 1e-2 if tol is None else tol
    solves = []
    like = step.out

    def one(fn, b):
        res = gmres(fn, b, tol, max_iter)
        solves.append(res)
        return res.x

    def i_minus_j(v):
        return v - flatten_block(step.jvp(unflatten_block(v.unsqueeze(0), like), None))[0]

    def i_minus_jt(u):
        return u - flatten_block(step.vjp(unflatten_block(u.unsqueeze(0), like))[0])[0]

    def apply(V):
        b = flatten_block(step.jvp(None, V.reshape(V.shape[0], *x.shape)))
        z = torch.stack([one(i_minus_j, bi) for bi in b])
        return flatten_block(out.jvp(unflatten_block(z, like), V.reshape(V.shape[0], *x.shape)))

    def rapply(U):
        gh, gx = out.vjp(unflatten_block(U, out.out), wrt_x=True)
        w = torch.stack([one(i_minus_jt, gi) for gi in flatten_block(gh)])
        _, bx = step.vjp(unflatten_block(w, like), wrt_x=True)
        return (bx + gx).reshape(U.shape[0], -1)

    m = sum(t.numel() for t in out.out)
    op = LinearOperator((m, x.numel()), apply, rapply, dtype=x.dtype, device=x.device, name="implicit dy/dx")
    return op, solves


def _empirical_rate(residuals: list, eps: float) -> float:
    """Proposition 1's rate: the geometric mean of ``r_{t+1} / r_t`` over the second half of the residuals that are
    above the rounding floor (``1e4 · eps`` times the largest; a converged solve's later residuals are noise)."""
    floor = 1e4 * eps * max(residuals)
    valid = []
    for r in residuals:
        if r <= floor:
            break
        valid.append(r)
    tail = valid[len(valid) // 2:]
    if len(tail) < 2:
        return math.nan
    return (tail[-1] / tail[0]) ** (1.0 / (len(tail) - 1))


def _max(values: list) -> float:
    """The largest value, ``nan`` if any is ``nan`` (a spectrum that did not converge)."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def gradient_flow(model, x: torch.Tensor, h0=None, steps: int = 6, *, generator: torch.Generator | None = None,
                  tol: float | None = None, implicit: bool = True, progress: bool = False) -> GradientFlow:
    """Per-step Jacobian norms and spectra along ``h^{t+1} = F(h^t, x)`` (see the module docstring).

    Args:
        model: a :class:`hamgrad.FixedPoint` or a solver.
        x: the input.
        h0: the initial state; ``None`` draws it with ``model.init(x, generator)``.
        steps: K >= 1.
        generator: for the initial state (when ``h0`` is None) and the spectra's start vectors.
        tol: relative residual tolerance of every spectrum (default :func:`default_tol` of ``x.dtype``).
        implicit: also compute the implicit Jacobian's norm (Proposition 2; GMRES inside every product).
        progress: show a tqdm bar over the steps.

    The cost grows as K² (the products of t steps for each t): meant for small and medium sizes.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    fp = as_fixed_point(model)
    check_steps(steps)
    x, h0 = analysis_point(x, h0, "h0")
    tol = default_tol(x.dtype) if tol is None else tol
    with torch.no_grad():
        h0 = fp.init(x, generator=generator) if h0 is None else h0
        traj = fp.unroll(x, h0, steps)
    flow = GradientFlow()
    spectra = []

    def norm(op):
        """``‖op‖₂`` (``nan`` if its spectrum did not converge); the spectrum is kept for the totals."""
        spectra.append(svdvals(op, k=1, tol=tol, generator=generator))
        return float(spectra[-1].values[0]) if spectra[-1].converged else math.nan

    for t in tqdm(range(1, steps + 1), desc="gradient flow", disable=not progress):
        flow.t.append(t)
        to_t, at_t = linearize(fp, h0, x, steps=t), linearize(fp, traj[t], x, steps=1)
        flow.dh_dh0.append(norm(linear_operator(to_t, "h", h0, x, f"dh^{t}/dh^0")))
        flow.dh_dx.append(norm(linear_operator(to_t, "x", h0, x, f"dh^{t}/dx")))
        J_t = linear_operator(at_t, "h", traj[t], x, f"J_{t}")
        spectra.append(eigvals(J_t, k=1, tol=tol, generator=generator))
        flow.rho_J.append(float(spectra[-1].values[0].abs()) if spectra[-1].converged else math.nan)
        flow.norm_J.append(norm(J_t))
        flow.norm_B.append(norm(linear_operator(at_t, "x", traj[t], x, f"B_{t}")))
        flow.residuals.append(float(state_residual(traj[t], traj[t - 1])))

    G = linearize(fp, traj[-1], x, steps=0, readout=True)
    flow.L_G = norm(linear_operator(G, "h", traj[-1], x, "dG/dh"))
    flow.L_h, flow.L_x = _max(flow.norm_J), _max(flow.norm_B)
    flow.bound = flow.L_G * flow.L_x / (1 - flow.L_h) if flow.L_h < 1 else None
    flow.rate, flow.rho_last = _empirical_rate(flow.residuals, torch.finfo(x.dtype).eps), flow.rho_J[-1]
    if implicit:
        op, solves = implicit_jacobian(fp, traj[-1], x)
        flow.implicit_limit = norm(op)
        flow.implicit_converged = spectra[-1].converged and all(s.converged for s in solves)
        if not flow.implicit_converged:
            flow.implicit_limit = math.nan
    flow.converged = all(s.converged for s in spectra)
    flow.matvecs = sum(s.matvecs for s in spectra)
    flow.seconds = time.perf_counter() - start
    return flow
