"""Unrolled solves with an explicit gradient mode (docs/theory.md §4).

``hg.solve(model, x, steps, grad=...)`` runs ``K = steps`` applications of F and reads out ``y``; the mode decides
which steps carry an autograd graph:

==================  =======================================================================================
``bptt``            every step (full backprop through time; memory and time O(K))
``one-step``        only the last step: ``∂y/∂x ≈ ∂y/∂h^K · B_{K−1}`` (``(I − J)⁻¹ ≈ I``)
``one-step-coef``   K steps without graph, then the solver's code update with D held constant, ``y = D_K C_new``
                    (the paper's one-step as the official Hamburger code computes it; solvers with
                    ``coef_readout`` only)
``truncated:k``     the last k steps (k = 1 is ``one-step``, k = K is ``bptt``)
``implicit``        K steps without graph; the backward pass solves ``(I − J_Kᵀ) u = g`` (fixed-point iteration,
                    GMRES or a linear solver of the user's) and returns ``∂y/∂x = uᵀ B_K`` — the
                    implicit-function-theorem gradient. First-order only: ``create_graph=True`` is refused.
==================  =======================================================================================

The initial state is a constant of the solve: a state built by ``init`` carries no graph, and a user's ``h0`` keeps
its graph only in the steps that have one (so ``bptt`` gives ``∂y/∂h^0``). :func:`implicit_gradient` attaches the
implicit backward to a fixed point found by any other means.

The implicit backward's linear system is built from the operators of :mod:`hamgrad.linalg`: ``J_Kᵀ`` is an operator
whose products are VJPs through one autograd graph of ``F(h^K, x)`` (built once per backward call), and the system
matrix is ``IdentityOperator(n) - J_Kᵀ`` on the state flattened in tuple order
(:func:`hamgrad.fixed_point.flatten_state`).
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from ._checks import (check_bool, check_choice, check_finite, check_float_tensor, check_generator, check_positive,
                      check_steps)
from ._krylov import LinearSolveResult, as_matvec, fixed_point_solve, gmres
from .fixed_point import FixedPoint, as_state, flatten_state, state_residual, unflatten_state
from .linalg import IdentityOperator, LinearOperator

__all__ = ["solve", "implicit_gradient", "SolveInfo", "BackwardInfo", "LinearSolveResult", "parse_grad_mode",
           "GRAD_MODES", "PAPER_MODE", "mode_label", "ConvergenceWarning", "ConvergenceError", "as_fixed_point"]

GRAD_MODES = ("bptt", "one-step", "one-step-coef", "truncated:k", "implicit")
#: The paper's one-step gradient, as the official Hamburger code computes it (docs/theory.md §4).
PAPER_MODE = "one-step-coef"
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
        """The statistics as plain data."""
        return asdict(self)


@dataclass
class SolveInfo:
    """What a solve did.

    Attributes:
        mode, steps, graph_steps: the gradient mode, K, and how many steps carry a graph.
        residuals: ``‖h^{t+1} − h^t‖`` over the whole state (all samples), one float per step (``monitor=True``).
        sample_residuals: the same per sample, a list (one per step) of nested lists shaped like the batch
            dimensions (``FixedPoint.batch_dims``; ``x.shape[:-2]`` for solvers), so one diverging sample is visible.
        objective: the solver's objective after each step, averaged over the batch (solvers with ``objective``).
        backward: for ``implicit``, one :class:`BackwardInfo` per backward call.
        state: the final state ``h^K`` (detached), e.g. for :func:`implicit_gradient` or feature maps.
    """

    mode: str
    steps: int
    graph_steps: int
    residuals: list = field(default_factory=list)
    sample_residuals: list = field(default_factory=list)
    objective: list | None = None
    backward: list = field(default_factory=list)
    state: tuple | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """Everything but the state tensors, as plain data (the state as its shapes)."""
        return {"mode": self.mode, "steps": self.steps, "graph_steps": self.graph_steps,
                "residuals": list(self.residuals), "sample_residuals": list(self.sample_residuals),
                "objective": None if self.objective is None else list(self.objective),
                "backward": [b.to_dict() for b in self.backward],
                "state_shapes": None if self.state is None else [list(t.shape) for t in self.state]}


def parse_grad_mode(grad: str, steps: int) -> tuple[str, int]:
    """``(mode, graph_steps)`` for a mode name; ``truncated:k`` is checked against ``steps``.

    Raises:
        TypeError: ``grad`` is not a str.
        ValueError: an unknown mode, or ``truncated:k`` without an ASCII integer ``1 <= k <= steps``.
    """
    if not isinstance(grad, str):
        raise TypeError(f"grad must be a str, one of {GRAD_MODES}; got {type(grad).__name__}")
    if grad.startswith("truncated:"):
        k_text = grad.split(":", 1)[1]
        if not re.fullmatch(r"[0-9]+", k_text):  # str.isdigit would accept '٣' or '²'
            raise ValueError(f"grad={grad!r}: 'truncated:k' needs an integer k >= 1 written with the digits 0-9")
        k = int(k_text)
        if not 1 <= k <= steps:
            raise ValueError(f"grad={grad!r}: k must satisfy 1 <= k <= steps = {steps}")
        return "truncated", k
    graph = {"bptt": steps, "one-step": 1, "one-step-coef": 0, "implicit": 0}
    if grad not in graph:
        raise ValueError(f"unknown gradient mode grad={grad!r}; expected one of {GRAD_MODES}")
    return grad, graph[grad]


def mode_label(grad: str | None) -> str | None:
    """A gradient mode's name as tables and figures show it: the mode itself, and ``"one-step-coef (paper)"`` for
    :data:`PAPER_MODE` (``None``, the mode of a run without a ham, stays ``None``)."""
    return f"{grad} (paper)" if grad == PAPER_MODE else grad


def as_fixed_point(model) -> FixedPoint:
    """A :class:`FixedPoint` for a solver instance or a FixedPoint.

    Raises:
        TypeError: ``model`` is a class (``hg.NMF`` instead of ``hg.NMF(rank=8)``) or has no ``init/step/readout``.
    """
    if isinstance(model, FixedPoint):
        return model
    if isinstance(model, type):
        raise TypeError(f"model must be a solver instance or a hamgrad.FixedPoint, got the class {model.__name__}: "
                        f"build one first, e.g. {model.__name__}(rank=8)")
    if all(callable(getattr(model, a, None)) for a in ("init", "step", "readout")):
        return FixedPoint.from_solver(model)
    raise TypeError(f"model must be a solver (init/step/readout) or a hamgrad.FixedPoint, got {type(model).__name__}")


# ---------------------------------------------------------------------- the implicit backward
class _Adjoint(torch.autograd.Function):
    """Identity on the state whose backward replaces the incoming gradient g by u = (I − Jᵀ)⁻¹ g."""

    @staticmethod
    def forward(ctx, adjoint_solve, *h):
        ctx.adjoint_solve = adjoint_solve
        return tuple(t.clone() for t in h)

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError("grad='implicit' supports first derivatives only: the backward's adjoint solve is not "
                               "differentiable, so create_graph=True (double backward, Hessian-vector products) "
                               "would give wrong second derivatives; use grad='bptt' for those")
        return (None, *ctx.adjoint_solve(grads))


def _check_adjoint_args(tol, max_iter, adjoint, strict):
    if not callable(adjoint):
        check_choice(adjoint, "adjoint", ADJOINT_METHODS)
    if tol is not None:
        check_positive(tol, "tol")
    check_steps(max_iter, "max_iter")
    check_bool(strict, "strict")


class _StepVJP(LinearOperator):
    """``Jᵀ = (∂F/∂h)ᵀ`` at ``(h, x)`` on flat vectors: each product is one backward through a graph of ``F(h, x)``
    built once, at construction (under grad mode). Only the products with ``Jᵀ`` exist: the adjoint system
    ``(I − Jᵀ) u = g`` never needs ``J``'s (those are JVPs: :func:`hamgrad.analysis.jacobian`)."""

    def __init__(self, fp: FixedPoint, h: tuple, x):
        self.h = tuple(t.detach().requires_grad_(True) for t in h)
        self.f = fp.step(self.h, x)  # graph to h only
        n, dtype = sum(t.numel() for t in h), functools.reduce(torch.promote_types, [t.dtype for t in h])
        super().__init__((n, n), dtype=dtype, device=h[0].device, name="J*.T")  # the dtype of flatten_state(h)

    def _matmat(self, U):
        return torch.stack([self._vjp(u) for u in U])

    def _vjp(self, u):
        vs = torch.autograd.grad(self.f, self.h, unflatten_state(u, self.f), retain_graph=True, allow_unused=True)
        return flatten_state([torch.zeros_like(t) if v is None else v for v, t in zip(vs, self.h)])

    def _adjoint(self, V):
        raise NotImplementedError("the implicit backward's J*.T has VJPs only; for JVPs use hamgrad.analysis.jacobian")


