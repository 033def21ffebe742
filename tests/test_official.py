"""hamgrad against independent float64 transcriptions of the official Hamburger code (Gsunshine/Enjoy-Hamburger,
seg/HamNet/hamburger: ham.py's NMF2D, VQ2D and CD2D; burger.py's HamburgerV1 and HamburgerV2; bread.py's
ConvBNReLU), written here in the official layout: x ``(B, D, N)``, bases ``(B, D, R)``, codes ``(B, N, R)``,
products by ``torch.bmm``, the constants where the official code puts them.

What the official ham does: draw random bases (``rand`` for NMF, ``randn`` for VQ/CD, unit columns), under
``torch.no_grad`` initial codes ``softmax(inv_t · xᵀ bases)`` over R (NMF2D fixes inv_t = 1) and K ``local_step``s,
then one ``compute_coef`` with graph to x only (the bases and codes are constants), and read out ``bases codesᵀ``.
hamgrad's ``grad="one-step-coef"`` must give that output and that gradient.
"""

import pytest
import torch
import torch.nn.functional as F

import hamgrad as hg
from hamgrad.nn import Hamburger

EPS = 1e-6  # the official code's literal 1e-6 (hamgrad's eps default)


# ---------------------------------------------------------------------- the official hams, transcribed
def _official_bases(kind, B, D, R, generator):
    draw = torch.rand if kind == "nmf" else torch.randn
    return F.normalize(draw((B, D, R), generator=generator, dtype=torch.float64), dim=1)


def _official_local_step(kind, x, bases, coef, inv_t):
    if kind == "nmf":
        numerator = torch.bmm(x.transpose(1, 2), bases)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
        coef = coef * numerator / (denominator + EPS)
        numerator = torch.bmm(x, coef)
        denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
        return bases * numerator / (denominator + EPS), coef
    std_x = F.normalize(x, dim=1)
    if kind == "vq":
        coef = torch.bmm(std_x.transpose(1, 2), F.normalize(bases, dim=1, eps=EPS))
    else:  # cd: the bases are already unit columns
        coef = torch.bmm(std_x.transpose(1, 2), bases)
    coef = F.softmax(inv_t * coef, dim=-1)
    coef = coef / (EPS + coef.sum(dim=1, keepdim=True))
    bases = torch.bmm(x, coef)
    if kind == "cd":
        bases = F.normalize(bases, dim=1, eps=EPS)
    return bases, coef


def _official_compute_coef(kind, x, bases, coef, inv_t, beta):
    if kind == "nmf":
        numerator = torch.bmm(x.transpose(1, 2), bases)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * numerator / (denominator + EPS)
    if kind == "vq":
        with torch.no_grad():
            x_norm = x.norm(dim=1, keepdim=True)
        std_x = x / (EPS + x_norm)
        coef = torch.bmm(std_x.transpose(1, 2), F.normalize(bases, dim=1, eps=EPS))
        return F.softmax(inv_t * coef, dim=-1)
    R = bases.shape[-1]
    temp = torch.bmm(bases.transpose(1, 2), bases) + beta * torch.eye(R, dtype=x.dtype).repeat(x.shape[0], 1, 1)
    return x.transpose(1, 2).bmm(bases).bmm(torch.inverse(temp))


def official_ham(kind, x, R, steps, generator, inv_t=100.0, beta=0.1):
    """The official ham's forward on ``x (B, D, N)``: ``(output (B, D, N), final bases (B, D, R))``."""
    B, D, N = x.shape
    bases = _official_bases(kind, B, D, R, generator)
    if kind == "nmf":
        inv_t = 1  # NMF2D.__init__ overrides INV_T
    with torch.no_grad():  # local_inference
        coef = F.softmax(inv_t * torch.bmm(x.transpose(1, 2), bases), dim=-1)
        for _ in range(steps):
            bases, coef = _official_local_step(kind, x, bases, coef, inv_t)
    coef = _official_compute_coef(kind, x, bases, coef, inv_t, beta)
    return torch.bmm(bases, coef.transpose(1, 2)), bases


