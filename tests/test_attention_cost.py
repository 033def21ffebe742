"""hamgrad.cost: MAC counts against hand counts, the CPU memory measure against known allocations, slopes against a
power law, the paper's ratios, and the ``hamgrad cost`` command."""

import json
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hamgrad import cost
from hamgrad.cli import main
from hamgrad.nn import DoubleAttention, SelfAttention


def _sa_hand_count(n, C, d):
    """q, k, v convolution (n·C·3d) + QᵀK (n·n·d) + attention times V (n·n·d) + output convolution (n·d·C)."""
    return n * C * 3 * d + 2 * n * n * d + n * d * C


@pytest.mark.parametrize("backend", [None, SDPBackend.MATH])
def test_self_attention_macs_match_a_hand_count(backend):
    m = SelfAttention(6, d=5).eval()
    x = torch.randn(1, 6, 3, 4)
    with (sdpa_kernel([backend]) if backend else torch.no_grad()), torch.no_grad():
        macs = cost.count_macs(lambda: m(x))
    assert macs == _sa_hand_count(12, 6, 5) == 2880


def test_double_attention_macs_match_a_hand_count():
    m = DoubleAttention(6, d=5, rank=3).eval()
    with torch.no_grad():
        macs = cost.count_macs(lambda: m(torch.randn(2, 6, 3, 4)))
    n, C, d, r = 12, 6, 5, 3
    assert macs == 2 * (n * C * (d + 2 * r) + d * n * r + d * r * n + n * d * C)


def test_table3_macs_at_128_match_the_paper():
    """By the same count the paper's 292G MACs of SA are a 128 × 128 map (d = 512): the hand count, no run."""
    assert _sa_hand_count(128 * 128, 512, 512) / 1e9 == pytest.approx(292.0, rel=0.01)


def test_cpu_peak_memory_sees_known_allocations():
    def fn():
        a = torch.empty(2 ** 18)          # 1 MiB
        b = torch.empty(2 ** 19)          # 2 MiB: 3 MiB live
        del a
        c = torch.empty(2 ** 18)          # 3 MiB live again, never 4
        return b, c

    peak, kind = cost.peak_memory(fn, "cpu")
    assert kind == "cpu_allocator_peak"
    assert peak == 3 * 2 ** 20


def test_memory_sees_the_materialised_attention_matrix():
    """The math kernel holds the n × n attention matrix (4 MiB at n = 1024); the fused kernel does not."""
    m = SelfAttention(4, d=4).eval()
    x = torch.randn(1, 4, 32, 32)
    matrix = 1024 * 1024 * 4
    with torch.no_grad():
        fused, _ = cost.peak_memory(lambda: m(x))
        with sdpa_kernel([SDPBackend.MATH]):
            math_kernel, _ = cost.peak_memory(lambda: m(x))
    assert math_kernel >= matrix > fused


def test_context_cost_row():
    row = cost.context_cost("sa", 3, 4, channels=6, d=5, repeats=1)
    assert row.n == 12 and row.label == "sa"
    assert row.params == sum(p.numel() for p in SelfAttention(6, d=5).parameters())
    assert row.macs == 2880
    assert row.train_macs > 2 * row.macs   # the backward's products: about twice the forward's
    assert row.train_bytes > 0 and row.infer_bytes > 0 and row.train_seconds > 0 and row.infer_seconds > 0
    assert cost.context_cost("sa", 3, 4, channels=6, d=5, repeats=1, sdpa_backend="math").label == "sa (math)"
    ham = cost.context_cost("nmf", 4, channels=8, d=8, rank=2, steps=(2, 3), repeats=1)
    assert ham.steps == (2, 3) and ham.macs > 0


def test_fit_slopes_recovers_a_power_law():
    rows = [{"label": "m", "n": n, "train_seconds": 3e-6 * n ** 2, "infer_seconds": 2e-6 * n,
             "train_bytes": 5 * n, "infer_bytes": 7 * n ** 1.5, "macs": 0} for n in (256, 1024, 4096)]
    rows.append({**rows[0], "n": 16, "train_seconds": 1.0})   # below fit_from: ignored
    s = cost.fit_slopes(rows, fit_from=256)["m"]
    assert s["train_seconds"] == pytest.approx(2.0)
    assert s["infer_seconds"] == pytest.approx(1.0)
    assert s["infer_bytes"] == pytest.approx(1.5)
    assert math.isnan(s["macs"]) and s["n"] == [256, 1024, 4096]


def test_paper_ratios():
    assert cost.PAPER_RATIOS["train_ms"] == pytest.approx(15.5, abs=0.05)
    assert cost.PAPER_RATIOS["train_mb"] == pytest.approx(26.0, abs=0.05)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sdpa_backend must be one of"):
        cost.context_cost("sa", 4, channels=4, d=4, sdpa_backend="fast")
    with pytest.raises(ValueError, match="height must be >= 1"):
        cost.context_cost("sa", 0)
    with pytest.raises(ValueError, match="names and sides must be non-empty"):
        cost.compare_contexts((), (8,))


def test_cost_command(tmp_path, capsys):
    assert main(["cost", "--contexts", "sa,a2,nmf", "--sizes", "8,16", "--channels", "8", "--d", "8", "--rank", "2",
                 "--repeats", "1", "--fit-from", "8", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| sa / nmf | 16×16 |" in printed and "paper: SA / Ham (NMF)" in printed
    result = json.loads((tmp_path / "context_cost.json").read_text())
    assert [(r["label"], r["n"]) for r in result["rows"]] == [(m, s * s) for s in (8, 16) for m in ("sa", "a2", "nmf")]
    assert set(result["slopes"]) == {"sa", "a2", "nmf"}
    assert (tmp_path / "context_cost.png").stat().st_size > 0
    assert (tmp_path / "context_cost.md").read_text() == cost.to_markdown(result)
    assert main(["cost", "--contexts", "attn", "--sizes", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamgrad cost: error: unknown solver or context module name='attn'")


def test_context_cost_on_each_device(device):
    row = cost.context_cost("nmf", 4, channels=8, d=8, rank=2, steps=(2, 3), device=device, repeats=1)
    assert row.device == device
    assert row.memory_kind == ("cuda_max_allocated" if device == "cuda" else "cpu_allocator_peak")
    assert row.time_kind == ("cuda_wall" if device == "cuda" else "cpu_process_time")
    assert row.train_bytes > 0 and row.infer_bytes > 0