def _linear_solve(adjoint, M: LinearOperator, b: torch.Tensor, tol: float, max_iter: int):
    """Solve ``M u = b`` (``M = I − Jᵀ``) with a built-in method, or a user's callable given ``M``'s matvec."""
    if adjoint == "fixed-point":
        return fixed_point_solve(M, b, tol, max_iter)
    if adjoint == "gmres":
        return gmres(M, b, tol, max_iter)
    res = adjoint(as_matvec(M), b, tol, max_iter)
    missing = [a for a in ("x", "residual", "iterations", "converged") if not hasattr(res, a)]
    if missing:
        raise TypeError(f"adjoint(matvec, b, tol, max_iter) must return an object with x, residual, iterations and "
                        f"converged (like hamgrad.LinearSolveResult); {type(res).__name__} lacks {missing}")
    if not isinstance(res.x, torch.Tensor) or res.x.shape != b.shape:
        raise TypeError(f"adjoint(...).x must be a tensor of shape {tuple(b.shape)} (like b), got "
                        f"{getattr(res.x, 'shape', type(res.x).__name__)}")
    return res


def _attach_implicit(fp: FixedPoint, h: tuple, x, record: list, tol, max_iter, adjoint, strict) -> tuple:
    """``h`` (detached, its value unchanged) with the implicit gradient attached, or ``h`` itself when nothing
    upstream requires grad (then no graph is built). ``record`` receives one :class:`BackwardInfo` per backward."""
    if not torch.is_grad_enabled():
        return h
    f = fp.step(h, x)  # h is detached: f's graph reaches x and F's parameters only (B*)
    if not any(t.requires_grad for t in f):
        return h
    h_out = tuple(hk + (fk - fk.detach()) for hk, fk in zip(h, f))  # value h*, derivative that of F(h*, x) in x
    if tol is None:
        tol = 1e-10 if h[0].dtype == torch.float64 else 1e-5
    x_const = x.detach() if isinstance(x, torch.Tensor) else x

    def adjoint_solve(grads):
        start = time.perf_counter()
        with torch.enable_grad():
            JT = _StepVJP(fp, h, x_const)
            M = IdentityOperator(JT.shape[0], dtype=JT.dtype, device=JT.device) - JT  # the adjoint system's I − J*ᵀ
            b = flatten_state([torch.zeros_like(t) if g is None else g for g, t in zip(grads, h)])
            res = _linear_solve(adjoint, M, b, tol, max_iter)
        method = adjoint if isinstance(adjoint, str) else getattr(adjoint, "__name__", type(adjoint).__name__)
        record.append(BackwardInfo(method, float(res.residual), int(res.iterations), bool(res.converged), tol,
                                   time.perf_counter() - start))
        if not res.converged:
            msg = (f"implicit backward ({method}) did not converge: relative residual {float(res.residual):.3g} > "
                   f"tol {tol:.1g} after {res.iterations} iterations (is F contractive at h^K? try more forward "
                   f"steps, adjoint='gmres' or a larger max_iter)")
            if strict:
                raise ConvergenceError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=2)
        return unflatten_state(res.x.detach(), h)

    return _Adjoint.apply(adjoint_solve, *h_out)