def _solver(kind, R, inv_t):
    return {"nmf": lambda: hg.NMF(rank=R), "vq": lambda: hg.SoftVQ(rank=R, inv_t=inv_t),
            "cd": lambda: hg.CD(rank=R, inv_t=inv_t, beta=0.1)}[kind]()


def _loss_weights(shape, seed=11):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


HAMS = [("nmf", 1.0), ("vq", 10.0), ("vq", 100.0), ("cd", 10.0), ("cd", 100.0)]


@pytest.mark.parametrize("kind, inv_t", HAMS)
@pytest.mark.parametrize("steps", [1, 6])
def test_one_step_coef_is_the_official_ham(kind, inv_t, steps):
    B, D, N, R = 2, 8, 12, 3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, D, N, generator=g, dtype=torch.float64)
    if kind == "nmf":
        x = x.relu()  # the official lower bread ends in a ReLU for NMF
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, info = hg.solve(_solver(kind, R, inv_t), x_ours, steps=steps, grad="one-step-coef",
                       generator=torch.Generator().manual_seed(7))
    y_ref, bases = official_ham(kind, x_ref, R, steps, torch.Generator().manual_seed(7), inv_t=inv_t)
    torch.testing.assert_close(info.state[0], bases, rtol=1e-12, atol=1e-14)  # the same K steps from the same init
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-14)
    w = _loss_weights(y.shape)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    assert x_ref.grad.abs().max() > 1e-6  # a gradient that can tell a wrong branch from a right one
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- the official blocks, transcribed
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # torch's BatchNorm2d defaults (the official BN_MOM = 3e-4 is documented as differing)


def official_block(version, kind, x, p, training, R, steps, generator, inv_t):
    """burger.py's HamburgerV1/HamburgerV2 forward with the parameters and BatchNorm statistics ``p``:
    lower bread (conv with bias, ReLU for NMF only), the ham, then V1: conv + BN; V2: the cheese ConvBNReLU (conv
    without bias) and a conv without bias or norm; residual and ReLU."""
    z = F.conv2d(x, p["lower.w"], p["lower.b"])
    if kind == "nmf":
        z = F.relu(z)
    B, C, H, W = z.shape
    y = official_ham(kind, z.view(B, C, H * W), R, steps, generator, inv_t=inv_t)[0].view(B, C, H, W)
    if version == "v2":
        y = F.relu(F.batch_norm(F.conv2d(y, p["cheese.w"]), p["bn.mean"], p["bn.var"], p["bn.gamma"], p["bn.beta"],
                                training, BN_MOMENTUM, BN_EPS))
        y = F.conv2d(y, p["upper.w"])
    else:
        y = F.batch_norm(F.conv2d(y, p["upper.w"]), p["bn.mean"], p["bn.var"], p["bn.gamma"], p["bn.beta"],
                         training, BN_MOMENTUM, BN_EPS)
    return F.relu(y + x)


