"""hamgrad.cost: MAC counts against hand counts and against transcriptions of the official Hamburger code, the
paper's Table 3 by the same counts, the CPU memory measure against known allocations, interleaved rounds and
per-round ratios, slopes against a power law, and the ``hamgrad cost`` command (its stderr included)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hamgrad import cost
from hamgrad.cli import main
from hamgrad.nn import DoubleAttention, Hamburger, SelfAttention


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


def _nmf_official_hand_count(n, C, d, r, K):
    """The official HamburgerV1 with NMF2D on its training path (K = TRAIN_STEPS): the breads (2·nCd); the initial
    projection XᵀD (ndr); per step XᵀD (ndr), DᵀD (dr²), coef·DᵀD (nr²), X·coef (dnr), coefᵀcoef (nr²),
    D·coefᵀcoef (dr²); compute_coef: XᵀD, DᵀD, coef·DᵀD; the readout D·coefᵀ (dnr)."""
    step = 2 * n * d * r + 2 * n * r * r + 2 * d * r * r
    return 2 * n * C * d + n * d * r + K * step + (n * d * r + d * r * r + n * r * r) + n * d * r


def _cd_official_hand_count(n, C, d, r, K, initial_projection=True):
    """The official CD2D likewise: the breads; the initial projection (ndr), which no later line reads; per step the
    normalised XᵀD (ndr) and X·coef (dnr); compute_coef DᵀD (dr²), XᵀD (ndr), times the inverse (nr²); readout."""
    coef = d * r * r + n * d * r + n * r * r
    return 2 * n * C * d + initial_projection * n * d * r + K * 2 * n * d * r + coef + n * d * r


def _a2_hand_count(n, C, c_m, c_n):
    """A²: the convolution to A, B, V (n·C·(c_m + 2c_n)), gather A·softmax(B)ᵀ (c_m·n·c_n), distribute G·softmax(V)
    (c_m·c_n·n), the output convolution (n·c_m·C)."""
    return n * C * (c_m + 2 * c_n) + 2 * c_m * n * c_n + n * c_m * C


def _official_nmf2d_forward(x, bases, K):
    """A transcription of the official HamburgerV1/NMF2D ham's training forward (codes (B, N, R), bmm)."""
    with torch.no_grad():
        coef = torch.softmax(torch.bmm(x.transpose(1, 2), bases), dim=-1)
        for _ in range(K):
            coef = coef * torch.bmm(x.transpose(1, 2), bases) / (coef.bmm(bases.transpose(1, 2).bmm(bases)) + 1e-6)
            bases = bases * torch.bmm(x, coef) / (bases.bmm(coef.transpose(1, 2).bmm(coef)) + 1e-6)
    coef = coef * torch.bmm(x.transpose(1, 2), bases) / (coef.bmm(bases.transpose(1, 2).bmm(bases)) + 1e-6)
    return torch.bmm(bases, coef.transpose(1, 2))


def test_ham_macs_are_the_official_training_path():
    """``macs`` of the NMF ham (default grad one-step-coef) is the official code's training forward (by hand, and as
    FlopCounterMode counts a transcription of it) less one product: the official code computes DᵀX of the initial
    bases twice (initial codes, first code update), hamgrad once. Inference runs K + 1 steps; grad="one-step" drops
    the code update."""
    H, W, C, d, r, K = 4, 5, 6, 8, 3, 2
    n = H * W
    row = cost.context_cost("nmf", H, W, channels=C, d=d, rank=r, steps=(K, K + 1), repeats=1)
    hand = _nmf_official_hand_count(n, C, d, r, K)
    breads = 2 * n * C * d
    official = breads + cost.count_macs(lambda: _official_nmf2d_forward(torch.rand(1, d, n), torch.rand(1, d, r), K))
    assert official == hand
    assert row.macs == hand - n * d * r
    assert row.infer_macs == _nmf_official_hand_count(n, C, d, r, K + 1) - n * d * r
    one_step = cost.context_cost("nmf", H, W, channels=C, d=d, rank=r, steps=(K, K + 1), grad="one-step", repeats=1)
    assert one_step.macs == row.macs - (n * d * r + d * r * r + n * r * r) and one_step.grad == "one-step"


