"""Matrix-free Jacobian operators on flat vectors (docs/theory.md §3).

:class:`LinearOperator` is an ``m × n`` matrix known only by its action on blocks of vectors: ``J @ v`` (a JVP),
``J.T @ u`` (a VJP), ``J @ V`` for an ``(n, b)`` block, ``J2 @ J1`` (composition), ``J.dense()`` and
``J.to_scipy()`` (so SciPy's ``eigs``, ``svds`` and ``gmres`` run on it unchanged).

- :func:`jacobian` ``(F, h, x, wrt)``: ``∂F/∂h`` or ``∂F/∂x`` of one step at a point.
- :func:`unrolled_jacobian` ``(model, x, h0, steps, wrt)``: the Jacobian of ``K`` unrolled steps (and the readout),
  ``∂y/∂x``, ``∂h^K/∂h^0``, …: one forward sweep of JVPs (or reverse sweep of VJPs) through the K steps from a
  trajectory computed once (:mod:`hamgrad.analysis.linearize`). For the built-in NMF, ``∂y/∂x`` is the composition
  ``(∂y/∂h^K) @ (∂h^K/∂x)`` through the smaller state space, with hand-derived Gram products (``J.gram``,
  ``J.cogram``), which :func:`hamgrad.analysis.svdvals` uses.

The operator algebra lives in :mod:`hamgrad.linalg` (:class:`LinearOperator` with ``_matmat``/``_adjoint`` and
optional ``_gram``/``_cogram``, composition ``A @ B``, sums ``A + B``, scalar multiples ``c * A``, the transpose
``A.T``, :class:`IdentityOperator`, :class:`InverseOperator`), re-exported here; this module adds
:class:`JacobianOperator` (a linearisation's JVPs and VJPs).

A state ``h`` is a tuple of tensors; the operators flatten it in tuple order
(:func:`hamgrad.fixed_point.flatten_state`).
"""

from __future__ import annotations

import torch
from torch.func import vmap

from .._checks import check_choice, check_finite, check_float_tensor, check_steps
from ..fixed_point import FixedPoint, as_state, flatten_state, unflatten_state
from ..grad import as_fixed_point
from ..linalg import IdentityOperator, InverseOperator, LinearOperator
from ..solvers import compute_dtype
from .linearize import AutogradLinearization, linearize, registered_linearization

__all__ = ["LinearOperator", "IdentityOperator", "InverseOperator", "JacobianOperator", "jacobian",
           "unrolled_jacobian", "linear_operator", "analysis_point", "check_trajectory", "WRT"]

WRT = ("h", "x")

flatten_block = vmap(flatten_state)  # a block of states (leading batch dim) -> (b, dim h)
unflatten_block = vmap(unflatten_state, in_dims=(0, None))  # (b, dim h), like -> a block of states


class JacobianOperator(LinearOperator):
    """The Jacobian of a linearisation (:mod:`hamgrad.analysis.linearize`) w.r.t. ``x`` or the state ``h`` (shaped
    like ``h_like``), on flat vectors: products are the linearisation's batched JVPs and VJPs, and its hand-derived
    Gram products where it has them (``lin.gram_products(wrt)``)."""

    def __init__(self, lin, wrt: str, h_like: tuple, x: torch.Tensor, name: str):
        m = sum(t.numel() for t in lin.out)
        n = x.numel() if wrt == "x" else sum(t.numel() for t in h_like)
        super().__init__((m, n), dtype=x.dtype, device=x.device, name=name)
        self.lin, self.wrt, self.h_like, self.x_shape = lin, wrt, h_like, x.shape
        self._gram_fn, self._cogram_fn = lin.gram_products(wrt)

    def _matmat(self, V):
        if self.wrt == "x":
            return flatten_block(self.lin.jvp(None, V.reshape(V.shape[0], *self.x_shape)))
        return flatten_block(self.lin.jvp(unflatten_block(V, self.h_like), None))

    def _adjoint(self, U):
        gh, gx = self.lin.vjp(unflatten_block(U, self.lin.out), wrt_x=self.wrt == "x")
        return gx.reshape(U.shape[0], -1) if self.wrt == "x" else flatten_block(gh)

    def _gram(self, V):
        if self._gram_fn is None:
            return super()._gram(V)
        return flatten_block(self._gram_fn(unflatten_block(V, self.h_like)))

    def _cogram(self, U):
        if self._cogram_fn is None:
            return super()._cogram(U)
        return flatten_block(self._cogram_fn(unflatten_block(U, self.lin.out)))


