"""DA, APC, DM and ACF (hamgrad.nn.context) against independent float64 transcriptions of their papers' formulas
(outputs and gradients, weights copied across), their MAC counts against hand counts, the Table-3 configuration
against the paper's numbers, their capture, HamNet's context argument and bad input; and the interface every
module of CONTEXTS shares."""

import pytest
import torch
import torch.nn.functional as F

from hamgrad.cost import count_macs
from hamgrad.nn import (CONTEXTS, AdaptivePyramidContext, AttentionalClassFeature, ContextCapture, DualAttention,
                        DynamicFilters, HamNet, build_context)

B, C, H, W = 2, 6, 5, 7  # small, non-square, and smaller than the largest pyramid scale (6)
N = H * W


# --- the transcriptions: explicit sums, exponentials and loops; torch only for elementwise maths and einsum ---

def _softmax(t, dim):
    e = torch.exp(t - t.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def _conv1x1(p, name, t, bias=True):
    """A 1×1 convolution of (B, c, m) features with the weights ``name.weight`` (and ``name.bias``)."""
    out = torch.einsum("oc,bcm->bom", p[f"{name}.weight"].reshape(p[f"{name}.weight"].shape[:2]), t)
    return out + p[f"{name}.bias"][None, :, None] if bias else out


def _bn(p, buffers, name, t, eps=1e-5):
    """BatchNorm in evaluation mode over dim 1 of (B, c, ...)."""
    shape = (1, -1) + (1,) * (t.dim() - 2)
    mean, var = buffers[f"{name}.running_mean"].reshape(shape), buffers[f"{name}.running_var"].reshape(shape)
    return (t - mean) / torch.sqrt(var + eps) * p[f"{name}.weight"].reshape(shape) + p[f"{name}.bias"].reshape(shape)


def _conv3x3(weight, x):
    """A zero-padded 3×3 convolution without bias as a sum over the nine shifts."""
    xp = torch.zeros(x.shape[0], x.shape[1], x.shape[2] + 2, x.shape[3] + 2, dtype=x.dtype)
    xp[:, :, 1:-1, 1:-1] = x
    return sum(torch.einsum("oc,bchw->bohw", weight[:, :, a, b], xp[:, :, a:a + x.shape[2], b:b + x.shape[3]])
               for a in range(3) for b in range(3))


def _adaptive_pool(x, s):
    """Adaptive average pooling to s × s: bin i covers rows floor(i H / s) to ceil((i + 1) H / s)."""
    h, w = x.shape[-2:]
    out = torch.zeros(x.shape[0], x.shape[1], s, s, dtype=x.dtype)
    for i in range(s):
        for j in range(s):
            r0, r1 = i * h // s, -(-(i + 1) * h // s)
            c0, c1 = j * w // s, -(-(j + 1) * w // s)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(dim=(2, 3))
    return out


def _lower(p, buffers, x, kernel=1):
    """Lower bread: convolution (no bias), BatchNorm, ReLU; flattened to (B, width, n)."""
    w = p["lower_bread.0.weight"]
    z = _conv3x3(w, x) if kernel == 3 else torch.einsum("oc,bchw->bohw", w[:, :, 0, 0], x)
    return torch.relu(_bn(p, buffers, "lower_bread.1", z)).flatten(2)


def _upper(p, buffers, x, y):
    """Upper bread (1×1 convolution, BatchNorm), the residual and the ReLU."""
    u = _bn(p, buffers, "upper_bread.1", _conv1x1(p, "upper_bread.0", y, bias=False))
    return torch.relu(x + u.reshape(x.shape))


def _dual_attention(m, p, buffers, x):
    """DANet: position attention softmax_j(q_i · k_j) over values; channel attention softmax(max_row(E) − E)."""
    d, k = m.d, m.d // 8
    z = _lower(p, buffers, x, kernel=3)
    z_p, z_c = z[:, :d], z[:, d:]
    qkv = _conv1x1(p, "qkv", z_p)
    q, key, v = qkv[:, :k], qkv[:, k:2 * k], qkv[:, 2 * k:]
    attention = _softmax(torch.einsum("bci,bcj->bij", q, key), dim=2)
    pam = z_p + p["gamma_position"] * torch.einsum("bij,bcj->bci", attention, v)
    energy = torch.einsum("bcn,ben->bce", z_c, z_c)
    channel = _softmax(energy.amax(dim=2, keepdim=True) - energy, dim=2)
    cam = z_c + p["gamma_channel"] * torch.einsum("bce,ben->bcn", channel, z_c)
    return _upper(p, buffers, x, pam + cam)


def _adaptive_pyramid_context(m, p, buffers, x):
    """APCNet: per scale, x_s + y_s sigmoid(conv(x_s + g)) with y_s from the pooled input and g = conv(mean x_s)."""
    d = m.d
    z = _lower(p, buffers, x)
    out = []
    for i, s in enumerate(m.scales):
        x_s = z[:, i * d:(i + 1) * d]
        regions = _conv1x1(p, f"regions.{i}", _adaptive_pool(x, s).flatten(2))           # (B, d, s²)
        g = _conv1x1(p, f"global_info.{i}", x_s.mean(dim=2, keepdim=True))
        alpha = 1 / (1 + torch.exp(-_conv1x1(p, f"affinity.{i}", x_s + g)))                # (B, s², n)
        out.append(x_s + torch.einsum("bcr,brn->bcn", regions, alpha))
    return _upper(p, buffers, x, torch.cat(out, dim=1))


def _dynamic_filters(m, p, buffers, x):
    """DMNet: per size k, each image's channels convolved with their own k × k filter made from the pooled input."""
    d = m.d
    z = _lower(p, buffers, x)
    out = []
    for i, k in enumerate(m.filter_sizes):
        filters = _conv1x1(p, f"generators.{i}", _adaptive_pool(x, k).flatten(2)).reshape(B, d, k, k)
        x_k = z[:, i * d:(i + 1) * d].reshape(B, d, H, W)
        r = k // 2
        xp = torch.zeros(B, d, H + 2 * r, W + 2 * r, dtype=x.dtype)
        xp[:, :, r:r + H, r:r + W] = x_k
        y = sum(filters[:, :, a, b, None, None] * xp[:, :, a:a + H, b:b + W] for a in range(k) for b in range(k))
        out.append(torch.relu(_bn(p, buffers, f"norms.{i}", y)).flatten(2))
    return _upper(p, buffers, x, torch.cat(out, dim=1))


def _attentional_class_feature(m, p, buffers, x):
    """ACFNet: class centers = probability-weighted mean features; each position mixes them by its probabilities."""
    P = _softmax(_conv1x1(p, "coarse", x.flatten(2)), dim=1)                           # (B, classes, n)
    z = _lower(p, buffers, x)
    centers = torch.einsum("bcn,bjn->bcj", z, P) / P.sum(dim=2)[:, None, :]
    features = torch.einsum("bcj,bjn->bcn", centers, P)
    y = torch.relu(_bn(p, buffers, "output.1", _conv1x1(p, "output.0", features, bias=False)))
    return _upper(p, buffers, x, y)


CASES = {
    "da": (lambda: DualAttention(C, d=8), _dual_attention),
    "apc": (lambda: AdaptivePyramidContext(C, d=4, scales=(1, 2, 3, 6)), _adaptive_pyramid_context),
    "dm": (lambda: DynamicFilters(C, d=4, filter_sizes=(1, 3, 5)), _dynamic_filters),
    "acf": (lambda: AttentionalClassFeature(C, d=5, classes=3), _attentional_class_feature),
}


def _randomised(module, seed=5):
    """Non-trivial BatchNorm statistics and affine parameters everywhere, non-zero DA residual scales; float64,
    evaluation mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (mod for mod in module.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        for name in ("gamma_position", "gamma_channel"):
            if hasattr(module, name):
                getattr(module, name).fill_(0.7 if name == "gamma_position" else -0.4)
    return module.double().eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_float64_transcription_outputs_and_gradients(name):
    torch.manual_seed(0)
    build, reference = CASES[name]
    m = _randomised(build())
    x = torch.randn(B, C, H, W, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(B, C, H, W, dtype=torch.float64)  # the loss <out, weight> reaches every output
    out = m(x)
    (out * weight).sum().backward()

    p = {k: v.detach().clone().requires_grad_() for k, v in m.named_parameters()}
    buffers = dict(m.named_buffers())
    x_ref = x.detach().clone().requires_grad_()
    ref = reference(m, p, buffers, x_ref)
    (ref * weight).sum().backward()

    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-10)
    for k, param in m.named_parameters():
        torch.testing.assert_close(param.grad, p[k].grad, rtol=1e-9, atol=1e-10, msg=f"gradient of {k}")
    assert all(param.grad.abs().sum() > 0 for param in m.parameters())  # every weight is on the output's path


def test_float32_matches_the_float64_module():
    for name, (build, _) in CASES.items():
        torch.manual_seed(1)
        m64 = _randomised(build())
        m32 = build().eval()
        m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
        x = torch.randn(B, C, H, W, dtype=torch.float64)
        torch.testing.assert_close(m32(x.float()).double(), m64(x), rtol=1e-4, atol=1e-4, msg=name)


def test_dual_attention_starts_as_its_lower_bread():
    """DANet's residual scales γ start at 0: each attention branch passes its input through unchanged."""
    torch.manual_seed(2)
    m = DualAttention(C, d=8).eval()
    with m.capture() as cap:
        m(torch.randn(B, C, H, W))
    torch.testing.assert_close(cap.y, cap.x[:, :8] + cap.x[:, 8:])


# --- MACs: the project's counter (FlopCounterMode / 2) against hand counts ---

def _hand_macs(name, n, c, d, batch=1, scales=(1, 2, 3, 6), sizes=(1, 3, 5, 7), classes=19):
    """Matrix products and convolutions, each m·k·n of a (m × k)(k × n) product, by hand."""
    if name == "da":
        k = d // 8
        macs = (9 * n * c * 2 * d                      # 3×3 lower bread, two d-channel branches
                + n * d * (2 * k + d)                  # query, key, value
                + n * n * k + n * n * d                # q_iᵀ k_j, attention times values
                + 2 * d * d * n                        # E = z zᵀ, attention times z
                + n * d * c)                           # upper bread
    elif name == "apc":
        macs = (n * c * len(scales) * d
                + sum(s * s * c * d + d * d + n * d * s * s + d * s * s * n for s in scales)
                + n * len(scales) * d * c)
    elif name == "dm":
        macs = n * c * len(sizes) * d + sum(k * k * c * d + n * d * k * k for k in sizes) + n * len(sizes) * d * c
    elif name == "acf":
        macs = n * c * classes + n * c * d + n * d * classes + d * classes * n + n * d * d + n * d * c
    return batch * macs


@pytest.mark.parametrize("name", sorted(CASES))
def test_macs_match_a_hand_count(name):
    build, _ = CASES[name]
    m = build().eval()
    kwargs = {"da": {}, "apc": {"scales": (1, 2, 3, 6)}, "dm": {"sizes": (1, 3, 5)}, "acf": {"classes": 3}}[name]
    with torch.no_grad():
        macs = count_macs(lambda: m(torch.randn(B, C, H, W)))
    assert macs == _hand_macs(name, N, C, m.d, batch=B, **kwargs)


#: The paper's Table 3 (one (1, 512, 128, 128) map): parameters in M = 2²⁰ and MACs in G = 10⁹.
PAPER = {"da": (4.82, 79.5), "apc": (2.03, 17.6), "dm": (3.00, 35.1), "acf": (0.75, 79.5)}
TABLE3 = {"da": dict(d=512), "apc": dict(d=256), "dm": dict(d=512), "acf": dict(d=512, classes=19)}


def _table3_macs(name):
    """Counted on the meta device: shapes only, no arithmetic, so the 128 × 128 map costs nothing here."""
    m = build_context(name, 512, **TABLE3[name]).eval().to("meta")
    x = torch.empty(1, 512, 128, 128, device="meta")
    with torch.no_grad():
        return count_macs(lambda: m(x))


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_table3_configuration_counts(name):
    """At the Table-3 setting the counter agrees with the hand count; APC and DM are within 5% of the paper's MACs
    (and DM of its parameters); DA's and ACF's MACs are not the paper's, for the reasons the hand counts give."""
    n, kwargs = 128 * 128, dict(TABLE3[name])
    d = kwargs.pop("d")
    macs = _table3_macs(name)
    assert macs == _hand_macs(name, n, 512, d, **kwargs)
    params = sum(p.numel() for p in build_context(name, 512, **TABLE3[name]).parameters())
    paper_params, paper_gmacs = PAPER[name]
    if name in ("apc", "dm"):
        assert macs / 1e9 == pytest.approx(paper_gmacs, rel=0.05)
    if name == "dm":
        assert params / 2 ** 20 == pytest.approx(paper_params, rel=0.01)
    if name == "da":
        # the paper's parameters are two 3×3 512→512 convolutions and the d = 512 position attention ...
        assert (2 * 9 * 512 * 512 + 512 * (64 + 64 + 512)) / 2 ** 20 == pytest.approx(paper_params, rel=0.005)
        # ... whose convolutions alone are the paper's MACs within 5%: its count left out the n² products
        assert (2 * 9 * n * 512 * 512 + n * 512 * (64 + 64 + 512)) / 1e9 == pytest.approx(paper_gmacs, rel=0.05)
        assert macs / 1e9 > 3 * paper_gmacs
    if name == "acf":
        # three 512 × 512 convolutions are the paper's parameters; no class count reaches its MACs
        assert 3 * 512 * 512 / 2 ** 20 == pytest.approx(paper_params, rel=0.005)
        assert params / 2 ** 20 == pytest.approx(paper_params, rel=0.02)
        assert _hand_macs("acf", n, 512, 512, classes=150) / 1e9 < paper_gmacs / 4


def test_table3_parameter_counts_by_hand():
    """Each module's weights at the Table-3 setting, written out (biases where a convolution has no BatchNorm)."""
    c = d = 512
    count = {name: sum(p.numel() for p in build_context(name, 512, **TABLE3[name]).parameters()) for name in TABLE3}
    k = d // 8
    assert count["da"] == 9 * c * 2 * d + 2 * 2 * d + (2 * k + d) * (d + 1) + 2 + d * c + 2 * c
    a = 256
    assert count["apc"] == (c * 4 * a + 2 * 4 * a                                 # lower bread + BatchNorm
                            + sum((c + 1) * a + (a + 1) * a + (a + 1) * s * s for s in (1, 2, 3, 6))
                            + 4 * a * c + 2 * c)
    assert count["dm"] == c * 4 * d + 2 * 4 * d + 4 * ((c + 1) * d + 2 * d) + 4 * d * c + 2 * c
    assert count["acf"] == (c + 1) * 19 + c * d + 2 * d + d * d + 2 * d + d * c + 2 * c


# --- interface: every module of CONTEXTS ---

@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_every_context_module_keeps_the_shape_and_trains(name, device):
    torch.manual_seed(0)
    m = build_context(name, 8, d=16, rank=4, classes=3).to(device)
    x = torch.randn(2, 8, 5, 6, device=device, requires_grad=True)
    out = m(x, generator=torch.Generator(device=device).manual_seed(0))
    assert out.shape == x.shape and out.device == x.device and out.dtype == x.dtype
    assert (out >= 0).all()  # the block ends in a ReLU
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_capture_records_what_the_upper_bread_received(name):
    torch.manual_seed(3)
    build, _ = CASES[name]
    m = build().eval()
    x = torch.randn(3, C, H, W)
    with m.capture() as cap:
        out = m(x)
    assert isinstance(cap, ContextCapture) and cap.shape == (H, W)
    assert not cap.y.requires_grad and m._capture is None
    torch.testing.assert_close(out, F.relu(x + m.upper_bread(cap.y.reshape(3, -1, H, W))))
    branches = {"da": 2, "apc": 4, "dm": 3, "acf": 1}[name]
    assert cap.x.shape == (3, branches * m.d, N)
    assert cap.y.shape == (3, (1 if name == "da" else branches) * m.d, N)
    if name == "acf":  # D C: class centers mixed by the coarse class probabilities
        assert cap.D.shape == (3, m.d, 3) and cap.C.shape == (3, 3, N)
        torch.testing.assert_close(cap.C.sum(dim=1), torch.ones(3, N))
        torch.testing.assert_close(cap.y, m.output(cap.D @ cap.C))
        # a center is a weighted mean: inside its channel's range of features
        assert (cap.D >= cap.x.amin(dim=2, keepdim=True) - 1e-5).all()
        assert (cap.D <= cap.x.amax(dim=2, keepdim=True) + 1e-5).all()
    else:
        assert cap.D is None and cap.C is None


def test_hamnet_context_trains_a_step():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    for name, cls in (("da", DualAttention), ("apc", AdaptivePyramidContext), ("dm", DynamicFilters),
                      ("acf", AttentionalClassFeature)):
        torch.manual_seed(0)
        net = HamNet(3, width=4, d=8, rank=2, ham=None, context=name)
        assert isinstance(net.block, cls) and net.hamburger is None
        opt = torch.optim.SGD(net.parameters(), lr=1e-2)
        losses = []
        for _ in range(2):
            opt.zero_grad()
            loss = F.cross_entropy(net(images), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[1] < losses[0], name
        assert net.block.upper_bread[0].weight.grad.abs().sum() > 0
    assert HamNet(5, width=4, d=8, context="acf").block.classes == 5  # the coarse head predicts the net's classes
    assert any(k.startswith("context.") for k in HamNet(3, width=4, d=8, context="dm").state_dict())


@pytest.mark.parametrize("build, error, match", [
    (lambda: DualAttention(8, d=4), ValueError, "d must be >= 8"),
    (lambda: DualAttention(8, d=16.0), TypeError, "d must be an int"),
    (lambda: AdaptivePyramidContext(8, d=4, scales=()), ValueError, "scales must be a non-empty tuple"),
    (lambda: AdaptivePyramidContext(8, d=4, scales=(1, 0)), ValueError, "each of scales must be >= 1"),
    (lambda: AdaptivePyramidContext(8, d=4, scales=2), ValueError, "scales must be a non-empty tuple"),
    (lambda: DynamicFilters(8, d=4, filter_sizes=(1, 4)), ValueError, "filter_sizes must be odd"),
    (lambda: DynamicFilters(0, d=4), ValueError, "channels must be >= 1"),
    (lambda: AttentionalClassFeature(8, d=4, classes=2.5), TypeError, "classes must be an int"),
    (lambda: build_context("acf", 8, d=4, classes=0), ValueError, "classes must be >= 1"),
])
def test_bad_arguments_are_named(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_named(name):
    m = CASES[name][0]()
    for x in (torch.randn(2, C + 1, H, W), torch.randn(C, H, W)):
        with pytest.raises(ValueError, match=rf"x must have shape \(B, channels={C}, H, W\)"):
            m(x)
