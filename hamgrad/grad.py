"""Unrolled solves with an explicit gradient mode (MATH.md §4).

``hg.solve(model, x, steps, grad=...)`` runs ``K = steps`` applications of F and reads out ``y``; the mode decides
which steps carry an autograd graph:

==================  =======================================================================================
``bptt``            every step (full backprop through time; memory and time O(K))
``one-step``        only the last step: ``∂y/∂x ≈ ∂y/∂h^K · B_{K−1}`` (``(I − J)⁻¹ ≈ I``)
``one-step-coef``   K steps without graph, then the solver's code update with D held constant, ``y = D_K C_new``
                    (the official Hamburger code; solvers only)
``truncated:k``     the last k steps (k = 1 is ``one-step``, k = K is ``bptt``)
``implicit``        K steps without graph; the backward pass solves ``u = g + J_Kᵀ u`` (fixed-point iteration
                    or GMRES) and returns ``∂y/∂x = uᵀ B_K`` — the implicit-function-theorem gradient
==================  =======================================================================================

The initial state is a constant of the solve: a state built by ``init`` carries no graph, and a user's ``h0`` keeps
its graph only in the steps that have one (so ``bptt`` gives ``∂y/∂h^0``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from ._checks import check_choice, check_finite, check_float_tensor, check_positive, check_steps
from ._krylov import LinearSolveResult, fixed_point_solve, gmres
from .fixed_point import FixedPoint, as_state, flatten_state, state_residual, unflatten_state

__all__ = ["solve", "SolveInfo", "BackwardInfo", "parse_grad_mode", "GRAD_MODES", "ConvergenceWarning",
           "ConvergenceError", "as_fixed_point"]

GRAD_MODES = ("bptt", "one-step", "one-step-coef", "truncated:k", "implicit")
ADJOINT_METHODS = ("fixed-point", "gmres")


class ConvergenceWarning(UserWarning):
    """The implicit backward solve stopped before reaching its tolerance."""


class ConvergenceError(RuntimeError):
    """Raised instead of :class:`ConvergenceWarning` when ``strict=True``."""


@dataclass
class BackwardInfo:
    """Statistics of the implicit mode's adjoint solve (filled in during ``backward()``)."""

    method: str
    residual: float
    iterations: int
    converged: bool
    tol: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SolveInfo:
    """What a solve did: per-step forward residuals ``‖h^{t+1} − h^t‖`` and objective, and (for ``implicit``, once
    ``backward()`` has run) the adjoint solve's statistics in ``backward`` — one entry per backward call."""

    mode: str
    steps: int
    graph_steps: int
    residuals: list = field(default_factory=list)
    objective: list | None = None
    backward: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backward"] = [b.to_dict() for b in self.backward]
        return d


def parse_grad_mode(grad: str, steps: int) -> tuple[str, int]:
    """``(mode, graph_steps)`` for a mode name; ``truncated:k`` is checked against ``steps``."""
    if not isinstance(grad, str):
        raise TypeError(f"grad must be a str, one of {GRAD_MODES}; got {type(grad).__name__}")
    if grad.startswith("truncated:"):
        k_text = grad.split(":", 1)[1]
        if not k_text.isdigit():
            raise ValueError(f"grad={grad!r}: 'truncated:k' needs an integer k >= 1")
        k = int(k_text)
        if not 1 <= k <= steps:
            raise ValueError(f"grad={grad!r}: k must satisfy 1 <= k <= steps = {steps}")
        return "truncated", k
    graph = {"bptt": steps, "one-step": 1, "one-step-coef": 0, "implicit": 0}
    if grad not in graph:
        raise ValueError(f"unknown gradient mode grad={grad!r}; expected one of {GRAD_MODES}")
    return grad, graph[grad]


def as_fixed_point(model) -> FixedPoint:
    """A :class:`FixedPoint` for a solver or a FixedPoint."""
    if isinstance(model, FixedPoint):
        return model
    if all(callable(getattr(model, a, None)) for a in ("init", "step", "readout")):
        return FixedPoint.from_solver(model)
    raise TypeError(f"model must be a solver (init/step/readout) or a hamgrad.FixedPoint, got {type(model).__name__}")


class _Adjoint(torch.autograd.Function):
    """Identity on the state whose backward replaces the incoming gradient g by u = (I − Jᵀ)⁻¹ g."""

    @staticmethod
    def forward(ctx, adjoint_solve, *h):
        ctx.adjoint_solve = adjoint_solve
        return tuple(t.clone() for t in h)

    @staticmethod
    def backward(ctx, *grads):
        return (None, *ctx.adjoint_solve(grads))


