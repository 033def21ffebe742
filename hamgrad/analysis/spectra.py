"""Spectra of linear operators: top-k eigenvalues and singular values, with residuals and matvec counts.

=============  ==================================================================================================
``eigvals``    ``dense`` (``torch.linalg.eig``), ``arnoldi`` (SciPy ``eigs``/ARPACK from a block of seeded start
               vectors, Rayleigh–Ritz on their Ritz vectors together), ``power`` (k = 1; reports non-convergence,
               e.g. for a complex dominant pair, with a warning instead of a number)
``svdvals``    ``dense`` (``torch.linalg.svd``), ``lanczos`` (torch-native block Lanczos with thick restarts and
               full reorthogonalisation on ``JᵀJ`` or ``JJᵀ``, whichever is smaller, through the operator's
               ``gram``/``cogram``; for a composition ``J = G @ M`` through a smaller inner space, on
               ``M Mᵀ GᵀG`` there, in the ``GᵀG`` inner product; on the operator's device)
``auto``       ``dense`` when the operator's larger side is at most :data:`DENSE_MAX`, else ``arnoldi`` / ``lanczos``
=============  ==================================================================================================

Every routine returns a :class:`Spectrum`: the values, each value's relative residual, the number of matvecs (one
matvec = the operator or its transpose applied to one vector, a Gram product counting two; for ``dense``, the
products that built the matrix; for a composition searched in its inner space, two per Krylov vector: it takes one
Gram product of each factor, together one application of ``J`` and one of ``Jᵀ``), a ``converged`` flag (every
value certified, see below, and its residual ``<= tol``), the method and the wall time.

Residuals: for an eigenpair ``‖Jv − λv‖ / |λ|`` (``‖v‖ = 1``; ``power`` divides by ``‖Jv‖``); for a singular
triplet ``‖Jᵀu − σv‖ / σ`` with ``u = Jv/σ`` (so ``Jv = σu`` exactly), or its mirror ``‖Jv − σu‖ / σ`` with
``v = Jᵀu/σ`` when the search runs on the output side or in an inner space. Either bounds the relative distance of the
value to the operator's spectrum (for eigenvalues of non-normal operators up to the eigenvector condition number).
For singular values the bound is sharper: a relative residual ``ρ`` puts ``σ`` within ``ρ / (1 + √(1 − ρ)) ≈ ρ/2``
(relative) of a singular value (``σ²`` is within ``ρσ²`` of an eigenvalue of ``JᵀJ``), so values to ``1e-4`` relative
need ``tol=2e-4``.
It does not prove that no larger value was missed: a Krylov method finds the top of a spectrum with high
probability, but a start block of b vectors can skip a value of multiplicity above b, or one inside a tight
cluster (the ``block`` of ``svdvals`` and of ``eigvals``' ``arnoldi``).

Noise floor: a value at or below ``Spectrum.noise_floor`` is rounding noise of the method, reported but not
certified (``Spectrum.certified``), and ``converged`` is then ``False``: of such a value only its smallness is known,
not its digits (ask for k up to the operator's numerical rank). The floor is ``max(m, n) · eps`` times the
largest for the direct methods and for ``arnoldi``/``power`` (backward-stable: the values carry an error of about
``eps ‖J‖``), ``10 √eps`` times the largest for ``lanczos`` (it works on ``JᵀJ``: ``σ²`` carries ``eps σ_max²``, so
``σ`` carries ``√eps σ_max``). Past an operator's numerical rank, the values are below the floor.

Non-finite operators: a 2-D tensor with NaN or Inf, or an operator whose first product is not finite (built at a
point where the state or input is not finite, or overflowing), is refused with a ValueError naming it, instead of a
LAPACK or ARPACK error.

``spectral_radius`` and ``spectral_norm`` return floats: ``nan`` (and a :class:`hamgrad.ConvergenceWarning`) when
their method did not converge.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_choice, check_finite, check_generator, check_int_range, check_positive, check_steps
from ..grad import ConvergenceWarning
from .operators import LinearOperator

__all__ = ["Spectrum", "eigvals", "svdvals", "spectral_radius", "spectral_norm", "default_tol", "DENSE_MAX",
           "EIG_METHODS", "SVD_METHODS"]

EIG_METHODS = ("auto", "dense", "arnoldi", "power")
SVD_METHODS = ("auto", "dense", "lanczos")
DENSE_MAX = 1024


def default_tol(dtype: torch.dtype) -> float:
    """The default relative residual tolerance: 1e-8 in float64, 1e-4 in lower precisions."""
    return 1e-8 if dtype == torch.float64 else 1e-4


@dataclass
class Spectrum:
    """The top-k of a spectrum.

    Attributes:
        values: CPU tensor of length k: complex eigenvalues by decreasing modulus, or real singular values in
            decreasing order. ``nan`` where a method found no converged value (``power`` on a complex pair).
        residuals: CPU float64 tensor of length k, each value's relative residual (see the module docstring).
        matvecs: operator or transpose applications to one vector.
        converged: every value is certified (above ``noise_floor``) and its residual is at most ``tol`` (for
            ``dense``, a direct method, only the first).
        method, seconds, tol: how it was computed.
        noise_floor: the modulus at or below which a value is the method's rounding noise (see the module
            docstring): such a value is reported but not certified, whatever its residual says.
    """

    values: torch.Tensor
    residuals: torch.Tensor
    matvecs: int
    converged: bool
    method: str
    seconds: float
    tol: float
    noise_floor: float = 0.0

    @property
    def certified(self) -> torch.Tensor:
        """Bool tensor of length k: the value stands above the noise floor (or the spectrum is exactly zero)."""
        return (self.values.abs() > self.noise_floor) | (self.noise_floor == 0)

    def to_dict(self) -> dict:
        """Plain data; complex values as ``[re, im]`` pairs."""
        if self.values.is_complex():
            values = [[float(v.real), float(v.imag)] for v in self.values]
        else:
            values = [float(v) for v in self.values]
        return {"values": values, "residuals": [float(r) for r in self.residuals], "matvecs": self.matvecs,
                "converged": self.converged, "method": self.method, "seconds": self.seconds, "tol": self.tol,
                "noise_floor": self.noise_floor, "certified": [bool(c) for c in self.certified]}


def _finish(values: torch.Tensor, res: torch.Tensor, counted, method: str, start: float, tol: float,
            floor_factor: float) -> Spectrum:
    """The :class:`Spectrum` of computed values: the noise floor is ``floor_factor`` times the largest modulus, and
    ``converged`` holds the certified values' residuals to ``tol``."""
    top = values.abs().nan_to_num(nan=0.0)
    floor = floor_factor * float(top.max()) if len(top) else 0.0
    spec = Spectrum(values, res.double(), counted.count, True, method, time.perf_counter() - start, tol, floor)
    spec.converged = bool(spec.certified.all()) and (method == "dense" or bool((res <= tol).all()))
    return spec