def implicit_gradient(model, h_star, x, *, tol: float | None = None, max_iter: int = 200,
                      adjoint: str | Callable = "fixed-point", strict: bool = False, record: list | None = None):
    """Attach the implicit-function-theorem gradient to a fixed point ``h* = F(h*, x)`` found by any means.

    The returned state has ``h_star``'s values; backpropagating through it (e.g. through ``model``'s readout)
    solves ``(I − J*ᵀ) u = g`` at ``(h*, x)`` (``J*ᵀ`` an operator of VJPs, ``I − J*ᵀ`` built with
    :mod:`hamgrad.linalg`) and passes ``uᵀ ∂F/∂x`` to ``x`` and F's parameters, so that
    ``∂y/∂x = ∂G/∂h (I − J*)⁻¹ B* + ∂G/∂x`` (docs/theory.md §4). ``hg.solve(..., grad="implicit")`` is
    ``implicit_gradient(model, info.state, x)`` after K steps.

    Args:
        model: a solver instance or a :class:`hamgrad.FixedPoint`.
        h_star: the fixed point, a tuple of tensors (its own graph, if any, is dropped).
        x: the input F was solved for.
        tol: as in :func:`solve`.
        max_iter: as in :func:`solve`.
        adjoint: ``"fixed-point"``, ``"gmres"`` or a callable ``adjoint(matvec, b, tol, max_iter)`` given the
            product ``matvec(u) = u − J*ᵀ u`` with a flat 1-D vector, as in :func:`solve`.
        strict: as in :func:`solve`.
        record: a list that receives one :class:`BackwardInfo` per backward call (optional).

    Returns:
        A tuple of tensors equal to ``h_star`` carrying the implicit gradient (no graph when nothing requires grad
        or grad mode is off).

    Raises:
        TypeError, ValueError: bad arguments (each error names the argument).
        RuntimeError: at backward with ``create_graph=True`` (second derivatives are not supported).
    """
    fp = as_fixed_point(model)
    _check_adjoint_args(tol, max_iter, adjoint, strict)
    check_float_tensor(x, "x")
    h = tuple(t.detach() for t in as_state(h_star, "h_star"))
    if callable(getattr(fp.solver, "check_state", None)):
        fp.solver.check_state(x, h, "h_star")
    if record is not None and not isinstance(record, list):
        raise TypeError(f"record must be a list or None, got {type(record).__name__}")
    return _attach_implicit(fp, h, x, [] if record is None else record, tol, max_iter, adjoint, strict)


