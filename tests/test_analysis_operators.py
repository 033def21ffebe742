"""Jacobian operators against dense torch.func.jacrev Jacobians; the hand-derived NMF linearisation against autograd."""

import json

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from torch.func import jacrev

import hamgrad as hg
from hamgrad.analysis import LinearOperator, jacobian, register_linearization, unrolled_jacobian
from hamgrad.analysis.linearize import AutogradLinearization, NMFLinearization, hand_derived, linearize
from hamgrad.analysis.operators import linear_operator
from hamgrad.fixed_point import FixedPoint, flatten_state, unflatten_state

D_, N_, R_ = 6, 8, 2


def _solvers():
    return [hg.NMF(rank=R_), hg.SoftVQ(rank=R_, inv_t=3.0), hg.CD(rank=R_, inv_t=3.0, beta=0.1)]


def _point(s, device, steps=2, seed=0, batch=()):
    """x (NMF-friendly positive data) and a state a few steps into the solve, float64."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(*batch, D_, N_, generator=g, dtype=torch.float64) + 0.2).to(device)
    h = s.init(x, generator=torch.Generator(device=device).manual_seed(seed + 1))
    for _ in range(steps):
        h = s.step(x, h)
    return x, h


def _dense_step_jacobian(s, h, x, wrt):
    """The reference: jacrev of the flat step map."""
    if wrt == "h":
        return jacrev(lambda v: flatten_state(s.step(x, unflatten_state(v, h))))(flatten_state(h))
    return jacrev(lambda v: flatten_state(s.step(v.reshape(x.shape), h)))(x.reshape(-1))


def _rand(shape, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device)


@pytest.mark.parametrize("s", _solvers(), ids=lambda s: s.name)
@pytest.mark.parametrize("wrt", ["h", "x"])
def test_jvp_and_vjp_equal_dense_jacrev_products(device, s, wrt):
    x, h = _point(s, device)
    ref = _dense_step_jacobian(s, h, x, wrt)
    for F in (s, lambda h, x: s.step(x, h)):  # the solver (hand-derived for NMF) and a plain callable (autograd)
        J = jacobian(F, h, x, wrt=wrt)
        assert J.shape == tuple(ref.shape)
        v, u = _rand(J.shape[1], device, 1), _rand(J.shape[0], device, 2)
        torch.testing.assert_close(J @ v, ref @ v)
        torch.testing.assert_close(J.T @ u, ref.T @ u)
        V = _rand((J.shape[1], 3), device, 3)
        torch.testing.assert_close(J @ V, ref @ V)
        torch.testing.assert_close(J.dense(chunk_size=7), ref)


@pytest.mark.parametrize("s", _solvers(), ids=lambda s: s.name)
@pytest.mark.parametrize("wrt", ["h", "x"])
@pytest.mark.parametrize("readout", [True, False])
def test_unrolled_jacobian_equals_jacrev_of_the_unrolled_map(device, s, wrt, readout):
    x, h0 = _point(s, device, steps=0, batch=(2,))
    K = 3

    def unrolled(h, x):
        for _ in range(K):
            h = s.step(x, h)
        return s.readout(x, h).reshape(-1) if readout else flatten_state(h)

    if wrt == "x":
        ref = jacrev(lambda v: unrolled(h0, v.reshape(x.shape)))(x.reshape(-1))
    else:
        ref = jacrev(lambda v: unrolled(unflatten_state(v, h0), x))(flatten_state(h0))
    J = unrolled_jacobian(s, x, h0, steps=K, wrt=wrt, readout=readout)
    torch.testing.assert_close(J.dense(), ref)
    u = _rand(J.shape[0], device, 4)
    torch.testing.assert_close(J.T @ u, ref.T @ u)


def test_unrolled_jacobian_draws_h0_from_the_generator():
    s = hg.NMF(rank=R_)
    x, _ = _point(s, "cpu")
    J1 = unrolled_jacobian(s, x, steps=2, generator=torch.Generator().manual_seed(3)).dense()
    J2 = unrolled_jacobian(s, x, steps=2, generator=torch.Generator().manual_seed(3)).dense()
    h0 = s.init(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(J1, J2)
    torch.testing.assert_close(J1, unrolled_jacobian(s, x, h0, steps=2).dense())


@pytest.mark.parametrize("steps,readout", [(1, False), (3, False), (3, True), (0, True)])
def test_nmf_hand_derived_linearisation_equals_autograd(device, steps, readout):
    s = hg.NMF(rank=3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 7, 9, generator=g, dtype=torch.float64).to(device)  # a batch of two inputs
    h = s.init(x, generator=torch.Generator(device=device).manual_seed(1))

    def unrolled(h, x):
        for _ in range(steps):
            h = s.step(x, h)
        return (s.readout(x, h),) if readout else h

    hand, auto = NMFLinearization(s, h, x, steps, readout), AutogradLinearization(unrolled, h, x)
    for a, r in zip(hand.out, unrolled(h, x)):
        torch.testing.assert_close(a, r)
    b = 4  # a block of four tangents
    dh = tuple(_rand((b, *t.shape), device, i) for i, t in enumerate(h))
    dx = _rand((b, *x.shape), device, 9)
    for args in ((dh, dx), (dh, None), (None, dx)):
        for a, r in zip(hand.jvp(*args), auto.jvp(*args)):
            torch.testing.assert_close(a, r)
    gout = tuple(_rand((b, *t.shape), device, 20 + i) for i, t in enumerate(hand.out))
    for wrt_x in (True, False):
        (hD, hC), hx = hand.vjp(gout, wrt_x=wrt_x)
        (aD, aC), ax = auto.vjp(gout, wrt_x=wrt_x)
        torch.testing.assert_close(hD, aD)
        torch.testing.assert_close(hC, aC)
        if wrt_x:
            torch.testing.assert_close(hx, ax)
        else:
            assert hx is None and ax is None


@pytest.mark.parametrize("batch", [(), (2,)])
def test_nmf_products_leave_what_they_return_and_are_given_untouched(device, batch):
    """The hand-derived products reuse internal buffers from call to call: their results, and their arguments, must
    survive later calls (of the same block size and of others), and a repeated call must give the same values."""
    s = hg.NMF(rank=R_)
    x, h = _point(s, device, batch=batch)
    lin = NMFLinearization(s, h, x, steps=3)

    def products(b, seed):
        dh = tuple(_rand((b, *t.shape), device, seed + i) for i, t in enumerate(h))
        dx = _rand((b, *x.shape), device, seed + 5)
        (gD, gC), gx = lin.vjp(dh, wrt_x=True)
        return [*dh, dx], [*lin.jvp(dh, dx), gD, gC, gx, *lin.x_cogram(dh)]

    given, results = products(2, 0)
    given_before, results_before = [t.clone() for t in given], [t.clone() for t in results]
    for b, seed in ((2, 10), (3, 20), (2, 30)):
        products(b, seed)
    for now, before in zip(given + results, given_before + results_before):
        assert torch.equal(now, before)
    for again, before in zip(products(2, 0)[1], results_before):
        torch.testing.assert_close(again, before)


def test_linearize_dispatch():
    s = hg.NMF(rank=R_)
    x, h = _point(s, "cpu")
    assert isinstance(linearize(FixedPoint.from_solver(s), h, x), NMFLinearization)

    class MyNMF(hg.NMF):  # a subclass may change the step: only autograd knows its derivative
        pass

    assert isinstance(linearize(FixedPoint.from_solver(MyNMF(rank=R_)), h, x), AutogradLinearization)
    assert isinstance(linearize(FixedPoint.from_solver(hg.SoftVQ(rank=R_)), h, x, 2, True), AutogradLinearization)
    with pytest.raises(ValueError, match="steps"):
        NMFLinearization(s, h, x, steps=0, readout=False)


def test_a_registered_linearization_is_used_for_its_solver_class():
    # a user's solver brings its own linearisation: here one that records its use and defers to autograd
    class MyVQ(hg.SoftVQ):
        pass

    built = []

    def factory(solver, h, x, steps, readout):
        built.append((steps, readout))
        fp = FixedPoint.from_solver(hg.SoftVQ(rank=solver.rank, inv_t=solver.inv_t))
        return linearize(fp, h, x, steps, readout)

    s = MyVQ(rank=R_, inv_t=3.0)
    x, h = _point(s, "cpu")
    assert not hand_derived(FixedPoint.from_solver(s))
    register_linearization(MyVQ, factory)
    assert hand_derived(FixedPoint.from_solver(s))
    ref = jacrev(lambda v: flatten_state(s.step(x, unflatten_state(v, h))))(flatten_state(h))
    torch.testing.assert_close(jacobian(s, h, x).dense(), ref)
    J = unrolled_jacobian(s, x, h, steps=2)  # the readout uses x (the default): not factored through the state
    assert built == [(1, False), (2, True)] and J.factors is None
    with pytest.raises(TypeError, match="factory must be callable"):
        register_linearization(MyVQ, None)
    with pytest.raises(TypeError, match="solver_class must be a class"):
        register_linearization(s, factory)


def test_a_subclass_with_matmat_and_adjoint_is_an_operator():
    class Shift(LinearOperator):  # (Sv)_i = v_{i−1}: nilpotent, ‖S‖ = 1
        def __init__(self, n):
            super().__init__((n, n), dtype=torch.float64, device="cpu", name="shift")

        def _matmat(self, V):
            return torch.nn.functional.pad(V[:, :-1], (1, 0))

        def _adjoint(self, U):
            return torch.nn.functional.pad(U[:, 1:], (0, 1))

    S = Shift(5)
    ref = torch.diag(torch.ones(4, dtype=torch.float64), -1)
    torch.testing.assert_close(S.dense(), ref)
    torch.testing.assert_close((S @ S).T.dense(), (ref @ ref).T)
    assert hg.analysis.spectral_norm(S) == pytest.approx(1.0)


def test_users_F_with_a_two_tensor_state(device):
    g = torch.Generator().manual_seed(0)
    W = (0.3 * torch.randn(4, 4, generator=g, dtype=torch.float64)).to(device)
    x = torch.randn(4, generator=g, dtype=torch.float64).to(device)

    def F(h, x):
        a, b = h
        return torch.tanh(W @ a + x * b.sum()), 0.5 * b + a[:2] * x[:2]

    h = (torch.randn(4, generator=g, dtype=torch.float64).to(device),
         torch.randn(2, generator=g, dtype=torch.float64).to(device))
    for wrt, ref in (("h", jacrev(lambda v: flatten_state(F(unflatten_state(v, h), x)))(flatten_state(h))),
                     ("x", jacrev(lambda v: flatten_state(F(h, v)))(x))):
        J = jacobian(F, h, x, wrt=wrt)
        torch.testing.assert_close(J.dense(), ref)
        torch.testing.assert_close(J.T.dense(), ref.T)


@pytest.mark.parametrize("batch", [(), (2,)])
def test_nmf_gram_products_equal_dense_jacobian_products(device, batch):
    """The hand-derived Gram products (no d × n tangent) against products with the dense jacrev Jacobians."""
    s, K = hg.NMF(rank=R_), 3
    x, h0 = _point(s, device, steps=0, batch=batch)

    def state_after(x):
        h = h0
        for _ in range(K):
            h = s.step(x, h)
        return h

    hK = state_after(x)
    Mref = jacrev(lambda v: flatten_state(state_after(v.reshape(x.shape))))(x.reshape(-1))  # ∂h^K/∂x
    Gref = jacrev(lambda v: s.readout(x, unflatten_state(v, hK)).reshape(-1))(flatten_state(hK))  # ∂y/∂h^K
    J = unrolled_jacobian(s, x, h0, steps=K)  # ∂y/∂x, composed through the state
    G, M = J.factors
    assert G.shape == tuple(Gref.shape) and M.shape == tuple(Mref.shape)
    Z = _rand((3, M.shape[0]), device, 5)
    torch.testing.assert_close(M.cogram(Z), Z @ Mref @ Mref.T)
    torch.testing.assert_close(G.gram(Z), Z @ Gref.T @ Gref)
    torch.testing.assert_close(J.dense(), Gref @ Mref)
    # the output-side Gram product of the unfactored ∂y/∂x (hand-derived too)
    Y = _rand((2, J.shape[0]), device, 6)
    flat = linear_operator(NMFLinearization(s, h0, x, K, readout=True), "x", h0, x, "dy/dx")
    assert flat.factors is None
    torch.testing.assert_close(flat.cogram(Y), Y @ (Gref @ Mref) @ (Gref @ Mref).T)


def test_step_operators_compose_into_the_two_step_jacobian():
    s = hg.NMF(rank=R_)
    x, h0 = _point(s, "cpu", steps=0)
    h1 = s.step(x, h0)
    J0, J1 = jacobian(s, h0, x), jacobian(s, h1, x)
    ref = unrolled_jacobian(s, x, h0, steps=2, wrt="h", readout=False).dense()
    torch.testing.assert_close((J1 @ J0).dense(), ref)
    torch.testing.assert_close(J1.dense() @ J0.dense(), ref)


def test_to_scipy_runs_scipy_solvers_unchanged():
    s = hg.NMF(rank=R_)
    x, h = _point(s, "cpu")
    J = jacobian(s, h, x, wrt="x")
    ref = J.dense().numpy()
    op = J.to_scipy()
    assert op.shape == ref.shape and op.dtype == np.float64
    v = np.random.default_rng(0).standard_normal(ref.shape[1])
    u = np.random.default_rng(1).standard_normal(ref.shape[0])
    np.testing.assert_allclose(op.matvec(v), ref @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.rmatvec(u), ref.T @ u, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.matmat(np.stack([v, 2 * v], 1)), ref @ np.stack([v, 2 * v], 1), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(op.matvec(v + 1j * v), ref @ v * (1 + 1j), rtol=1e-10, atol=1e-12)
    sv = spla.svds(op, k=3, return_singular_vectors=False, random_state=0)
    np.testing.assert_allclose(np.sort(sv)[::-1], np.linalg.svd(ref, compute_uv=False)[:3], rtol=1e-8)
    Jh = jacobian(s, h, x, wrt="h")
    A = np.eye(Jh.shape[0]) - 0.5 * Jh.dense().numpy()
    b = np.random.default_rng(2).standard_normal(Jh.shape[0])
    I_minus = spla.LinearOperator(A.shape, matvec=lambda v: v - 0.5 * Jh.to_scipy().matvec(v), dtype=np.float64)
    sol, info = spla.gmres(I_minus, b, rtol=1e-12, atol=0, maxiter=500)
    assert info == 0
    np.testing.assert_allclose(sol, np.linalg.solve(A, b), rtol=1e-6, atol=1e-8)


def test_errors_name_the_argument():
    s = hg.NMF(rank=R_)
    x, h = _point(s, "cpu")
    with pytest.raises(ValueError, match="wrt"):
        jacobian(s, h, x, wrt="y")
    with pytest.raises(ValueError, match="wrt"):
        unrolled_jacobian(s, x, h, steps=2, wrt="h0")
    with pytest.raises(TypeError, match="h must be a tuple"):
        jacobian(s, h[0], x)
    with pytest.raises(ValueError, match="same structure"):
        jacobian(lambda h, x: (h[0],), h, x)
    with pytest.raises(ValueError, match="steps"):
        unrolled_jacobian(s, x, h, steps=0)
    J = jacobian(s, h, x)
    with pytest.raises(ValueError, match="cannot compose"):
        J @ jacobian(s, h, x, wrt="x").T
    with pytest.raises(ValueError, match=r"block of shape"):
        J @ torch.ones(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="1-D or 2-D tensor"):
        J @ 3.0
    with pytest.raises(ValueError, match="2-D"):
        LinearOperator.from_dense(torch.ones(2, 2, 2))


def test_repr_and_metadata_are_plain():
    s = hg.NMF(rank=R_)
    x, h = _point(s, "cpu")
    J = jacobian(s, h, x)
    assert "dnmf/dh" in repr(J) and J.dtype == torch.float64 and J.device.type == "cpu"
    json.dumps({"shape": J.shape})


def test_half_precision_inputs_are_analysed_in_float32():
    s = hg.NMF(rank=R_)
    x, h = _point(s, "cpu")
    J16 = unrolled_jacobian(s, x.half(), tuple(t.half() for t in h), steps=2)
    assert J16.dtype == torch.float32
    J32 = unrolled_jacobian(s, x.half().float(), tuple(t.half().float() for t in h), steps=2)
    torch.testing.assert_close(J16.dense(), J32.dense())
    assert jacobian(s, tuple(t.bfloat16() for t in h), x.bfloat16()).dtype == torch.float32


# ---------------------------------------------------------------------- steps the analysis cannot linearise
_HALF = 0.5 * torch.eye(3, dtype=torch.float64)  # the true J of F(h, x) = h/2 + x


def _no_grad_step(h, x):
    with torch.no_grad():
        return (0.5 * h[0] + x,)


@pytest.mark.parametrize("F", [lambda h, x: ((0.5 * h[0] + x).detach(),), _no_grad_step], ids=["detach", "no_grad"])
def test_a_step_without_a_graph_is_refused_not_read_as_a_zero_jacobian(F):
    # before: J = 0, ρ = 0, "converged", state_limit 0 — where the true J is 0.5·I
    x, h = torch.ones(3, dtype=torch.float64), (torch.zeros(3, dtype=torch.float64),)
    assert torch.equal(jacrev(lambda v: 0.5 * v + x)(h[0]), _HALF)  # what the step's Jacobian is
    for analyse in (lambda: jacobian(F, h, x), lambda: jacobian(FixedPoint(F), h, x),
                    lambda: unrolled_jacobian(FixedPoint(F), x, h, steps=2),
                    lambda: hg.gradient_flow(FixedPoint(F), x, h, steps=3)):
        with pytest.raises(ValueError, match="no autograd graph to its inputs"):
            analyse()


def test_a_stochastic_step_is_refused_by_name():
    # before: method="dense" assembled a Jacobian from different draws and reported converged eigenvalues, and
    # arnoldi/lanczos failed with torch.func's vmap message
    private = torch.Generator().manual_seed(0)
    steps = {"global RNG": lambda h, x: (0.5 * h[0] + x + 0.1 * torch.randn_like(h[0]),),
             "own generator": lambda h, x: (0.5 * h[0] + x + 0.1 * torch.randn(h[0].shape, generator=private,
                                                                               dtype=h[0].dtype),),
             "dropout": lambda h, x: (torch.nn.functional.dropout(0.5 * h[0] + x, 0.5),)}
    for n in (3, 40):  # dense, and ARPACK / Lanczos sizes
        x, h = torch.ones(n, dtype=torch.float64), (torch.zeros(n, dtype=torch.float64),)
        for label, F in steps.items():
            for analyse in (lambda: hg.eigvals(jacobian(F, h, x), k=2, method="dense"),
                            lambda: hg.svdvals(jacobian(F, h, x), k=2, method="lanczos"),
                            lambda: hg.gradient_flow(FixedPoint(F), x, h, steps=2)):
                with pytest.raises(ValueError, match=r"draws random numbers"):
                    analyse()
    deterministic = jacobian(lambda h, x: (0.5 * h[0] + x,), h, x)  # the same step without noise is fine
    torch.testing.assert_close(deterministic.dense(), 0.5 * torch.eye(40, dtype=torch.float64))


def test_meta_tensors_are_refused_by_name():
    # before: "Tensor.item() cannot be called on meta tensors" (or an operator on the meta device)
    x, h = torch.ones(3, device="meta"), (torch.zeros(3, device="meta"),)
    fp = FixedPoint(lambda h, x: (0.5 * h[0] + x,), readout=lambda h, x: h[0])
    for call in (lambda: hg.solve(hg.NMF(rank=2), torch.ones(2, 4, 4, device="meta"), steps=2),
                 lambda: hg.solve(fp, x, steps=2, h0=h), lambda: jacobian(fp, h, x),
                 lambda: jacobian(lambda h, x: (0.5 * h[0] + x,), h, x), lambda: hg.implicit_gradient(fp, h, x),
                 lambda: hg.gradient_flow(fp, x, h, steps=2),
                 lambda: hg.accumulative_ratio(torch.ones(2, 2, device="meta"))):
        with pytest.raises(ValueError, match="is on the meta device"):
            call()


@pytest.mark.parametrize("model", ["function", "nmf"])
def test_a_state_and_an_input_of_different_dtypes_are_analysed_in_x_s_dtype(model):
    # before: a float32 state with a float64 x gave torch's "expected m1 and m2 to have the same dtype"
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 8, generator=g, dtype=torch.float64) + 0.2
    if model == "nmf":
        F = hg.NMF(rank=2)
        h = F.init(x, generator=torch.Generator().manual_seed(1))
        step = lambda h, x: F.step(x, h)  # noqa: E731
    else:
        W = torch.randn(4, 6, generator=g, dtype=torch.float64)
        F = step = lambda h, x: (torch.tanh(0.5 * h[0] + W @ x),)  # noqa: E731
        h = (torch.rand(4, 8, generator=g, dtype=torch.float64),)
    h32 = tuple(t.float() for t in h)
    J = jacobian(F, h32, x)
    assert J.dtype == torch.float64
    at = tuple(t.double() for t in h32)  # the analysis point: the float32 state in x's dtype
    want = jacrev(lambda v: flatten_state(step(unflatten_state(v, at), x)))(flatten_state(at))
    torch.testing.assert_close(J.dense(), want, rtol=1e-10, atol=1e-12)
