"""Hamburger and HamNet: every solver × gradient mode × block forward/backward, capture, reproducibility, bad input,
the defaults, and that HamNet can fit a tiny batch (the blocks against the official code: tests/test_official.py)."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import hamgrad as hg
from hamgrad.data import GlobalContextShapes
from hamgrad.nn import HamCapture, Hamburger, HamNet

SOLVERS = ["nmf", "vq", "cd"]
MODES = ["bptt", "one-step", "one-step-coef", "truncated:2", "implicit"]
VERSIONS = ["v1", "v2"]


def _ham(solver="nmf", grad="one-step", **kw):
    return Hamburger(8, d=16, solver=solver, rank=4, steps=(3, 4), grad=grad, **kw)


def _upper(ham, y):
    """The block after the ham: (V2: the cheese, then) the upper bread."""
    return ham.upper_bread(y if ham.cheese is None else ham.cheese(y))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("grad", MODES)
@pytest.mark.parametrize("version", VERSIONS)
def test_hamburger_forward_backward(solver, grad, version, device):
    torch.manual_seed(0)
    ham = _ham(solver, grad, version=version).to(device)
    x = torch.randn(2, 8, 5, 6, device=device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hg.ConvergenceWarning)  # implicit mode on a non-contractive ham may warn
        out = ham(x)
        assert out.shape == x.shape
        out.square().mean().backward()
    assert len(ham.backward_solves) == (grad == "implicit")
    if not all(b.converged for b in ham.backward_solves):  # an unconverged adjoint solve gives NaN, never a number
        for name, p in ham.named_parameters():  # NaN reaches what is before the ham, nothing after it
            assert (torch.isnan(p.grad).all() if name.startswith("lower_bread") else torch.isfinite(p.grad).all()), name
        return
    for name, p in [("x", x), *ham.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the gradient reaches the lower bread through the ham, not only through the residual
    assert ham.lower_bread.weight.grad.abs().sum() > 0


def test_steps_follow_training_mode():
    ham = _ham()
    x = torch.randn(2, 8, 4, 4)
    with ham.capture() as cap:
        ham.train()(x)
        assert cap.info.steps == 3
        ham.eval()(x)
        assert cap.info.steps == 4
    assert Hamburger(8, d=16, rank=4, steps=5).steps == (5, 5)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("grad", ["one-step", "one-step-coef"])
@pytest.mark.parametrize("version", VERSIONS)
def test_capture_records_input_output_and_state(solver, grad, version):
    torch.manual_seed(1)
    ham = _ham(solver, grad, version=version)
    x = torch.randn(3, 8, 5, 6)
    with ham.capture() as cap:
        out = ham(x)
    assert isinstance(cap, HamCapture)
    assert cap.shape == (5, 6)
    assert cap.x.shape == cap.y.shape == (3, 16, 30)
    assert cap.D.shape == (3, 16, 4) and cap.C.shape == (3, 4, 30)
    assert not any(t.requires_grad for t in (cap.x, cap.y, cap.D, cap.C))
    assert len(cap.info.residuals) == 3
    # the recorded output is what the block used: redo the cheese, upper bread and residual from it
    redo = F.relu(x + _upper(ham, cap.y.reshape(3, 16, 5, 6)))
    torch.testing.assert_close(out.detach(), redo)
    # the recorded input is the lower bread's output
    z = ham.lower_bread(x)
    torch.testing.assert_close(cap.x, (F.relu(z) if solver == "nmf" else z).reshape(3, 16, 30).detach())
    if solver == "nmf":
        assert (cap.x >= 0).all()
    if solver != "cd":  # NMF and VQ read out X̄ = D C with the recorded codes (CD uses ridge codes)
        torch.testing.assert_close(cap.y, cap.D @ cap.C, rtol=1e-5, atol=1e-5)
    assert ham._capture is None  # nothing is recorded after the block


def test_generator_makes_forward_reproducible():
    ham = _ham("vq").eval()
    x = torch.randn(2, 8, 4, 4)
    a = ham(x, generator=torch.Generator().manual_seed(3))
    b = ham(x, generator=torch.Generator().manual_seed(3))
    c = ham(x, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    torch.manual_seed(5)
    d = ham(x)
    torch.manual_seed(5)
    torch.testing.assert_close(ham(x), d, rtol=0, atol=0)


def test_float64():
    model = HamNet(3, width=8, d=16, rank=4).double()
    out = model(torch.rand(2, 3, 16, 16, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=16), "rank=16 must be < d=16"),
    (dict(rank=20), "rank=20 must be < d=16"),
    (dict(solver="pca"), "unknown solver 'pca'"),
    (dict(grad="adjoint"), "unknown gradient mode grad='adjoint'"),
    (dict(grad="truncated:5"), "k must satisfy"),
    (dict(steps=(3, 4, 5)), "steps must be an int or a"),
    (dict(steps=(0, 4)), "steps\\[0\\] must be >= 1"),
    (dict(version="v3"), "version must be one of \\('v1', 'v2'\\), got 'v3'"),
])
def test_hamburger_bad_arguments(kwargs, match):
    args = dict(d=16, solver="nmf", rank=4, steps=(3, 4), grad="one-step") | kwargs
    with pytest.raises(ValueError, match=match):
        Hamburger(8, **args)


def test_defaults_are_the_official_hamnet():
    # DESIGN's contract: the official settings.py (V2, K = 6 in training and in evaluation) and its gradient
    ham = Hamburger(8)
    assert (ham.d, ham.rank, ham.steps, ham.grad, ham.version) == (512, 64, (6, 6), "one-step-coef", "v2")
    model = HamNet(4, width=8, d=16, rank=4)
    assert (model.hamburger.steps, model.hamburger.grad, model.hamburger.version) == ((6, 6), "one-step-coef", "v2")
    assert HamNet(4, width=8, d=16, rank=4, version="v1").hamburger.cheese is None  # the block passes through
    assert hg.grad.mode_label("one-step-coef") == "one-step-coef (paper)" and hg.grad.mode_label("bptt") == "bptt"


def test_hamburger_bad_input():
    ham = _ham()
    with pytest.raises(ValueError, match="channels=8"):
        ham(torch.randn(2, 7, 4, 4))
    with pytest.raises(ValueError, match="rank=4 must be <= min"):
        ham(torch.randn(2, 8, 1, 3))  # n = 3 positions < rank


def test_hamnet_shapes_and_baseline(device):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32, device=device)
    for os_ in (4, 8):
        model = HamNet(5, width=8, output_stride=os_, d=16, rank=4).to(device)
        assert model(x).shape == (2, 5, 32, 32)
        assert isinstance(model.hamburger, Hamburger)
    base = HamNet(5, width=8, ham=None).to(device)
    assert base.hamburger is None
    assert base(x).shape == (2, 5, 32, 32)
    with_ham = HamNet(5, width=8, d=16, rank=4)
    names = {n for n, _ in with_ham.named_parameters()} - {n for n, _ in base.named_parameters()}
    assert names and all(n.startswith("hamburger.") for n in names)  # the same net minus the block


def test_hamnet_bad_arguments():
    with pytest.raises(ValueError, match="output_stride must be 4 or 8"):
        HamNet(3, output_stride=16)
    with pytest.raises(ValueError, match="multiples of output_stride=4"):
        HamNet(3, width=8, d=16, rank=4)(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="rank=64 must be < d=64"):
        HamNet(3, d=64, rank=64)


@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_hamnet_overfits_a_tiny_batch(ham):
    ds = GlobalContextShapes(4, size=32, num_shapes=(3, 4), seed=0)
    images, labels = map(torch.stack, zip(*(ds[i] for i in range(4))))
    torch.manual_seed(0)
    model = HamNet(ds.num_classes, width=8, d=16, rank=4, ham=ham)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4, losses


def _trained_step(model, images, labels):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    model.train()
    F.cross_entropy(model(images, generator=torch.Generator().manual_seed(0)), labels).backward()
    opt.step()


@pytest.mark.parametrize("freeze", [True, False])
def test_load_encoder_copies_the_encoder_and_freeze_keeps_it(freeze):
    """load_encoder copies encoder and squeeze (weights and BatchNorm statistics) and nothing else; frozen, a
    training step over model.parameters() leaves them (and their running statistics) exactly as copied while the
    head trains; not frozen, they train."""
    ds = GlobalContextShapes(4, size=32, seed=0)
    images, labels = torch.stack([ds[i][0] for i in range(4)]), torch.stack([ds[i][1] for i in range(4)]).long()
    torch.manual_seed(0)
    source = HamNet(4, width=8, context="sa", d=16)
    _trained_step(source, images, labels)  # BatchNorm statistics away from their initial values
    torch.manual_seed(1)
    model = HamNet(4, width=8, ham="vq", d=16, rank=4)
    head = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] not in HamNet.ENCODER_PARTS}
    assert model.load_encoder(source, freeze=freeze) is model
    copied = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] in HamNet.ENCODER_PARTS}
    assert copied and all(torch.equal(v, source.state_dict()[k]) for k, v in copied.items())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in head.items())
    _trained_step(model, images, labels)
    after = model.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in head.items() if v.is_floating_point())
    unchanged = [torch.equal(v, after[k]) for k, v in copied.items()]
    assert all(unchanged) if freeze else not any(unchanged[:2])
    frozen_bn = [m for part in HamNet.ENCODER_PARTS for m in getattr(model, part).modules()
                 if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.training is not freeze for m in frozen_bn) and model.block.training
    assert all(p.requires_grad is not freeze for part in HamNet.ENCODER_PARTS
               for p in getattr(model, part).parameters())


def test_load_encoder_errors():
    model = HamNet(4, width=8, ham="nmf", d=16, rank=4)
    with pytest.raises(TypeError, match="source must be a HamNet"):
        model.load_encoder(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="freeze must be True or False"):
        model.load_encoder(HamNet(4, width=8, ham="nmf", d=16, rank=4), freeze=1)
    with pytest.raises(ValueError, match=r"source's encoder\.0\.0\.weight is of shape \(16, 3, 3, 3\), where this model's "
                                         r"is of shape \(8, 3, 3, 3\)"):
        model.load_encoder(HamNet(4, width=16, ham="nmf", d=16, rank=4))
    deeper = HamNet(4, width=8, output_stride=8, ham="nmf", d=16, rank=4)
    with pytest.raises(ValueError, match=r"source's encoder\.4\.0\.weight is missing, where this model's is of "
                                         r"shape \(32, 16, 3, 3\)"):
        deeper.load_encoder(model)