# ---------------------------------------------------------------------- solve = validate, loop, read out
def _validate(fp: FixedPoint, x, steps, grad, h0, generator, monitor, tol, max_iter, adjoint, strict):
    """Check every argument of :func:`solve`; returns ``(mode, graph_steps, h0)``."""
    steps = check_steps(steps)
    mode, graph_steps = parse_grad_mode(grad, steps)
    _check_adjoint_args(tol, max_iter, adjoint, strict)
    check_bool(monitor, "monitor")
    solver = fp.solver
    if mode == "one-step-coef" and not callable(getattr(solver, "coef_readout", None)):
        raise ValueError("grad='one-step-coef' needs a solver with coef_readout(x, h) (the official code's last "
                         "code update, read out); a FixedPoint over a user's F supports the other modes")
    if solver is not None and callable(getattr(solver, "check_input", None)):
        solver.check_input(x)
    else:
        check_float_tensor(x, "x")
        check_finite(x, "x")
    check_generator(generator, "generator", x.device)
    if h0 is None:
        with torch.no_grad():
            h = fp.init(x, generator=generator)
    else:
        h = as_state(h0, "h0")
        if solver is not None and callable(getattr(solver, "check_state", None)):
            solver.check_state(x, h, "h0")
        for i, t in enumerate(h):
            check_finite(t.detach(), f"h0[{i}]")
    nb = fp.sample_dims(x)
    if any(t.dim() < nb or t.shape[:nb] != h[0].shape[:nb] for t in h):
        raise ValueError(f"{fp!r} has batch_dims={nb}: every state tensor must share its first {nb} dimensions, got "
                         f"shapes {[tuple(t.shape) for t in h]}")
    return mode, graph_steps, h