def _block_tensors(ham):
    """The module's parameters and BatchNorm buffers by the transcription's names (weights copied across)."""
    conv_up, bn = (ham.upper_bread, ham.cheese[1]) if ham.version == "v2" else ham.upper_bread
    named = {"lower.w": ham.lower_bread.weight, "lower.b": ham.lower_bread.bias, "upper.w": conv_up.weight,
             "bn.gamma": bn.weight, "bn.beta": bn.bias, "bn.mean": bn.running_mean, "bn.var": bn.running_var}
    if ham.version == "v2":
        named["cheese.w"] = ham.cheese[0].weight
    return named


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("kind, inv_t", [("nmf", 1.0), ("vq", 10.0), ("cd", 10.0)])
@pytest.mark.parametrize("training", [True, False])
def test_block_is_the_official_block(version, kind, inv_t, training):
    torch.manual_seed(0)
    kwargs = {} if kind == "nmf" else {"solver_kwargs": {"inv_t": inv_t}}
    ham = Hamburger(6, d=8, solver=kind, rank=3, steps=(2, 3), version=version, **kwargs).double().train(training)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # BatchNorm away from its initial values, so that its parameters and statistics matter
        named = _block_tensors(ham)
        named["bn.gamma"].copy_(1 + 0.3 * torch.randn(named["bn.gamma"].shape, generator=g, dtype=torch.float64))
        named["bn.beta"].copy_(0.2 * torch.randn(named["bn.beta"].shape, generator=g, dtype=torch.float64))
        named["bn.mean"].copy_(0.5 * torch.randn(named["bn.mean"].shape, generator=g, dtype=torch.float64))
        named["bn.var"].copy_(0.5 + torch.rand(named["bn.var"].shape, generator=g, dtype=torch.float64))
    ref = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in _block_tensors(ham).items()}
    x = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ham(x_ours, generator=torch.Generator().manual_seed(5))
    out_ref = official_block(version, kind, x_ref, ref, training, 3, 2 if training else 3,
                             torch.Generator().manual_seed(5), inv_t)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-13)
    w = _loss_weights(out.shape)
    (out * w).sum().backward()
    (out_ref * w).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    ours = _block_tensors(ham)
    for name, t in ref.items():
        if t.requires_grad:  # every parameter, the lower bread's weights included
            assert ours[name].grad.abs().max() > 0, name
            torch.testing.assert_close(ours[name].grad, t.grad, rtol=1e-10, atol=1e-12, msg=name)
        else:  # the running statistics, updated alike in training
            torch.testing.assert_close(ours[name], t, rtol=1e-12, atol=1e-14, msg=name)


def test_v2_initialisation_is_the_officials():
    # burger.py's _init_weight: every conv weight ~ N(0, 2 / (k·k·out_channels)); conv biases keep torch's default
    # U(−1/√fan_in, 1/√fan_in); BatchNorm weight 1, bias 0
    torch.manual_seed(0)
    ham = Hamburger(256, d=512, rank=8)
    for conv in (ham.lower_bread, ham.cheese[0], ham.upper_bread):
        w = conv.weight.detach().double()
        std = (2.0 / conv.out_channels) ** 0.5
        assert abs(float(w.std()) / std - 1) < 0.02, conv
        assert abs(float(w.mean())) < 4 * std / w.numel() ** 0.5, conv
    bias, bound = ham.lower_bread.bias.detach(), 1 / 256 ** 0.5
    assert float(bias.abs().max()) <= bound and float(bias.abs().max()) > 0.9 * bound
    assert ham.cheese[0].bias is None and ham.upper_bread.bias is None
    assert torch.equal(ham.cheese[1].weight, torch.ones(512)) and torch.equal(ham.cheese[1].bias, torch.zeros(512))


def test_v1_is_built_as_before():
    # V1 draws its weights as hamgrad's V1 always did (torch's default initialisation, in this order), so sweeps and
    # checkpoints written before V2 existed rebuild the same networks
    torch.manual_seed(3)
    ham = Hamburger(6, d=8, rank=3, version="v1")
    torch.manual_seed(3)
    lower, upper = torch.nn.Conv2d(6, 8, 1), torch.nn.Conv2d(8, 6, 1, bias=False)
    assert [n for n, _ in ham.named_parameters()] == ["lower_bread.weight", "lower_bread.bias",
                                                      "upper_bread.0.weight", "upper_bread.1.weight",
                                                      "upper_bread.1.bias"]
    assert torch.equal(ham.lower_bread.weight, lower.weight) and torch.equal(ham.lower_bread.bias, lower.bias)
    assert torch.equal(ham.upper_bread[0].weight, upper.weight)
