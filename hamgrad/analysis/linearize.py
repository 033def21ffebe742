"""Linearisations of an unrolled solve at a point: batched JVPs and VJPs with the forward pass computed once.

A linearisation of ``out = f(h, x)`` — one step ``F``, K steps ``F∘…∘F``, optionally followed by the readout
``G`` — holds the point and the value ``out`` (a tuple of tensors) and applies

- ``jvp(dh, dx) -> dout``: ``∂f/∂h · dh + ∂f/∂x · dx``;
- ``vjp(g, wrt_x) -> (ḡ_h, ḡ_x)``: ``(gᵀ ∂f/∂h, gᵀ ∂f/∂x)``, with ``ḡ_x = None`` unless ``wrt_x``.

Every tangent carries one leading batch dimension (``dh[i]`` has shape ``(b, *h[i].shape)``), so a block of ``b``
vectors goes through in one pass; ``None`` stands for a zero tangent and skips its work. Two implementations:

- :class:`AutogradLinearization`, for any ``f``: ``torch.func.jvp`` under ``vmap`` (the primal runs once per
  block, not once per vector) and a ``torch.func.vjp`` whose forward graph is built once and reused.
- :class:`NMFLinearization` (in :mod:`hamgrad.solvers.nmf_linearization`, beside the solver; registered here), for
  the built-in NMF: the JVP and VJP of K multiplicative-update steps (docs/theory.md §2)
  and of ``y = DC``, derived by hand, with every step's intermediates (``DᵀX``, ``XCᵀ``, …) cached and no graph.
  The products with the ``d × n`` input are gathered across the K steps into one product each (``[D_0 … D_{K−1}]ᵀ dX``,
  ``dX [C_1 … C_K]ᵀ``, and in the VJP ``X̄ = Σ_t P̄_t C_{t+1} + D_t N̄_t`` as two products), which is where a
  product through the paper-size NMF spends its time. It also applies the Gram products ``x_cogram`` (``(∂out/∂x)
  (∂out/∂x)ᵀ``, without ever forming a ``d × n`` tangent) and ``h_gram`` (the readout's ``(∂y/∂h)ᵀ(∂y/∂h)``), which
  :func:`hamgrad.analysis.svdvals` uses to find the singular values of ``∂y/∂x`` in the state space.
  ``tests/test_analysis_operators.py`` holds all of them against autograd and dense Jacobians.

:func:`linearize` picks the implementation for a model: the one registered for its solver's class
(:func:`register_linearization`; the built-in NMF's is :class:`NMFLinearization`), else autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import jvp as _jvp
from torch.func import vjp as _vjp
from torch.func import vmap

from .._checks import check_differentiable, stochastic_error
from ..fixed_point import FixedPoint, as_state, evaluate_at, flatten_state
from ..solvers import NMF
from ..solvers.nmf_linearization import NMFLinearization

__all__ = ["AutogradLinearization", "NMFLinearization", "RegisteredLinearization", "register_linearization",
           "registered_linearization", "hand_derived", "linearize"]


def _detached(h) -> tuple:
    """The tensors of ``h`` without their graphs."""
    return tuple(t.detach() for t in h)


class AutogradLinearization:
    """The linearisation of any pure ``f(h, x) -> tuple of tensors`` at ``(h, x)``, through ``torch.func``.

    ``f`` must work under ``torch.func.vmap`` (no ``.item()``, no in-place updates of its inputs, no data-dependent
    Python control flow), as ``torch.func.jacrev`` requires. At construction ``f`` is evaluated twice: once in grad
    mode, which must give an output with an autograd graph to ``h`` or ``x`` (a detached ``f`` would read as a zero
    Jacobian), and once without, which must repeat the first to within ``√eps`` (an ``f`` that draws random numbers
    has no Jacobian). Either failure, and an error ``f`` raises at ``(h, x)``, is a ValueError naming ``what``.
    """

    def __init__(self, f: Callable, h, x: torch.Tensor, what: str = "F(h, x)"):
        self.f, self.what = f, what
        self.h = _detached(as_state(h, "h"))
        self.x = x.detach()
        with torch.enable_grad():
            first = as_state(evaluate_at(f, tuple(t.clone().requires_grad_(True) for t in self.h),
                                         self.x.clone().requires_grad_(True), what), what)
        check_differentiable(first, what)
        with torch.no_grad():
            self.out = as_state(f(self.h, self.x), what)
        a, b = flatten_state(first).detach(), flatten_state(self.out)
        scale, gap = torch.stack([a.abs().max(), (a - b).abs().nan_to_num(0.0).max()]).tolist() if a.numel() else (0, 0)
        if gap > math.sqrt(torch.finfo(a.dtype).eps) * scale:
            raise stochastic_error(what)
        self._pullbacks: dict[bool, Callable] = {}

    def jvp(self, dh=None, dx=None) -> tuple:
        """``∂f/∂h · dh + ∂f/∂x · dx`` for a block of tangents (leading batch dimension); ``None`` means zero."""
        if dh is None and dx is None:
            raise ValueError("jvp needs a tangent for h or for x (both are None)")
        try:
            if dx is None:
                return vmap(lambda v: _jvp(lambda h: self.f(h, self.x), (self.h,), (v,))[1])(tuple(dh))
            if dh is None:
                return vmap(lambda v: _jvp(lambda x: self.f(self.h, x), (self.x,), (v,))[1])(dx)
            return vmap(lambda v, w: _jvp(self.f, (self.h, self.x), (v, w))[1])(tuple(dh), dx)
        except RuntimeError as err:  # a draw the construction's two evaluations did not show
            if "random" in str(err):
                raise stochastic_error(self.what) from None
            raise

    def vjp(self, g, wrt_x: bool = False) -> tuple:
        """``(gᵀ ∂f/∂h, gᵀ ∂f/∂x)`` for a block of cotangents; the second is ``None`` unless ``wrt_x``."""
        if wrt_x not in self._pullbacks:
            if wrt_x:
                _, pull = _vjp(self.f, self.h, self.x)
            else:
                _, pull = _vjp(lambda h: self.f(h, self.x), self.h)
            self._pullbacks[wrt_x] = pull
        out = vmap(self._pullbacks[wrt_x])(tuple(g))
        return (tuple(out[0]), out[1]) if wrt_x else (tuple(out[0]), None)

    def gram_products(self, wrt: str) -> tuple:
        """``(gram, cogram)``: none here (the operator applies the JVP and the VJP in turn)."""
        return None, None


@dataclass(frozen=True)
class RegisteredLinearization:
    """A hand-derived linearisation of a solver class: ``factory(solver, h, x, steps, readout)`` builds it, and
    ``readout_uses_x`` says whether the solver's readout depends on ``x`` directly (if not, ``∂y/∂x`` factors
    through the state: :func:`hamgrad.analysis.unrolled_jacobian`)."""

    factory: Callable
    readout_uses_x: bool = True


_REGISTRY: dict[type, RegisteredLinearization] = {}


def register_linearization(solver_class: type, factory: Callable, *, readout_uses_x: bool = True) -> None:
    """Use ``factory`` in place of autograd to linearise the steps and readout of every solver of exactly
    ``solver_class`` (a subclass may change the step, so it falls back to autograd unless registered itself).

    Args:
        solver_class: the solver's class.
        factory: ``factory(solver, h, x, steps, readout)`` returning an object with ``out`` (the output, a tuple of
            tensors), ``jvp(dh, dx)``, ``vjp(g, wrt_x)`` and ``gram_products(wrt)`` as :class:`AutogradLinearization`
            has them (blocks of tangents with a leading batch dimension; ``None`` for a zero tangent).
        readout_uses_x: whether the readout ``G(h, x)`` depends on ``x`` directly.

    Raises:
        TypeError: ``solver_class`` not a class or ``factory`` not callable.
    """
    if not isinstance(solver_class, type):
        raise TypeError(f"solver_class must be a class, got {type(solver_class).__name__}")
    if not callable(factory):
        raise TypeError(f"factory must be callable factory(solver, h, x, steps, readout), got "
                        f"{type(factory).__name__}")
    _REGISTRY[solver_class] = RegisteredLinearization(factory, bool(readout_uses_x))


def registered_linearization(fp: FixedPoint) -> RegisteredLinearization | None:
    """The hand-derived linearisation registered for ``fp``'s solver class, or ``None`` (autograd)."""
    return None if fp.solver is None else _REGISTRY.get(type(fp.solver))


