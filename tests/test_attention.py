"""The context modules beside the Hamburger (self-attention, A², global pooling) against dense float64
transcriptions of their formulas, their capture, HamNet's context argument and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from hamgrad.nn import (ContextCapture, DoubleAttention, GlobalPool, Hamburger, HamNet, SelfAttention,
                        build_context)


def _breads(module, x):
    """The lower bread as an explicit float64 matrix product: ``(B, width, n)``."""
    W = module.lower_bread.weight.double()[:, :, 0, 0]
    return torch.einsum("oc,bcn->bon", W, x.double().flatten(2)) + module.lower_bread.bias.double()[None, :, None]


def _upper(module, x, y):
    """Upper bread (conv + BatchNorm in eval mode) and residual, in float64."""
    conv, bn = module.upper_bread
    u = torch.einsum("cd,bdn->bcn", conv.weight.double()[:, :, 0, 0], y)
    u = (u - bn.running_mean.double()[None, :, None]) / torch.sqrt(bn.running_var.double()[None, :, None] + bn.eps)
    u = u * bn.weight.double()[None, :, None] + bn.bias.double()[None, :, None]
    return torch.relu(x.double() + u.reshape(x.shape))


def _randomised(module):
    """Give BatchNorm non-trivial statistics and affine parameters, so the reference checks them too."""
    g = torch.Generator().manual_seed(5)
    bn = module.upper_bread[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(bn.num_features, generator=g))
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    return module.eval()


def _softmax_attention(q, k, v):
    """Dense softmax attention ``y[:, :, i] = Σ_j softmax_j(q_i · k_j / √d) v_j`` written out with exp and sums."""
    d = q.shape[1]
    logits = torch.einsum("bdi,bdj->bij", q, k) / math.sqrt(d)
    weights = torch.exp(logits - logits.amax(dim=2, keepdim=True))
    weights = weights / weights.sum(dim=2, keepdim=True)
    return torch.einsum("bij,bdj->bdi", weights, v)


def test_self_attention_matches_dense_float64_transcription():
    torch.manual_seed(0)
    m = _randomised(SelfAttention(6, d=5))
    x = torch.randn(2, 6, 3, 4)
    z = _breads(m, x)
    q, k, v = z[:, :5], z[:, 5:10], z[:, 10:]
    ref = _upper(m, x, _softmax_attention(q, k, v))
    torch.testing.assert_close(m(x).double(), ref, rtol=1e-5, atol=1e-5)
    # and in float64 end to end, to rounding
    torch.testing.assert_close(m.double()(x.double()), ref, rtol=1e-12, atol=1e-12)


def test_double_attention_matches_dense_float64_transcription():
    torch.manual_seed(1)
    m = _randomised(DoubleAttention(6, d=5, rank=3)).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    z = _breads(m, x)
    A, Bm, V = z[:, :5], z[:, 5:8], z[:, 8:]
    n = A.shape[2]
    y = torch.zeros_like(A)
    for b in range(2):
        att = torch.exp(Bm[b]) / torch.exp(Bm[b]).sum(dim=1, keepdim=True)   # softmax over positions, (r, n)
        G = sum(A[b][:, [j]] * att[:, j][None, :] for j in range(n))          # G[:, i] = Σ_j A_j att_i[j], (d, r)
        w = torch.exp(V[b]) / torch.exp(V[b]).sum(dim=0, keepdim=True)       # softmax over the r maps, (r, n)
        y[b] = sum(G[:, [i]] * w[i][None, :] for i in range(3))              # y_j = Σ_i w_i[j] G_i
    torch.testing.assert_close(m(x), _upper(m, x, y), rtol=1e-12, atol=1e-12)


def test_global_pool_adds_the_mean_everywhere():
    torch.manual_seed(2)
    m = _randomised(GlobalPool(6, d=5)).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    z = _breads(m, x)
    y = z.mean(dim=2, keepdim=True).repeat(1, 1, 12)
    torch.testing.assert_close(m(x), _upper(m, x, y), rtol=1e-12, atol=1e-12)


ATTENTION = ("sa", "a2", "gap")  # the modules of hamgrad.nn.attention; tests/test_context_modules.py has the others


@pytest.mark.parametrize("name", ATTENTION)
def test_forward_backward_and_device(name, device):
    torch.manual_seed(0)
    m = build_context(name, 8, d=16, rank=4).to(device)
    x = torch.randn(2, 8, 5, 6, device=device, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape and out.device == x.device
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert m.lower_bread.weight.grad.abs().sum() > 0  # the gradient goes through the mixing


@pytest.mark.parametrize("name", ATTENTION)
def test_capture_records_what_the_upper_bread_received(name):
    torch.manual_seed(3)
    m = build_context(name, 8, d=16, rank=4)
    x = torch.randn(3, 8, 5, 6)
    with m.capture() as cap:
        out = m(x)
    assert isinstance(cap, ContextCapture) and cap.shape == (5, 6)
    assert cap.x.shape == cap.y.shape == (3, 16, 30)
    assert not cap.y.requires_grad
    torch.testing.assert_close(out.detach(), F.relu(x + m.upper_bread(cap.y.reshape(3, 16, 5, 6))).detach())
    if name == "a2":  # y = D C: the gathered descriptors distributed by the weights
        assert cap.D.shape == (3, 16, 4) and cap.C.shape == (3, 4, 30)
        torch.testing.assert_close(cap.C.sum(dim=1), torch.ones(3, 30))
        torch.testing.assert_close(cap.y, cap.D @ cap.C)
    else:
        assert cap.D is None and cap.C is None
    assert m._capture is None


def test_parameter_counts_at_the_table3_setting():
    """The paper's Table 3: SA 1.00M parameters, Ham 0.50M (one 512-channel map, d = 512): SA's breads are four
    512 × 512 convolutions, the V1 ham's two (V2's cheese adds a third and moves the BatchNorm to it)."""
    count = {name: sum(p.numel() for p in build_context(name, 512, version="v1").parameters())
             for name in ("sa", "a2", "gap", "nmf")}
    conv = 512 * 512
    assert count["sa"] == 4 * conv + 3 * 512 + 2 * 512           # q, k, v (with bias), out conv, BatchNorm
    assert count["nmf"] == count["gap"] == 2 * conv + 512 + 2 * 512
    assert sum(p.numel() for p in build_context("nmf", 512).parameters()) == 3 * conv + 512 + 2 * 512  # V2
    assert count["a2"] == 512 * (512 + 128) + (512 + 128) + conv + 2 * 512


def test_hamnet_context_argument():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16)
    for name, cls in (("sa", SelfAttention), ("a2", DoubleAttention), ("gap", GlobalPool), ("vq", Hamburger)):
        net = HamNet(3, width=4, d=8, rank=2, ham=None, context=name)
        assert isinstance(net.block, cls)
        assert (net.hamburger is net.block) == (cls is Hamburger)
        assert net(images).shape == (2, 3, 16, 16)
    assert isinstance(HamNet(3, width=4, d=8, rank=2, context="sa").block, SelfAttention)  # ham left at its default
    assert isinstance(HamNet(3, width=4, d=8, rank=2).block, Hamburger)
    assert HamNet(3, width=4, d=8, rank=2, ham=None).block is None
    # a Hamburger keeps its state-dict keys
    assert any(k.startswith("hamburger.") for k in HamNet(3, width=4, d=8, rank=2).state_dict())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown context module name='attn'"):
        build_context("attn", 8)
    with pytest.raises(ValueError, match="give the head's module once"):
        HamNet(3, ham="vq", context="sa")
    with pytest.raises(ValueError, match="ham='sa' is not a solver"):
        HamNet(3, ham="sa")
    with pytest.raises(TypeError, match="rank must be an int"):
        DoubleAttention(8, d=16, rank=2.0)
    with pytest.raises(ValueError, match="d must be >= 1"):
        SelfAttention(8, d=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, channels=8, H, W\)"):
        GlobalPool(8, d=4)(torch.randn(2, 7, 3, 3))