def _stepper(fp: FixedPoint, x, monitor: bool) -> Callable:
    """``step(h) -> (F(h, x), objective or None)``; the objective (solvers, ``monitor``) from the products the step
    already has where the solver offers ``monitored_step``."""
    solver = fp.solver
    if monitor and callable(getattr(solver, "monitored_step", None)):
        fused = solver.monitored_step(x)

        def step(h):
            h_new, obj = FixedPoint.call_pure(lambda h, x: fused(h), h, x)
            return FixedPoint.check_output(h_new, h), obj
        return step
    if monitor and callable(getattr(solver, "objective", None)):
        def step(h):
            h_new = fp.step(h, x)
            with torch.no_grad():
                return h_new, solver.objective(x, h_new)
        return step
    return lambda h: (fp.step(h, x), None)


def _unroll(fp: FixedPoint, x, h, steps: int, graph_steps: int, monitor: bool) -> tuple:
    """The K steps, the last ``graph_steps`` with a graph; returns ``(h^K, residuals, objectives)`` with the
    monitored values as device tensors (empty lists without ``monitor``)."""
    step = _stepper(fp, x, monitor)
    nb = fp.sample_dims(x) if monitor else 0
    residuals, objective = [], []
    grad_on = torch.is_grad_enabled()
    for t in range(steps):
        with torch.set_grad_enabled(grad_on and t >= steps - graph_steps):
            h_new, obj = step(h)
        if monitor:
            with torch.no_grad():
                residuals.append(state_residual(h_new, h, nb))
                if obj is not None:
                    objective.append(obj.detach().mean())
        h = h_new
    return h, residuals, objective


def _record(info: SolveInfo, residuals: list, objective: list, x: torch.Tensor, y: torch.Tensor | None) -> None:
    """Move the monitored values to ``info`` in one host sync; warn when the state became NaN/Inf or when ``y``
    (a solver's output ``(..., d, n)``, else None) is all zero for a sample whose input is not."""
    with torch.no_grad():
        per_sample = torch.stack(residuals)  # (steps, *batch)
        total = per_sample.reshape(len(residuals), -1).square().sum(dim=1).sqrt()
        parts = [total, per_sample.reshape(-1)]
        if objective:
            parts.append(torch.stack(objective))
        if y is not None:  # per sample: all zero iff max and min are 0 (NaN propagates)
            yd = y.detach()
            parts.append((yd.amax(dim=(-2, -1)).abs() + yd.amin(dim=(-2, -1)).abs()).reshape(-1))
        values = torch.cat([p.to(total.dtype) for p in parts]).tolist()  # the solve's one host sync
    k, n = len(residuals), per_sample.numel()
    info.residuals = values[:k]
    info.sample_residuals = torch.tensor(values[k:k + n], dtype=torch.float64).reshape(per_sample.shape).tolist()
    rest = values[k + n:]
    if objective:
        info.objective, rest = rest[:k], rest[k:]
    bad = [t for t, r in enumerate(info.residuals) if not abs(r) < float("inf")]
    if bad:
        warnings.warn(f"the state became NaN or Inf at step {bad[0] + 1} of {k}: the output is not finite (check "
                      "the input's scale and the solver's hyperparameters)", RuntimeWarning, stacklevel=3)
    elif y is not None and not all(rest):  # rare: look at those samples' inputs (an all-zero input is no fault)
        xs = x.detach().reshape(-1, *x.shape[-2:])
        zero = [i for i, v in enumerate(rest) if not v and bool(xs[i].ne(0).any())]
        if zero:
            warnings.warn(f"the output is all zero for sample(s) {zero} of the batch (flattened) while their input is "
                          "not: eps too large for the input's scale, or the input too small for its dtype?",
                          RuntimeWarning, stacklevel=3)


