"""Every spectrum method against dense torch.linalg (and NumPy/SciPy) references, in float64 at small sizes."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch.func import jacrev

import hamgrad as hg
from hamgrad.analysis import LinearOperator, eigvals, jacobian, spectral_norm, spectral_radius, svdvals
from hamgrad.fixed_point import flatten_state, state_residual, unflatten_state

K_TOP = 6


def _matrix(shape, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device)


def _assert_eigs_match(spec, A, k, rtol=1e-6):
    """The k computed eigenvalues have the reference's top-k moduli and each is one of the reference eigenvalues."""
    ref = torch.linalg.eigvals(A.cpu())
    ref_mod = ref.abs().sort(descending=True).values[:k]
    np.testing.assert_allclose(spec.values.abs().numpy(), ref_mod.numpy(), rtol=rtol)
    for lam in spec.values:
        assert float((ref - lam).abs().min()) <= rtol * float(lam.abs())


def _assert_svds_match(spec, A, k, rtol=1e-6):
    ref = torch.linalg.svdvals(A.cpu())[:k]
    np.testing.assert_allclose(spec.values.numpy(), ref.numpy(), rtol=rtol)


# ---------------------------------------------------------------------- random matrices wrapped as operators
@pytest.mark.parametrize("method", ["dense", "arnoldi", "auto"])
def test_eigvals_of_random_matrices(device, method):
    A = _matrix((60, 60), 0, device)
    spec = eigvals(LinearOperator.from_dense(A), k=K_TOP, method=method, tol=1e-12)
    _assert_eigs_match(spec, A, K_TOP)
    assert spec.converged and spec.values.dtype == torch.complex128
    assert spec.method == ("dense" if method == "auto" else method)
    assert spec.matvecs > 0 and (spec.residuals <= 1e-10).all()


@pytest.mark.parametrize("shape", [(80, 50), (50, 80), (70, 70)])
@pytest.mark.parametrize("method,block", [("dense", None), ("lanczos", 1), ("lanczos", 3), ("lanczos", None)])
def test_svdvals_of_random_matrices(device, shape, method, block):
    A = _matrix(shape, 1, device)
    spec = svdvals(LinearOperator.from_dense(A), k=K_TOP, method=method, tol=1e-10, block=block)
    _assert_svds_match(spec, A, K_TOP)
    assert spec.converged and spec.values.dtype == torch.float64
    np.testing.assert_allclose(spec.values.numpy(), np.linalg.svd(A.cpu().numpy(), compute_uv=False)[:K_TOP],
                               rtol=1e-6)


def test_lanczos_restarts_on_a_large_clustered_spectrum():
    # 400 singular values with a slowly decaying top: the basis (ncv=24) must restart many times.
    g = torch.Generator().manual_seed(2)
    U, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=torch.float64))
    s = 1.0 / (1.0 + 0.02 * torch.arange(300, dtype=torch.float64))
    A = U[:, :300] @ torch.diag(s) @ V.T
    spec = svdvals(A, k=K_TOP, method="lanczos", tol=1e-10, ncv=24)
    assert spec.converged and spec.matvecs > 2 * 24
    np.testing.assert_allclose(spec.values.numpy(), s[:K_TOP].numpy(), rtol=1e-8)


