"""gradient_flow against dense float64 Jacobians (jacrev, torch.linalg): the per-step norms, the limits, the bounds
and the rate, on the shared test models (tests/models.py) and the hams."""

import json
import math
import warnings

import pytest
import torch
from torch.func import jacrev

import hamgrad as hg
from hamgrad.analysis import gradient_flow, implicit_jacobian, jacobian, unrolled_jacobian
from hamgrad.fixed_point import flatten_state, unflatten_state
from models import bump, contractive, ista, sinkhorn


def _norm2(A):
    return float(torch.linalg.matrix_norm(A, ord=2))


def _dense_J_B(fp, h, x):
    """``(∂F/∂h, ∂F/∂x)`` at ``(h, x)`` as dense matrices on flat vectors (jacrev)."""
    Jh = jacrev(lambda v: flatten_state(fp.step(unflatten_state(v, h), x)))(flatten_state(h))
    Jx = jacrev(lambda v: flatten_state(fp.step(h, v.reshape(x.shape))))(x.reshape(-1))
    return Jh, Jx


def _dense_G(fp, h, x):
    """``(∂G/∂h, ∂G/∂x)`` at ``(h, x)``, dense."""
    def y(hv, xv):
        return fp.readout(unflatten_state(hv, h), xv.reshape(x.shape)).reshape(-1)
    return jacrev(y, argnums=(0, 1))(flatten_state(h), x.reshape(-1))


def _dense_flow(fp, x, h0, K):
    """The dense reference of every per-step quantity: trajectory, ``J_t, B_t`` (t = 0 … K), ``∂hᵗ/∂h⁰`` and
    ``∂hᵗ/∂x`` (t = 1 … K) by the chain rule of docs/theory.md §3."""
    traj = fp.unroll(x, h0, K)
    JB = [_dense_J_B(fp, traj[t], x) for t in range(K + 1)]
    n = flatten_state(h0).numel()
    P = torch.eye(n, dtype=x.dtype, device=x.device)
    Q = torch.zeros(n, x.numel(), dtype=x.dtype, device=x.device)
    dh_dh0, dh_dx = [], []
    for t in range(1, K + 1):
        J, B = JB[t - 1]
        P, Q = J @ P, J @ Q + B
        dh_dh0.append(P)
        dh_dx.append(Q)
    return traj, JB, dh_dh0, dh_dx


@pytest.mark.parametrize("s", [hg.NMF(rank=2), hg.SoftVQ(rank=2, inv_t=3.0), hg.CD(rank=2, inv_t=3.0)],
                         ids=lambda s: s.name)
def test_norms_equal_dense_jacobian_products(device, s):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 8, generator=g, dtype=torch.float64) + 0.2).to(device)
    h0 = s.init(x, generator=torch.Generator(device=device).manual_seed(1))
    K = 4
    flow = gradient_flow(s, x, h0, steps=K, tol=1e-10)
    fp = hg.FixedPoint.from_solver(s)
    traj, JB, P, Q = _dense_flow(fp, x, h0, K)
    assert flow.t == list(range(1, K + 1)) and flow.t_J == list(range(K + 1))
    for t in range(1, K + 1):
        assert flow.dh_dh0[t - 1] == pytest.approx(_norm2(P[t - 1]), rel=1e-6)
        assert flow.dh_dx[t - 1] == pytest.approx(_norm2(Q[t - 1]), rel=1e-6)
        assert flow.residuals[t - 1] == pytest.approx(float((flatten_state(traj[t]) - flatten_state(traj[t - 1]))
                                                            .norm()), rel=1e-12)
    for t, (J, B) in enumerate(JB):  # J_t, B_t at h^t
        assert flow.norm_J[t] == pytest.approx(_norm2(J), rel=1e-6)
        assert flow.norm_B[t] == pytest.approx(_norm2(B), rel=1e-6)
        assert flow.rho_J[t] == pytest.approx(float(torch.linalg.eigvals(J).abs().max()), rel=1e-6)
    Gh, Gx = _dense_G(fp, traj[-1], x)
    assert flow.L_G == pytest.approx(_norm2(Gh), rel=1e-6)
    assert flow.L_Gx == pytest.approx(_norm2(Gx), rel=1e-6, abs=1e-12)
    assert (flow.L_Gx == 0.0) == (s.name != "cd")  # NMF's and VQ's readout DC ignores x; CD's ridge codes do not
    L_h, L_x = max(_norm2(J) for J, _ in JB[:K]), max(_norm2(B) for _, B in JB[:K])
    assert flow.L_h == pytest.approx(L_h, rel=1e-6) and flow.L_x == pytest.approx(L_x, rel=1e-6)
    assert flow.rho_last == pytest.approx(float(torch.linalg.eigvals(JB[K][0]).abs().max()), rel=1e-6)
    if L_h < 1:
        assert flow.state_bound == pytest.approx(L_x / (1 - L_h), rel=1e-6)
        assert all(_norm2(q) <= flow.state_bound for q in Q)
    else:
        assert flow.state_bound is None and flow.output_bound is None and "no bound" in flow.limit_reason
    json.dumps(flow.to_dict())


