"""Core benchmark: one-step vs BPTT cost in K, and hamgrad's NMF ham against the official Hamburger layout.

Run: ``python benchmarks/bench_core.py [--device cpu|cuda] [--repeats 5] [--quick]`` (``OMP_NUM_THREADS=1`` on a
shared CPU). Prints ratios against a reference measured in the same process; nothing here is asserted. Times are CUDA
wall times, or on CPU this process's CPU time (``_seconds``), which other processes on the same cores do not inflate.

1. Forward+backward wall time and memory of ``one-step`` vs ``bptt`` (NMF, d=512, n=4096, r=64, batch 2) for
   K = 1, 6, 12, 24. Memory: see :mod:`hamgrad.profiling` (CUDA peak; on CPU the bytes saved for backward).
2. One forward+backward of the NMF ham in the official code's mode (``hg.solve(NMF(64), x (1, 512, 4096), steps=6,
   grad="one-step-coef")``): hamgrad with the default ``monitor=True`` (per-step residuals and objective, one host
   sync) and with ``monitor=False``, each as a ratio to a re-implementation of the official NMF2D layout (codes
   stored as (n, r), bmm products), and to a transcription of docs/theory.md §2 with left-to-right products (which
   form d×n intermediates). The candidates run in a shuffled order in each of ``repeats`` rounds; a ratio is the median over rounds of the
   round's time over the official layout's.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import hamgrad as hg
from hamgrad.profiling import measure


def _seconds(run, device) -> float:
    """One call's time: CUDA wall time (:func:`hamgrad.profiling.measure`); on CPU this process's CPU time, which
    other processes sharing the cores do not inflate (the calls are single-process and compute-bound)."""
    if torch.device(device).type == "cuda":
        return measure(run, device).seconds
    start = time.process_time()
    run()
    return time.process_time() - start


def _median_time(fn, device, repeats):
    fn()  # warm-up
    return statistics.median(_seconds(fn, device) for _ in range(repeats))


def bench_modes(device, repeats, ks, batch=2, d=512, n=4096, r=64):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, d, n, generator=g, device=device).requires_grad_(True)
    s = hg.NMF(rank=r)
    h0 = s.init(x.detach(), generator=g)
    print(f"\n[1] one-step vs bptt, NMF d={d} n={n} r={r} batch={batch} on {device}")
    print(f"{'K':>3} {'one-step ms':>12} {'bptt ms':>10} {'time ratio':>10} {'one-step MB':>12} {'bptt MB':>9} "
          f"{'mem ratio':>9}")
    rows = []
    for K in ks:
        res = {}
        for mode in ("one-step", "bptt"):
            def run():
                y, _ = hg.solve(s, x, steps=K, grad=mode, h0=h0, monitor=False)
                y.square().mean().backward()
            t = _median_time(run, device, repeats)
            mem = measure(run, device)
            res[mode] = (t, mem.peak_bytes, mem.memory_kind)
        (t1, m1, kind), (tb, mb, _) = res["one-step"], res["bptt"]
        rows.append((K, t1, tb, m1, mb))
        print(f"{K:>3} {1e3 * t1:>12.1f} {1e3 * tb:>10.1f} {tb / t1:>10.2f} {m1 / 2**20:>12.1f} {mb / 2**20:>9.1f} "
              f"{mb / max(m1, 1):>9.2f}")
    print(f"(memory = {kind})")
    return rows


def _transcription(x, D, C, steps, eps=1e-6):
    """docs/theory.md §2 as written, products left to right (D C Cᵀ forms d×n), one-step-coef readout."""
    with torch.no_grad():
        for _ in range(steps):
            C = C * (D.transpose(-1, -2) @ x) / (D.transpose(-1, -2) @ D @ C + eps)
            D = D * (x @ C.transpose(-1, -2)) / (D @ C @ C.transpose(-1, -2) + eps)
    C = C * (D.transpose(-1, -2) @ x) / (D.transpose(-1, -2) @ D @ C + eps)
    return D @ C


def _official_layout(x, bases, coef, steps, eps=1e-6):
    """The official Hamburger NMF2D algorithm, re-implemented here in its layout: coef is (B, N, R), bmm products."""
    with torch.no_grad():
        for _ in range(steps):
            numerator = torch.bmm(x.transpose(1, 2), bases)
            denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
            coef = coef * numerator / (denominator + eps)
            numerator = torch.bmm(x, coef)
            denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
            bases = bases * numerator / (denominator + eps)
    numerator = torch.bmm(x.transpose(1, 2), bases)
    denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
    coef = coef * numerator / (denominator + eps)
    return torch.bmm(bases, coef.transpose(1, 2))


def bench_official_setting(device, repeats, d=512, n=64 * 64, r=64, steps=6):
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.rand(1, d, n, generator=g, device=device).requires_grad_(True)
    s = hg.NMF(rank=r)
    D0, C0 = s.init(x.detach(), generator=g)
    C0_official = C0.transpose(1, 2).contiguous()
    candidates = {
        "official layout": lambda: _official_layout(x, D0, C0_official, steps),
        "hamgrad (monitor=True)": lambda: hg.solve(s, x, steps, "one-step-coef", h0=(D0, C0))[0],
        "hamgrad (monitor=False)": lambda: hg.solve(s, x, steps, "one-step-coef", h0=(D0, C0), monitor=False)[0],
        "theory.md transcription": lambda: _transcription(x, D0, C0, steps),
    }
    ref = candidates["official layout"]().detach()
    print(f"\n[2] NMF ham forward+backward, one-step-coef K={steps}, batch 1, d={d} n={n} r={r} on {device}, "
          f"{repeats} shuffled rounds")
    runs = {}
    for name, f in candidates.items():
        torch.testing.assert_close(f().detach(), ref, rtol=1e-3, atol=1e-4)  # same numbers before comparing speed

        def run(f=f):
            x.grad = None
            f().square().mean().backward()
        run()  # warm-up
        runs[name] = run
    times = {name: [] for name in runs}
    order = random.Random(0)
    for _ in range(repeats):  # each round in a new order, so drift and cache effects fall on every candidate
        names = list(runs)
        order.shuffle(names)
        for name in names:
            times[name].append(_seconds(runs[name], device))
    base = times["official layout"]
    ratio = {name: statistics.median(a / b for a, b in zip(t, base)) for name, t in times.items()}
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in med.items():
        print(f"{name:>26}: median {1e3 * t:8.1f} ms  (min {1e3 * min(times[name]):7.1f})   ratio to official "
              f"layout {ratio[name]:5.2f}")
    print(f"ratio monitor=True / official: {ratio['hamgrad (monitor=True)']:.3f} (goal at the full size <= 1.10); "
          f"monitor=False / official: {ratio['hamgrad (monitor=False)']:.3f} (goal <= 1.00)  [median of per-round "
          "ratios]")
    return med


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if a.quick:
        bench_modes(a.device, 2, [1, 6], d=64, n=256, r=8)
        bench_official_setting(a.device, 2, d=64, n=256, r=8)
    else:
        bench_modes(a.device, a.repeats, [1, 6, 12, 24])
        bench_official_setting(a.device, max(a.repeats, 15))


if __name__ == "__main__":
    main()