def test_cd_and_a2_macs_match_hand_counts():
    H, W, C, d, r, K = 4, 5, 6, 8, 3, 2
    n = H * W
    cd = cost.context_cost("cd", H, W, channels=C, d=d, rank=r, steps=(K, K + 1), repeats=1)
    # hamgrad's CD solves the ridge system (torch.linalg.solve, uncounted) where the official code multiplies by
    # the inverse (n r², counted); both run the initial projection
    assert cd.macs == _cd_official_hand_count(n, C, d, r, K) - n * r * r
    a2, a2_r = (cost.context_cost(name, H, W, channels=C, d=d, rank=r, repeats=1) for name in ("a2", "a2-r"))
    assert a2.macs == _a2_hand_count(n, C, d, d) and a2.label == "a2"
    assert a2_r.macs == _a2_hand_count(n, C, d, r) and a2_r.label == f"a2 (r={r})"


def test_table3_macs_and_params_at_128_match_the_paper():
    """Table 3's setting (a 128 × 128 map, C = d = 512, r = 64, K = 6): the hand counts, no run."""
    n, C, d, r, K = 128 * 128, 512, 512, 64, 6
    paper = cost.PAPER_TABLE3
    sa, nmf = _sa_hand_count(n, C, d), _nmf_official_hand_count(n, C, d, r, K)
    assert sa / 1e9 == pytest.approx(292.06, abs=0.005) and nmf / 1e9 == pytest.approx(17.54, abs=0.005)
    assert sa / 1e9 == pytest.approx(paper["sa"]["gmacs"], rel=0.001)
    assert nmf / 1e9 == pytest.approx(paper["nmf"]["gmacs"], rel=0.005)
    assert sa / nmf == pytest.approx(16.65, abs=0.005)          # the paper's SA / Ham: 16.6×
    # CD's 16.2G is the official count without the initial projection (which no later line of CD2D reads)
    assert _cd_official_hand_count(n, C, d, r, K, False) / 1e9 == pytest.approx(paper["cd"]["gmacs"], rel=0.002)
    assert _cd_official_hand_count(n, C, d, r, K) / 1e9 > 1.03 * paper["cd"]["gmacs"]
    # A² with c_m = c_n = 512 is Table 3's (25.77G); with r = 64 maps it is not (10.74G)
    assert _a2_hand_count(n, C, d, d) / 1e9 == pytest.approx(paper["a2"]["gmacs"], rel=0.003)
    assert _a2_hand_count(n, C, d, r) / 1e9 == pytest.approx(10.74, abs=0.005)
    # parameters in the paper's unit, M = 2²⁰: SA 1,051,136 = 1.00M, the ham 0.50M
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(SelfAttention(C, d=d)) == 1_051_136
    assert round(count(SelfAttention(C, d=d)) / 2 ** 20, 2) == paper["sa"]["params_m"]
    v1 = Hamburger(C, d=d, rank=r, version="v1")
    assert round(count(v1) / 2 ** 20, 2) == paper["nmf"]["params_m"] == paper["cd"]["params_m"]
    assert round(count(DoubleAttention(C, d=d, rank=d)) / 2 ** 20, 2) == 1.00   # the paper prints 1.01


def test_default_rows_pick_up_every_registered_context_module():
    from hamgrad.nn import CONTEXTS

    rows = cost.DEFAULT_CONTEXTS
    assert set(CONTEXTS) <= set(rows) and {"nmf", "cd", "vq", "a2", "a2-r"} <= set(rows)
    table3 = [name for name in rows if name in cost.PAPER_TABLE3]
    assert table3 == [name for name in cost.PAPER_TABLE3 if name in rows]     # the paper's order
    assert rows[:len(table3)] == tuple(table3)                               # Table 3's rows first


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
    row = cost.context_cost("sa", 3, 4, channels=6, d=5, repeats=2)
    assert row.n == 12 and row.label == "sa"
    assert row.params == sum(p.numel() for p in SelfAttention(6, d=5).parameters())
    assert row.macs == row.infer_macs == 2880
    assert row.train_macs > 2 * row.macs   # the backward's products: about twice the forward's
    assert row.train_bytes > 0 and row.infer_bytes > 0 and row.train_seconds > 0 and row.infer_seconds > 0
    assert len(row.train_times) == len(row.infer_times) == row.repeats == 2
    assert row.train_seconds == sum(row.train_times) / 2    # the median of two rounds
    assert cost.context_cost("sa", 3, 4, channels=6, d=5, repeats=1, sdpa_backend="math").label == "sa (math)"
    ham = cost.context_cost("nmf", 4, channels=8, d=8, rank=2, steps=(2, 3), repeats=1)
    assert ham.steps == (2, 3) and ham.grad == "one-step-coef" and ham.infer_macs > ham.macs > 0