def test_bound_takes_B_0_to_B_K_minus_1_and_bounds_every_step():
    # F = 0.5 h + x·exp(−h²) from h⁰ = 0, x = 1: ∂h¹/∂x = B_0 = 1, while B_1 … B_K are smaller; a bound with L_x over
    # B_1 … B_K (0.690 for K = 4) sits below the measured 1.0 at t = 1
    m = bump()
    K = 4
    flow = gradient_flow(m.fp, m.x, m.h0, steps=K, tol=1e-12)
    traj, JB, _, Q = _dense_flow(m.fp, m.x, m.h0, K)
    assert flow.dh_dx[0] == pytest.approx(1.0, rel=1e-12)
    L_h = max(abs(float(J)) for J, _ in JB[:K])
    L_x = max(abs(float(B)) for _, B in JB[:K])
    assert L_x == 1.0
    assert flow.state_bound == pytest.approx(L_x / (1 - L_h), rel=1e-10)
    assert all(float(q.abs()) <= flow.state_bound for q in Q)
    # G = h: the output bound is the state bound (L_G = 1, no direct dependence on x)
    assert flow.L_G == pytest.approx(1.0) and flow.output_bound == pytest.approx(flow.state_bound)


def test_no_limit_for_a_divergent_map():
    # ISTA with step 2.2/L: ρ(J_K) = 1.2 on the active set; (I − J_K)⁻¹ B_K is not the limit of anything
    m = ista(step_factor=2.2)
    K = 20
    flow = gradient_flow(m.fp, m.x, m.h0, steps=K, tol=1e-10)
    traj = m.fp.unroll(m.x, m.h0, K)
    rho = float(torch.linalg.eigvals(_dense_J_B(m.fp, traj[-1], m.x)[0]).abs().max())
    assert rho > 1.1 and flow.rho_last == pytest.approx(rho, rel=1e-8)
    assert flow.state_limit is None and flow.output_limit is None
    assert "ρ(J_K)" in flow.limit_reason and "not < 1" in flow.limit_reason
    assert flow.state_bound is None and flow.output_bound is None


