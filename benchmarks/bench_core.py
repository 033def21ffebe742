"""Core benchmark: one-step vs BPTT cost in K, and hamgrad's NMF ham against the official Hamburger code.

Run: ``python benchmarks/bench_core.py [--device cpu|cuda] [--repeats 5] [--rounds 25] [--threads 1,2] [--parts 1,2]
[--quick]``. Prints ratios against a reference measured in the same process; nothing here is asserted.

1. Forward+backward time and memory of ``one-step`` vs ``bptt`` (NMF, d=512, n=4096, r=64, batch 2) for
   K = 1, 6, 12, 24: CUDA wall time, or on CPU this process's CPU time (median of ``--repeats``). Memory: see
   :mod:`hamgrad.profiling` (CUDA peak; on CPU the bytes saved for backward).
2. The NMF ham in the official code's mode, ``hg.solve(NMF(64), x (1, 512, 4096), steps=6, grad="one-step-coef")``
   with the default ``monitor=True`` (per-step residuals and objective, one host sync) and with ``monitor=False``,
   against :func:`official_nmf2d`, a transcription of the official NMF2D ham (codes ``(B, N, R)``, ``bmm`` products,
   its initial projection, K steps without graph, ``compute_coef`` and the readout), from the same random bases:
   the forward (as in training: x requires grad) and the forward + backward of ``y.square().mean()``, at one thread
   and at torch's default thread count. Every call runs once per round, in a new random order each round, beside a
   call of the official code's same phase (the two in a random order); its wall time (and CPU time) is divided by
   that call's, and the median of those ratios over the rounds is printed with their spread (min–max, quartiles)
   and the load average before and after. With
   ``benchmarks/gomp_regions.c`` preloaded it also prints the OpenMP parallel regions each call opens.

On a CPU shared with other jobs, an op that torch or MKL splits over two threads ends when the slower thread does;
when the other jobs hold the cores, that is a scheduler slice (milliseconds) per op. Two-thread times then count
the ops that split over threads more than the work, so part 2 compares at both thread counts.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import statistics
import time

import torch
import torch.nn.functional as F

import hamgrad as hg
from hamgrad.profiling import measure, synchronize


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


def official_nmf2d(x, rank, steps, generator, eps=1e-6):
    """A transcription of the official Hamburger NMF2D ham's training forward (``seg/HamNet/hamburger/ham.py`` of
    Gsunshine/Enjoy-Hamburger, ``spatial=True``, ``S = 1``, random bases; on CPU without its ``.cuda()``): bases
    ``normalize(rand)``, the codes in its layout ``(B, N, R)``, every product a ``bmm`` as it writes them, the
    initial projection and the K steps without graph, then ``compute_coef`` and the readout with graph."""
    B, D, N = x.shape
    bases = F.normalize(torch.rand((B, D, rank), generator=generator, device=x.device, dtype=x.dtype), dim=1)
    with torch.no_grad():                                   # local_inference
        coef = torch.bmm(x.transpose(1, 2), bases)
        coef = F.softmax(1 * coef, dim=-1)                  # NMF2D sets inv_t = 1
        for _ in range(steps):                              # local_step
            numerator = torch.bmm(x.transpose(1, 2), bases)
            denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
            coef = coef * numerator / (denominator + eps)
            numerator = torch.bmm(x, coef)
            denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
            bases = bases * numerator / (denominator + eps)
    numerator = torch.bmm(x.transpose(1, 2), bases)         # compute_coef
    denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
    coef = coef * numerator / (denominator + eps)
    return torch.bmm(bases, coef.transpose(1, 2))


def _timed(fn, device):
    """``(wall, cpu)`` seconds of one call of ``fn`` (the device synchronised)."""
    synchronize(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def _spread(values):
    values = sorted(values)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return statistics.median(values), values[0], values[-1], q1, q3


def _region_counter():
    """``gomp_regions()`` of benchmarks/gomp_regions.c when it is preloaded (``LD_PRELOAD``), else None."""
    count = getattr(ctypes.CDLL(None), "gomp_regions", None)
    if count is not None:
        count.restype = ctypes.c_ulong
    return count


def bench_official_setting(device, rounds, thread_counts, d=512, n=64 * 64, r=64, steps=6):
    """Part 2: the NMF ham in the official code's mode against the transcription of the official NMF2D, at each
    thread count, in interleaved rounds (see the module docstring)."""
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.rand(1, d, n, generator=g, device=device).requires_grad_(True)
    s = hg.NMF(rank=r)
    seed = 2

    def gen():
        return torch.Generator(device=device).manual_seed(seed)

    candidates = {
        "official NMF2D": lambda: official_nmf2d(x, r, steps, gen()),
        "hamgrad (monitor=True)": lambda: hg.solve(s, x, steps, "one-step-coef", generator=gen())[0],
        "hamgrad (monitor=False)": lambda: hg.solve(s, x, steps, "one-step-coef", generator=gen(), monitor=False)[0],
    }
    reference = "official NMF2D"
    grads = {}
    for name, f in candidates.items():  # the same numbers (the same random bases) before comparing speed
        x.grad = None
        f().square().mean().backward()
        grads[name] = x.grad.clone()
    for name in candidates:
        torch.testing.assert_close(grads[name], grads[reference], rtol=1e-3, atol=1e-9)
    calls = {}
    for name, f in candidates.items():
        def forward(f=f):
            f()

        def forward_backward(f=f):
            x.grad = None
            f().square().mean().backward()
        calls[name, "forward"], calls[name, "forward+backward"] = forward, forward_backward
    default = torch.get_num_threads()
    regions = _region_counter()
    results = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        counts = {}
        for key, call in calls.items():  # warm-up at this thread count (and the regions each call opens)
            before = regions() if regions else 0
            call()
            counts[key] = regions() - before if regions else None
        # per candidate call: its (wall, cpu) time and the reference's beside it, round by round
        times = {key: [] for key in calls if key[0] != reference}
        order, keys = random.Random(threads), list(times)
        load = os.getloadavg()
        for _ in range(rounds):  # every call once per round, each round in a new order, each beside a reference call
            order.shuffle(keys)
            for key in keys:
                pair = [calls[reference, key[1]], calls[key]]
                if order.random() < 0.5:
                    pair.reverse()
                measured = {id(f): _timed(f, device) for f in pair}
                times[key].append((measured[id(calls[key])], measured[id(calls[reference, key[1]])]))
        load = (load, os.getloadavg())
        print(f"\n[2] NMF ham, grad one-step-coef, K={steps}, (1, {d}, {n}), r={r}, on {device}, {threads} thread(s), "
              f"{rounds} interleaved rounds; load average {load[0][0]:.2f} -> {load[1][0]:.2f}")
        print(f"{'':>24} {'phase':>17} {'wall ms':>8}   wall ratio to official: median [min-max] (IQR)"
              f"   cpu-time ratio: median [min-max]" + ("   OpenMP regions" if regions else ""))
        for phase in ("forward", "forward+backward"):
            ref_ms = 1e3 * statistics.median(ref[0] for key, t in times.items() if key[1] == phase for _, ref in t)
            print(f"{reference:>24} {phase:>17} {ref_ms:8.1f}   (the reference)"
                  + (f"{'':>58}{counts[reference, phase]:5d}" if regions else ""))
        for (name, phase), t in sorted(times.items(), key=lambda kv: kv[0][1]):
            w = _spread([mine[0] / ref[0] for mine, ref in t])
            c = _spread([mine[1] / ref[1] for mine, ref in t])
            ms = 1e3 * statistics.median(mine[0] for mine, _ in t)
            results[threads, name, phase] = {"wall": w, "cpu": c, "wall_ms": ms, "regions": counts[name, phase],
                                             "regions_official": counts[reference, phase], "load": load}
            print(f"{name:>24} {phase:>17} {ms:8.1f}   {w[0]:5.3f} [{w[1]:.3f}-{w[2]:.3f}] "
                  f"({w[3]:.3f}-{w[4]:.3f})   {c[0]:5.3f} [{c[1]:.3f}-{c[2]:.3f}]"
                  + (f"   {counts[name, phase]:5d}" if regions else ""))
    torch.set_num_threads(default)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per median in part 1 (default 5)")
    p.add_argument("--rounds", type=int, default=25, help="interleaved rounds in part 2 (default 25)")
    p.add_argument("--threads", default=None,
                   help="comma-separated thread counts for part 2 (default: 1 and torch's default count)")
    p.add_argument("--parts", default="1,2", help="which parts to run (default 1,2)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    default = torch.get_num_threads()
    threads = tuple(dict.fromkeys(int(t) for t in a.threads.split(","))) if a.threads else tuple(
        dict.fromkeys((1, default)))
    parts = {int(t) for t in a.parts.split(",")}
    print(f"torch {torch.__version__}, default threads {default}, load average {os.getloadavg()[0]:.2f}")
    if a.quick:
        if 1 in parts:
            bench_modes(a.device, 2, [1, 6], d=64, n=256, r=8)
        if 2 in parts:
            bench_official_setting(a.device, 2, threads, d=64, n=256, r=8)
    else:
        if 1 in parts:
            bench_modes(a.device, a.repeats, [1, 6, 12, 24])
        if 2 in parts:
            bench_official_setting(a.device, a.rounds, threads)


if __name__ == "__main__":
    main()