def _implicit_state(fp, h, x, info, tol, max_iter, adjoint, strict):
    """``h`` (the value) with the implicit gradient attached, through one extra differentiable application of F."""
    h_req = tuple(t.detach().requires_grad_(True) for t in h)
    f = fp.step(h_req, x)
    h_star = tuple(hk + (fk - fk.detach()) for hk, fk in zip(h, f))  # value h^K, derivative that of F(h^K, x)
    if tol is None:
        tol = 1e-10 if h[0].dtype == torch.float64 else 1e-5

    def jt(u):  # Jᵀ u at h^K, on flat vectors
        vs = torch.autograd.grad(f, h_req, unflatten_state(u, f), retain_graph=True, allow_unused=True)
        return flatten_state([torch.zeros_like(t) if v is None else v for v, t in zip(vs, h_req)])

    def adjoint_solve(grads):
        start = time.perf_counter()
        g = flatten_state(grads)
        if adjoint == "fixed-point":
            res: LinearSolveResult = fixed_point_solve(jt, g, tol, max_iter)
        else:
            res = gmres(lambda u: u - jt(u), g, tol, max_iter)
        info.backward.append(BackwardInfo(res.method, res.residual, res.iterations, res.converged, tol,
                                          time.perf_counter() - start))
        if not res.converged:
            msg = (f"implicit backward ({res.method}) did not converge: relative residual {res.residual:.3g} > "
                   f"tol {tol:.1g} after {res.iterations} iterations (is F contractive at h^K? try more forward "
                   f"steps, adjoint='gmres' or a larger max_iter)")
            if strict:
                raise ConvergenceError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=2)
        return unflatten_state(res.x, f)

    return _Adjoint.apply(adjoint_solve, *h_star)


def solve(model, x: torch.Tensor, steps: int, grad: str = "one-step", h0=None,
          generator: torch.Generator | None = None, *, monitor: bool = True, tol: float | None = None,
          max_iter: int = 200, adjoint: str = "fixed-point", strict: bool = False):
    """Unroll ``steps`` applications of F on ``x`` and read out ``y`` with the gradient mode ``grad``.

    Args:
        model: a solver (``hg.NMF(...)``, a registered one) or a :class:`hamgrad.FixedPoint` (any ``F(h, x)``).
        x: the input; for solvers ``(..., d, n)``.
        steps: K >= 1.
        grad: ``"bptt" | "one-step" | "one-step-coef" | "truncated:k" | "implicit"`` (see the module docstring).
        h0: the initial state (a tuple of tensors); default ``model.init(x, generator)`` (no graph).
        generator: a ``torch.Generator`` for the random initialisation.
        monitor: record per-step residuals and (for solvers) the mean objective in ``info`` (one host sync per
            solve; switch off in training loops).
        tol: the implicit backward solve's relative residual tolerance (default 1e-10 in float64, 1e-5 otherwise).
        max_iter: the implicit backward solve's iteration limit.
        adjoint: the implicit backward solver, ``"fixed-point"`` or ``"gmres"``.
        strict: whether the implicit backward solve's non-convergence raises :class:`ConvergenceError` instead of
            warning :class:`ConvergenceWarning`.

    Returns:
        ``(y, info)`` with ``info`` a :class:`SolveInfo`.

    Examples:
        >>> import torch, hamgrad as hg
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(2, 16, 32, generator=g, requires_grad=True)    # (batch, d, n), non-negative for NMF
        >>> y, info = hg.solve(hg.NMF(rank=4), x, steps=6, grad="one-step", generator=g)
        >>> y.shape, info.steps, info.graph_steps
        (torch.Size([2, 16, 32]), 6, 1)
        >>> y.square().mean().backward()                                  # through the last step only
        >>> x.grad.shape
        torch.Size([2, 16, 32])
        >>> all(a >= b for a, b in zip(info.objective, info.objective[1:]))   # NMF's objective never increases
        True
    """
    fp = as_fixed_point(model)
    steps = check_steps(steps)
    mode, graph_steps = parse_grad_mode(grad, steps)
    check_choice(adjoint, "adjoint", ADJOINT_METHODS)
    if tol is not None:
        check_positive(tol, "tol")
    check_steps(max_iter, "max_iter")
    solver = fp.solver
    if mode == "one-step-coef" and not callable(getattr(solver, "coef_step", None)):
        raise ValueError("grad='one-step-coef' needs a solver with coef_step(x, h) (the official code's last "
                         "code update); a FixedPoint over a user's F supports the other modes")
    if solver is not None and callable(getattr(solver, "check_input", None)):
        solver.check_input(x)
    else:
        check_float_tensor(x, "x")
        check_finite(x, "x")
    if h0 is None:
        with torch.no_grad():
            h = fp.init(x, generator=generator)
    else:
        h = as_state(h0, "h0")
        if solver is not None and callable(getattr(solver, "check_state", None)):
            solver.check_state(x, h, "h0")
        for i, t in enumerate(h):
            check_finite(t.detach(), f"h0[{i}]")

    info = SolveInfo(mode=grad, steps=steps, graph_steps=graph_steps)
    residuals, objective = [], []
    track_objective = monitor and callable(getattr(solver, "objective", None))
    grad_on = torch.is_grad_enabled()
    for t in range(steps):
        with torch.set_grad_enabled(grad_on and t >= steps - graph_steps):
            h_new = fp.step(h, x)
        if monitor:
            with torch.no_grad():
                residuals.append(state_residual(h_new, h))
                if track_objective:
                    objective.append(solver.objective(x, h_new).mean())
        h = h_new
    if monitor:
        info.residuals = torch.stack(residuals).tolist()
        info.objective = torch.stack(objective).tolist() if track_objective else None

    if mode == "one-step-coef":
        y = (h[0].detach() @ solver.coef_step(x, h)).to(x.dtype)
    elif mode == "implicit" and grad_on:
        y = fp.readout(_implicit_state(fp, h, x, info, tol, max_iter, adjoint, strict), x)
    else:
        y = fp.readout(h, x)
    return y, info
