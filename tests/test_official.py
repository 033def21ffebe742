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