@pytest.mark.parametrize("readout", ["linear", "linear+x"])
def test_limits_and_bounds_of_a_contraction_equal_dense_formulas(device, readout):
    m = contractive(device, readout=readout)
    K = 30
    flow = gradient_flow(m.fp, m.x, m.h0, steps=K, tol=1e-10)
    traj, JB, P, Q = _dense_flow(m.fp, m.x, m.h0, K)
    J_K, B_K = JB[K]
    eye = torch.eye(J_K.shape[0], dtype=torch.float64, device=device)
    state = torch.linalg.solve(eye - J_K, B_K)  # (I − J*)⁻¹ B*
    Gh, Gx = _dense_G(m.fp, traj[-1], m.x)
    assert flow.limit_reason is None
    assert flow.state_limit == pytest.approx(_norm2(state), rel=1e-8)
    assert flow.output_limit == pytest.approx(_norm2(Gh @ state + Gx), rel=1e-8)
    assert flow.L_Gx == pytest.approx(_norm2(Gx), rel=1e-8, abs=1e-12)
    # ‖∂hᵗ/∂h⁰‖ vanishes; ‖∂hᵗ/∂x‖ approaches the state limit
    assert flow.dh_dh0[-1] < 0.6 ** K
    assert flow.dh_dx[-1] == pytest.approx(flow.state_limit, rel=1e-8)
    # the bounds hold for every step (state) and for y after K steps (output, ∂y/∂x = ∂G/∂h ∂h^K/∂x + ∂G/∂x)
    assert all(_norm2(q) <= flow.state_bound for q in Q)
    assert _norm2(Gh @ Q[-1] + Gx) <= flow.output_bound
    L_h, L_x = max(_norm2(J) for J, _ in JB[:K]), max(_norm2(B) for _, B in JB[:K])
    assert flow.output_bound == pytest.approx(_norm2(Gh) * L_x / (1 - L_h) + _norm2(Gx), rel=1e-6)


def test_rate_equals_the_spectral_radius_once_the_ratio_has_settled():
    m = contractive()
    K = 30
    flow = gradient_flow(m.fp, m.x, m.h0, steps=K, tol=1e-10, implicit=False)
    h_star = m.fp.unroll(m.x, m.h0, 200)[-1]
    rho = float(torch.linalg.eigvals(_dense_J_B(m.fp, h_star, m.x)[0]).abs().max())
    assert flow.rate_steps >= 8  # the residuals above the rounding floor, second half
    assert flow.rate_spread < 1e-3 * rho
    assert flow.rate == pytest.approx(rho, rel=1e-4)
    # from six residuals the ratio has not settled: its spread says so
    short = gradient_flow(m.fp, m.x, m.h0, steps=6, tol=1e-10, implicit=False)
    assert short.rate_steps == 2 and short.rate_spread > 1e-3 * rho
    assert "implicit=False" in short.limit_reason


def test_implicit_jacobian_operators_equal_the_dense_formulas():
    m = contractive(seed=1, readout="linear+x")
    h = m.fp.unroll(m.x, m.h0, 40)[-1]
    J, B = _dense_J_B(m.fp, h, m.x)
    Gh, Gx = _dense_G(m.fp, h, m.x)
    state = torch.linalg.solve(torch.eye(5, dtype=torch.float64) - J, B)
    for readout, ref in ((False, state), (True, Gh @ state + Gx)):
        op, solves = implicit_jacobian(m.fp, h, m.x, readout=readout)
        torch.testing.assert_close(op.dense(), ref)
        torch.testing.assert_close(op.T.dense(), ref.T)
        assert solves and all(r.converged for r in solves)


def test_deprecated_names_warn_and_read_the_output_quantities():
    m = contractive()
    flow = gradient_flow(m.fp, m.x, m.h0, steps=10, tol=1e-10)
    with pytest.warns(DeprecationWarning, match="output_limit"):
        assert flow.implicit_limit == flow.output_limit
    with pytest.warns(DeprecationWarning, match="output_bound"):
        assert flow.bound == flow.output_bound
    with pytest.warns(DeprecationWarning, match="output_limit"):
        assert flow.implicit_converged is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = flow.to_dict()  # plain data, no deprecated names
    assert "implicit_limit" not in d and {"state_limit", "output_limit", "state_bound", "output_bound",
                                          "limit_reason", "rate_spread", "rate_steps", "t_J", "L_Gx"} <= set(d)


def test_nmf_flow_with_a_generator_and_no_h0_is_reproducible():
    s = hg.NMF(rank=2)
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = gradient_flow(s, x, steps=3, generator=torch.Generator().manual_seed(5), implicit=False)
    b = gradient_flow(s, x, steps=3, generator=torch.Generator().manual_seed(5), implicit=False)
    assert a.dh_dx == b.dh_dx and a.rho_J == b.rho_J
    assert a.state_limit is None and a.output_limit is None