# ---------------------------------------------------------------------- Jacobians of steps and of unrolled solves
def analysis_point(x: torch.Tensor, h=None, name: str = "h", model: FixedPoint | None = None) -> tuple:
    """``(x, h)`` checked and detached, in the dtype the analysis computes in: ``x``'s compute dtype (float32 for
    half precision, as inside the solvers), ``h`` cast to it (``h`` may be ``None``).

    With ``model``, ``x`` and ``h`` get the checks :func:`hamgrad.solve` applies: its solver's ``check_input`` and
    ``check_state`` (e.g. a negative ``x`` for NMF, a state of the wrong shape), or finite values for a user's F.
    """
    x = check_float_tensor(x, "x").detach()
    solver = None if model is None else model.solver
    if model is not None:
        if callable(getattr(solver, "check_input", None)):
            solver.check_input(x)
        else:
            check_finite(x, "x")
    x = x.to(compute_dtype(x.dtype))
    if h is not None:
        h = as_state(h, name)
        if callable(getattr(solver, "check_state", None)):
            solver.check_state(x, h, name)
        if model is not None:
            for i, t in enumerate(h):
                check_finite(t.detach(), f"{name}[{i}]")
        h = tuple(t.detach().to(x.dtype) for t in h)
    return x, h


def check_trajectory(traj: list) -> None:
    """Raise naming the first step whose state is not finite (one host sync for the whole trajectory)."""
    finite = torch.stack([torch.stack([torch.isfinite(t).all() for t in h]).all() for h in traj]).tolist()
    if not all(finite):
        t = finite.index(False)
        raise ValueError(f"the state stopped being finite at step t = {t} of K = {len(traj) - 1}: h^{t} holds NaN or "
                         f"Inf{'' if t == 0 else f' (h^{t - 1} is finite)'}, and Jacobians there are undefined; analyse "
                         f"fewer steps (steps < {t}) or check the input's scale and the model's parameters")


def linear_operator(lin, wrt: str, h_like: tuple, x: torch.Tensor, name: str) -> LinearOperator:
    """The Jacobian of a linearisation w.r.t. ``x`` or the state ``h`` (shaped like ``h_like``): a
    :class:`JacobianOperator`. A linearisation whose output is not finite is refused (its products would be NaN)."""
    check_finite(flatten_state(lin.out), f"{name}: the output at the analysis point", " (its products would be too)")
    return JacobianOperator(lin, wrt, h_like, x, name)


