"""gradient_flow against dense Jacobian products; the propositions on a contractive F."""

import json
import math

import pytest
import torch
from torch.func import jacrev

import hamgrad as hg
from hamgrad.analysis import gradient_flow, implicit_jacobian
from hamgrad.fixed_point import flatten_state, state_residual, unflatten_state


def _norm2(A):
    return float(torch.linalg.matrix_norm(A, ord=2))


def _dense_J_B(fp, h, x):
    Jh = jacrev(lambda v: flatten_state(fp.step(unflatten_state(v, h), x)))(flatten_state(h))
    Jx = jacrev(lambda v: flatten_state(fp.step(h, v.reshape(x.shape))))(x.reshape(-1))
    return Jh, Jx


@pytest.mark.parametrize("s", [hg.NMF(rank=2), hg.SoftVQ(rank=2, inv_t=3.0), hg.CD(rank=2, inv_t=3.0)],
                         ids=lambda s: s.name)
def test_norms_equal_dense_jacobian_products(device, s):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 8, generator=g, dtype=torch.float64) + 0.2).to(device)
    h0 = s.init(x, generator=torch.Generator(device=device).manual_seed(1))
    K = 4
    flow = gradient_flow(s, x, h0, steps=K, tol=1e-10)
    fp = hg.FixedPoint.from_solver(s)
    traj = fp.unroll(x, h0, K)
    P = torch.eye(flatten_state(h0).numel(), dtype=torch.float64, device=device)  # ∂h^t/∂h^0
    Q = torch.zeros(P.shape[0], x.numel(), dtype=torch.float64, device=device)  # ∂h^t/∂x
    for t in range(1, K + 1):
        J, B = _dense_J_B(fp, traj[t - 1], x)
        P, Q = J @ P, J @ Q + B
        Jt, Bt = _dense_J_B(fp, traj[t], x)
        assert flow.dh_dh0[t - 1] == pytest.approx(_norm2(P), rel=1e-6)
        assert flow.dh_dx[t - 1] == pytest.approx(_norm2(Q), rel=1e-6)
        assert flow.norm_J[t - 1] == pytest.approx(_norm2(Jt), rel=1e-6)
        assert flow.norm_B[t - 1] == pytest.approx(_norm2(Bt), rel=1e-6)
        assert flow.rho_J[t - 1] == pytest.approx(float(torch.linalg.eigvals(Jt).abs().max()), rel=1e-6)
        assert flow.residuals[t - 1] == pytest.approx(float(state_residual(traj[t], traj[t - 1])), rel=1e-12)
    G = jacrev(lambda v: s.readout(x, unflatten_state(v, traj[-1])).reshape(-1))(flatten_state(traj[-1]))
    assert flow.L_G == pytest.approx(_norm2(G), rel=1e-6)
    assert flow.L_h == max(flow.norm_J) and flow.L_x == max(flow.norm_B)
    assert flow.t == list(range(1, K + 1)) and flow.rho_last == flow.rho_J[-1]
    if flow.L_h < 1:
        assert flow.bound == pytest.approx(flow.L_G * flow.L_x / (1 - flow.L_h))
    else:
        assert flow.bound is None
    json.dumps(flow.to_dict())


def _contractive(device, n=5, m=3, seed=0):
    """F(h, x) = tanh(W h + U x) with ‖W‖₂ = 0.6 (a contraction), read out by G(h, x) = A h."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = (0.6 * W / torch.linalg.matrix_norm(W, ord=2)).to(device)
    U = torch.randn(n, m, generator=g, dtype=torch.float64).to(device)
    A = torch.randn(4, n, generator=g, dtype=torch.float64).to(device)
    fp = hg.FixedPoint(lambda h, x: (torch.tanh(W @ h[0] + U @ x),), readout=lambda h, x: A @ h[0],
                       init=lambda x, generator=None: (torch.zeros(n, dtype=x.dtype, device=x.device),))
    x = torch.randn(m, generator=g, dtype=torch.float64).to(device)
    return fp, x, W, U, A


def test_contractive_F_vanishing_in_h0_and_implicit_limit_in_x(device):
    fp, x, W, U, A = _contractive(device)
    K = 30
    flow = gradient_flow(fp, x, steps=K, tol=1e-10)
    # ‖∂h^t/∂h^0‖ decays (geometrically: at most 0.6^t) …
    assert all(b < a for a, b in zip(flow.dh_dh0, flow.dh_dh0[1:]))
    assert flow.dh_dh0[-1] < 0.6 ** K * 1.0001
    # … while ‖∂h^t/∂x‖ approaches ‖(I − J*)⁻¹ B*‖, and the implicit limit of y = A h is ‖A (I − J*)⁻¹ B*‖
    h_star = fp.unroll(x, fp.init(x), K)[-1][0]
    s = 1 - torch.tanh(W @ h_star + U @ x) ** 2
    J_star, B_star = s[:, None] * W, s[:, None] * U
    implicit = A @ torch.linalg.solve(torch.eye(5, dtype=torch.float64, device=device) - J_star, B_star)
    assert flow.implicit_converged
    assert flow.implicit_limit == pytest.approx(_norm2(implicit), rel=1e-8)
    dh_dx_limit = _norm2(torch.linalg.solve(torch.eye(5, dtype=torch.float64, device=device) - J_star, B_star))
    assert flow.dh_dx[-1] == pytest.approx(dh_dx_limit, rel=1e-8)
    assert abs(flow.dh_dx[2] - dh_dx_limit) > abs(flow.dh_dx[-1] - dh_dx_limit)
    # Proposition 3 bounds the limit; Proposition 1's empirical rate sits at or below ρ(J*)
    assert flow.bound is not None and flow.implicit_limit <= flow.bound
    assert flow.rate <= flow.rho_last * 1.05
    assert flow.converged


def test_implicit_jacobian_operator_equals_the_dense_formula():
    fp, x, W, U, A = _contractive("cpu", seed=1)
    h = fp.unroll(x, fp.init(x), 40)[-1]
    op, solves = implicit_jacobian(fp, h, x)
    s = 1 - torch.tanh(W @ h[0] + U @ x) ** 2
    ref = A @ torch.linalg.solve(torch.eye(5, dtype=torch.float64) - s[:, None] * W, s[:, None] * U)
    torch.testing.assert_close(op.dense(), ref)
    torch.testing.assert_close(op.T.dense(), ref.T)
    assert solves and all(r.converged for r in solves)


def test_nmf_flow_with_a_generator_and_no_h0_is_reproducible():
    s = hg.NMF(rank=2)
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = gradient_flow(s, x, steps=3, generator=torch.Generator().manual_seed(5), implicit=False)
    b = gradient_flow(s, x, steps=3, generator=torch.Generator().manual_seed(5), implicit=False)
    assert a.dh_dx == b.dh_dx and a.rho_J == b.rho_J
    assert math.isnan(a.implicit_limit) and not a.implicit_converged
    assert set(a.to_dict()) >= {"t", "dh_dh0", "dh_dx", "rho_J", "norm_J", "norm_B", "residuals", "bound",
                                "implicit_limit", "rate", "rho_last", "L_G", "L_h", "L_x"}


def test_errors_name_the_argument():
    s = hg.NMF(rank=2)
    x = torch.rand(6, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="steps"):
        gradient_flow(s, x, steps=0)
    with pytest.raises(TypeError, match="model must be"):
        gradient_flow(object(), x, steps=2)
    with pytest.raises(TypeError, match="x must be"):
        gradient_flow(s, [[1.0]], steps=2)
