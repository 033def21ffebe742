"""Linear operators known by their action on blocks of vectors, and their algebra (docs/theory.md §3 and §4).

An operator is an ``m × n`` matrix that is never formed: :class:`LinearOperator` maps the rows of a block ``V (b, n)``
(``_matmat``) and of ``U (b, m)`` by the transpose (``_adjoint``), optionally with cheaper Gram products. Operators
combine like matrices — ``A @ B`` (composition), ``A + B``, ``A - B``, ``c * A``, ``-A``, ``A.T`` — and
:class:`IdentityOperator` and :class:`InverseOperator` (GMRES) build ``(I − J)⁻¹``.

This module depends only on torch and the package's small Krylov solvers, so that the gradient modes
(:mod:`hamgrad.grad`: the implicit mode's adjoint system ``(I − Jᵀ) u = g``) and the analysis
(:mod:`hamgrad.analysis`: Jacobians of steps and unrolled solves, spectra, implicit Jacobians) share it. The
product with a 1-D vector is ``A @ v``, and the package's matrix-free solvers (GMRES, fixed-point iteration) take an
operator as well as a function ``v -> A v``.

Examples:
    >>> import torch
    >>> from hamgrad.linalg import IdentityOperator, InverseOperator, LinearOperator
    >>> J = LinearOperator.from_dense(torch.tensor([[0.5, 0.1], [0.0, 0.25]], dtype=torch.float64), "J")
    >>> A = IdentityOperator(2, dtype=torch.float64, device="cpu") - J     # I − J
    >>> A.dense()
    tensor([[ 0.5000, -0.1000],
            [ 0.0000,  0.7500]], dtype=torch.float64)
    >>> (InverseOperator(A, tol=1e-12) @ torch.tensor([1.0, 3.0], dtype=torch.float64)).round(decimals=6)
    tensor([2.8000, 4.0000], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ._checks import check_float_tensor, check_positive, check_steps
from ._krylov import gmres

__all__ = ["LinearOperator", "IdentityOperator", "InverseOperator"]


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
        """Wrap a 2-D tensor as an operator (for tests and small examples).

        Args:
            A: the matrix, a 2-D floating-point tensor (the operator's dtype and device are its own).
            name: a label for error messages and ``repr``.

        Returns:
            A :class:`LinearOperator` whose products are those of the matrix (``op @ v`` equals ``A @ v``).

        Raises:
            TypeError, ValueError: ``A`` is not a floating-point tensor, or not 2-D.
        """
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
        return _Sum(self, other, sign=-1.0)

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
        at a time, whichever side is smaller.

        Raises:
            ValueError: ``chunk_size < 1``.
        """
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
    """``A + B``, or ``A − B`` for ``sign = −1`` (one fused ``torch.add`` a product)."""

    def __init__(self, A: LinearOperator, B: LinearOperator, sign: float = 1.0):
        if A.shape != B.shape:
            raise ValueError(f"cannot add {A.name} {A.shape} and {B.name} {B.shape}: shapes differ")
        _check_same_space(A, B, "add")
        super().__init__(A.shape, dtype=A.dtype, device=A.device, name=f"{A.name} {'+' if sign > 0 else '-'} {B.name}")
        self.terms, self.sign = (A, B), sign

    def _matmat(self, V):
        return torch.add(self.terms[0]._matmat(V), self.terms[1]._matmat(V), alpha=self.sign)

    def _adjoint(self, U):
        return torch.add(self.terms[0]._adjoint(U), self.terms[1]._adjoint(U), alpha=self.sign)


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
    """The ``n × n`` identity (for ``I − J``: ``IdentityOperator(n, dtype=J.dtype, device=J.device) - J``).

    Args:
        n: the size.
        dtype: the dtype of the vectors it acts on.
        device: the device of the vectors it acts on.
    """

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

    ``solves`` collects every solve's :class:`hamgrad.LinearSolveResult` (shared with the transpose): check their
    ``converged`` before trusting a product.

    Raises:
        ValueError: ``A`` is not square, or ``tol`` / ``max_iter`` is not positive.
        TypeError: ``tol`` is not a number or ``max_iter`` not an int.
    """

    def __init__(self, A: LinearOperator, tol: float, max_iter: int = 500, *, _solves: list | None = None):
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"InverseOperator needs a square operator, {A.name} has shape {A.shape}")
        super().__init__(A.shape, dtype=A.dtype, device=A.device, name=f"({A.name})⁻¹")
        self.A, self.tol, self.max_iter = A, check_positive(tol, "tol"), check_steps(max_iter, "max_iter")
        self.solves = [] if _solves is None else _solves

    def _solve(self, A: LinearOperator, V):
        results = [gmres(A, b, self.tol, self.max_iter) for b in V]
        self.solves.extend(results)
        return torch.stack([r.x for r in results]) if results else V.clone()

    def _matmat(self, V):
        return self._solve(self.A, V)

    def _adjoint(self, U):
        return self._solve(self.A.T, U)

    @property
    def T(self) -> LinearOperator:
        return InverseOperator(self.A.T, self.tol, self.max_iter, _solves=self.solves)
