"""compare_gradients: identities (a mode against itself), implicit vs converged BPTT, module parameters."""

import json
import math

import pytest
import torch

import hamgrad as hg
from hamgrad.analysis import compare_gradients
from models import contractive


def _loss(seed=0):
    def loss(y):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)
        return (w * y).sum() + (y ** 2).sum()
    return loss


def _nmf_input(device):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(6, 8, generator=g, dtype=torch.float64) + 0.2).to(device)


def test_nmf_rows_equal_a_direct_autograd_computation(device):
    s = hg.NMF(rank=2)
    x = _nmf_input(device)
    h0 = s.init(x, generator=torch.Generator(device=device).manual_seed(1))
    loss = _loss()
    cmp = compare_gradients(s, x, loss, steps=4, modes=["bptt", "one-step"], reference="bptt", h0=h0)
    # the reference by hand: BPTT through four NMF steps; one-step: the last step only
    xr = x.clone().requires_grad_(True)
    h = h0
    for _ in range(4):
        h = s.step(xr, h)
    g_ref = torch.autograd.grad(loss(s.readout(xr, h)), xr)[0].flatten()
    with torch.no_grad():
        h = h0
        for _ in range(3):
            h = s.step(x, h)
    g_one = torch.autograd.grad(loss(s.readout(xr, s.step(xr, h))), xr)[0].flatten()
    bptt, one = cmp.modes
    assert bptt.mode == "bptt" and bptt.cosine_x == pytest.approx(1.0, abs=1e-12)
    assert one.cosine_x == pytest.approx(float(g_one @ g_ref / (g_one.norm() * g_ref.norm())), rel=1e-10)
    assert one.norm_ratio_x == pytest.approx(float(g_one.norm() / g_ref.norm()), rel=1e-10)
    assert one.cosine_x < 1 - 1e-6  # one-step drops (I − J)⁻¹: a different gradient at K = 4
    assert cmp.reference.loss == pytest.approx(float(loss(s.readout(x, _unroll(s, x, h0, 4)))))
    assert bptt.cosine_params is None and bptt.norm_ratio_params is None
    assert bptt.seconds > 0 and bptt.memory_kind
    json.dumps(cmp.to_dict())
    assert [r["mode"] for r in cmp.rows()] == ["bptt", "one-step"]


def _unroll(s, x, h, K):
    with torch.no_grad():
        for _ in range(K):
            h = s.step(x, h)
    return h


def test_gradients_equal_a_direct_autograd_computation():
    s = hg.SoftVQ(rank=2, inv_t=3.0)
    x = _nmf_input("cpu")
    h0 = s.init(x, generator=torch.Generator().manual_seed(2))
    loss = _loss(1)
    xr = x.clone().requires_grad_(True)
    h = h0
    for _ in range(3):
        h = s.step(xr, h)
    g_ref = torch.autograd.grad(loss(s.readout(xr, h)), xr)[0]
    h = h0
    for _ in range(2):
        h = s.step(x, h)
    g_one = torch.autograd.grad(loss(s.readout(xr, s.step(xr, h))), xr)[0]
    cmp = compare_gradients(s, x, loss, steps=3, modes=["one-step"], reference="bptt", h0=h0)
    cos = float(g_one.flatten() @ g_ref.flatten() / (g_one.norm() * g_ref.norm()))
    assert cmp.modes[0].cosine_x == pytest.approx(cos, rel=1e-12)
    assert cmp.modes[0].norm_ratio_x == pytest.approx(float(g_one.norm() / g_ref.norm()), rel=1e-12)


def test_implicit_agrees_with_converged_bptt_on_a_contraction(device):
    m = contractive(device, norm_W=0.5, readout="linear")
    cmp = compare_gradients(m.fp, m.x, lambda y: (y * torch.arange(4.0, dtype=y.dtype, device=y.device)).sum(),
                            steps=40, modes=["implicit", "one-step", "bptt"], reference="bptt", reference_steps=80)
    implicit, one, bptt = cmp.modes
    assert cmp.reference.steps == 80 and implicit.steps == 40
    assert implicit.cosine_x == pytest.approx(1.0, abs=1e-10)
    assert implicit.norm_ratio_x == pytest.approx(1.0, abs=1e-8)
    assert bptt.cosine_x == pytest.approx(1.0, abs=1e-10)
    assert one.cosine_x < 1 - 1e-4


