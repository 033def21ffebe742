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

Operators are classes: :class:`LinearOperator` (the base: ``_matmat``/``_adjoint``, optional ``_gram``/``_cogram``,
or functions for them), composition ``A @ B``, sums ``A + B``, scalar multiples ``c * A``, the transpose ``A.T``,
:class:`IdentityOperator`, :class:`InverseOperator` (GMRES) and :class:`JacobianOperator` (a linearisation's JVPs and
VJPs).

A state ``h`` is a tuple of tensors; the operators flatten it in tuple order
(:func:`hamgrad.fixed_point.flatten_state`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.func import vmap

from .._checks import check_choice, check_finite, check_float_tensor, check_positive, check_steps
from .._krylov import gmres
from ..fixed_point import FixedPoint, as_state, flatten_state, unflatten_state
from ..grad import as_fixed_point
from ..solvers import compute_dtype
from .linearize import AutogradLinearization, linearize, registered_linearization

__all__ = ["LinearOperator", "IdentityOperator", "InverseOperator", "JacobianOperator", "jacobian",
           "unrolled_jacobian", "linear_operator", "analysis_point", "WRT"]

WRT = ("h", "x")

flatten_block = vmap(flatten_state)  # a block of states (leading batch dim) -> (b, dim h)
unflatten_block = vmap(unflatten_state, in_dims=(0, None))  # (b, dim h), like -> a block of states


class LinearOperator:
    """An ``m × n`` linear operator given by its action on blocks of vectors.

    Either pass the actions as functions, or subclass and implement :meth:`_matmat` and :meth:`_adjoint` (and,
    where there is a cheaper way than the two in turn, :meth:`_gram` and :meth:`_cogram`), calling
    ``super().__init__(shape, dtype=..., device=..., name=...)``.

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
    ``A @ B`` for another operator (composition; ``(A @ B).factors`` is ``(A, B)``), ``A + B``, ``A − B``, ``c * A``,
    ``−A``, ``A.T`` the transpose, ``A.gram(V)``, ``A.cogram(U)``, ``A.dense()``, ``A.to_scipy()``;
    :class:`IdentityOperator` and :class:`InverseOperator` build ``(I − J)⁻¹``.

    Raises:
        TypeError: neither ``apply``/``rapply`` given nor ``_matmat``/``_adjoint`` implemented.
    """

    def __init__(self, shape: tuple[int, int], apply: Callable | None = None, rapply: Callable | None = None, *,
                 dtype: torch.dtype, device: torch.device | str, name: str = "A", gram: Callable | None = None,
                 cogram: Callable | None = None):
        self.shape = (int(shape[0]), int(shape[1]))
        overridden = type(self)._matmat is not LinearOperator._matmat
        if not overridden and (apply is None or rapply is None):
            raise TypeError("LinearOperator needs apply and rapply functions (or a subclass with _matmat and "
                            "_adjoint)")
        self._apply_fn, self._rapply_fn = apply, rapply
        self._gram_fn, self._cogram_fn = gram, cogram
        self.dtype, self.device, self.name = dtype, torch.device(device), name
        self.factors: tuple[LinearOperator, LinearOperator] | None = None  # (A, B) for a composition A @ B

    @classmethod
    def from_dense(cls, A: torch.Tensor, name: str = "A") -> "LinearOperator":
        """Wrap a 2-D tensor as an operator (for tests and small examples)."""
        check_float_tensor(A, name, min_dim=2)
        if A.dim() != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(A.shape)}")
        return LinearOperator(A.shape, lambda V: V @ A.mT, lambda U: U @ A, dtype=A.dtype, device=A.device,
                              name=name)

    def __repr__(self) -> str:
        return f"LinearOperator({self.name}, shape={self.shape}, dtype={self.dtype}, device={self.device})"

    # ------------------------------------------------------------------ what a subclass implements
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of ``V (b, n)`` mapped by the operator, unchecked."""
        return self._apply_fn(V)

    def _adjoint(self, U: torch.Tensor) -> torch.Tensor:
        """Rows of ``U (b, m)`` mapped by the transpose, unchecked."""
        return self._rapply_fn(U)

    def _gram(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of ``V (b, n)`` mapped by ``AᵀA``, unchecked."""
        return self._gram_fn(V) if self._gram_fn is not None else self._adjoint(self._matmat(V))

    def _cogram(self, U: torch.Tensor) -> torch.Tensor:
        """Rows of ``U (b, m)`` mapped by ``AAᵀ``, unchecked."""
        return self._cogram_fn(U) if self._cogram_fn is not None else self._matmat(self._adjoint(U))

    # ------------------------------------------------------------------ action on blocks of vectors
    def _check_block(self, V: torch.Tensor, size: int, what: str) -> torch.Tensor:
        if not isinstance(V, torch.Tensor):
            raise TypeError(f"{self.name} {what}: expected a torch.Tensor, got {type(V).__name__}")
        if V.dim() != 2 or V.shape[1] != size:
            raise ValueError(f"{self.name} {what}: expected a block of shape (b, {size}), got {tuple(V.shape)}")
        return V.to(device=self.device, dtype=self.dtype)

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of ``V (b, n)`` mapped by the operator: ``(b, m)``."""
        return self._matmat(self._check_block(V, self.shape[1], "apply"))

    def rapply(self, U: torch.Tensor) -> torch.Tensor:
        """Rows of ``U (b, m)`` mapped by the transpose: ``(b, n)``."""
        return self._adjoint(self._check_block(U, self.shape[0], "rapply"))

    def gram(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of ``V (b, n)`` mapped by ``AᵀA``: ``(b, n)``."""
        return self._gram(self._check_block(V, self.shape[1], "gram"))

    def cogram(self, U: torch.Tensor) -> torch.Tensor:
        """Rows of ``U (b, m)`` mapped by ``AAᵀ``: ``(b, m)``."""
        return self._cogram(self._check_block(U, self.shape[0], "cogram"))

    # ------------------------------------------------------------------ algebra
    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return _Composition(self, other)
        if isinstance(other, torch.Tensor) and other.dim() == 1:
            return self.apply(other.unsqueeze(0))[0]
        if isinstance(other, torch.Tensor) and other.dim() == 2:
            return self.apply(other.mT).mT
        raise TypeError(f"{self.name} @ other: other must be a 1-D or 2-D tensor or a LinearOperator, "
                        f"got {type(other).__name__}" + (f" of shape {tuple(other.shape)}"
                                                         if isinstance(other, torch.Tensor) else ""))

    def __add__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _Sum(self, other)

    def __sub__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _Sum(self, _Scaled(-1.0, other))

    def __mul__(self, c):
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            return NotImplemented
        return _Scaled(float(c), self)

    __rmul__ = __mul__

    def __neg__(self):
        return _Scaled(-1.0, self)

    @property
    def T(self) -> "LinearOperator":
        """The transpose (a VJP operator when ``self`` is a JVP operator)."""
        return _Transpose(self)

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
            return torch.cat([self._adjoint(E) for E in chunks])
        return torch.cat([self._matmat(E) for E in chunks]).mT.contiguous()

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
        mv, rmv = wrap(self._matmat), wrap(self._adjoint)
        return SciPyOperator(self.shape, matvec=mv, rmatvec=rmv, matmat=mv, rmatmat=rmv, dtype=np_dtype)


