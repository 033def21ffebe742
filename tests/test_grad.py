"""Gradient modes of hg.solve against independent truths: gradcheck, plain autograd loops, converged BPTT."""

import warnings

import pytest
import torch
from torch.autograd import gradcheck

import hamgrad as hg

K = 5


def _x(device, d=6, n=8, batch=1, seed=0, requires_grad=True, signed=False):
    """Positive data (NMF needs it) or, with ``signed``, standard normal data (spread directions for VQ/CD)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d, n, generator=g, dtype=torch.float64) if signed else \
        torch.rand(batch, d, n, generator=g, dtype=torch.float64) + 0.2
    return x.to(device).requires_grad_(requires_grad)


def _x_for(s, device, **kw):
    return _x(device, signed=not isinstance(s, hg.NMF), **kw)


def _solvers():
    return [hg.NMF(rank=2), hg.SoftVQ(rank=2, inv_t=3.0), hg.CD(rank=2, inv_t=3.0, beta=0.1)]


def _h0(s, x):
    return s.init(x.detach(), generator=torch.Generator(device=x.device).manual_seed(5))


def _grad(y, x, seed=3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)
    return torch.autograd.grad((y * w).sum(), x)[0]


@pytest.mark.parametrize("s", _solvers(), ids=lambda s: s.name)
def test_bptt_gradcheck_and_equals_plain_loop(device, s):
    x = _x_for(s, device)
    h0 = _h0(s, x)
    assert gradcheck(lambda x: hg.solve(s, x, steps=K, grad="bptt", h0=h0)[0], (x,), fast_mode=True)
    h = h0
    for _ in range(K):
        h = s.step(x, h)
    y_ref = s.readout(x, h)
    y, info = hg.solve(s, x, steps=K, grad="bptt", h0=h0)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(_grad(y, x), _grad(y_ref, x))
    assert info.graph_steps == K


@pytest.mark.parametrize("s", _solvers(), ids=lambda s: s.name)
@pytest.mark.parametrize("k", [1, 2, K])
def test_truncated_equals_autograd_through_last_k_steps(device, s, k):
    x = _x_for(s, device)
    h0 = _h0(s, x)
    # the defining function: the first K-k steps are a constant, the last k are differentiated
    with torch.no_grad():
        h_prefix = hg.FixedPoint.from_solver(s).unroll(x, h0, K - k)[-1] if k < K else h0
    ref = lambda x: hg.solve(s, x, steps=k, grad=f"truncated:{k}", h0=h_prefix)[0]  # noqa: E731
    assert gradcheck(ref, (x,), fast_mode=True)
    h = h_prefix
    for _ in range(k):
        h = s.step(x, h)
    y_loop = s.readout(x, h)
    y, _ = hg.solve(s, x, steps=K, grad=f"truncated:{k}", h0=h0)
    torch.testing.assert_close(y, y_loop)
    torch.testing.assert_close(_grad(y, x), _grad(y_loop, x))


@pytest.mark.parametrize("s", _solvers(), ids=lambda s: s.name)
def test_one_step_is_truncated_1_and_bptt_is_truncated_K(device, s):
    x = _x_for(s, device)
    h0 = _h0(s, x)
    y1, _ = hg.solve(s, x, steps=K, grad="one-step", h0=h0)
    yt1, _ = hg.solve(s, x, steps=K, grad="truncated:1", h0=h0)
    torch.testing.assert_close(_grad(y1, x), _grad(yt1, x), rtol=0, atol=0)
    yb, _ = hg.solve(s, x, steps=K, grad="bptt", h0=h0)
    ytk, _ = hg.solve(s, x, steps=K, grad=f"truncated:{K}", h0=h0)
    torch.testing.assert_close(_grad(yb, x), _grad(ytk, x), rtol=0, atol=0)
    # one-step really differs from BPTT here (otherwise the tests above could not tell them apart)
    y1, _ = hg.solve(s, x, steps=K, grad="one-step", h0=h0)
    yb, _ = hg.solve(s, x, steps=K, grad="bptt", h0=h0)
    assert not torch.allclose(_grad(y1, x), _grad(yb, x), rtol=1e-3)


def _coef_reference(s, x, D, C, x_norm=None):
    """Independent transcription of the official code's last code update (MATH.md §4), D and C constants.

    VQ's column norm of x carries no graph; ``x_norm`` fixes it to a constant so that gradcheck sees a true function.
    """
    D, C = D.detach(), C.detach()
    if isinstance(s, hg.NMF):
        return D @ (C * (D.mT @ x) / (D.mT @ D @ C + s.eps))
    if isinstance(s, hg.SoftVQ):
        xn = x / (torch.linalg.vector_norm(x.detach(), dim=-2, keepdim=True) if x_norm is None else x_norm)
        Dn = D / torch.linalg.vector_norm(D, dim=-2, keepdim=True)
        return D @ torch.softmax(s.inv_t * Dn.mT @ xn, dim=-2)
    eye = torch.eye(D.shape[-1], dtype=D.dtype, device=D.device)
    return D @ torch.linalg.inv(D.mT @ D + s.beta * eye) @ D.mT @ x


@pytest.mark.parametrize("s", _solvers(), ids=lambda s: s.name)
def test_one_step_coef_matches_official_definition(device, s):
    x = _x_for(s, device)
    h0 = _h0(s, x)
    with torch.no_grad():
        hK = hg.FixedPoint.from_solver(s).unroll(x, h0, K)[-1]
    x_norm = torch.linalg.vector_norm(x.detach(), dim=-2, keepdim=True)
    assert gradcheck(lambda x: _coef_reference(s, x, *hK, x_norm=x_norm), (x,))
    y, info = hg.solve(s, x, steps=K, grad="one-step-coef", h0=h0)
    y_ref = _coef_reference(s, x, *hK)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(_grad(y, x), _grad(y_ref, x))
    assert info.graph_steps == 0


# ---------------------------------------------------------------- implicit on a contractive user F
def _contractive(device, n=5, m=3, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = (W / torch.linalg.matrix_norm(W, ord=2)).to(device)  # ‖W‖₂ = 1, so ‖J‖₂ <= scale
    U = torch.randn(n, m, generator=g, dtype=torch.float64).to(device)
    V = torch.randn(2, n, generator=g, dtype=torch.float64).to(device)
    F = lambda h, x: (scale * torch.tanh(W @ h[0] + U @ x),)  # noqa: E731
    G = lambda h, x: V @ h[0] + 0.1 * x[:2] ** 2  # noqa: E731  (G depends on x directly too)
    x = torch.randn(m, 4, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    h0 = (torch.zeros(n, 4, dtype=torch.float64, device=device),)
    return hg.FixedPoint(F, readout=G), x, h0


@pytest.mark.parametrize("adjoint", ["fixed-point", "gmres"])
def test_implicit_matches_converged_bptt(device, adjoint):
    fp, x, h0 = _contractive(device)
    y_imp, info = hg.solve(fp, x, steps=60, grad="implicit", h0=h0, adjoint=adjoint)
    g_imp = _grad(y_imp, x)
    y_bptt, _ = hg.solve(fp, x, steps=200, grad="bptt", h0=h0)
    g_bptt = _grad(y_bptt, x)
    assert (g_imp - g_bptt).norm() / g_bptt.norm() < 1e-5
    (b,) = info.backward
    assert b.converged and b.residual <= 1e-10 and b.iterations >= 1 and b.method == adjoint
    assert info.residuals[-1] < 1e-12 and len(info.residuals) == 60


def test_implicit_gradcheck_at_convergence(device):
    fp, x, h0 = _contractive(device)
    assert gradcheck(lambda x: hg.solve(fp, x, steps=80, grad="implicit", h0=h0)[0], (x,))


def test_implicit_parameter_gradients_match_bptt():
    g = torch.Generator().manual_seed(1)
    W = torch.nn.Parameter(0.3 * torch.randn(4, 4, generator=g, dtype=torch.float64))
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    fp = hg.FixedPoint(lambda h, x: (0.5 * torch.tanh(W @ h[0] + x),), readout=lambda h, x: h[0])
    h0 = (torch.zeros(4, 3, dtype=torch.float64),)
    gi = torch.autograd.grad(hg.solve(fp, x, 60, "implicit", h0=h0)[0].pow(2).sum(), W)[0]
    gb = torch.autograd.grad(hg.solve(fp, x, 200, "bptt", h0=h0)[0].pow(2).sum(), W)[0]
    assert (gi - gb).norm() / gb.norm() < 1e-5


def test_implicit_reports_non_convergence():
    g = torch.Generator().manual_seed(2)
    W = 3.0 * torch.eye(4, dtype=torch.float64)  # ρ(J) = 3 near h = 0: the adjoint iteration diverges
    x = (1e-3 * torch.randn(4, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    fp = hg.FixedPoint(lambda h, x: (torch.tanh(W @ h[0] + x),), readout=lambda h, x: h[0])
    h0 = (torch.zeros(4, 2, dtype=torch.float64),)
    y, info = hg.solve(fp, x, steps=1, grad="implicit", h0=h0, max_iter=30)
    with pytest.warns(hg.ConvergenceWarning, match="did not converge"):
        y.sum().backward()
    assert info.backward[0].converged is False and info.backward[0].iterations == 30
    y, info = hg.solve(fp, x, steps=1, grad="implicit", h0=h0, max_iter=30, strict=True)
    with pytest.raises(hg.ConvergenceError):
        y.sum().backward()


def test_implicit_on_solver_runs_and_reports():
    x = _x("cpu", d=8, n=12)
    s = hg.CD(rank=2, inv_t=2.0)
    y, info = hg.solve(s, x, steps=30, grad="implicit", adjoint="gmres", max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hg.ConvergenceWarning)
        y.sum().backward()
    assert len(info.backward) == 1 and info.backward[0].iterations >= 1
    assert x.grad is not None and x.grad.shape == x.shape


# ---------------------------------------------------------------- info, monitor, bad input
def test_info_residuals_and_objective():
    x = _x("cpu", d=10, n=16, requires_grad=False)
    s = hg.NMF(rank=3)
    y, info = hg.solve(s, x, steps=8, grad="bptt", generator=torch.Generator().manual_seed(0))
    traj = hg.FixedPoint.from_solver(s).unroll(x, s.init(x, generator=torch.Generator().manual_seed(0)), 8)
    want = [float(torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(traj[t + 1], traj[t])))) for t in range(8)]
    assert info.residuals == pytest.approx(want, rel=1e-10)
    assert info.objective == pytest.approx([float(s.objective(x, traj[t + 1]).mean()) for t in range(8)])
    assert all(b <= a * (1 + 1e-12) for a, b in zip(info.objective, info.objective[1:]))
    d = info.to_dict()
    assert d["mode"] == "bptt" and d["steps"] == 8 and len(d["residuals"]) == 8
    _, quiet = hg.solve(s, x, steps=3, monitor=False)
    assert quiet.residuals == [] and quiet.objective is None


def test_user_fixed_point_every_mode_but_coef():
    fp, x, h0 = _contractive("cpu")
    for mode in ["bptt", "one-step", "truncated:2", "implicit"]:
        y, info = hg.solve(fp, x, steps=4, grad=mode, h0=h0)
        assert _grad(y, x).shape == x.shape and info.objective is None
    with pytest.raises(ValueError, match="one-step-coef"):
        hg.solve(fp, x, steps=4, grad="one-step-coef", h0=h0)
    with pytest.raises(ValueError, match="no init"):
        hg.solve(fp, x, steps=4)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"steps": 0}, ValueError, "steps must be >= 1"),
    ({"steps": 2.0}, TypeError, "steps must be an int"),
    ({"steps": 3, "grad": "truncated:4"}, ValueError, "1 <= k <= steps"),
    ({"steps": 3, "grad": "truncated:x"}, ValueError, "integer k"),
    ({"steps": 3, "grad": "adjoint"}, ValueError, "unknown gradient mode"),
    ({"steps": 3, "grad": 1}, TypeError, "grad must be a str"),
    ({"steps": 3, "grad": "implicit", "adjoint": "cg"}, ValueError, "adjoint must be one of"),
    ({"steps": 3, "grad": "implicit", "tol": -1.0}, ValueError, "tol"),
    ({"steps": 3, "h0": torch.zeros(2)}, TypeError, "h0 must be a tuple"),
])
def test_bad_solve_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        hg.solve(hg.NMF(rank=2), _x("cpu", requires_grad=False), **kwargs)


def test_bad_model_and_state():
    with pytest.raises(TypeError, match="model must be"):
        hg.solve(object(), _x("cpu"), steps=2)
    fp = hg.FixedPoint(lambda h, x: (h[0][:1],))
    with pytest.raises(ValueError, match="same structure and shapes"):
        hg.solve(fp, _x("cpu"), steps=2, h0=(torch.zeros(2, 3),))
    nan_h0 = (torch.full((2, 3), float("nan")),)
    with pytest.raises(ValueError, match=r"h0\[0\] contains NaN"):
        hg.solve(hg.FixedPoint(lambda h, x: h), _x("cpu"), steps=1, h0=nan_h0)
