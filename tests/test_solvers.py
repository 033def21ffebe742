"""The hams against direct float64 transcriptions of docs/theory.md §2, their invariants, dtypes and the registry."""

import pytest
import torch

import hamgrad as hg

D_, N_, R_ = 12, 20, 4


def _data(seed=0, batch=(2,), nonneg=True, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, D_, N_, generator=g, dtype=torch.float64)
    if not nonneg:
        x = x - 0.5
    return x.to(device=device, dtype=dtype)


def _state(seed=1, batch=(2,), device="cpu"):
    g = torch.Generator().manual_seed(seed)
    D = torch.rand(*batch, D_, R_, generator=g, dtype=torch.float64) + 0.1
    C = torch.rand(*batch, R_, N_, generator=g, dtype=torch.float64) + 0.1
    return D.to(device), C.to(device)


def _colnorm(A):
    return A / torch.linalg.vector_norm(A, dim=-2, keepdim=True)


# ---------------------------------------------------------------- transcriptions of docs/theory.md §2, element by element
def _nmf_step_ref(X, D, C, eps):
    C = C * (D.transpose(-1, -2) @ X) / (D.transpose(-1, -2) @ D @ C + eps)
    D = D * (X @ C.transpose(-1, -2)) / (D @ C @ C.transpose(-1, -2) + eps)
    return D, C


def _softmax_r(Z):
    Z = Z - Z.max(dim=-2, keepdim=True).values
    E = torch.exp(Z)
    return E / E.sum(dim=-2, keepdim=True)


def _vq_step_ref(X, D, C, inv_t, eps):
    C = _softmax_r(inv_t * (_colnorm(D).transpose(-1, -2) @ _colnorm(X)))
    counts = C @ torch.ones(C.shape[-1], 1, dtype=C.dtype, device=C.device)  # C 1_n
    D = (X @ C.transpose(-1, -2)) @ torch.diag_embed(1.0 / (counts.squeeze(-1) + eps))
    return D, C


def _cd_step_ref(X, D, C, inv_t, eps):
    C = _softmax_r(inv_t * (_colnorm(X).transpose(-1, -2) @ D).transpose(-1, -2))
    counts = C.sum(dim=-1)
    D = _colnorm((X @ C.transpose(-1, -2)) @ torch.diag_embed(1.0 / (counts + eps)))
    return D, C


def _ridge_ref(X, D, beta):
    r = D.shape[-1]
    A = D.transpose(-1, -2) @ D + beta * torch.eye(r, dtype=D.dtype, device=D.device)
    return torch.linalg.inv(A) @ D.transpose(-1, -2) @ X


