"""Gradient probes (hamgrad.experiments.probe): the numbers against an independent computation (autograd on fresh
copies of the model, a dense float64 eigenvalue computation), and a probe leaves the model as it found it."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import jacrev

from hamgrad.experiments import AblationConfig, build_model, probe
from hamgrad.experiments.probes import _sample_radii
from hamgrad.experiments.runner import _data
from hamgrad.fixed_point import flatten_state, unflatten_state
from hamgrad.linalg import LinearOperator

CONFIG = AblationConfig.quick(train_samples=8, val_samples=4)


def _model(solver: str, grad: str, block: str = "v2", seed: int = 0):
    """The untrained HamNet of a quick run (its weights drawn after ``torch.manual_seed(seed)``), in training mode."""
    spec = next(s for s in AblationConfig.quick(solvers=(solver,), grads=(grad,), blocks=(block,)).runs() if s.solver)
    torch.manual_seed(seed)
    return build_model(CONFIG, spec).train()


def _batch():
    images, labels = _data(CONFIG)
    return images[:4], labels[:4].long()


def _reference_gradients(solver: str, grad: str, block: str, images, labels, rng_state) -> dict:
    """The flat gradients of the encoder and the lower bread of a fresh model built with ``grad``, by
    ``loss.backward()``, with the global RNG (the ham's initial state) at ``rng_state``."""
    model = _model(solver, grad, block)
    torch.set_rng_state(rng_state)
    F.cross_entropy(model(images), labels).backward()
    return {"encoder": np.concatenate([p.grad.double().numpy().ravel() for p in model.encoder.parameters()]),
            "lower_bread": np.concatenate([p.grad.double().numpy().ravel()
                                           for p in model.hamburger.lower_bread.parameters()])}


@pytest.mark.parametrize("solver, grad, block", [
    ("nmf", "one-step-coef", "v2"), ("vq", "one-step-coef", "v2"), ("cd", "one-step-coef", "v2"),  # the paper's rule
    ("nmf", "one-step", "v2"), ("vq", "one-step", "v1"), ("cd", "truncated:2", "v1")])
def test_probe_against_autograd_on_fresh_copies(solver, grad, block):
    images, labels = _batch()
    model = _model(solver, grad, block)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    record = probe(model, images, labels)
    mode = _reference_gradients(solver, grad, block, images, labels, rng)
    bptt = _reference_gradients(solver, "bptt", block, images, labels, rng)
    for group in ("encoder", "lower_bread"):
        g, ref = mode[group], bptt[group]
        got = record[group]
        assert got["mode_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-6)
        assert got["bptt_norm"] == pytest.approx(np.linalg.norm(ref), rel=1e-6)
        assert got["cosine"] == pytest.approx(g @ ref / (np.linalg.norm(g) * np.linalg.norm(ref)), abs=1e-6)
        assert got["norm_ratio"] == pytest.approx(np.linalg.norm(g) / np.linalg.norm(ref), rel=1e-6)
        assert got["cosine"] < 1 - 1e-4  # the modes differ: the comparison is not of a gradient with itself


@pytest.mark.parametrize("solver, block", [("nmf", "v2"), ("vq", "v2"), ("cd", "v2"), ("nmf", "v1")])
def test_rho_against_dense_eigenvalues(solver, block):
    images, labels = _batch()
    model = _model(solver, "one-step-coef", block)
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    record = probe(model, images, labels)
    # the last iterate h^K and the ham's input of the same batch and initial state, then ∂F/∂h per image by jacrev
    # in float64, and all its eigenvalues
    torch.set_rng_state(rng)
    with model.hamburger.capture() as cap:
        model(images)
    s, z, h = model.hamburger.solver, cap.x.double(), tuple(t.double() for t in cap.info.state)
    radii = []
    for b in range(len(images)):
        hb = tuple(t[b] for t in h)
        J = jacrev(lambda v: flatten_state(s.step(z[b], unflatten_state(v, hb))))(flatten_state(hb))
        radii.append(float(torch.linalg.eigvals(J).abs().max()))
    # residual <= 1e-3 (the default tolerance); float32 products: the values agree to about 1e-5 here
    assert record["rho_residual"] <= 1e-3 and 1 <= record["rho_steps"] <= 20
    assert record["rho"] == pytest.approx(max(radii), rel=1e-3)
    assert record["rho_mean"] == pytest.approx(np.mean(radii), rel=1e-3)


def test_sample_radii_on_known_blocks():
    # five 6 × 6 blocks, the state one tensor (B, 6): a dominant complex pair (power iteration's failure case), a
    # dominant pair λ, −λ, a zero block and one of rank 2 (Arnoldi reaches an invariant subspace: breakdown), and a
    # random one; each block hidden by a random orthogonal change of basis
    g = torch.Generator().manual_seed(0)
    rot = 1.5 * torch.tensor([[math.cos(1.0), -math.sin(1.0)], [math.sin(1.0), math.cos(1.0)]], dtype=torch.float64)
    blocks = [torch.block_diag(rot, 0.5 * torch.rand(4, 4, generator=g, dtype=torch.float64)),
              torch.diag(torch.tensor([2.0, -2.0, 1.0, 0.5, 0.25, 0.1], dtype=torch.float64)),
              torch.zeros(6, 6, dtype=torch.float64),
              torch.diag(torch.tensor([0.7, -0.3, 0, 0, 0, 0], dtype=torch.float64)),
              torch.randn(6, 6, generator=g, dtype=torch.float64)]
    for i, A in enumerate(blocks):
        Q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
        blocks[i] = Q @ A @ Q.T
    J = LinearOperator.from_dense(torch.block_diag(*blocks))
    h = (torch.zeros(len(blocks), 6, dtype=torch.float64),)
    radii, residuals, steps = _sample_radii(J, h, 6, 1e-12, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(radii.numpy(), [1.5, 2.0, 0.0, 0.7, float(torch.linalg.eigvals(blocks[4]).abs().max())],
                               rtol=1e-10, atol=1e-12)
    assert steps == 6 and float(residuals.max()) <= 1e-8
    # a looser tolerance stops earlier, at a residual within it; a cap of 2 steps is kept
    radii, residuals, steps = _sample_radii(J, h, 6, 1e-2, torch.Generator().manual_seed(1))
    assert steps < 6 and float(residuals.max()) <= 1e-2
    radii, residuals, steps = _sample_radii(J, h, 2, 1e-12, torch.Generator().manual_seed(1))
    assert steps == 2 and radii.shape == (5,) and bool(torch.isfinite(residuals).all())


def test_probe_leaves_the_model_as_it_was(device):
    images, labels = (t.to(device) for t in _batch())
    model = _model("vq", "one-step-coef").to(device)
    buffers = [b.clone() for b in model.buffers()]
    weights = [p.clone() for p in model.parameters()]
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    device_rng = None if device == "cpu" else torch.get_device_module(device).get_rng_state()
    probe(model, images, labels)
    assert torch.equal(torch.get_rng_state(), rng)
    if device_rng is not None:  # the ham's initial state is drawn from the device's generator there
        assert torch.equal(torch.get_device_module(device).get_rng_state(), device_rng)
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), buffers))
    assert all(torch.equal(a, b) and a.grad is None for a, b in zip(model.parameters(), weights))
    assert model.hamburger.grad == "one-step-coef" and model.training
    # an explicit generator: its state is put back, the global one is untouched
    gen = torch.Generator(device).manual_seed(3)
    state = gen.get_state()
    a = probe(model, images, labels, generator=gen)
    assert torch.equal(gen.get_state(), state) and torch.equal(torch.get_rng_state(), rng)
    assert probe(model, images, labels, generator=gen) == a  # the same initial state again: the same record


def test_probe_refusals():
    images, labels = _batch()
    spec = next(s for s in AblationConfig.quick(contexts=("gap",)).runs() if s.context)
    for model in (build_model(CONFIG, AblationConfig.quick().runs()[0]), build_model(CONFIG, spec)):
        with pytest.raises(ValueError, match="model has no ham"):
            probe(model, images, labels)
    model = _model("nmf", "one-step-coef")
    with pytest.raises(ValueError, match="rho_iters must be >= 1"):
        probe(model, images, labels, rho_iters=0)
    with pytest.raises(ValueError, match="rho_tol must be a finite number > 0"):
        probe(model, images, labels, rho_tol=0.0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        probe(model, images, labels, generator=3)