class _Counted:
    """Counts the vectors an operator is applied to (in either direction); the first product is checked finite."""

    def __init__(self, op: LinearOperator):
        self.op, self.count, self.checked = op, 0, False

    def finite(self, Y, what: str = "its product with a start vector"):
        """``Y``, checked finite the first time a product comes back (one host sync per spectrum)."""
        if not self.checked:
            self.checked = True
            check_finite(Y if isinstance(Y, torch.Tensor) else torch.as_tensor(Y), f"{self.op.name}: {what}",
                         " (the operator is built at a point where the state or input is not finite, or its products"
                         " overflow)")
        return Y

    def apply(self, V):
        self.count += V.shape[0]
        return self.finite(self.op.apply(V))

    def rapply(self, U):
        self.count += U.shape[0]
        return self.finite(self.op.rapply(U))

    def gram(self, V):
        self.count += 2 * V.shape[0]
        return self.finite(self.op.gram(V))

    def cogram(self, U):
        self.count += 2 * U.shape[0]
        return self.finite(self.op.cogram(U))


# ---------------------------------------------------------------------- argument checks
def _check_operator(J, name: str = "J") -> LinearOperator:
    """``J`` as a :class:`LinearOperator` (a 2-D tensor is wrapped)."""
    if isinstance(J, torch.Tensor):
        op = LinearOperator.from_dense(J, name)
        check_finite(J, name)
        return op
    if not isinstance(J, LinearOperator):
        raise TypeError(f"{name} must be a hamgrad LinearOperator (hg.jacobian(...)) or a 2-D tensor, "
                        f"got {type(J).__name__}")
    return J


def _check_tol(tol, J: LinearOperator) -> float:
    """``tol``, or the default for ``J``'s dtype."""
    return default_tol(J.dtype) if tol is None else check_positive(tol, "tol")


def _generator(generator) -> torch.Generator:
    """The start vectors' generator: the given one, or a CPU generator seeded with 0."""
    return check_generator(generator) or torch.Generator().manual_seed(0)


def _randn(shape, generator: torch.Generator, J: LinearOperator) -> torch.Tensor:
    """Seeded Gaussian vectors, drawn on the generator's device and moved to the operator's."""
    return torch.randn(shape, generator=generator, device=generator.device, dtype=J.dtype).to(J.device)


# ---------------------------------------------------------------------- eigenvalues
def _sort_by_modulus(values: torch.Tensor, *rest):
    """``values`` by decreasing modulus, and the columns of ``rest`` in the same order."""
    order = torch.argsort(values.abs(), descending=True, stable=True)
    return (values[order], *(r[..., order] for r in rest))