def test_nmf_step_matches_formula(device):
    x, h = _data(device=device), _state(device=device)
    s = hg.NMF(rank=R_, eps=1e-6)
    D, C = s.step(x, h)
    Dr, Cr = _nmf_step_ref(x, *h, 1e-6)
    torch.testing.assert_close(C, Cr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(D, Dr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.readout(x, (D, C)), Dr @ Cr)


@pytest.mark.parametrize("inv_t", [1.0, 20.0])
def test_softvq_step_matches_formula(device, inv_t):
    x, h = _data(nonneg=False, device=device), _state(device=device)
    s = hg.SoftVQ(rank=R_, inv_t=inv_t)
    D, C = s.step(x, h)
    Dr, Cr = _vq_step_ref(x, *h, inv_t, 1e-6)
    torch.testing.assert_close(C, Cr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(D, Dr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.readout(x, (D, C)), Dr @ Cr)
    torch.testing.assert_close(C.sum(dim=-2), torch.ones_like(C[..., 0, :]))


def test_cd_step_and_readout_match_formula(device):
    x, h = _data(nonneg=False, device=device), _state(device=device)
    s = hg.CD(rank=R_, inv_t=10.0, beta=0.1)
    D, C = s.step(x, h)
    Dr, Cr = _cd_step_ref(x, *h, 10.0, 1e-6)
    torch.testing.assert_close(C, Cr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(D, Dr, rtol=1e-10, atol=1e-12)
    # the readout ignores the state's codes and uses the ridge codes
    torch.testing.assert_close(s.readout(x, (D, C)), Dr @ _ridge_ref(x, Dr, 0.1), rtol=1e-9, atol=1e-10)
    codes = _ridge_ref(x, Dr, 0.1)
    want = ((x - Dr @ codes) ** 2).sum(dim=(-2, -1)) + 0.1 * (codes ** 2).sum(dim=(-2, -1))
    torch.testing.assert_close(s.objective(x, (D, C)), want, rtol=1e-9, atol=1e-10)


def test_init_formulas(device):
    x = _data(device=device)
    for s, inv_t in ((hg.NMF(rank=R_), 1.0), (hg.SoftVQ(rank=R_, inv_t=5.0), 5.0)):
        D, C = s.init(x, generator=torch.Generator(device=device).manual_seed(3))
        torch.testing.assert_close(torch.linalg.vector_norm(D, dim=-2), torch.ones(2, R_, dtype=x.dtype, device=device))
        torch.testing.assert_close(C, _softmax_r(inv_t * (D.transpose(-1, -2) @ x)))
    D, _ = hg.NMF(rank=R_).init(x, generator=torch.Generator(device=device).manual_seed(3))
    assert (D >= 0).all()


def test_nmf_nonnegative_and_monotone_over_50_steps():
    g = torch.Generator().manual_seed(7)
    x = torch.rand(3, 32, 48, generator=g, dtype=torch.float64)
    s = hg.NMF(rank=6)
    h = s.init(x, generator=g)
    prev = s.objective(x, h)
    for _ in range(50):
        h = s.step(x, h)
        assert (h[0] >= 0).all() and (h[1] >= 0).all()
        cur = s.objective(x, h)
        assert (cur <= prev * (1 + 1e-12)).all(), (cur, prev)
        prev = cur
    # and it actually decreased from the start
    assert (prev < s.objective(x, s.init(x, generator=torch.Generator().manual_seed(7)))).all()


def test_objective_is_frobenius_error():
    x, h = _data(), _state()
    s = hg.NMF(rank=R_)
    torch.testing.assert_close(s.objective(x, h), torch.linalg.matrix_norm(x - h[0] @ h[1]) ** 2)
    assert s.objective(x, h).shape == (2,)


def test_step_is_pure():
    x, h = _data(), _state()
    x0, D0, C0 = x.clone(), h[0].clone(), h[1].clone()
    for s in (hg.NMF(rank=R_), hg.SoftVQ(rank=R_), hg.CD(rank=R_)):
        s.readout(x, s.step(x, h))
        assert torch.equal(x, x0) and torch.equal(h[0], D0) and torch.equal(h[1], C0)


@pytest.mark.parametrize("name", ["nmf", "vq", "cd"])
def test_same_seed_same_result(name):
    x = _data(dtype=torch.float32)
    s = hg.get_solver(name, rank=R_)
    y1, _ = hg.solve(s, x, steps=4, generator=torch.Generator().manual_seed(11))
    y2, _ = hg.solve(s, x, steps=4, generator=torch.Generator().manual_seed(11))
    y3, _ = hg.solve(s, x, steps=4, generator=torch.Generator().manual_seed(12))
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize("name", ["nmf", "vq", "cd"])
def test_float32_matches_float64(name):
    x64 = _data()
    s = hg.get_solver(name, rank=R_, **({} if name == "nmf" else {"inv_t": 5.0}))
    h64 = s.init(x64, generator=torch.Generator().manual_seed(0))
    h32 = tuple(t.float() for t in h64)
    y64, _ = hg.solve(s, x64, steps=5, h0=h64)
    y32, _ = hg.solve(s, x64.float(), steps=5, h0=h32)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    x = _data(dtype=torch.float32)
    s = hg.NMF(rank=R_)
    h = s.init(x, generator=torch.Generator().manual_seed(0))
    xh = x.to(dtype)
    y, _ = hg.solve(s, xh, steps=3, h0=h)
    assert y.dtype == dtype
    # reference: the same computation in float32 on the rounded input
    y_ref, _ = hg.solve(s, xh.float(), steps=3, h0=h)
    torch.testing.assert_close(y.float(), y_ref.to(dtype).float())
    D, C = s.step(xh, h)
    assert D.dtype == torch.float32 and C.dtype == torch.float32


def test_autocast_does_not_lower_solver_precision():
    x = _data(dtype=torch.float32)
    s = hg.NMF(rank=R_)
    h = s.init(x, generator=torch.Generator().manual_seed(0))
    y_ref, _ = hg.solve(s, x, steps=3, h0=h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = hg.solve(s, x, steps=3, h0=h)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref)


def test_registry_roundtrip_and_user_solver():
    class Scaled(hg.NMF):
        name = "scaled-nmf"

    hg.register_solver("scaled-nmf", Scaled, overwrite=True)
    s = hg.get_solver("Scaled-NMF", rank=3)
    assert isinstance(s, Scaled) and s.rank == 3
    assert {"nmf", "vq", "cd"} <= set(hg.available_solvers())
    with pytest.raises(ValueError, match="already registered"):
        hg.register_solver("nmf", Scaled)
    with pytest.raises(ValueError, match="unknown solver"):
        hg.get_solver("pca", rank=2)
    with pytest.raises(TypeError, match="must define"):
        hg.register_solver("broken", int)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,err,match", [
    (lambda: hg.NMF(rank=0), ValueError, "rank"),
    (lambda: hg.NMF(rank=2.5), TypeError, "rank"),
    (lambda: hg.SoftVQ(rank=2, inv_t=0.0), ValueError, "inv_t"),
    (lambda: hg.SoftVQ(rank=2, inv_t=-1.0), ValueError, "inv_t"),
    (lambda: hg.CD(rank=2, beta=0.0), ValueError, "beta"),
    (lambda: hg.CD(rank=2, inv_t=float("nan")), ValueError, "inv_t"),
    (lambda: hg.NMF(rank=2, eps=-1e-6), ValueError, "eps"),
])
def test_bad_hyperparameters(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_bad_inputs():
    s = hg.NMF(rank=R_)
    x = _data()
    with pytest.raises(ValueError, match="non-negative"):
        s.init(x - 1.0)
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        hg.solve(s, bad, steps=2)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        hg.solve(hg.SoftVQ(rank=R_), bad, steps=2)
    with pytest.raises(ValueError, match="dimensions"):
        s.init(torch.rand(5))
    with pytest.raises(ValueError, match=r"rank=30 must be <= min\(d, n\)"):
        hg.NMF(rank=30).init(x)
    with pytest.raises(TypeError, match="floating dtype"):
        s.init((x * 10).long())
    with pytest.raises(TypeError, match="torch.Tensor"):
        s.init(x.numpy())
    h = s.init(x)
    with pytest.raises(ValueError, match="shapes D"):
        s.step(x, (h[0][..., :2], h[1]))
    with pytest.raises(ValueError, match="shapes D"):
        hg.solve(s, x, steps=2, h0=(h[0], h[1][..., :5]))
    with pytest.raises(TypeError, match=r"tuple \(D, C\)"):
        s.step(x, h[0])


@pytest.mark.parametrize("s,scale,dtype,match", [
    (hg.NMF(rank=2, eps=1e300), 1.0, torch.float32, r"eps .* = 1e\+300 overflows torch.float32"),
    (hg.SoftVQ(rank=2, inv_t=1e308), 1.0, torch.float32, r"inv_t .* overflows torch.float32"),
    (hg.CD(rank=2, beta=1e39), 1.0, torch.float32, r"beta .* overflows torch.float32"),
    (hg.NMF(rank=2), 1e19, torch.float32, r"max\|x\|\^2 \* d \* n .* overflows torch.float32"),
    (hg.SoftVQ(rank=2), 1e37, torch.float32, r"max\|x\|\^2 \* d \* n .* overflows"),
    (hg.SoftVQ(rank=2), 1e160, torch.float64, r"overflows torch.float64"),
    (hg.NMF(rank=2), 1e19, torch.bfloat16, r"overflows torch.float32"),  # half inputs compute in float32
])
def test_inputs_and_hyperparameters_beyond_the_compute_dtype(s, scale, dtype, match):
    x = (_data(dtype=torch.float64) * scale).to(dtype)
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match=match):
        hg.solve(s, x, steps=2)


def test_float64_allows_what_float32_cannot():
    x = _data()
    y, _ = hg.solve(hg.SoftVQ(rank=R_, inv_t=1e300), x, steps=3)  # one-hot codes, but every number finite
    assert torch.isfinite(y).all()


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="empty batch"):
        hg.solve(hg.NMF(rank=2), _data()[:0], steps=2)
