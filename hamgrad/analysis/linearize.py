"""Linearisations of an unrolled solve at a point: batched JVPs and VJPs with the forward pass computed once.

A linearisation of ``out = f(h, x)`` — one step ``F``, K steps ``F∘…∘F``, optionally followed by the readout
``G`` — holds the point and the value ``out`` (a tuple of tensors) and applies

- ``jvp(dh, dx) -> dout``: ``∂f/∂h · dh + ∂f/∂x · dx``;
- ``vjp(g, wrt_x) -> (ḡ_h, ḡ_x)``: ``(gᵀ ∂f/∂h, gᵀ ∂f/∂x)``, with ``ḡ_x = None`` unless ``wrt_x``.

Every tangent carries one leading batch dimension (``dh[i]`` has shape ``(b, *h[i].shape)``), so a block of ``b``
vectors goes through in one pass; ``None`` stands for a zero tangent and skips its work. Two implementations:

- :class:`AutogradLinearization`, for any ``f``: ``torch.func.jvp`` under ``vmap`` (the primal runs once per
  block, not once per vector) and a ``torch.func.vjp`` whose forward graph is built once and reused.
- :class:`NMFLinearization`, for the built-in NMF: the JVP and VJP of K multiplicative-update steps (MATH.md §2)
  and of ``y = DC``, derived by hand, with every step's intermediates (``DᵀX``, ``XCᵀ``, …) cached and no graph.
  The products with the ``d × n`` input are gathered across the K steps into one product each (``[D_0 … D_{K−1}]ᵀ dX``,
  ``dX [C_1 … C_K]ᵀ``, and in the VJP ``X̄ = Σ_t P̄_t C_{t+1} + D_t N̄_t`` as two products), which is where a
  product through the paper-size NMF spends its time. ``tests/test_analysis_operators.py`` holds it against autograd.

:func:`linearize` picks the implementation for a model.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import jvp as _jvp
from torch.func import vjp as _vjp
from torch.func import vmap

from ..fixed_point import FixedPoint, as_state
from ..solvers import NMF

__all__ = ["AutogradLinearization", "NMFLinearization", "linearize"]


def _detached(h) -> tuple:
    """The tensors of ``h`` without their graphs."""
    return tuple(t.detach() for t in h)


class AutogradLinearization:
    """The linearisation of any pure ``f(h, x) -> tuple of tensors`` at ``(h, x)``, through ``torch.func``.

    ``f`` must work under ``torch.func.vmap`` (no ``.item()``, no in-place updates of its inputs, no data-dependent
    Python control flow), as ``torch.func.jacrev`` requires.
    """

    def __init__(self, f: Callable, h, x: torch.Tensor):
        self.f = f
        self.h = _detached(as_state(h, "h"))
        self.x = x.detach()
        with torch.no_grad():
            self.out = as_state(f(self.h, self.x), "f(h, x)")
        self._pullbacks: dict[bool, Callable] = {}

    def jvp(self, dh=None, dx=None) -> tuple:
        """``∂f/∂h · dh + ∂f/∂x · dx`` for a block of tangents (leading batch dimension); ``None`` means zero."""
        if dh is None and dx is None:
            raise ValueError("jvp needs a tangent for h or for x (both are None)")
        if dx is None:
            return vmap(lambda v: _jvp(lambda h: self.f(h, self.x), (self.h,), (v,))[1])(tuple(dh))
        if dh is None:
            return vmap(lambda v: _jvp(lambda x: self.f(self.h, x), (self.x,), (v,))[1])(dx)
        return vmap(lambda v, w: _jvp(self.f, (self.h, self.x), (v, w))[1])(tuple(dh), dx)

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


def _tmm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``Aᵀ B`` (or ``A B`` for symmetric ``A``) of shape ``(..., r, n)``, computed as ``(Bᵀ A)ᵀ``: the GEMM with the
    long ``n`` side as rows is faster on CPU BLAS, and the codes' layout then matches the solvers'."""
    return (B.mT @ A).mT


def _sum(*terms):
    """The sum of the terms that are not ``None`` (``None`` if all are)."""
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for t in present[1:]:
        total = total + t
    return total