@pytest.mark.parametrize("weighted", [False, True])
def test_reorthogonalisation_against_a_dense_projection(weighted):
    # _project_out's narrow first pass, its full pass and its DGKS repeat, held against the dense projection
    # W − (W M Vᵀ) V on a basis V orthonormal in ⟨a, b⟩ = a M bᵀ
    from hamgrad.analysis.spectra import _project_out

    n, m, lo = 200, 30, 26
    g = torch.Generator().manual_seed(11)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    Mw = B @ B.T / n + torch.eye(n, dtype=torch.float64) if weighted else torch.eye(n, dtype=torch.float64)
    L = torch.linalg.cholesky(Mw)  # M = L Lᵀ: the rows of V = (L⁻ᵀ Q)ᵀ have V M Vᵀ = QᵀQ = I
    Q = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.solve_triangular(L.mT, Q, upper=True).mT.contiguous()
    VM = V @ Mw
    image = (lambda F: F @ Mw) if weighted else (lambda F: None)
    rest = torch.randn(2, n, generator=g, dtype=torch.float64)
    rest = rest - (rest @ VM.mT) @ V  # outside the basis
    # a Lanczos-like image: large on the rows from lo, rounding-sized on the others; then misused: large on those too
    for scale in (1e-9, 1e3):
        c = torch.randn(2, m, generator=g, dtype=torch.float64)
        c[:, :lo] *= scale
        W = c @ V + 1e-3 * rest
        F, FW, coef, S = _project_out(W, V, VM, image, lo)
        torch.testing.assert_close(coef, W @ VM.mT, rtol=1e-9, atol=1e-9 * float(W.norm()))
        torch.testing.assert_close(F, W - (W @ VM.mT) @ V, rtol=0, atol=1e-12 * float(W.norm()))
        # what is left is orthogonal to the basis to rounding relative to its own size (the repeat's job when the
        # full pass removed far more than it left)
        assert float((F @ VM.mT).abs().max()) <= 1e-13 * float(F.norm())
        assert (FW is None) == (not weighted) and (FW is None or torch.equal(FW, F @ Mw))
        torch.testing.assert_close(S, F @ Mw @ F.mT)


