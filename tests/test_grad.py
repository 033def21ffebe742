"""Gradient modes of hg.solve against independent truths: gradcheck, plain autograd loops, converged BPTT
(``one-step-coef`` against a transcription of the official code: tests/test_official.py)."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.autograd.functional import jacobian

import hamgrad as hg
import models
from hamgrad._krylov import gmres

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


# ---------------------------------------------------------------- implicit on a contractive user F
def _contractive(device):
    """The shared contractive model (‖J‖₂ <= 0.5) with a readout that depends on x directly, x (3, 4) with grad."""
    m = models.contractive(device, cols=4, norm_W=1.0, scale=0.5, readout="linear+x")
    return m.fp, m.x.requires_grad_(True), m.h0


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
    m = models.contractive(cols=3, norm_W=1.0, scale=0.5, readout="linear", seed=1)
    fp, x, h0 = m.fp, m.x, m.h0
    W = m.params["W"].requires_grad_(True)  # F's closure holds this tensor: a parameter of F
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
        hg.solve(hg.FixedPoint(fp.F), x, steps=4)


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
    ({"steps": 3, "grad": "truncated:\u0663"}, ValueError, "digits 0-9"),  # an Arabic-Indic 3: isdigit() is True
    ({"steps": 3, "grad": "truncated:\u00b2"}, ValueError, "digits 0-9"),  # a superscript 2
    ({"steps": 3, "generator": 0}, TypeError, "generator must be a torch.Generator"),
    ({"steps": 3, "strict": "yes"}, TypeError, "strict must be True or False"),
    ({"steps": 3, "monitor": "no"}, TypeError, "monitor must be True or False"),
    ({"steps": 3, "grad": "implicit", "adjoint": 3}, ValueError, "adjoint must be one of"),
])
def test_bad_solve_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        hg.solve(hg.NMF(rank=2), _x("cpu", requires_grad=False), **kwargs)


def test_bad_model_and_state():
    with pytest.raises(TypeError, match="model must be"):
        hg.solve(object(), _x("cpu"), steps=2)
    with pytest.raises(TypeError, match=r"got the class NMF: build one first, e.g. NMF\(rank=8\)"):
        hg.solve(hg.NMF, _x("cpu"), steps=2)
    with pytest.raises(ValueError, match="batch_dims must be >= 0"):
        hg.FixedPoint(lambda h, x: h, batch_dims=-1)
    with pytest.raises(ValueError, match="batch_dims=1: every state tensor must share its first 1 dimensions"):
        hg.solve(hg.FixedPoint(lambda h, x: h, batch_dims=1), _x("cpu"), steps=1, h0=(torch.zeros(2, 3), torch.zeros(3)))
    fp = hg.FixedPoint(lambda h, x: (h[0][:1],))
    with pytest.raises(ValueError, match="same structure and shapes"):
        hg.solve(fp, _x("cpu"), steps=2, h0=(torch.zeros(2, 3),))
    nan_h0 = (torch.full((2, 3), float("nan")),)
    with pytest.raises(ValueError, match=r"h0\[0\] contains NaN"):
        hg.solve(hg.FixedPoint(lambda h, x: h), _x("cpu"), steps=1, h0=nan_h0)


# ---------------------------------------------------------------- implicit against the dense implicit-function theorem
def _flat_jacobians(s, x, h):
    """Dense float64 ``J* = ∂F/∂h``, ``B* = ∂F/∂x``, ``∂G/∂h`` and ``∂G/∂x`` at ``(h, x)`` (state flattened)."""
    sizes = [t.numel() for t in h]
    hv = torch.cat([t.reshape(-1) for t in h])

    def unflat(v):
        return tuple(p.reshape(t.shape) for p, t in zip(torch.split(v, sizes), h))

    def F(v, x):
        return torch.cat([t.reshape(-1) for t in s.step(x, unflat(v))])

    J = jacobian(lambda v: F(v, x), hv)
    B = jacobian(lambda x: F(hv, x), x).reshape(hv.numel(), x.numel())
    Gh = jacobian(lambda v: s.readout(x, unflat(v)).reshape(-1), hv)
    Gx = jacobian(lambda x: s.readout(x, unflat(hv)).reshape(-1), x).reshape(-1, x.numel())
    return J, B, Gh, Gx


def _dense_ift(s, x, h):
    """``∂y/∂x = ∂G/∂h (I − J*)⁻¹ B* + ∂G/∂x`` and, for the test's power, the same without the solve.

    NMF's ``I − J*`` is singular: ``(D, C) → (DΛ, Λ⁻¹C)`` leaves every step unchanged, so ``J*`` has the eigenvalue 1
    once per column of D (docs/theory.md §3). ``y = DC`` does not see those directions (∂G/∂h annihilates them), so
    any solution of ``(I − J*) Z = B*`` gives the same ``∂y/∂x``: a least-squares solution is as good as the inverse.
    """
    J, B, Gh, Gx = _flat_jacobians(s, x, h)
    Z = torch.linalg.lstsq(torch.eye(J.shape[0], dtype=J.dtype) - J, B).solution
    return Gh @ Z + Gx, Gh @ B + Gx


def _ham_case(name):
    g = torch.Generator().manual_seed(0)
    if name == "nmf":  # MU converges slowly and J* keeps eigenvalues near 1: GMRES for the adjoint
        return hg.NMF(rank=2), torch.rand(1, 5, 6, generator=g, dtype=torch.float64) + 0.2, 400, "gmres"
    x = torch.randn(1, 5, 6, generator=g, dtype=torch.float64)
    if name == "vq":
        return hg.SoftVQ(rank=2, inv_t=3.0), x, 200, "fixed-point"
    return hg.CD(rank=2, inv_t=3.0, beta=0.1), x, 200, "fixed-point"


@pytest.mark.parametrize("name", ["nmf", "vq", "cd"])
def test_implicit_matches_dense_ift_gradient_on_the_hams(name):
    s, x, K, adjoint = _ham_case(name)
    x = x.requires_grad_(True)
    y, info = hg.solve(s, x, steps=K, grad="implicit", adjoint=adjoint, generator=torch.Generator().manual_seed(1))
    dense, no_solve = _dense_ift(s, x.detach(), info.state)
    # the test can tell a missing adjoint solve from the right answer
    assert (no_solve - dense).norm() > 0.2 * dense.norm()
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    (g,) = torch.autograd.grad((y * w).sum(), x)
    want = (w.reshape(-1) @ dense).reshape(x.shape)
    torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-9)
    assert info.backward[0].converged


@pytest.mark.parametrize("name", ["nmf", "cd"])
def test_implicit_gradient_on_a_fixed_point_found_elsewhere(name):
    s, x, K, adjoint = _ham_case(name)
    with torch.no_grad():  # a solve without any graph, as a user's own solver would give
        _, info = hg.solve(s, x, steps=K, generator=torch.Generator().manual_seed(3))
    dense, _ = _dense_ift(s, x, info.state)
    x = x.clone().requires_grad_(True)
    record = []
    y = s.readout(x, hg.implicit_gradient(s, info.state, x, adjoint=adjoint, record=record))
    torch.testing.assert_close(y.detach(), s.readout(x.detach(), info.state))  # the value is h*'s
    rows = [torch.autograd.grad(y.reshape(-1)[i], x, retain_graph=True)[0].reshape(-1) for i in range(y.numel())]
    torch.testing.assert_close(torch.stack(rows), dense, rtol=1e-6, atol=1e-9)
    assert len(record) == y.numel() and all(b.converged for b in record)
    with pytest.raises(ValueError, match="h_star = \\(D, C\\) must have shapes"):
        hg.implicit_gradient(s, (info.state[0], info.state[1][..., :2]), x)
    with pytest.raises(TypeError, match="record must be a list"):
        hg.implicit_gradient(s, info.state, x, record=info)


def test_implicit_with_a_user_linear_solver():
    fp, x, h0 = _contractive("cpu")

    def dense_solve(matvec, b, tol, max_iter):  # the adjoint system as a dense matrix, solved by LAPACK
        M = torch.stack([matvec(e) for e in torch.eye(b.numel(), dtype=b.dtype)], dim=1)
        u = torch.linalg.solve(M, b)
        return hg.LinearSolveResult(u, float((M @ u - b).norm() / b.norm()), b.numel(), True, "dense")

    y, info = hg.solve(fp, x, steps=60, grad="implicit", h0=h0, adjoint=dense_solve)
    y_bptt, _ = hg.solve(fp, x, steps=200, grad="bptt", h0=h0)
    torch.testing.assert_close(_grad(y, x), _grad(y_bptt, x), rtol=1e-8, atol=1e-10)
    assert info.backward[0].method == "dense_solve" and info.backward[0].iterations == 20  # h is 5 × 4
    y, _ = hg.solve(fp, x, steps=5, grad="implicit", h0=h0, adjoint=lambda *a: a[1])
    with pytest.raises(TypeError, match="adjoint"):
        y.sum().backward()


def test_a_user_linear_solver_gets_the_adjoint_system_i_minus_j_transposed():
    """The matvec handed to ``adjoint=`` is ``u ↦ (I − J*ᵀ) u`` on the flattened two-tensor NMF state, against the
    dense jacobian of the step; the solve itself (LAPACK on that matrix) then gives the dense IFT gradient."""
    s, x, K, _ = _ham_case("nmf")
    with torch.no_grad():
        _, info = hg.solve(s, x, steps=K, generator=torch.Generator().manual_seed(3))
    J, *_ = _flat_jacobians(s, x, info.state)
    seen = []

    def dense_solve(matvec, b, tol, max_iter):
        M = torch.stack([matvec(e) for e in torch.eye(b.numel(), dtype=b.dtype)], dim=1)
        seen.append(M)
        u = torch.linalg.lstsq(M, b).solution  # NMF's I − J* is singular (see _dense_ift)
        return hg.LinearSolveResult(u, float((M @ u - b).norm() / b.norm()), b.numel(), True, "dense")

    x = x.clone().requires_grad_(True)
    y = s.readout(x, hg.implicit_gradient(s, info.state, x, adjoint=dense_solve))
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    (g,) = torch.autograd.grad((y * w).sum(), x)
    torch.testing.assert_close(seen[0], torch.eye(J.shape[0], dtype=J.dtype) - J.T, rtol=1e-10, atol=1e-12)
    dense, _ = _dense_ift(s, x.detach(), info.state)
    torch.testing.assert_close(g, (w.reshape(-1) @ dense).reshape(x.shape), rtol=1e-6, atol=1e-9)


def test_implicit_refuses_double_backward():
    fp, x, h0 = _contractive("cpu")
    y, _ = hg.solve(fp, x, steps=40, grad="implicit", h0=h0)
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)


def test_implicit_builds_no_graph_when_nothing_requires_grad():
    x = _x("cpu", requires_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, info = hg.solve(hg.NMF(rank=2), x, steps=3, grad="implicit")
    assert not y.requires_grad and y.grad_fn is None and info.backward == []


# ---------------------------------------------------------------- GMRES restarts
def test_gmres_restarts_match_numpy():
    g = torch.Generator().manual_seed(0)
    n = 40
    A = torch.eye(n, dtype=torch.float64) + 0.8 * torch.randn(n, n, generator=g, dtype=torch.float64) / n ** 0.5
    b = torch.randn(n, generator=g, dtype=torch.float64)
    res = gmres(lambda u: A @ u, b, tol=1e-12, max_iter=2000, restart=5)
    want = np.linalg.solve(A.numpy(), b.numpy())
    assert res.converged and res.iterations > 3 * 6  # several restart cycles of 5 products (+1 for the residual)
    np.testing.assert_allclose(res.x.numpy(), want, rtol=1e-9, atol=1e-10)
    assert res.residual <= 1e-12
    assert res.to_dict() == {"residual": res.residual, "iterations": res.iterations, "converged": True,
                             "method": "gmres"}


# ---------------------------------------------------------------- precision, purity, monitoring
def test_one_step_coef_stays_float32_under_autocast():
    x = _x("cpu", d=16, n=32, requires_grad=False).float().requires_grad_(True)
    s = hg.NMF(rank=4)
    h0 = s.init(x.detach(), generator=torch.Generator().manual_seed(0))
    y_ref, _ = hg.solve(s, x, steps=3, grad="one-step-coef", h0=h0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = hg.solve(s, x, steps=3, grad="one-step-coef", h0=h0)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)  # bfloat16 products are off by ~1e-2
    torch.testing.assert_close(_grad(y, x), _grad(y_ref, x), rtol=1e-6, atol=1e-6)


def test_in_place_F_is_detected():
    h0 = (torch.ones(3, dtype=torch.float64),)
    fp = hg.FixedPoint(lambda h, x: (h[0].mul_(0.5).add_(x),))
    with pytest.raises(RuntimeError, match=r"modified h\[0\] in place"):
        hg.solve(fp, torch.ones(3, dtype=torch.float64), steps=2, h0=h0)
    fp = hg.FixedPoint(lambda h, x: (0.5 * h[0] + x.add_(1.0),))
    with pytest.raises(RuntimeError, match="modified x in place"):
        hg.solve(fp, torch.ones(3, dtype=torch.float64), steps=2, h0=h0)


def test_solve_under_inference_mode():
    x = _x("cpu", requires_grad=False)
    s = hg.NMF(rank=2)
    h0 = _h0(s, x)
    y_ref, info_ref = hg.solve(s, x, steps=3, h0=h0)
    with torch.inference_mode():  # inference tensors have no version counter: the purity check must not trip on it
        y, info = hg.solve(s, x.clone(), steps=3, h0=tuple(t.clone() for t in h0))
    torch.testing.assert_close(y, y_ref)
    assert info.residuals == pytest.approx(info_ref.residuals, rel=1e-12)


def test_per_sample_residuals():
    # a user model with 3 independent samples, one of them diverging: h_b <- a_b h_b, residual |a_b - 1| a_b^t |h0_b|
    a = torch.tensor([0.5, 0.9, 1.5], dtype=torch.float64)
    fp = hg.FixedPoint(lambda h, x: (a[:, None] * h[0],), batch_dims=1)
    h0 = (torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64),)
    _, info = hg.solve(fp, torch.zeros(3), steps=4, h0=h0)
    want = [[float(abs(a_b - 1) * a_b ** t * 5.0) for a_b in a] for t in range(4)]
    assert info.sample_residuals == [pytest.approx(row, rel=1e-12) for row in want]
    assert info.residuals == pytest.approx([sum(v * v for v in row) ** 0.5 for row in want], rel=1e-12)
    # a solver: each sample's residuals are those of a solve on that sample alone
    x = _x("cpu", batch=3, requires_grad=False)
    s = hg.SoftVQ(rank=2, inv_t=3.0)
    h0 = _h0(s, x)
    _, info = hg.solve(s, x, steps=4, h0=h0)
    for b in range(3):
        _, alone = hg.solve(s, x[b:b + 1], steps=4, h0=tuple(t[b:b + 1] for t in h0))
        assert [row[b] for row in info.sample_residuals] == pytest.approx(alone.residuals, rel=1e-10)


def test_info_state_is_the_final_state():
    x = _x("cpu", requires_grad=False)
    s = hg.NMF(rank=2)
    h0 = _h0(s, x)
    for mode in ("bptt", "one-step-coef", "implicit"):
        _, info = hg.solve(s, x, steps=4, grad=mode, h0=h0)
        want = hg.FixedPoint.from_solver(s).unroll(x, h0, 4)[-1]
        for t, w in zip(info.state, want):
            torch.testing.assert_close(t, w, rtol=0, atol=0)
            assert not t.requires_grad
    d = info.to_dict()
    json.dumps(d)
    assert d["state_shapes"] == [[1, 6, 2], [1, 2, 8]] and len(d["sample_residuals"]) == 4


@pytest.mark.parametrize("s", _solvers()[1:], ids=lambda s: s.name)
def test_monitored_objective_of_vq_and_cd(s):
    x = _x("cpu", batch=2, signed=True, requires_grad=False)
    h0 = _h0(s, x)
    _, info = hg.solve(s, x, steps=4, h0=h0)
    traj = hg.FixedPoint.from_solver(s).unroll(x, h0, 4)
    assert info.objective == pytest.approx([float(s.objective(x, h).mean()) for h in traj[1:]], rel=1e-12)


def test_nmf_objective_float32_matches_direct_formula():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 32, 64, generator=g)
    s = hg.NMF(rank=4)
    h0 = s.init(x, generator=g)
    _, info = hg.solve(s, x, steps=5, h0=h0)
    traj = hg.FixedPoint.from_solver(s).unroll(x.double(), tuple(t.double() for t in h0), 5)
    want = [float(((x.double() - D @ C) ** 2).sum(dim=(-2, -1)).mean()) for D, C in traj[1:]]
    assert info.objective == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("make,match", [
    (lambda x: hg.solve(hg.NMF(rank=2, eps=1e30), x.float(), steps=6), "all zero"),
    (lambda x: hg.solve(hg.NMF(rank=2), x.float() * 1e-20, steps=6), "all zero"),
    (lambda x: hg.solve(hg.FixedPoint(lambda h, x: (h[0] * 1e200,)), x, steps=3, h0=(x.detach() + 1,)), "NaN or Inf"),
])
def test_zero_or_non_finite_output_warns(make, match):
    with pytest.warns(RuntimeWarning, match=match):
        make(_x("cpu", requires_grad=False))


def test_zero_input_sample_gives_zero_output_without_warning():
    x = _x("cpu", batch=2, requires_grad=False)
    x[1] = 0.0  # e.g. a ReLU that silenced one image: a zero reconstruction is right
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = hg.solve(hg.NMF(rank=2), x, steps=4)
    assert (y[1] == 0).all() and (y[0] != 0).any()