class NMFLinearization:
    """The hand-derived linearisation of ``steps`` NMF steps from ``h = (D, C)`` (then ``y = DC`` if ``readout``).

    One step, with ``N = DᵀX``, ``G = DᵀD``, ``M = GC + eps``, ``C' = C ⊙ N ⊘ M``, ``P = XC'ᵀ``, ``S = C'C'ᵀ``,
    ``Q = DS + eps``, ``D' = D ⊙ P ⊘ Q``:

    - JVP: ``dN = dDᵀX + DᵀdX``, ``dM = (dDᵀD + DᵀdD)C + G dC``, ``dC' = (dC⊙N + C⊙dN − C'⊙dM) ⊘ M``;
      ``dP = dX C'ᵀ + X dC'ᵀ``, ``dS = dC'C'ᵀ``, ``dQ = dD S + D (dS + dSᵀ)``, ``dD' = (dD⊙P + D⊙dP − D'⊙dQ) ⊘ Q``;
      readout ``dy = dD C + D dC``.
    - VJP: the transposes of the same products in reverse order; ``X̄ = Σ_t P̄_t C_{t+1} + D_t N̄_t``.

    ``steps = 0`` with ``readout=True`` is the readout alone.
    """

    def __init__(self, solver: NMF, h, x: torch.Tensor, steps: int = 1, readout: bool = False):
        if steps < 0 or (steps == 0 and not readout):
            raise ValueError(f"steps must be >= 1 (or 0 with readout=True), got steps={steps}")
        D, C = _detached(as_state(h, "h"))
        X = x.detach()
        eps = solver.eps
        self.x, self.h, self.readout = X, (D, C), readout
        self.cache = []  # per step: D, C, N, G, M, C', P, S, Q, D'
        for _ in range(steps):
            N = _tmm(D, X)
            G = D.mT @ D
            M = _tmm(G, C) + eps
            C1 = C * N / M
            P = X @ C1.mT
            S = C1 @ C1.mT
            Q = D @ S + eps
            D1 = D * P / Q
            self.cache.append((D, C, N, G, M, C1, P, S, Q, D1))
            D, C = D1, C1
        self.final = (D, C)
        self.out = (D @ C,) if readout else (D, C)
        if steps:
            # the K inputs D_t and outputs C_{t+1} side by side: one product with dX for all steps
            self.D_all = torch.cat([c[0] for c in self.cache], dim=-1)  # (..., d, K r)
            self.C_all = torch.cat([c[5] for c in self.cache], dim=-2)  # (..., K r, n)

    def jvp(self, dh=None, dx=None) -> tuple:
        """The tangent of the output for tangents ``dh = (dD, dC)`` and ``dx`` (leading batch dim; ``None`` = 0)."""
        if dh is None and dx is None:
            raise ValueError("jvp needs a tangent for h or for x (both are None)")
        X = self.x
        dD, dC = dh if dh is not None else (None, None)
        if self.cache and dx is not None:
            DX_all = torch.split(_tmm(self.D_all, dx), self.final[0].shape[-1], dim=-2)  # D_tᵀ dX
            XC_all = torch.split(dx @ self.C_all.mT, self.final[0].shape[-1], dim=-1)  # dX C_{t+1}ᵀ
        for t, (D, C, N, G, M, C1, P, S, Q, D1) in enumerate(self.cache):
            dN = _sum(None if dD is None else _tmm(dD, X), None if dx is None else DX_all[t])
            if dD is not None:
                dG = dD.mT @ D
                dM = _sum(_tmm(dG + dG.mT, C), None if dC is None else _tmm(G, dC))
            else:
                dM = None if dC is None else _tmm(G, dC)
            dC1 = _sum(None if dC is None else dC * N, None if dN is None else C * dN,
                       None if dM is None else -C1 * dM) / M
            dP = _sum(None if dx is None else XC_all[t], X @ dC1.mT)
            dS = dC1 @ C1.mT
            dQ = _sum(None if dD is None else dD @ S, D @ (dS + dS.mT))
            dD = _sum(None if dD is None else dD * P, D * dP, -D1 * dQ) / Q
            dC = dC1
        if not self.readout:
            return dD, dC
        D, C = self.final
        if dD is None and dC is None:  # the readout does not depend on x
            return (torch.zeros((dx.shape[0], *self.out[0].shape), dtype=dx.dtype, device=dx.device),)
        return (_sum(None if dD is None else dD @ C, None if dC is None else D @ dC),)

    def vjp(self, g, wrt_x: bool = False) -> tuple:
        """``((D̄, C̄), X̄)`` for a block of output cotangents; ``X̄`` only if ``wrt_x``."""
        X = self.x
        if self.readout:
            (gy,), (D, C) = g, self.final
            gD, gC = gy @ C.mT, _tmm(D, gy)
        else:
            gD, gC = g
        bar_P, bar_N = [], []
        for D, C, N, G, M, C1, P, S, Q, D1 in reversed(self.cache):
            # D' = D ⊙ P ⊘ Q,  Q = D S + eps,  S = C'C'ᵀ,  P = X C'ᵀ
            gq = gD / Q
            bQ = -gq * D1
            bP = gq * D
            bS = D.mT @ bQ
            gC1 = gC + _tmm(bS + bS.mT, C1) + _tmm(bP, X)
            gD = gq * P + bQ @ S
            # C' = C ⊙ N ⊘ M,  M = G C + eps,  G = DᵀD,  N = DᵀX
            gm = gC1 / M
            bM = -gm * C1
            bN = gm * C
            gC = gm * N + _tmm(G, bM)
            bG = bM @ C.mT
            gD = gD + D @ (bG + bG.mT) + X @ bN.mT
            bar_P.append(bP)
            bar_N.append(bN)
        if not wrt_x:
            return (gD, gC), None
        if not self.cache:  # the readout alone does not depend on x
            return (gD, gC), torch.zeros((gD.shape[0], *X.shape), dtype=gD.dtype, device=gD.device)
        # X̄ = Σ_t P̄_t C_{t+1} + D_t N̄_t, as two products over all steps (lists are in reverse step order)
        bar_x = torch.cat(bar_P[::-1], dim=-1) @ self.C_all
        bar_x += self.D_all @ torch.cat(bar_N[::-1], dim=-2)
        return (gD, gC), bar_x


def linearize(fp: FixedPoint, h, x: torch.Tensor, steps: int = 1, readout: bool = False):
    """The linearisation of ``steps`` applications of ``fp``'s F from ``h`` (followed by the readout ``(G(h, x),)``
    if ``readout``; ``steps = 0`` with ``readout`` is the readout alone) — hand-derived for the built-in NMF."""
    if type(fp.solver) is NMF:  # exactly NMF: a subclass may change the step, and only autograd knows its derivative
        return NMFLinearization(fp.solver, h, x, steps, readout)

    def unrolled(h, x):
        for _ in range(steps):
            h = fp.step(h, x)
        if not readout:
            return h
        y = fp.readout(h, x)
        return tuple(y) if isinstance(y, (tuple, list)) else (y,)

    return AutogradLinearization(unrolled, h, x)