class _Recorder:
    """A stand-in case whose calls write their name into a shared log."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def train(self):
        self.log.append((self.name, "train"))

    def infer(self):
        self.log.append((self.name, "infer"))


def test_rounds_call_every_case_once_each_in_a_new_order():
    log = []
    cases = [_Recorder(name, log) for name in "abc"]
    times = cost._interleaved(cases, 4, torch.device("cpu"), seed=0)
    rounds = [log[6 * i:6 * (i + 1)] for i in range(4)]
    assert len(log) == 24
    assert all(sorted(r) == sorted((c, p) for c in "abc" for p in ("train", "infer")) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1     # shuffled, not one fixed order
    assert all(len(t[k]) == 4 for t in times for k in ("train", "infer", "train_wall", "infer_wall"))
    assert all(t["train_ref"] == [] for t in times)


def test_each_call_is_timed_beside_a_reference_call():
    log = []
    cases = [_Recorder(name, log) for name in "abr"]
    times = cost._interleaved(cases, 6, torch.device("cpu"), seed=0, reference=2)
    assert len(log) == 6 * (4 * 2 + 2)            # a, b: each phase with a reference call beside it; r alone
    assert sum(name == "r" for name, _ in log) == 6 * (4 + 2)
    orders = set()
    i = 0
    while i < len(log):                           # read the log back as single reference calls and pairs
        name, phase = log[i]
        if name == "r" and (i + 1 == len(log) or log[i + 1] != (log[i + 1][0], phase) or log[i + 1][0] == "r"):
            i += 1
            continue
        pair = log[i:i + 2]
        assert {n for n, _ in pair} in ({"r", "a"}, {"r", "b"}) and pair[0][1] == pair[1][1] == phase, pair
        orders.add(pair[0][0] == "r")
        i += 2
    assert orders == {True, False}                # the reference goes first in some pairs, second in others
    assert all(len(t["train_ref"]) == len(t["train"]) == 6 for t in times)
    assert times[2]["train_ref"] == times[2]["train"]


def _row(name, label=None, side=128, **values):
    row = {"name": name, "label": label or name, "height": side, "width": side, "n": side * side, "batch": 1,
           "channels": 512, "d": 512, "rank": 64, "steps": [6, 7], "grad": "one-step-coef", "version": "v1",
           "table3": True, "params": 1,
           "macs": 1, "infer_macs": 1, "train_macs": 1, "train_bytes": 1, "infer_bytes": 1, "train_seconds": 1.0,
           "infer_seconds": 1.0, "train_times": [1.0], "infer_times": [1.0], "train_reference_times": [1.0],
           "infer_reference_times": [1.0], "memory_kind": "cpu_allocator_peak",
           "time_kind": "cpu_process_time", "device": "cpu", "dtype": "float32", "repeats": 1}
    row.update(values)
    return row


def test_ratios_are_per_call_and_carry_the_paper_at_its_setting():
    """A time ratio is the median over the rounds of a call's time over the reference call's beside it (not the
    ratio of the medians: 1.0 here, not 2.0 / 2.0 = 1.0 by chance nor 2.0 / 1.0)."""
    rows = [_row("nmf", train_times=[1.0, 2.0, 4.0], infer_times=[1.0, 1.0, 1.0], macs=10),
            _row("sa", train_times=[2.0, 2.0, 2.0], train_reference_times=[1.0, 2.0, 4.0],
                 infer_times=[3.0, 2.0, 1.0], infer_reference_times=[1.0, 1.0, 1.0], macs=166),
            _row("sa", side=64, train_times=[1.0], infer_times=[1.0]), _row("nmf", side=64)]
    ratios = cost._ratios(rows, "nmf")
    sa = next(q for q in ratios if q["label"] == "sa" and q["height"] == 128)
    assert sa["train_seconds"] == {"median": 1.0, "min": 0.5, "max": 2.0, "q1": 0.75, "q3": 1.5}
    assert sa["infer_seconds"]["median"] == 2.0 and sa["macs"] == 16.6
    assert sa["paper"]["macs"] == pytest.approx(292.0 / 17.6) and sa["paper"]["train_seconds"] == pytest.approx(
        242.0 / 15.6)
    assert next(q for q in ratios if q["label"] == "sa" and q["height"] == 64)["paper"] is None   # not Table 3's size


def test_table3_section_sets_the_paper_beside_every_row():
    rows = [_row("sa", params=1_051_136, macs=292_057_284_608), _row("nmf", params=525_824, macs=17_542_670_336),
            _row("a2-r", label="a2 (r=64)", params=620_000, macs=10_737_418_240)]
    result = {"rows": rows, "ratios": cost._ratios(rows, "nmf"), "reference": "nmf", "slopes": {}, "fit_from": 1}
    text = cost.to_markdown(result)
    assert "| sa | 1.00 (1.00) | 1.05 | 292.06 (292.0) | 1.000× |" in text
    assert "| nmf | 0.50 (0.50) | 0.53 | 17.54 (17.6) | 0.997× |" in text
    for name in ("da", "apc", "dm", "acf", "cd", "a2"):     # the paper's rows hamgrad did not measure here
        assert f"| {name} | – ({cost.PAPER_TABLE3[name]['params_m']:.2f}) | – |" in text
    assert "| a2 (r=64) | 0.59 | 0.62 | 10.74 | – |" in text
    assert "| sa / nmf | 128×128 | 2.00× (2.00×) | 16.65× (16.59×) |" in text
    small = [_row("sa", side=64), _row("nmf", side=64)]
    assert "Table 3 beside" not in cost.to_markdown({**result, "rows": small, "ratios": cost._ratios(small, "nmf")})


def test_fit_slopes_recovers_a_power_law():
    rows = [{"label": "m", "n": n, "train_seconds": 3e-6 * n ** 2, "infer_seconds": 2e-6 * n,
             "train_bytes": 5 * n, "infer_bytes": 7 * n ** 1.5, "macs": 0} for n in (256, 1024, 4096)]
    rows.append({**rows[0], "n": 16, "train_seconds": 1.0})   # below fit_from: ignored
    s = cost.fit_slopes(rows, fit_from=256)["m"]
    assert s["train_seconds"] == pytest.approx(2.0)
    assert s["infer_seconds"] == pytest.approx(1.0)
    assert s["infer_bytes"] == pytest.approx(1.5)
    assert math.isnan(s["macs"]) and s["n"] == [256, 1024, 4096]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sdpa_backend must be one of"):
        cost.context_cost("sa", 4, channels=4, d=4, sdpa_backend="fast")
    with pytest.raises(ValueError, match="height must be >= 1"):
        cost.context_cost("sa", 0)
    with pytest.raises(ValueError, match="names and sides must be non-empty"):
        cost.compare_contexts((), (8,))


def test_cost_command(tmp_path, capsys):
    assert main(["cost", "--contexts", "sa,a2,nmf", "--sizes", "8,16", "--channels", "8", "--d", "8", "--rank", "2",
                 "--repeats", "2", "--fit-from", "8", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| sa / nmf | 16×16 |" in printed and "| a2 / nmf | 8×8 |" in printed
    result = json.loads((tmp_path / "context_cost.json").read_text())
    assert [(r["label"], r["n"]) for r in result["rows"]] == [(m, s * s) for s in (8, 16) for m in ("sa", "a2", "nmf")]
    assert all(len(r["train_times"]) == len(r["train_reference_times"]) == 2 and r["grad"] == "one-step-coef"
               for r in result["rows"])
    assert set(result["slopes"]) == {"sa", "a2", "nmf"}
    assert (tmp_path / "context_cost.png").stat().st_size > 0
    assert (tmp_path / "context_cost.md").read_text() == cost.to_markdown(result)
    assert main(["cost", "--contexts", "attn", "--sizes", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamgrad cost: error: unknown solver or context module name='attn'")
    assert main(["cost", "--contexts", "nmf", "--sizes", "8", "--grad", "backprop"]) == 2
    assert "unknown gradient mode grad='backprop'" in capsys.readouterr().err


def test_cost_command_prints_no_profiler_noise():
    """torch's profiler (kineto) writes ``USDT:`` markers to fd 2 at every start and stop; the command's stderr
    stays empty (a subprocess: the markers bypass Python's sys.stderr)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    code = "from hamgrad.cli import main; raise SystemExit(main(['cost', '--quick', '--contexts', 'sa,nmf']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| sa / nmf |" in proc.stdout
    assert "USDT" not in proc.stderr and proc.stderr == ""


def test_trace_markers_are_dropped_and_the_rest_passed_on(capfd):
    with cost._without_trace_markers():
        os.write(2, b"USDT:2026 SyncActivityProfilerHandler.cpp:52] profiler_start\nkineto: a real error\n")
    err = capfd.readouterr().err
    assert "USDT" not in err and "kineto: a real error" in err


def test_context_cost_on_each_device(device):
    row = cost.context_cost("nmf", 4, channels=8, d=8, rank=2, steps=(2, 3), device=device, repeats=1)
    assert row.device == device
    assert row.memory_kind == ("cuda_max_allocated" if device == "cuda" else "cpu_allocator_peak")
    assert row.time_kind == ("cuda_wall" if device == "cuda" else "cpu_process_time")
    assert row.train_bytes > 0 and row.infer_bytes > 0