class _Transpose(LinearOperator):
    """``Aᵀ``: the actions of ``A`` swapped (its Gram products too)."""

    def __init__(self, A: LinearOperator):
        super().__init__((A.shape[1], A.shape[0]), dtype=A.dtype, device=A.device, name=f"{A.name}.T")
        self.A = A

    def _matmat(self, V):
        return self.A._adjoint(V)

    def _adjoint(self, U):
        return self.A._matmat(U)

    def _gram(self, V):
        return self.A._cogram(V)

    def _cogram(self, U):
        return self.A._gram(U)

    @property
    def T(self) -> LinearOperator:
        return self.A


def _check_same_space(A: LinearOperator, B: LinearOperator, what: str) -> None:
    if A.dtype != B.dtype or A.device != B.device:
        raise ValueError(f"cannot {what} {A.name} ({A.dtype}, {A.device}) and {B.name} ({B.dtype}, {B.device}): "
                         "dtypes and devices differ")


class _Composition(LinearOperator):
    """``A B`` (``factors = (A, B)``); its transpose is the composition ``Bᵀ Aᵀ``."""

    def __init__(self, A: LinearOperator, B: LinearOperator, name: str | None = None):
        if B.shape[0] != A.shape[1]:
            raise ValueError(f"cannot compose {A.name} {A.shape} @ {B.name} {B.shape}: "
                             f"inner sizes {A.shape[1]} and {B.shape[0]} differ")
        _check_same_space(A, B, "compose")
        super().__init__((A.shape[0], B.shape[1]), dtype=A.dtype, device=A.device,
                         name=name or f"{A.name} @ {B.name}")
        self.factors = (A, B)

    def _matmat(self, V):
        return self.factors[0]._matmat(self.factors[1]._matmat(V))

    def _adjoint(self, U):
        return self.factors[1]._adjoint(self.factors[0]._adjoint(U))

    @property
    def T(self) -> LinearOperator:
        A, B = self.factors
        return _Composition(B.T, A.T, name=f"{self.name}.T")