def _eig_residuals(counted: _Counted, values: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``‖Jv − λv‖ / |λ|`` for unit columns ``v`` of ``vectors`` (complex), through the operator (real parts and
    imaginary parts as one block)."""
    k = vectors.shape[1]
    vectors = vectors / vectors.norm(dim=0, keepdim=True)
    block = torch.cat([vectors.real.mT, vectors.imag.mT])
    images = counted.apply(block.to(counted.op.dtype))
    Jv = (images[:k] + 1j * images[k:]).mT
    res = (Jv - values.to(Jv.dtype) * vectors.to(Jv.dtype)).norm(dim=0)
    return (res / values.abs().clamp_min(torch.finfo(res.real.dtype).tiny)).double().cpu()


def _eig_dense(J, counted, k):
    """Top-k eigenvalues of the dense matrix and their residuals."""
    A = counted.finite(J.dense(), "the dense matrix")
    counted.count += min(J.shape)
    values, vectors = torch.linalg.eig(A)
    values, vectors = _sort_by_modulus(values, vectors)
    values, vectors = values[:k], vectors[:, :k]
    vectors = vectors / vectors.norm(dim=0, keepdim=True)
    res = (A.to(vectors.dtype) @ vectors - values * vectors).norm(dim=0)
    res = (res / values.abs().clamp_min(torch.finfo(res.dtype).tiny)).double().cpu()
    return values.cpu(), res


def _eig_arnoldi(J, counted, k, tol, maxiter, ncv, block, generator):
    """Top-k eigenvalues by ARPACK (``nan`` and residual ``inf`` for those it did not find).

    With ``block > 1``, ARPACK runs from ``block`` independent start vectors and the eigenvalues are the Ritz values
    of ``J`` on the span of all the runs' Ritz vectors (Rayleigh–Ritz): one start vector sees a single direction of
    each eigenspace, so a value of multiplicity m shows up m times only when ``block >= m``. When ARPACK finds the
    range of ``J`` exhausted (its "starting vector is zero": ``J`` is zero or of low rank), the spectrum comes from
    :func:`_eig_low_rank`."""
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator as SciPyOperator, eigs

    n = J.shape[0]
    if k > n - 2:
        raise ValueError(f"method='arnoldi' needs k <= n - 2 = {n - 2} (ARPACK), got k={k}; use method='dense'")
    sp = J.to_scipy()

    def counted_mv(v):
        counted.count += 1
        return counted.finite(sp.matvec(v))

    op = SciPyOperator(sp.shape, matvec=counted_mv, dtype=sp.dtype)
    found_values, found_vectors = [], []
    for _ in range(block):
        v0 = _randn((n,), generator, J).cpu().numpy().astype(sp.dtype)
        try:
            values, vectors = eigs(op, k=k, which="LM", v0=v0, tol=tol, maxiter=maxiter, ncv=ncv)
        except ArpackNoConvergence as err:
            values, vectors = err.eigenvalues, err.eigenvectors
        except ArpackError as err:
            if "error -9:" not in str(err):  # -9: "starting vector is zero", the range of J is exhausted
                raise
            return _eig_low_rank(J, counted, k, ncv or min(n, max(2 * k + 1, 20)), generator)
        found_values.append(torch.as_tensor(np.asarray(values, dtype=np.complex128)))
        found_vectors.append(torch.as_tensor(np.asarray(vectors, dtype=np.complex128)).reshape(n, -1))
    if block == 1:
        values, vectors = _sort_by_modulus(found_values[0], found_vectors[0])
        res = _eig_residuals(counted, values.to(J.device), vectors.to(J.device)) if len(values) else torch.zeros(0)
    else:
        values, res = _rayleigh_ritz(J, counted, torch.cat(found_vectors, dim=1), k, 1e-3)
    missing = k - len(values)  # ARPACK gave up before finding all k
    values = torch.cat([values, torch.full((missing,), complex("nan+nanj"), dtype=values.dtype)])
    res = torch.cat([res, torch.full((missing,), math.inf, dtype=torch.float64)])
    return values.to(torch.complex128), res


def _rayleigh_ritz(J, counted, X: torch.Tensor, k: int, cutoff: float) -> tuple:
    """The top-k Ritz values of ``J`` on the span of the (complex) columns of ``X`` and their residuals
    ``‖Jv − θv‖ / |θ|``: ``Q`` an orthonormal real basis of the span, ``θ`` the eigenvalues of ``Qᵀ J Q``. Directions
    of ``X`` whose singular value is below ``cutoff`` times the largest are dropped: between two runs' versions of
    the same eigenvector, only their errors differ, and such a direction would add a spurious Ritz value."""
    real = torch.cat([X.real, X.imag], dim=1).to(device=J.device, dtype=torch.float64)
    U, S, _ = torch.linalg.svd(real, full_matrices=False)
    Q = U[:, S > S[0] * cutoff] if len(S) and S[0] > 0 else U[:, :0]
    JQ = counted.apply(Q.mT.to(J.dtype)).mT.double()
    theta, Y = torch.linalg.eig(Q.mT @ JQ)
    theta, Y = _sort_by_modulus(theta, Y)
    theta, Y = theta[:k], Y[:, :k]
    Y = Y / Y.norm(dim=0, keepdim=True)  # Q Y has unit columns
    res = (JQ.to(Y.dtype) @ Y - theta * (Q.to(Y.dtype) @ Y)).norm(dim=0)
    return theta.cpu(), (res / theta.abs().clamp_min(torch.finfo(torch.float64).tiny)).double().cpu()


def _eig_low_rank(J, counted, k, p, generator):
    """The top-k eigenvalues of an operator of rank below ``p`` (zero included): ``Q``, an orthonormal basis of the
    range of ``J`` from ``J Ω`` (``Ω`` ``p`` random vectors), holds every eigenvector of a nonzero eigenvalue
    (``v = Jv / λ``), so those are the Ritz values on ``Q`` and the rest are zeros (residual 0). Raises the ARPACK
    error's meaning as a RuntimeError when ``J Ω`` has full rank (the range is not exhausted after all)."""
    n = J.shape[0]
    p = min(n, p + 10)
    Y = counted.apply(_randn((p, n), generator, J)).mT.double()
    S = torch.linalg.svdvals(Y)
    rank = int((S > S[0] * p * torch.finfo(J.dtype).eps).sum()) if S[0] > 0 else 0
    if rank == p:
        raise RuntimeError("eigvals(method='arnoldi'): ARPACK found the operator's range exhausted, but it has rank "
                           f">= {p}; try another generator or method='dense'")
    if rank == 0:
        values, res = torch.zeros(0, dtype=torch.complex128), torch.zeros(0, dtype=torch.float64)
    else:
        values, res = _rayleigh_ritz(J, counted, torch.linalg.svd(Y, full_matrices=False)[0][:, :rank].cpu()
                                     .to(torch.complex128), k, 0.0)
    missing = k - len(values)
    return (torch.cat([values.to(torch.complex128), torch.zeros(missing, dtype=torch.complex128)]),
            torch.cat([res, torch.zeros(missing, dtype=torch.float64)]))


def _eig_power(J, counted, tol, maxiter, generator):
    """Power iteration with the Rayleigh quotient ``θ = vᵀJv`` and the residual ``‖Jv − θv‖ / ‖Jv‖`` (the sine of
    the angle between ``v`` and ``Jv``; at convergence ``‖Jv‖ = |θ|``). The quotient of a real vector is real, so
    when the dominant eigenvalues are a complex pair (or ``λ`` and ``−λ``) the residual stays large: the value is
    then ``nan`` with ``converged=False``, never a wrong number."""
    v = _randn((1, J.shape[1]), generator, J)
    v = v / v.norm()
    res, theta = math.inf, math.nan
    for _ in range(maxiter):
        w = counted.apply(v)
        norm = float(w.norm())
        if norm == 0.0:  # Jv = 0: v is an eigenvector of eigenvalue 0
            theta, res = 0.0, 0.0
            break
        theta = float((w * v).sum())
        res = float((w - theta * v).norm()) / norm
        if res <= tol:
            break
        v = w / norm
    value = theta if res <= tol else math.nan
    return torch.tensor([complex(value, 0.0)], dtype=torch.complex128), torch.tensor([res], dtype=torch.float64)


def eigvals(J, k: int = 6, method: str = "auto", *, tol: float | None = None, maxiter: int | None = None,
            ncv: int | None = None, block: int | None = None, generator: torch.Generator | None = None) -> Spectrum:
    """The k eigenvalues of largest modulus of a square operator.

    Args:
        J: a square :class:`LinearOperator` (e.g. ``hg.jacobian(F, h, x, wrt="h")``) or a 2-D tensor.
        k: how many (1 <= k <= n; ``power`` finds k = 1 only, ``arnoldi`` k <= n - 2).
        method: ``"auto" | "dense" | "arnoldi" | "power"`` (see the module docstring).
        tol: relative residual tolerance (default :func:`default_tol` of ``J.dtype``); ARPACK's ``tol`` for
            ``arnoldi``.
        maxiter: iteration limit (``arnoldi``: ARPACK restarts, default ``10 n``; ``power``: products, default 1000).
        ncv: ``arnoldi`` basis size (ARPACK's ``ncv``; default ``min(n, max(2k + 1, 20))``).
        block: ``arnoldi`` start vectors, default ``min(k, 2)``: ARPACK runs once from each and the values are the
            Ritz values on all the runs' Ritz vectors together, which finds an eigenvalue of multiplicity up to
            ``block`` as many times (one start vector finds it once: a block-diagonal Jacobian with equal blocks has
            every eigenvalue repeated). Costs ``block`` times the products.
        generator: seeds the start vectors (default: a CPU generator seeded with 0).

    Returns:
        :class:`Spectrum` with complex ``values`` in decreasing modulus.

    Raises:
        TypeError, ValueError: for an argument out of range (the message names it), or an operator that is not
            finite (a matrix with NaN/Inf, or NaN/Inf products).

    Warns:
        hamgrad.ConvergenceWarning: when ``power`` did not converge (its value is then ``nan``).
    """
    J = _check_operator(J)
    if J.shape[0] != J.shape[1]:
        raise ValueError(f"eigvals needs a square operator, J has shape {J.shape}")
    n = J.shape[0]
    check_choice(method, "method", EIG_METHODS)
    check_int_range(k, "k", 1, n, "the operator's size")
    tol = _check_tol(tol, J)
    if method == "auto":
        method = "dense" if n <= DENSE_MAX else "arnoldi"
    if method == "power" and k != 1:
        raise ValueError(f"method='power' finds the dominant eigenvalue only: k must be 1, got {k}")
    if maxiter is not None:
        check_steps(maxiter, "maxiter")
    if ncv is not None:
        check_int_range(ncv, "ncv", k + 1, n, "k < ncv <= the operator's size")
    block = min(k, 2) if block is None else check_int_range(block, "block", 1, n, "the operator's size")
    generator = _generator(generator)
    counted = _Counted(J)
    start = time.perf_counter()
    if method == "dense":
        values, res = _eig_dense(J, counted, k)
    elif method == "arnoldi":
        values, res = _eig_arnoldi(J, counted, k, tol, maxiter, ncv, block, generator)
    else:
        values, res = _eig_power(J, counted, tol, 1000 if maxiter is None else maxiter, generator)
    spec = _finish(values.to(torch.complex128), res, counted, method, start, tol, n * torch.finfo(J.dtype).eps)
    if method == "power" and not spec.converged:
        warnings.warn(f"eigvals(method='power') did not converge after {spec.matvecs} products (relative residual "
                      f"{float(res[0]):.3g} > tol {tol:.1g}): the value is nan. The dominant eigenvalues may be a "
                      "complex pair, λ and −λ, or close in modulus; use method='arnoldi'", ConvergenceWarning,
                      stacklevel=2)
    return spec


# ---------------------------------------------------------------------- singular values
def _svd_dense(J, counted, k):
    """Top-k singular values of the dense matrix and their residuals."""
    A = counted.finite(J.dense(), "the dense matrix")
    counted.count += min(J.shape)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    U, S, V = U[:, :k], S[:k], Vh[:k].mT
    res = (A.mT @ U - V * S).norm(dim=0) / S.clamp_min(torch.finfo(S.dtype).tiny)
    return S.double().cpu(), res.double().cpu()


def _gram(F: torch.Tensor, FW: torch.Tensor | None) -> torch.Tensor:
    """``F W Fᵀ`` (``FW = F W``; ``None`` for ``W = I``), symmetrised, as float64 (computed in ``F``'s dtype: at
    long vectors a float64 copy would cost more than the product)."""
    S = (F @ (F if FW is None else FW).mT).double()
    return (S + S.mT) / 2


def _orthonormalizer(S: torch.Tensor, dtype: torch.dtype) -> tuple:
    """``(L, r)`` from the Gram matrix ``S = F W Fᵀ`` (:func:`_gram`): the rows of ``L F`` (``L`` in ``dtype``) span
    the rows of ``F`` and are orthonormal in ``⟨a, b⟩ = a W bᵀ``; ``r`` holds the square roots of the eigenvalues of
    ``S`` (a tiny one flags a breakdown)."""
    lam, U = torch.linalg.eigh(S)
    r = lam.clamp_min(0).sqrt()
    return (U / r.clamp_min(torch.finfo(torch.float64).tiny)).mT.to(dtype), r


def _resolved(r: torch.Tensor, floor, dtype: torch.dtype) -> torch.Tensor:
    """Which of the norms ``r`` from :func:`_orthonormalizer` stand out from the rounding: above ``floor`` and above
    that of the Gram matrix's eigenvalues (computed in ``dtype``, they carry about ``eps`` times the largest, so
    ``r`` carries ``√eps`` times the largest: 10 ``√eps`` here)."""
    return r > max(float(floor), 10 * math.sqrt(torch.finfo(dtype).eps) * float(r.max()))


def _project_out(W: torch.Tensor, V: torch.Tensor, VW: torch.Tensor, image, lo: int = 0) -> tuple:
    """``(F, FW, coef, S)``: ``F``, ``W`` minus its projection on the rows of ``V`` (orthonormal in ``⟨a, b⟩ = a M bᵀ``,
    with ``VW = V M``), its image ``FW = image(F)`` (``F M``; ``None`` for ``M = I``), the coefficients and the Gram
    matrix ``S = F M Fᵀ`` (:func:`_gram`, for the residuals and :func:`_orthonormalizer`), by classical
    Gram–Schmidt: a first pass against the rows from ``lo`` on (where a Lanczos block's image lies in exact arithmetic:
    its own block and the one before it; ``lo = 0``: all rows), then one against all rows, and a third (DGKS) only if
    the second removed more than it left in some row. Each pass over all rows reads the basis twice: at long vectors
    that traffic is what this costs, and the narrow first pass halves it."""
    coef, F = W.new_zeros(W.shape[0], V.shape[0]), None
    for i, rows in enumerate([slice(lo, None)] + [slice(0, None)] * (2 if lo > 0 else 1)):
        c = (W if F is None else F) @ VW[rows].mT
        F = torch.addmm(W, c, V[rows], alpha=-1) if F is None else F.addmm_(c, V[rows], alpha=-1)
        coef[:, rows] += c
        if i > 0:  # after the second pass: a third only if the second removed more than it left (M's norm) in a row
            FW = image(F)
            S = _gram(F, FW)
            if bool(((c.double() ** 2).sum(1) <= S.diagonal()).all()):
                break
    return F, FW, coef, S


def _lanczos(op_apply, n, k, tol, block, ncv, maxiter, generator, J, inner=None):
    """Top-k eigenpairs of an operator ``A`` that is self-adjoint and positive semi-definite in the inner product
    ``⟨a, b⟩ = a W bᵀ`` (``inner``: rows mapped by ``W``, symmetric positive semi-definite; ``None``: ``W = I``), by
    block Lanczos with thick restarts (Wu–Simon; the symmetric Krylov–Schur) and full reorthogonalisation.

    ``op_apply`` maps the ``W``-images ``QW`` of a block of basis rows ``Q`` to ``QAᵀ`` (so ``A = K W`` needs only
    ``K``). The basis ``V`` (the first ``m`` rows of a buffer of ``ncv`` rows, ``W``-orthonormal) satisfies
    ``A Vᵀ = Vᵀ T + Fᵀ E``, with ``T = V W A Vᵀ`` assembled from the reorthogonalisation coefficients and ``F`` the
    residual block of the newest block. A Ritz pair ``(θ, Vᵀy)`` has residual ``‖Fᵀ y_last‖_W`` (``y_last`` the
    entries of ``y`` on the newest block), so testing convergence costs no product. When the buffer is full the
    basis is cut to its ``keep`` best Ritz vectors (``T`` becomes their diagonal) and ``F`` continues it. If ``F``
    vanishes (an invariant subspace) the basis continues with random directions; if ``W`` sees none of those outside
    the basis (a singular ``W`` whose range the basis spans), the Ritz values are the whole nonzero spectrum and the
    rest of the top k are zeros. Returns ``(theta, residuals)``: the top-k Ritz values and their residuals
    ``‖Av − θv‖_W`` (``nan`` and ``inf`` for values that ``maxiter`` left unreached).
    """
    ncv = min(ncv, n)
    keep = min(max(k + block, ncv // 2), ncv - block)
    image = (lambda F: None) if inner is None else inner
    basis = torch.empty(ncv, n, dtype=J.dtype, device=J.device)
    wbasis = basis if inner is None else torch.empty_like(basis)  # the basis rows mapped by W
    spare = torch.empty(keep, n, dtype=J.dtype, device=J.device)  # for the thick restarts
    T = torch.zeros(ncv, ncv, dtype=torch.float64, device=J.device)

    def store(L, F, FW, m):
        """Put the rows of ``L F`` (and their images ``L FW``) at row ``m`` of the basis; return them (views)."""
        rows = slice(m, m + L.shape[0])
        torch.mm(L, F, out=basis[rows])
        if inner is not None:
            torch.mm(L, FW, out=wbasis[rows])
        return basis[rows], wbasis[rows]

    def restart(buffer, Y):
        """The rows of ``buffer[:m]`` combined by the columns of ``Y`` into its first ``keep`` rows."""
        torch.mm(Y.mT, buffer[:Y.shape[0]], out=spare)
        buffer[:keep] = spare

    start = _randn((block, n), generator, J)
    start_image = image(start)
    Q, QW = store(_orthonormalizer(_gram(start, start_image), J.dtype)[0], start, start_image, 0)
    m, exhausted = block, False
    # q0: the newest block's first row; lo: the first row its image has components on in exact arithmetic (those of
    # the block before it; 0 after the start, a restart or a breakdown)
    q0 = lo = 0
    theta = res = None
    for _ in range(maxiter):
        b = Q.shape[0]
        AQ = op_apply(QW)
        F, FW, coef, S = _project_out(AQ, basis[:m], wbasis[:m], image, lo)
        T[m - b:m, :m] = coef.double()
        T[:m, m - b:m] = coef.double().mT
        evals, evecs = torch.linalg.eigh((T[:m, :m] + T[:m, :m].mT) / 2)
        evals, evecs = evals.flip(0), evecs.flip(1)
        y = evecs[m - b:m, :k]
        # ‖Fᵀy‖_W² = yᵀ (F W Fᵀ) y
        theta, res = evals[:k], (S @ y * y).sum(0).clamp_min(0).sqrt()
        if m == n or (m >= k and bool((res <= tol * theta.abs()).all())):
            break
        if m + block > ncv:  # thick restart
            Y = evecs[:, :keep].to(J.dtype)
            restart(basis, Y)
            if inner is not None:
                restart(wbasis, Y)
            T.zero_()
            T[:keep, :keep] = torch.diag(evals[:keep])
            m, q0 = keep, 0  # the next block's image has components on every kept Ritz vector
        F, FW, S = F[: n - m], None if FW is None else FW[: n - m], S[: n - m, : n - m]
        L, r = _orthonormalizer(S, J.dtype)
        if not bool(_resolved(r, 100 * torch.finfo(J.dtype).eps * abs(float(evals[0])), J.dtype).all()):
            # breakdown (an invariant subspace): continue with random directions, keeping those W still sees
            R0 = _randn((F.shape[0], n), generator, J)
            seen_before = _gram(R0, image(R0)).diagonal().clamp_min(0).sqrt()
            F, FW, _, S = _project_out(R0, basis[:m], wbasis[:m], image)
            L, r = _orthonormalizer(S, J.dtype)
            q0 = 0  # the image of the new directions is checked against the whole basis
            # W sees a direction if its norm stands out from the projection's rounding (eps times the start's norm)
            seen = _resolved(r, 1e3 * torch.finfo(J.dtype).eps * seen_before.max(), J.dtype)
            if not bool(seen.any()):  # W sees nothing outside the basis: its Ritz values are the whole spectrum
                exhausted = True
                break
            L = L[seen]
        Q, QW = store(L, F, FW, m)
        q0, lo = m, q0
        m += Q.shape[0]
    missing = k - theta.shape[0]
    if missing > 0:  # fewer Ritz values than asked: past the rank (zeros, exactly) or not reached (maxiter)
        theta = torch.cat([theta, theta.new_full((missing,), 0.0 if exhausted else math.nan)])
        res = torch.cat([res, res.new_full((missing,), 0.0 if exhausted else math.inf)])
    return theta, res


def _svd_lanczos(J, counted, k, tol, block, ncv, maxiter, generator):
    """Top-k singular values by :func:`_lanczos` on ``JᵀJ`` or ``JJᵀ`` (the smaller side), or, for ``J = G M``
    composed through a smaller inner space, on ``M Mᵀ GᵀG`` there (self-adjoint in ``⟨a, b⟩ = a GᵀG bᵀ``: its
    eigenvalues are those of ``JJᵀ``, and ``‖·‖_{GᵀG}`` residuals are residuals of ``JJᵀ`` at ``u = G v``)."""
    m, n = J.shape
    inner = None
    if J.factors is not None and J.factors[1].shape[0] < min(m, n):
        G, M = J.factors
        counted.op = M  # two matvecs per Krylov vector (M Mᵀ and GᵀG together are one J and one Jᵀ)
        side, op_apply, inner = M.shape[0], counted.cogram, G.gram
    elif n <= m:  # JᵀJ on the input side
        side, op_apply = n, counted.gram
    else:  # JJᵀ on the output side
        side, op_apply = m, counted.cogram
    b = min(block, side)
    ncv = min(side, max(ncv, k + 2 * b))
    theta, res = _lanczos(op_apply, side, k, tol, b, ncv, maxiter, generator, J, inner)
    theta = theta.clamp_min(0)
    sigma = theta.sqrt()
    # ‖JᵀJ v − σ² v‖ / σ² = ‖Jᵀu − σv‖ / σ with u = Jv / σ
    rel = res / theta.clamp_min(torch.finfo(torch.float64).tiny)
    return sigma.cpu(), rel.cpu()


def svdvals(J, k: int = 6, method: str = "auto", *, tol: float | None = None, maxiter: int | None = None,
            block: int | None = None, ncv: int | None = None, generator: torch.Generator | None = None) -> Spectrum:
    """The k largest singular values of an operator.

    Args:
        J: a :class:`LinearOperator` (e.g. ``hg.analysis.unrolled_jacobian(s, x, steps=6)`` for ``∂y/∂x``) or a 2-D
            tensor.
        k: how many (1 <= k <= min(m, n)).
        method: ``"auto" | "dense" | "lanczos"``.
        tol: relative residual tolerance ``‖Jᵀu − σv‖ / σ`` (default :func:`default_tol` of ``J.dtype``); each value
            is then within ``tol / (1 + √(1 − tol)) ≈ tol/2`` (relative) of a singular value of ``J``. A looser
            tolerance is much cheaper for clustered values: σ_max to 1e-3 needs a fraction of the products that six
            close values to 1e-6 need.
        maxiter: ``lanczos`` block iterations (each applies ``J`` and ``Jᵀ`` to ``block`` vectors; default 1000).
        block: ``lanczos`` block size, default ``min(k, 2)``. The vectors of a block go through the operator
            together (cheaper per vector), and a block of b vectors finds values of multiplicity up to b, which a
            single vector misses (it can also skip a value in a tight cluster): use a block at least as large as
            the multiplicities you expect. Larger blocks need more products in all.
        ncv: ``lanczos`` basis size before a thick restart (default ``max(64, 4(k + block))``, capped by the size;
            the basis is ``ncv`` vectors of the side the search runs on: the operator's smaller side, or the inner
            space of a composition, where a second buffer holds their ``GᵀG`` images).
        generator: seeds the start block (default: a CPU generator seeded with 0).

    Returns:
        :class:`Spectrum` with real ``values`` in decreasing order; past the numerical rank they fall below
        ``noise_floor`` and are not ``certified``.

    Raises:
        TypeError, ValueError: for an argument out of range (the message names it), or an operator that is not
            finite (a matrix with NaN/Inf, or NaN/Inf products).
    """
    J = _check_operator(J)
    check_choice(method, "method", SVD_METHODS)
    check_int_range(k, "k", 1, min(J.shape), "the operator's smaller side")
    tol = _check_tol(tol, J)
    if method == "auto":
        method = "dense" if max(J.shape) <= DENSE_MAX else "lanczos"
    generator = _generator(generator)
    counted = _Counted(J)
    start = time.perf_counter()
    if method == "dense":
        values, res = _svd_dense(J, counted, k)
    else:
        block = min(k, 2) if block is None else check_int_range(block, "block", 1, min(J.shape), "the smaller side")
        ncv = max(64, 4 * (k + block)) if ncv is None else check_steps(ncv, "ncv")
        if maxiter is not None:
            check_steps(maxiter, "maxiter")
        values, res = _svd_lanczos(J, counted, k, tol, block, ncv, 1000 if maxiter is None else maxiter, generator)
    eps = torch.finfo(J.dtype).eps
    return _finish(values.double(), res, counted, method, start, tol,
                   max(J.shape) * eps if method == "dense" else 10 * math.sqrt(eps))


# ---------------------------------------------------------------------- scalars
def _scalar(spectrum: Spectrum, what: str) -> float:
    """The top value's modulus, or ``nan`` with a warning if the spectrum did not converge."""
    if not spectrum.converged:
        warnings.warn(f"{what}: method {spectrum.method!r} did not converge (relative residual "
                      f"{float(spectrum.residuals[0]):.3g} > tol {spectrum.tol:.1g} after {spectrum.matvecs} "
                      f"matvecs); returning nan", ConvergenceWarning, stacklevel=3)
        return math.nan
    return float(spectrum.values[0].abs())


def spectral_radius(J, method: str = "auto", **kwargs) -> float:
    """``ρ(J) = max |λ|``, the spectral radius.

    Args:
        J: a square :class:`LinearOperator` or 2-D tensor.
        method: as in :func:`eigvals`.
        **kwargs: further arguments of :func:`eigvals` (``tol``, ``maxiter``, ``generator``, ...).

    Returns:
        A float; ``nan`` with a :class:`hamgrad.ConvergenceWarning` if the eigenvalue did not converge.

    Raises:
        TypeError: see :func:`eigvals`.
        ValueError: see :func:`eigvals`.
    """
    return _scalar(eigvals(J, k=1, method=method, **kwargs), "spectral_radius")


def spectral_norm(J, method: str = "auto", **kwargs) -> float:
    """``‖J‖₂ = σ_max``, the spectral norm.

    Args:
        J: a :class:`LinearOperator` or 2-D tensor.
        method: as in :func:`svdvals`.
        **kwargs: further arguments of :func:`svdvals` (``tol``, ``maxiter``, ``generator``, ...).

    Returns:
        A float; ``nan`` with a :class:`hamgrad.ConvergenceWarning` if the singular value did not converge.

    Raises:
        TypeError: see :func:`svdvals`.
        ValueError: see :func:`svdvals`.
    """
    return _scalar(svdvals(J, k=1, method=method, **kwargs), "spectral_norm")