def test_default_block_finds_a_repeated_singular_value():
    g = torch.Generator().manual_seed(3)
    U, _ = torch.linalg.qr(torch.randn(120, 120, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(90, 90, generator=g, dtype=torch.float64))
    s = torch.linspace(1.0, 0.1, 90, dtype=torch.float64)
    s[0] = s[1] = 3.0  # multiplicity 2 at the top
    A = U[:, :90] @ torch.diag(s) @ V.T
    spec = svdvals(A, k=3, method="lanczos", tol=1e-10)
    np.testing.assert_allclose(spec.values.numpy(), s[:3].numpy(), rtol=1e-8)


def test_float32_lanczos_meets_its_default_tolerance():
    A = _matrix((300, 200), 3).float()
    spec = svdvals(A, k=4, method="lanczos")
    assert spec.tol == 1e-4 and spec.converged and (spec.residuals <= 1e-4).all()
    _assert_svds_match(spec, A.double(), 4, rtol=1e-4)


def test_looser_tolerance_costs_fewer_matvecs_and_residuals_bound_the_error():
    A = _matrix((300, 300), 4)
    every = torch.linalg.svdvals(A)
    ref = every[:K_TOP]
    counts = []
    for tol in (1e-2, 1e-5, 1e-10):
        spec = svdvals(A, k=K_TOP, method="lanczos", tol=tol)
        assert spec.converged and (spec.residuals <= tol).all()
        # a singular triplet's relative residual bounds the value's relative error
        assert ((spec.values - ref).abs() / ref <= spec.residuals + 1e-12).all()
        # and, more sharply, its relative distance to the nearest singular value (the module docstring's bound)
        nearest = (spec.values[:, None] - every[None, :]).abs().min(dim=1).values / spec.values
        rho = spec.residuals
        assert (nearest <= rho / (1 + (1 - rho).clamp_min(0).sqrt()) + 1e-12).all()
        counts.append(spec.matvecs)
    assert counts[0] < counts[1] < counts[2]


def test_maxiter_reports_non_convergence():
    A = _matrix((300, 300), 5)
    spec = svdvals(A, k=K_TOP, method="lanczos", tol=1e-12, maxiter=3)
    assert not spec.converged and (spec.residuals > 1e-12).any()
    eig = eigvals(A, k=K_TOP, method="arnoldi", tol=1e-12, maxiter=1, ncv=14)
    assert not eig.converged


def test_svdvals_of_a_composition_work_in_its_smaller_inner_space():
    # J = G M through a 30-dimensional inner space, G with a null space of dimension 5 (like y = DC's scale orbit):
    # Lanczos runs on M Mᵀ GᵀG in the GᵀG inner product there, and finds the singular values of the 80 × 70 product.
    g = torch.Generator().manual_seed(9)
    G = torch.randn(80, 25, generator=g, dtype=torch.float64) @ torch.randn(25, 30, generator=g, dtype=torch.float64)
    M = torch.randn(30, 70, generator=g, dtype=torch.float64)
    calls = []

    def gram(V):
        calls.append(V.shape[0])
        return V @ G.T @ G

    opG = LinearOperator(G.shape, lambda V: V @ G.T, lambda U: U @ G, dtype=G.dtype, device="cpu", name="G", gram=gram)
    J = opG @ LinearOperator.from_dense(M, "M")
    for k in (1, K_TOP, 25):  # up to the rank of G M
        spec = svdvals(J, k=k, method="lanczos", tol=1e-10)
        assert spec.converged
        _assert_svds_match(spec, G @ M, k, rtol=1e-8)
    assert calls  # the inner-space path ran
    # past the rank the Krylov space exhausts what GᵀG sees: the remaining values are zeros, reported as such
    spec = svdvals(J, k=27, method="lanczos", tol=1e-10)
    assert (spec.values[25:] == 0).all() and spec.certified.tolist() == [True] * 25 + [False] * 2
    assert not spec.converged  # two of the 27 values are only known to be below the noise floor
    np.testing.assert_allclose(spec.values[:25].numpy(), torch.linalg.svdvals(G @ M)[:25].numpy(), rtol=1e-8)


def test_svdvals_of_the_unrolled_nmf_dy_dx_match_dense():
    s = hg.NMF(rank=4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 32, generator=g, dtype=torch.float64) + 0.1
    h0 = s.init(x, generator=torch.Generator().manual_seed(1))

    def y_of(v):
        h = h0
        for _ in range(3):
            h = s.step(v.reshape(x.shape), h)
        return s.readout(x, h).reshape(-1)

    ref = jacrev(y_of)(x.reshape(-1))
    J = hg.analysis.unrolled_jacobian(s, x, h0, steps=3)
    assert J.factors is not None and J.factors[1].shape[0] == 16 * 4 + 4 * 32
    for op in (J, J.T):  # the transpose is the composition the other way round
        spec = svdvals(op, k=K_TOP, method="lanczos", tol=1e-10)
        assert spec.converged
        _assert_svds_match(spec, ref, K_TOP, rtol=1e-8)


# ---------------------------------------------------------------------- power iteration
def test_power_converges_to_a_real_dominant_eigenvalue(device):
    Q, _ = torch.linalg.qr(_matrix((40, 40), 6))
    lam = torch.linspace(-1.0, 1.0, 40, dtype=torch.float64)
    lam[0] = -3.0  # dominant and negative
    A = (Q @ torch.diag(lam) @ Q.T).to(device)
    spec = eigvals(A, k=1, method="power", tol=1e-10)
    assert spec.converged
    assert abs(complex(spec.values[0]) - (-3.0)) < 1e-8


def test_power_reports_a_complex_dominant_pair_as_not_converged(device):
    # a rotation by 0.3 rad scaled by 1.2 in one plane (eigenvalues 1.2·e^{±0.3i}), contractions elsewhere
    c, s = 1.2 * math.cos(0.3), 1.2 * math.sin(0.3)
    A = torch.diag(torch.linspace(0.1, 0.9, 12, dtype=torch.float64))
    A[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    Q, _ = torch.linalg.qr(_matrix((12, 12), 7))
    A = (Q @ A @ Q.T).to(device)
    with pytest.warns(hg.ConvergenceWarning, match="complex pair"):
        spec = eigvals(A, k=1, method="power", maxiter=500)
    assert not spec.converged
    assert torch.isnan(spec.values.real).all() and spec.residuals[0] > 1e-2
    with pytest.warns(hg.ConvergenceWarning, match="did not converge"):
        assert math.isnan(spectral_radius(A, method="power", maxiter=500))
    # Arnoldi and dense see the pair
    for method in ("arnoldi", "dense"):
        spec = eigvals(A, k=2, method=method, tol=1e-12)
        np.testing.assert_allclose(sorted(spec.values.imag.tolist()), [-s, s], rtol=1e-8)
        assert spectral_radius(A, method=method) == pytest.approx(1.2, rel=1e-10)


# ---------------------------------------------------------------------- the hams' step Jacobians
def _ham_point(s, steps=3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 32, generator=g, dtype=torch.float64) + 0.1
    h = s.init(x, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        h = s.step(x, h)
    return x, h


@pytest.mark.parametrize("s", [hg.NMF(rank=4), hg.SoftVQ(rank=4, inv_t=3.0), hg.CD(rank=4, inv_t=3.0)],
                         ids=lambda s: s.name)
def test_spectra_of_step_jacobians_match_dense(s):
    x, h = _ham_point(s)
    Jh_ref = jacrev(lambda v: flatten_state(s.step(x, unflatten_state(v, h))))(flatten_state(h))
    Jx_ref = jacrev(lambda v: flatten_state(s.step(v.reshape(x.shape), h)))(x.reshape(-1))
    Jh, Jx = jacobian(s, h, x, wrt="h"), jacobian(s, h, x, wrt="x")
    assert Jh.shape == (192, 192) and Jx.shape == (192, 512)
    for method in ("dense", "arnoldi"):
        _assert_eigs_match(eigvals(Jh, k=K_TOP, method=method, tol=1e-12), Jh_ref, K_TOP)
    for J, ref in ((Jh, Jh_ref), (Jx, Jx_ref)):
        for method in ("dense", "lanczos"):
            spec = svdvals(J, k=K_TOP, method=method, tol=1e-10)
            _assert_svds_match(spec, ref, K_TOP)
        assert spectral_norm(J, method="lanczos", tol=1e-10) == pytest.approx(
            float(torch.linalg.matrix_norm(ref, ord=2)), rel=1e-8)


def test_converged_nmf_has_r_unit_eigenvalues_from_the_column_scalings():
    # docs/theory.md §3: scaling column j of D by λ and row j of C by 1/λ leaves DC and F unchanged, so at a fixed
    # point each of the r directions v_j = (D e_j e_jᵀ, −e_j e_jᵀ C) is an eigenvector of J* with eigenvalue 1
    g = torch.Generator().manual_seed(0)
    d, n, r = 16, 32, 4
    x = torch.rand(d, r, generator=g, dtype=torch.float64) @ torch.rand(r, n, generator=g, dtype=torch.float64)
    s = hg.NMF(rank=r)
    h = s.init(x, generator=g)
    with torch.no_grad():
        for _ in range(2000):
            h = s.step(x, h)
    assert float(state_residual(s.step(x, h), h)) < 1e-3
    dense = jacrev(lambda v: flatten_state(s.step(x, unflatten_state(v, h))))(flatten_state(h))  # autograd, dense
    D, C = h
    V = torch.stack([flatten_state((D * (torch.arange(r) == j), -C * (torch.arange(r) == j)[:, None]))
                     for j in range(r)], dim=1)
    V = V / V.norm(dim=0)
    assert float((dense @ V - V).norm(dim=0).max()) < 1e-3  # J* v_j = v_j
    assert int(torch.linalg.matrix_rank(V)) == r
    _, dy = torch.func.jvp(lambda D, C: s.readout(x, (D, C)), (D, C), (D * (torch.arange(r) == 0), -C * (
        torch.arange(r) == 0)[:, None]))
    assert float(dy.abs().max()) < 1e-12  # invisible to y = DC
    # the dense spectrum has r eigenvalues at 1 (to the solve's convergence); eigvals finds all r of them
    ref = torch.linalg.eigvals(dense)
    assert int(((ref - 1).abs() < 1e-3).sum()) >= r
    for method, block in (("dense", None), ("arnoldi", r)):
        spec = eigvals(jacobian(s, h, x), k=r, method=method, tol=1e-10, block=block)
        assert spec.converged
        assert float((spec.values - 1).abs().max()) < 1e-3
        _assert_eigs_match(spec, dense, r)


def test_arnoldi_finds_every_copy_of_a_repeated_eigenvalue():
    # a block-diagonal operator with equal blocks: every eigenvalue twice (the top one a complex pair, so the top
    # four values are λ, λ̄, λ, λ̄); one start vector sees one direction of each eigenspace and finds one copy
    M = _matrix((30, 30), 12)
    A = torch.block_diag(M, M)
    spec = eigvals(A, k=4, method="arnoldi", tol=1e-10)
    assert spec.converged
    _assert_eigs_match(spec, A, 4)
    ref = torch.linalg.eigvals(M)
    top = ref[ref.abs().argmax()]
    assert float((spec.values.abs() - top.abs()).abs().max()) < 1e-8 * float(top.abs())


def test_power_warns_when_it_returns_nan():
    A = torch.block_diag(_matrix((30, 30), 12), _matrix((30, 30), 12))  # a complex dominant pair
    with pytest.warns(hg.ConvergenceWarning, match="power.*did not converge"):
        spec = eigvals(A, k=1, method="power")
    assert not spec.converged and torch.isnan(spec.values.real).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lanczos_flags_values_below_the_noise_floor(dtype):
    # rank 2: σ₃, σ₄ are rounding noise, which Lanczos on JᵀJ resolves only down to about √eps σ₁
    g = torch.Generator().manual_seed(13)
    A = (torch.randn(40, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 30, generator=g, dtype=torch.float64))
    exact = torch.linalg.svdvals(A)  # float64: σ₃ ~ 1e-15 σ₁
    spec = svdvals(A.to(dtype), k=4, method="lanczos")
    assert spec.certified.tolist() == [True, True, False, False]
    assert spec.noise_floor < float(exact[1]) and spec.noise_floor >= float(spec.values[2])
    # σ₃, σ₄ are not known to tol (σ₃ = 5.9e-7 where it is 1e-15): not converged, though σ₁, σ₂ met tol
    assert not spec.converged and (spec.residuals[:2] <= spec.tol).all()
    assert svdvals(A.to(dtype), k=2, method="lanczos").converged  # k up to the rank converges
    np.testing.assert_allclose(spec.values[:2].numpy(), exact[:2].numpy(), rtol=1e-6 if dtype == torch.float64
                               else 1e-4)
    d = spec.to_dict()
    assert d["certified"] == [True, True, False, False] and d["noise_floor"] == spec.noise_floor
    # the dense SVD's floor is at its own accuracy (max(m, n) eps σ₁): below it too
    dense = svdvals(A, k=4, method="dense")
    assert dense.certified.tolist() == [True, True, False, False]


def test_zero_and_rank_one_operators_larger_than_dense_max():
    n = hg.analysis.spectra.DENSE_MAX + 76
    Z = LinearOperator(( n, n), lambda V: torch.zeros_like(V), lambda U: torch.zeros_like(U), dtype=torch.float64,
                       device="cpu", name="0")
    for spec in (eigvals(Z, k=3), svdvals(Z, k=3), eigvals(Z, k=1, method="power")):
        assert spec.converged and (spec.values == 0).all() and spec.certified.all()
    u = _matrix((n,), 14)
    w = _matrix((n,), 15)
    R = LinearOperator.from_dense(torch.outer(u, w))  # rank one: eigenvalue wᵀu, the rest zero
    spec = eigvals(R, k=3)
    assert spec.method == "arnoldi" and not spec.converged  # the two zeros are below the noise floor
    assert complex(spec.values[0]) == pytest.approx(float(w @ u), rel=1e-10)
    assert spec.certified.tolist() == [True, False, False] and eigvals(R, k=1).converged


# ---------------------------------------------------------------------- results and errors
def test_results_are_plain_data():
    A = _matrix((30, 30), 8)
    eig, sv = eigvals(A, k=3), svdvals(A, k=3)
    for spec in (eig, sv):
        d = json.loads(json.dumps(spec.to_dict()))
        assert set(d) == {"values", "residuals", "matvecs", "converged", "method", "seconds", "tol", "noise_floor",
                          "certified"}
    assert all(len(pair) == 2 for pair in eig.to_dict()["values"])
    assert eig.to_dict()["values"][0][0] == pytest.approx(float(eig.values[0].real))
    assert isinstance(spectral_norm(A), float) and isinstance(spectral_radius(A), float)
    assert spectral_norm(A) == pytest.approx(float(torch.linalg.svdvals(A)[0]), rel=1e-10)


def test_seeded_start_vectors_are_reproducible():
    A = _matrix((200, 200), 9)
    runs = [svdvals(A, k=3, method="lanczos", tol=1e-6, generator=torch.Generator().manual_seed(4))
            for _ in range(2)]
    assert runs[0].matvecs == runs[1].matvecs
    torch.testing.assert_close(runs[0].values, runs[1].values, rtol=0, atol=0)


_A, _S = _matrix((10, 8), 10), _matrix((10, 10), 11)  # a rectangular and a square operator


@pytest.mark.parametrize("error,match,call", [
    (ValueError, "k must satisfy", lambda: svdvals(_A, k=0)),
    (ValueError, "k must satisfy", lambda: svdvals(_A, k=9)),
    (TypeError, "k must be an int", lambda: eigvals(_S, k=2.0)),
    (ValueError, "method must be one of", lambda: svdvals(_A, k=2, method="arnoldi")),
    (ValueError, "method must be one of", lambda: eigvals(_S, k=2, method="lanczos")),
    (ValueError, "square", lambda: eigvals(_A, k=2)),
    (ValueError, "k must be 1", lambda: eigvals(_S, k=2, method="power")),
    (ValueError, "k <= n - 2", lambda: eigvals(_S, k=9, method="arnoldi")),
    (ValueError, "tol", lambda: svdvals(_A, k=2, tol=0.0)),
    (TypeError, "J must be", lambda: svdvals([[1.0]], k=1)),
    (TypeError, "generator", lambda: svdvals(_A, k=1, generator=3)),
    (ValueError, "block must satisfy", lambda: svdvals(_A, k=2, method="lanczos", block=9)),
    (ValueError, "ncv", lambda: svdvals(_A, k=2, method="lanczos", ncv=0)),
    (ValueError, "maxiter", lambda: svdvals(_A, k=2, method="lanczos", maxiter=0)),
    (ValueError, "ncv must satisfy", lambda: eigvals(_S, k=2, method="arnoldi", ncv=2)),
    (ValueError, "block must satisfy", lambda: eigvals(_S, k=2, method="arnoldi", block=11)),
])
def test_errors_name_the_argument(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_a_converged_scalar_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectral_norm(_A)  # converged: no warning


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_svdvals_of_a_non_finite_matrix_or_operator_are_refused_by_name(method):
    # before: LAPACK's "linalg.eigh: The algorithm failed to converge ..." (lanczos)
    A = _matrix((40, 30), 3)
    A[5, 7] = float("nan")
    with pytest.raises(ValueError, match="J contains NaN or Inf"):
        svdvals(A, k=2, method=method)
    op = LinearOperator(A.shape, lambda V: V @ A.T, lambda U: U @ A, dtype=A.dtype, device="cpu", name="dy/dx")
    with pytest.raises(ValueError, match="dy/dx: .* contains NaN or Inf"):
        svdvals(op, k=2, method=method)


@pytest.mark.parametrize("method", ["dense", "arnoldi", "power"])
def test_eigvals_of_a_non_finite_matrix_or_operator_are_refused_by_name(method):
    # before: torch.linalg.eig's error (dense), ARPACK error -9999 (arnoldi), 1000 products to a nan (power)
    A = _matrix((40, 40), 4)
    A[0, 3] = float("inf")
    with pytest.raises(ValueError, match="J contains NaN or Inf"):
        eigvals(A, k=1 if method == "power" else 2, method=method)
    op = LinearOperator(A.shape, lambda V: V @ A.T, lambda U: U @ A, dtype=A.dtype, device="cpu", name="dF/dh")
    with pytest.raises(ValueError, match="dF/dh: .* contains NaN or Inf"):
        eigvals(op, k=1 if method == "power" else 2, method=method)