def test_module_parameters_before_and_after_the_solve():
    torch.manual_seed(0)
    lower = torch.nn.Linear(4, 6, dtype=torch.float64)
    head = torch.nn.Linear(8, 2, dtype=torch.float64)
    module = torch.nn.ModuleDict({"lower": lower, "head": head})
    inp = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torch.relu(lower(inp)).T + 0.1  # (6, 8), non-negative, with a graph to `lower`
    s = hg.NMF(rank=2)
    h0 = s.init(x.detach(), generator=torch.Generator().manual_seed(2))

    def loss(y):
        return head(y).square().mean()

    cmp = compare_gradients(s, x, loss, steps=3, modes=["bptt", "one-step"], reference="bptt", h0=h0,
                            module=module)
    bptt, one = cmp.modes
    assert bptt.cosine_params == pytest.approx(1.0, abs=1e-12)
    # direct autograd for the one-step parameter gradient
    with torch.no_grad():
        h = h0
        for _ in range(2):
            h = s.step(x, h)
    ref_params = list(module.parameters())
    g = torch.autograd.grad(loss(s.readout(x, s.step(x, h))), ref_params, retain_graph=True)
    h = h0
    for _ in range(3):
        h = s.step(x, h)
    gb = torch.autograd.grad(loss(s.readout(x, h)), ref_params, retain_graph=True)
    a, b = torch.cat([t.flatten() for t in g]), torch.cat([t.flatten() for t in gb])
    assert one.cosine_params == pytest.approx(float(a @ b / (a.norm() * b.norm())), rel=1e-10)
    assert one.norm_ratio_params == pytest.approx(float(a.norm() / b.norm()), rel=1e-10)


def test_bptt_saves_more_for_backward_than_one_step():
    s = hg.NMF(rank=4)
    x = torch.rand(16, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cmp = compare_gradients(s, x, _loss(), steps=12, modes=["bptt", "one-step"], reference="bptt")
    bptt, one = cmp.modes
    assert bptt.memory_kind == "saved_for_backward"
    assert bptt.peak_bytes > 4 * one.peak_bytes


def test_errors_name_the_argument():
    s = hg.NMF(rank=2)
    x = _nmf_input("cpu")
    with pytest.raises(ValueError, match="unknown gradient mode"):
        compare_gradients(s, x, _loss(), steps=2, modes=["bptt", "backprop"])
    with pytest.raises(ValueError, match="unknown gradient mode"):
        compare_gradients(s, x, _loss(), steps=2, reference="exact")
    with pytest.raises(ValueError, match="modes must be"):
        compare_gradients(s, x, _loss(), steps=2, modes="bptt")
    with pytest.raises(TypeError, match="loss_fn"):
        compare_gradients(s, x, None, steps=2)
    with pytest.raises(ValueError, match=r"loss_fn\(y\) must return a scalar .* shape \(6, 8\)"):
        compare_gradients(s, x, lambda y: y, steps=2)
    with pytest.raises(ValueError, match=r"loss_fn\(y\) returned a tensor without a graph"):
        compare_gradients(s, x, lambda y: y.detach().sum(), steps=2)
    with pytest.raises(TypeError, match=r"loss_fn\(y\) must return a scalar torch.Tensor, got float"):
        compare_gradients(s, x, lambda y: float(y.detach().sum()), steps=2)
    with pytest.raises(TypeError, match="module"):
        compare_gradients(s, x, _loss(), steps=2, module="net")
    with pytest.raises(ValueError, match="reference_steps"):
        compare_gradients(s, x, _loss(), steps=2, reference_steps=0)


def test_a_reference_that_did_not_converge_is_flagged_in_the_result_and_the_plot():
    # the README's old example: NMF against reference="implicit", whose adjoint solve diverges (I − J* is singular
    # for NMF, docs/theory.md §3): the one-step "cosine" of 0.0018 was measured against the last iterate
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    x = torch.rand(2, 16, 64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(hg.ConvergenceWarning, match="the gradient is NaN"):
        cmp = compare_gradients(hg.NMF(rank=4), x, lambda y: y.square().mean(), steps=6, modes=["one-step"],
                                reference="implicit", reference_steps=50, generator=torch.Generator().manual_seed(1))
    ref = cmp.reference
    assert cmp.reference_converged is False and ref.converged is False and ref.backward_residual > 1e-5
    assert math.isnan(cmp.modes[0].cosine_x) and cmp.modes[0].converged is None  # one-step solves nothing
    d = json.loads(json.dumps(cmp.to_dict(), allow_nan=True))
    assert d["reference_converged"] is False and d["reference"]["converged"] is False
    fig = hg.plots.agreement(cmp, label="NMF")
    assert "NOT CONVERGED" in fig.texts[0].get_text() + "".join(a.get_title() for a in fig.axes)


def test_a_converged_reference_says_so(device):
    m = contractive(device, cols=3)
    cmp = compare_gradients(m.fp, m.x, _loss(), steps=40, modes=["one-step"], reference="implicit", h0=m.h0)
    ref = cmp.reference
    assert cmp.reference_converged and ref.converged is True and ref.backward_residual <= 1e-10
    # the forward residual is ‖h^K − h^{K−1}‖ / ‖h^K‖ of the reference's own solve
    traj = m.fp.unroll(m.x, m.h0, 40)
    want = float((traj[-1][0] - traj[-2][0]).norm() / traj[-1][0].norm())
    assert ref.forward_residual == pytest.approx(want, rel=1e-6)
    assert cmp.to_dict()["reference_converged"] is True