def solve(model, x: torch.Tensor, steps: int, grad: str = "one-step", h0=None,
          generator: torch.Generator | None = None, *, monitor: bool = True, tol: float | None = None,
          max_iter: int = 200, adjoint: str | Callable = "fixed-point", strict: bool = False):
    """Unroll ``steps`` applications of F on ``x`` and read out ``y`` with the gradient mode ``grad``.

    Args:
        model: a solver instance (``hg.NMF(...)``, a registered one) or a :class:`hamgrad.FixedPoint`.
        x: the input; for solvers ``(..., d, n)`` with a non-empty batch.
        steps: K >= 1.
        grad: ``"bptt" | "one-step" | "one-step-coef" | "truncated:k" | "implicit"`` (see the module docstring).
        h0: the initial state (a tuple of tensors); default ``model.init(x, generator)`` (no graph).
        generator: a ``torch.Generator`` on ``x``'s device for the random initialisation.
        monitor: record per-step residuals (total and per sample) and, for solvers, the mean objective in
            ``info``, with one host sync per solve, and warn when the state becomes NaN/Inf or (solvers) all zero.
            ``False`` skips all of it (training loops).
        tol: the implicit backward solve's relative residual tolerance (default 1e-10 in float64, 1e-5 otherwise).
        max_iter: the implicit backward solve's iteration limit.
        adjoint: the implicit backward's solver for ``(I − J_Kᵀ) u = g``, an operator of :mod:`hamgrad.linalg`:
            ``"fixed-point"`` (the iteration ``u ← g + J_Kᵀ u``, which converges when ``ρ(J_K) < 1``), ``"gmres"``
            (restarted GMRES, which needs only ``I − J_K`` non-singular) or a callable
            ``adjoint(matvec, b, tol, max_iter)`` solving ``matvec(u) = b``, where ``matvec(u) = u − J_Kᵀ u`` for a
            1-D vector ``u`` (the state flattened in tuple order, like ``b``), and returning an object with ``x``
            (shaped like ``b``), ``residual``, ``iterations`` and ``converged`` (like
            :class:`hamgrad.LinearSolveResult`).
        strict: whether the implicit backward solve's non-convergence raises :class:`ConvergenceError` instead of
            warning :class:`ConvergenceWarning`.

    Returns:
        ``(y, info)`` with ``info`` a :class:`SolveInfo` (``info.state`` is the final state ``h^K``).

    Raises:
        TypeError, ValueError: bad arguments; each message names the argument and what was expected.
        RuntimeError: F modified its input in place.

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
    mode, graph_steps, h = _validate(fp, x, steps, grad, h0, generator, monitor, tol, max_iter, adjoint, strict)
    info = SolveInfo(mode=grad, steps=steps, graph_steps=graph_steps)
    h, residuals, objective = _unroll(fp, x, h, steps, graph_steps, monitor)
    info.state = tuple(t.detach() for t in h)
    if mode == "one-step-coef":
        y = fp.solver.coef_readout(x, h)
    elif mode == "implicit":
        y = fp.readout(_attach_implicit(fp, info.state, x, info.backward, tol, max_iter, adjoint, strict), x)
    else:
        y = fp.readout(h, x)
    if monitor:
        _record(info, residuals, objective, x, y if fp.solver is not None and isinstance(y, torch.Tensor) else None)
    return y, info