def jacobian(F, h, x: torch.Tensor, wrt: str = "h") -> LinearOperator:
    """The Jacobian of one step ``F(h, x)`` at ``(h, x)`` as a matrix-free operator on flat vectors.

    Args:
        F: ``F(h, x) -> h`` (a tuple of tensors; pure, vmap-able), or a solver / :class:`hamgrad.FixedPoint`,
            standing for its step (then the built-in NMF uses its hand-derived JVP/VJP).
        h: the state, a tuple of tensors.
        x: the input tensor.
        wrt: ``"h"`` for ``J = ∂F/∂h`` (square, ``dim h × dim h``) or ``"x"`` for ``B = ∂F/∂x``
            (``dim h × dim x``).

    Returns:
        A :class:`LinearOperator`: ``J @ v`` is a JVP, ``J.T @ u`` a VJP (its forward graph is built once and
        reused), on ``x``'s device and dtype (float32 for half precision). ``h`` and ``x`` are detached: the
        operator is a constant.

    Raises:
        TypeError: ``h`` is not a tuple of floating tensors or ``x`` not a floating tensor.
        ValueError: ``wrt`` is not ``"h"`` or ``"x"``; ``x`` or ``h`` holds NaN/Inf, or fails the solver's own input
            checks (e.g. negative ``x`` for NMF, a state of the wrong shape); ``F`` returns a state of another
            structure.
    """
    check_choice(wrt, "wrt", WRT)
    if callable(F) and not isinstance(F, FixedPoint):
        x, h = analysis_point(x, h)
        name = getattr(F, "__name__", "F")
        lin = AutogradLinearization(F, h, x, f"F(h, x) ({name})")
    else:
        fp = as_fixed_point(F)
        x, h = analysis_point(x, h, model=fp)
        lin = linearize(fp, h, x, steps=1)
        name = fp.name
    if len(lin.out) != len(h) or any(a.shape != b.shape for a, b in zip(lin.out, h)):
        raise ValueError("F(h, x) must return a state of the same structure and shapes as h: got "
                         f"{[tuple(t.shape) for t in lin.out]} for h of shapes {[tuple(t.shape) for t in h]}")
    return linear_operator(lin, wrt, h, x, f"d{name}/d{wrt}")


def unrolled_jacobian(model, x: torch.Tensor, h0=None, steps: int = 6, wrt: str = "x", readout: bool = True,
                      generator: torch.Generator | None = None) -> LinearOperator:
    """The Jacobian of ``K`` unrolled steps: ``∂y/∂x`` (``wrt="x"``, ``h^0`` held fixed, as in BPTT) or
    ``∂y/∂h^0`` (``wrt="h"``); with ``readout=False`` the output is the state ``h^K`` instead of ``y``.

    Args:
        model: a solver or a :class:`hamgrad.FixedPoint` (the built-in NMF uses its hand-derived JVP/VJP).
        x: the input.
        h0: the initial state; ``None`` draws it with ``model.init(x, generator)``.
        steps: K >= 1.

    One product is one JVP (or VJP) through the K steps. For the built-in NMF the trajectory and the steps'
    intermediates are computed once, at construction; for other models each block of JVPs reruns the forward
    pass once (under ``vmap``) and the VJPs reuse one autograd graph.

    For a solver whose registered linearisation (:func:`hamgrad.analysis.linearize.register_linearization`) has a
    readout that does not depend on ``x`` — the built-in NMF, ``y = DC`` — ``∂y/∂x`` is returned as the composition
    ``(∂y/∂h^K) @ (∂h^K/∂x)`` (``.factors``) through the state, which is smaller than ``x``: :func:`svdvals` then
    works in the state space, with hand-derived Gram products that never form a ``d × n`` tangent.

    Returns:
        A :class:`LinearOperator`.

    Raises:
        TypeError, ValueError: for a model, ``x``, ``h0``, ``steps`` or ``wrt`` that :func:`hamgrad.solve` (or the
            choices) would reject.
    """
    check_choice(wrt, "wrt", WRT)
    check_steps(steps)
    fp = as_fixed_point(model)
    x, h = analysis_point(x, h0, "h0", model=fp)
    if h is None:
        with torch.no_grad():
            h = fp.init(x, generator=generator)
    name = f"d{'y' if readout else f'h^{steps}'}/d{'x' if wrt == 'x' else 'h^0'}"
    with torch.no_grad():
        check_trajectory(fp.unroll(x, h, steps))
    entry = registered_linearization(fp)
    if readout and wrt == "x" and entry is not None and not entry.readout_uses_x:
        state = linearize(fp, h, x, steps)
        final = state.out  # h^K
        op = (linear_operator(linearize(fp, final, x, 0, readout=True), "h", final, x, f"dy/dh^{steps}")
              @ linear_operator(state, "x", h, x, f"dh^{steps}/dx"))
        op.name = name
        return op
    return linear_operator(linearize(fp, h, x, steps, readout), wrt, h, x, name)