class _Sum(LinearOperator):
    """``A + B``."""

    def __init__(self, A: LinearOperator, B: LinearOperator):
        if A.shape != B.shape:
            raise ValueError(f"cannot add {A.name} {A.shape} and {B.name} {B.shape}: shapes differ")
        _check_same_space(A, B, "add")
        super().__init__(A.shape, dtype=A.dtype, device=A.device, name=f"{A.name} + {B.name}")
        self.terms = (A, B)

    def _matmat(self, V):
        return self.terms[0]._matmat(V) + self.terms[1]._matmat(V)

    def _adjoint(self, U):
        return self.terms[0]._adjoint(U) + self.terms[1]._adjoint(U)


class _Scaled(LinearOperator):
    """``c A`` for a real number ``c`` (Gram products ``c² AᵀA``, ``c² AAᵀ`` through ``A``'s own)."""

    def __init__(self, c: float, A: LinearOperator):
        super().__init__(A.shape, dtype=A.dtype, device=A.device, name=f"{c:g}·{A.name}")
        self.c, self.A = c, A

    def _matmat(self, V):
        return self.c * self.A._matmat(V)

    def _adjoint(self, U):
        return self.c * self.A._adjoint(U)

    def _gram(self, V):
        return self.c ** 2 * self.A._gram(V)

    def _cogram(self, U):
        return self.c ** 2 * self.A._cogram(U)


class IdentityOperator(LinearOperator):
    """The ``n × n`` identity (for ``I − J``: ``IdentityOperator(n, dtype=J.dtype, device=J.device) - J``)."""

    def __init__(self, n: int, *, dtype: torch.dtype, device: torch.device | str):
        super().__init__((n, n), dtype=dtype, device=device, name="I")

    def _matmat(self, V):
        return V

    _adjoint = _gram = _cogram = _matmat


class InverseOperator(LinearOperator):
    """``A⁻¹`` of a square operator, each product solving ``A z = v`` (``Aᵀ w = u`` for the transpose) by restarted
    GMRES (:func:`hamgrad._krylov.gmres`), one right-hand side at a time.

    Args:
        A: a square :class:`LinearOperator`.
        tol: the solves' relative residual tolerance.
        max_iter: the solves' limit on products with ``A``.

    ``solves`` collects every solve's :class:`hamgrad._krylov.LinearSolveResult` (shared with the transpose):
    check their ``converged`` before trusting a product.
    """

    def __init__(self, A: LinearOperator, tol: float, max_iter: int = 500, *, _solves: list | None = None):
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"InverseOperator needs a square operator, {A.name} has shape {A.shape}")
        super().__init__(A.shape, dtype=A.dtype, device=A.device, name=f"({A.name})⁻¹")
        self.A, self.tol, self.max_iter = A, check_positive(tol, "tol"), check_steps(max_iter, "max_iter")
        self.solves = [] if _solves is None else _solves

    def _solve(self, product, V):
        results = [gmres(lambda v: product(v.unsqueeze(0))[0], b, self.tol, self.max_iter) for b in V]
        self.solves.extend(results)
        return torch.stack([r.x for r in results]) if results else V.clone()

    def _matmat(self, V):
        return self._solve(self.A._matmat, V)

    def _adjoint(self, U):
        return self._solve(self.A._adjoint, U)

    @property
    def T(self) -> LinearOperator:
        return InverseOperator(self.A.T, self.tol, self.max_iter, _solves=self.solves)


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
    """``(x, h)`` checked and detached, in the precision the analysis computes in: half-precision tensors become
    float32, as inside the solvers (``h`` may be ``None``).

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
        h = tuple(t.detach().to(compute_dtype(t.dtype)) for t in h)
    return x, h


def linear_operator(lin, wrt: str, h_like: tuple, x: torch.Tensor, name: str) -> LinearOperator:
    """The Jacobian of a linearisation w.r.t. ``x`` or the state ``h`` (shaped like ``h_like``): a
    :class:`JacobianOperator`."""
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
    """
    check_choice(wrt, "wrt", WRT)
    if callable(F) and not isinstance(F, FixedPoint):
        x, h = analysis_point(x, h)
        lin = AutogradLinearization(F, h, x)
        name = getattr(F, "__name__", "F")
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
    entry = registered_linearization(fp)
    if readout and wrt == "x" and entry is not None and not entry.readout_uses_x:
        state = linearize(fp, h, x, steps)
        final = state.out  # h^K
        return _Composition(linear_operator(linearize(fp, final, x, 0, readout=True), "h", final, x,
                                            f"dy/dh^{steps}"),
                            linear_operator(state, "x", h, x, f"dh^{steps}/dx"), name=name)
    return linear_operator(linearize(fp, h, x, steps, readout), wrt, h, x, name)