def hand_derived(fp: FixedPoint) -> bool:
    """Whether :func:`linearize` uses a registered hand-derived linearisation for ``fp`` (for the built-in NMF:
    :class:`NMFLinearization`)."""
    return registered_linearization(fp) is not None


def linearize(fp: FixedPoint, h, x: torch.Tensor, steps: int = 1, readout: bool = False):
    """The linearisation of ``steps`` applications of ``fp``'s F from ``h`` (followed by the readout ``(G(h, x),)``
    if ``readout``; ``steps = 0`` with ``readout`` is the readout alone): the registered hand-derived one for the
    solver's class (:func:`register_linearization`), else :class:`AutogradLinearization`."""
    entry = registered_linearization(fp)
    if entry is not None:
        return entry.factory(fp.solver, h, x, steps, readout)

    def unrolled(h, x):
        for _ in range(steps):
            h = fp.step(h, x)
        if not readout:
            return h
        y = fp.readout(h, x)
        return tuple(y) if isinstance(y, (tuple, list)) else (y,)

    what = f"{fp.name}'s step F(h, x)" if steps == 1 and not readout else (
        f"{steps} steps of {fp.name}" + (" and its readout" if readout else "") if steps else f"{fp.name}'s readout")
    return AutogradLinearization(unrolled, h, x, what)


register_linearization(NMF, NMFLinearization, readout_uses_x=False)
