"""accumulative_ratio against singular values computed directly (NumPy)."""

import numpy as np
import pytest
import torch

import hamgrad as hg


@pytest.mark.parametrize("p", [1, 2])
def test_matches_numpy_singular_values(device, p):
    Z = torch.randn(3, 12, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    ratio = hg.accumulative_ratio(Z, p=p)
    assert ratio.shape == (3, 12) and ratio.device == Z.device
    for b in range(3):
        s = np.linalg.svd(Z[b].cpu().numpy(), compute_uv=False) ** p
        np.testing.assert_allclose(ratio[b].cpu().numpy(), np.cumsum(s) / s.sum(), rtol=1e-12)
    assert (ratio[:, 1:] >= ratio[:, :-1]).all()
    torch.testing.assert_close(ratio[:, -1], torch.ones(3, dtype=torch.float64, device=device))


def test_low_rank_matrix_reaches_one_at_its_rank():
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(20, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 50, generator=g, dtype=torch.float64)
    ratio = hg.accumulative_ratio(Z)
    assert ratio[1] < 1 - 1e-6 and ratio[2] == pytest.approx(1.0, abs=1e-12)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        hg.accumulative_ratio(torch.ones(3, 3), p=3)
    with pytest.raises(ValueError, match="Z must have at least 2"):
        hg.accumulative_ratio(torch.ones(3))
    with pytest.raises(ValueError, match="all-zero"):
        hg.accumulative_ratio(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="NaN"):
        hg.accumulative_ratio(torch.full((3, 3), float("nan")))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    Z = torch.randn(2, 8, 20, generator=torch.Generator().manual_seed(2)).to(dtype)
    ratio = hg.accumulative_ratio(Z)
    assert ratio.dtype == torch.float32
    s = np.linalg.svd(Z.double().numpy(), compute_uv=False) ** 2  # the half values, exactly, in float64
    np.testing.assert_allclose(ratio.numpy(), np.cumsum(s, -1) / s.sum(-1, keepdims=True), rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_tiny_and_huge_finite_values_are_scaled_first(scale):
    # σ² of 1e-30 underflows float32 and of 1e30 overflows it; the ratio is scale-invariant
    Z = torch.randn(8, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = hg.accumulative_ratio(Z)
    got = hg.accumulative_ratio((Z * scale).float())
    torch.testing.assert_close(got, ref.float(), rtol=1e-5, atol=1e-6)