def test_errors_name_the_argument():
    s = hg.NMF(rank=2)
    x = torch.rand(6, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="steps"):
        gradient_flow(s, x, steps=0)
    with pytest.raises(TypeError, match="model must be"):
        gradient_flow(object(), x, steps=2)
    with pytest.raises(TypeError, match="x must be"):
        gradient_flow(s, [[1.0]], steps=2)


def test_analysis_entry_points_check_inputs_as_solve_does():
    s = hg.NMF(rank=2)
    x = torch.rand(6, 8, dtype=torch.float64)
    h = s.init(x)
    bad_h = (h[0], h[1][:, :5])
    for call in (lambda z: gradient_flow(s, z, h, steps=2), lambda z: jacobian(s, h, z),
                 lambda z: unrolled_jacobian(s, z, h, steps=2), lambda z: implicit_jacobian(s, h, z)):
        with pytest.raises(ValueError, match="non-negative"):
            call(x - 0.5)
        with pytest.raises(ValueError, match="NaN or Inf"):
            call(torch.full_like(x, math.nan))
    for call in (lambda: gradient_flow(s, x, bad_h, steps=2), lambda: jacobian(s, bad_h, x),
                 lambda: unrolled_jacobian(s, x, bad_h, steps=2)):
        with pytest.raises(ValueError, match="must have shapes"):
            call()
    with pytest.raises(ValueError, match=r"h0\[0\] contains NaN"):
        gradient_flow(contractive().fp, contractive().x, (torch.full((5,), math.nan, dtype=torch.float64),))


def test_limit_reason_states_what_was_measured_at_an_exact_invariance():
    # balanced Sinkhorn commutes with (u, v) -> (λu, v/λ), which the plan P does not see: at its fixed point J* has
    # the eigenvalue 1 exactly, yet Σ J*ⁱ B* converges. The old reason claimed the series "does not converge".
    m = sinkhorn()
    h = m.h0
    J, B = _dense_J_B(m.fp, h, m.x)
    Gh, _ = _dense_G(m.fp, h, m.x)
    v = torch.cat([h[0], -h[1]])
    assert float((J @ v - v).norm()) < 1e-12 * float(v.norm()) and float((Gh @ v).norm()) < 1e-12  # the invariance
    assert float(torch.linalg.eigvals(J).abs().max()) == pytest.approx(1.0, abs=1e-12)
    partial, term = torch.zeros_like(B), B.clone()  # the Neumann series, summed densely: it converges
    for i in range(400):
        partial, term = partial + term, J @ term
    assert _norm2(term) < 1e-12 and math.isfinite(_norm2(partial))
    flow = gradient_flow(m.fp, m.x, h, steps=3, tol=1e-10)
    assert flow.rho_last == pytest.approx(1.0, abs=1e-10)
    assert flow.state_limit is None and flow.output_limit is None
    assert "measured ρ(J_K) = 1, not below 1 by more than tol = 1e-10" in flow.limit_reason
    assert "does not converge" not in flow.limit_reason


@pytest.mark.parametrize("h_value", [1.0, 1e200])
def test_gradient_flow_names_the_step_where_the_state_stopped_being_finite(h_value):
    # h ← 2h² + x squares its magnitude each step until it overflows float64 (before: NaN/Inf numbers with no word,
    # or torch.linalg.eig's own error)
    fp = hg.FixedPoint(lambda h, x: (2.0 * h[0] ** 2 + x,))
    x = torch.full((3,), 2.0, dtype=torch.float64)
    h0 = (torch.full((3,), h_value, dtype=torch.float64),)
    h, bad = h0[0], None  # the reference: the first step whose state is not finite, by a plain loop
    for t in range(1, 13):
        h = 2.0 * h ** 2 + x
        if bad is None and not torch.isfinite(h).all():
            bad = t
    assert bad == (10 if h_value == 1.0 else 1)
    with pytest.raises(ValueError, match=f"stopped being finite at step t = {bad} of K = 12: h\\^{bad} holds NaN "
                                         "or Inf"):
        gradient_flow(fp, x, h0, steps=12)
