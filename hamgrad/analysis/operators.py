"""Matrix-free Jacobian operators on flat vectors (MATH.md §3).

:class:`LinearOperator` is an ``m × n`` matrix known only by its action on blocks of vectors: ``J @ v`` (a JVP),
``J.T @ u`` (a VJP), ``J @ V`` for an ``(n, b)`` block, ``J2 @ J1`` (composition), ``J.dense()`` and
``J.to_scipy()`` (so SciPy's ``eigs``, ``svds`` and ``gmres`` run on it unchanged).

- :func:`jacobian` ``(F, h, x, wrt)``: ``∂F/∂h`` or ``∂F/∂x`` of one step at a point.
- :func:`unrolled_jacobian` ``(model, x, h0, steps, wrt)``: the Jacobian of ``K`` unrolled steps (and the readout),
  ``∂y/∂x``, ``∂h^K/∂h^0``, …: one forward sweep of JVPs (or reverse sweep of VJPs) through the K steps from a
  trajectory computed once (:mod:`hamgrad.analysis.linearize`). For the built-in NMF, ``∂y/∂x`` is the composition
  ``(∂y/∂h^K) @ (∂h^K/∂x)`` through the smaller state space, with hand-derived Gram products (``J.gram``,
  ``J.cogram``), which :func:`hamgrad.analysis.svdvals` uses.

A state ``h`` is a tuple of tensors; the operators flatten it in tuple order
(:func:`hamgrad.fixed_point.flatten_state`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.func import vmap

from .._checks import check_choice, check_float_tensor, check_steps
from ..fixed_point import FixedPoint, as_state, flatten_state, unflatten_state
from ..grad import as_fixed_point
from ..solvers import compute_dtype
from .linearize import AutogradLinearization, NMFLinearization, hand_derived, linearize

__all__ = ["LinearOperator", "jacobian", "unrolled_jacobian", "linear_operator", "analysis_point", "WRT"]

WRT = ("h", "x")

flatten_block = vmap(flatten_state)  # a block of states (leading batch dim) -> (b, dim h)
unflatten_block = vmap(unflatten_state, in_dims=(0, None))  # (b, dim h), like -> a block of states


class LinearOperator:
    """An ``m × n`` linear operator given by its action on blocks of vectors.

    Args:
        shape: ``(m, n)``.
        apply: ``V (b, n) -> (b, m)``, the rows of ``V`` mapped by the operator (``V Aᵀ``).
        rapply: ``U (b, m) -> (b, n)``, the rows of ``U`` mapped by the transpose (``U A``).
        dtype: the dtype of the vectors it acts on.
        device: the device of the vectors it acts on.
        name: a label for error messages and ``repr``.
        gram: optional ``V (b, n) -> (b, n)``, the rows of ``V`` mapped by ``AᵀA``, when there is a cheaper way than
            ``rapply(apply(V))`` (the default).
        cogram: optional ``U (b, m) -> (b, m)``, the rows of ``U`` mapped by ``AAᵀ`` (default ``apply(rapply(U))``).

    ``A @ v`` for a vector ``v`` of length n, ``A @ V`` for a matrix ``(n, b)`` (columns mapped, as for a matrix),
    ``A @ B`` for another operator (composition; ``(A @ B).factors`` is ``(A, B)``), ``A.T`` the transpose,
    ``A.gram(V)``, ``A.cogram(U)``, ``A.dense()``, ``A.to_scipy()``.
    """

    def __init__(self, shape: tuple[int, int], apply: Callable, rapply: Callable, *, dtype: torch.dtype,
                 device: torch.device | str, name: str = "A", gram: Callable | None = None,
                 cogram: Callable | None = None):
        self.shape = (int(shape[0]), int(shape[1]))
        self._apply, self._rapply = apply, rapply
        self._gram = gram or (lambda V: rapply(apply(V)))
        self._cogram = cogram or (lambda U: apply(rapply(U)))
        self.dtype, self.device, self.name = dtype, torch.device(device), name
        self.factors: tuple[LinearOperator, LinearOperator] | None = None  # (A, B) for a composition A @ B

    @classmethod
    def from_dense(cls, A: torch.Tensor, name: str = "A") -> "LinearOperator":
        """Wrap a 2-D tensor as an operator (for tests and small examples)."""
        check_float_tensor(A, name, min_dim=2)
        if A.dim() != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(A.shape)}")
        return cls(A.shape, lambda V: V @ A.mT, lambda U: U @ A, dtype=A.dtype, device=A.device, name=name)

    def __repr__(self) -> str:
        return f"LinearOperator({self.name}, shape={self.shape}, dtype={self.dtype}, device={self.device})"

    # ------------------------------------------------------------------ action on blocks of vectors
    def _check_block(self, V: torch.Tensor, size: int, what: str) -> torch.Tensor:
        if not isinstance(V, torch.Tensor):
            raise TypeError(f"{self.name} {what}: expected a torch.Tensor, got {type(V).__name__}")
        if V.dim() != 2 or V.shape[1] != size:
            raise ValueError(f"{self.name} {what}: expected a block of shape (b, {size}), got {tuple(V.shape)}")
        return V.to(device=self.device, dtype=self.dtype)

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of ``V (b, n)`` mapped by the operator: ``(b, m)``."""
        return self._apply(self._check_block(V, self.shape[1], "apply"))

    def rapply(self, U: torch.Tensor) -> torch.Tensor:
        """Rows of ``U (b, m)`` mapped by the transpose: ``(b, n)``."""
        return self._rapply(self._check_block(U, self.shape[0], "rapply"))

    def gram(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of ``V (b, n)`` mapped by ``AᵀA``: ``(b, n)``."""
        return self._gram(self._check_block(V, self.shape[1], "gram"))

    def cogram(self, U: torch.Tensor) -> torch.Tensor:
        """Rows of ``U (b, m)`` mapped by ``AAᵀ``: ``(b, m)``."""
        return self._cogram(self._check_block(U, self.shape[0], "cogram"))

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            if other.shape[0] != self.shape[1]:
                raise ValueError(f"cannot compose {self.name} {self.shape} @ {other.name} {other.shape}: "
                                 f"inner sizes {self.shape[1]} and {other.shape[0]} differ")
            product = LinearOperator((self.shape[0], other.shape[1]), lambda V: self._apply(other._apply(V)),
                                     lambda U: other._rapply(self._rapply(U)), dtype=self.dtype, device=self.device,
                                     name=f"{self.name} @ {other.name}")
            product.factors = (self, other)
            return product
        if isinstance(other, torch.Tensor) and other.dim() == 1:
            return self.apply(other.unsqueeze(0))[0]
        if isinstance(other, torch.Tensor) and other.dim() == 2:
            return self.apply(other.mT).mT
        raise TypeError(f"{self.name} @ other: other must be a 1-D or 2-D tensor or a LinearOperator, "
                        f"got {type(other).__name__}" + (f" of shape {tuple(other.shape)}"
                                                         if isinstance(other, torch.Tensor) else ""))

    @property
    def T(self) -> "LinearOperator":
        """The transpose (a VJP operator when ``self`` is a JVP operator)."""
        if self.factors is not None:  # (A B)ᵀ = Bᵀ Aᵀ, still a composition
            transpose = self.factors[1].T @ self.factors[0].T
            transpose.name = f"{self.name}.T"
            return transpose
        return LinearOperator((self.shape[1], self.shape[0]), self._rapply, self._apply, dtype=self.dtype,
                              device=self.device, name=f"{self.name}.T", gram=self._cogram, cogram=self._gram)

    # ------------------------------------------------------------------ conversions
    def dense(self, chunk_size: int = 256) -> torch.Tensor:
        """The ``m × n`` matrix, built ``chunk_size`` rows (VJPs, as ``jacrev``) or columns (JVPs, as ``jacfwd``)
        at a time, whichever side is smaller."""
        m, n = self.shape
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        eye = torch.eye(min(m, n), dtype=self.dtype, device=self.device)
        chunks = torch.split(eye, chunk_size)
        if m <= n:
            return torch.cat([self._rapply(E) for E in chunks])
        return torch.cat([self._apply(E) for E in chunks]).mT.contiguous()

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` with the same action (NumPy arrays in, NumPy arrays out).

        Each product moves its vectors between the host and ``self.device``; complex vectors are applied as their
        real and imaginary parts.
        """
        from scipy.sparse.linalg import LinearOperator as SciPyOperator

        def wrap(fn):
            def product(V):
                V = np.asarray(V)
                if np.iscomplexobj(V):
                    return product(V.real) + 1j * product(V.imag)
                block = torch.as_tensor(np.ascontiguousarray(V.reshape(V.shape[0], -1).T))
                return fn(block.to(device=self.device, dtype=self.dtype)).mT.cpu().numpy().reshape(
                    (-1,) + V.shape[1:])
            return product

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype
        mv, rmv = wrap(self._apply), wrap(self._rapply)
        return SciPyOperator(self.shape, matvec=mv, rmatvec=rmv, matmat=mv, rmatmat=rmv, dtype=np_dtype)


# ---------------------------------------------------------------------- Jacobians of steps and of unrolled solves
def analysis_point(x: torch.Tensor, h=None, name: str = "h") -> tuple:
    """``(x, h)`` checked and detached, in the precision the analysis computes in: half-precision tensors become
    float32, as inside the solvers (``h`` may be ``None``)."""
    x = check_float_tensor(x, "x").detach()
    x = x.to(compute_dtype(x.dtype))
    if h is not None:
        h = tuple(t.detach().to(compute_dtype(t.dtype)) for t in as_state(h, name))
    return x, h


def linear_operator(lin, wrt: str, h_like: tuple, x: torch.Tensor, name: str) -> LinearOperator:
    """The Jacobian of a linearisation (:mod:`hamgrad.analysis.linearize`) w.r.t. ``x`` or the state ``h``
    (shaped like ``h_like``), on flat vectors."""
    out_like = lin.out
    m = sum(t.numel() for t in out_like)
    n = x.numel() if wrt == "x" else sum(t.numel() for t in h_like)

    def apply(V):
        if wrt == "x":
            return flatten_block(lin.jvp(None, V.reshape(V.shape[0], *x.shape)))
        return flatten_block(lin.jvp(unflatten_block(V, h_like), None))

    def rapply(U):
        gh, gx = lin.vjp(unflatten_block(U, out_like), wrt_x=wrt == "x")
        return gx.reshape(U.shape[0], -1) if wrt == "x" else flatten_block(gh)

    gram = cogram = None
    if isinstance(lin, NMFLinearization):  # the hand-derived Gram products, without d × n tangents
        if wrt == "x" and lin.cache:
            def cogram(U):
                return flatten_block(lin.x_cogram(unflatten_block(U, out_like)))
        elif wrt == "h" and not lin.cache:
            def gram(V):
                return flatten_block(lin.h_gram(unflatten_block(V, h_like)))
    return LinearOperator((m, n), apply, rapply, dtype=x.dtype, device=x.device, name=name, gram=gram,
                          cogram=cogram)


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
    """
    check_choice(wrt, "wrt", WRT)
    x, h = analysis_point(x, h)
    if callable(F) and not isinstance(F, FixedPoint):
        lin = AutogradLinearization(F, h, x)
        name = getattr(F, "__name__", "F")
    else:
        fp = as_fixed_point(F)
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

    For the built-in NMF, whose readout ``y = DC`` does not depend on ``x``, ``∂y/∂x`` is returned as the composition
    ``(∂y/∂h^K) @ (∂h^K/∂x)`` (``.factors``) through the state, which is smaller than ``x``: :func:`svdvals` then
    works in the state space, with hand-derived Gram products that never form a ``d × n`` tangent.
    """
    check_choice(wrt, "wrt", WRT)
    check_steps(steps)
    fp = as_fixed_point(model)
    x, h = analysis_point(x, h0, "h0")
    if h is None:
        with torch.no_grad():
            h = fp.init(x, generator=generator)
    name = f"d{'y' if readout else f'h^{steps}'}/d{'x' if wrt == 'x' else 'h^0'}"
    if readout and wrt == "x" and hand_derived(fp):
        state = linearize(fp, h, x, steps)
        J = (linear_operator(linearize(fp, state.final, x, 0, readout=True), "h", state.final, x, f"dy/dh^{steps}")
             @ linear_operator(state, "x", h, x, f"dh^{steps}/dx"))
        J.name = name
        return J
    return linear_operator(linearize(fp, h, x, steps, readout), wrt, h, x, name)
