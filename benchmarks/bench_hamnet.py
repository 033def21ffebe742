"""HamNet training-step cost: one-step vs BPTT at K = 6 and 24 (the ablation's HamNet with the V1 block, as the README's
figures were measured; batch 16, 64×64).

Run: ``python benchmarks/bench_hamnet.py [--device cpu|cuda] [--solvers nmf,vq,cd] [--repeats 10] [--quick]``.
Prints ratios against the one-step K=6 configuration of the same solver, measured in the same run; nothing here is
asserted (these machines are noisy).

What is measured, per configuration (one training step = forward, cross-entropy, backward, AdamW step):

- time: the median wall time of ``--repeats`` steps after two warm-up steps, in this process; the configurations
  take turns step by step, so a change in the machine's load hits them alike (``--threads`` sets torch's threads);
- memory, two ways:
  * ``saved``: :func:`hamgrad.profiling.measure` — on CUDA the peak of ``max_memory_allocated`` above the start; on
    CPU the bytes of the distinct tensors autograd saves for backward during the step (torch's CPU allocator keeps no
    statistics, and ``tracemalloc`` does not see it). This is the part of the peak that grows with the number of
    differentiated solver steps.
  * ``rss`` (CPU on Linux only): the growth of the peak resident set size (``VmHWM``) over three training steps, in a
    fresh subprocess per configuration, above the peak after building the model and the batch. It is a whole-process
    number: it includes transient buffers, the optimizer state and allocator slack, and glibc may serve part of a
    step from memory freed earlier, so small differences mean little.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from hamgrad.nn import HamNet
from hamgrad.profiling import measure

_HAS_PROC = Path("/proc/self/status").exists()
CONFIGS = [("one-step", 6), ("bptt", 6), ("one-step", 24), ("bptt", 24)]


def _setup(solver, grad, K, device, batch, size):
    torch.manual_seed(0)
    model = HamNet(4, ham=solver, steps=(K, K + 1), grad=grad, version="v1").to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g, device=device)
    labels = torch.randint(0, 4, (batch, size, size), generator=g, device=device)

    def step():
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux ``VmHWM``; ``ru_maxrss`` would include the parent's
    size at fork time, which Linux carries across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return 1024 * int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_child(solver, grad, K, batch, size) -> None:
    """Subprocess body: print the peak-RSS growth (bytes) over three training steps as JSON."""
    step = _setup(solver, grad, K, "cpu", batch, size)
    before = _peak_rss()
    for _ in range(3):
        step()
    print(json.dumps({"rss_bytes": _peak_rss() - before}))


def _rss(solver, grad, K, batch, size) -> int:
    out = subprocess.run([sys.executable, __file__, "--rss-child", f"{solver},{grad},{K},{batch},{size}",
                          "--threads", str(torch.get_num_threads())],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_bytes"]


def bench(solver, device, repeats, batch, size):
    steps = {cfg: _setup(solver, *cfg, device, batch, size) for cfg in CONFIGS}
    for step in steps.values():
        for _ in range(2):
            step()
    times = {cfg: [] for cfg in CONFIGS}
    for _ in range(repeats):
        for cfg, step in steps.items():
            times[cfg].append(measure(step, device).seconds)
    rows = {}
    for cfg, step in steps.items():
        mem = measure(step, device)
        rss = _rss(solver, *cfg, batch, size) if torch.device(device).type == "cpu" and _HAS_PROC else None
        rows[cfg] = (statistics.median(times[cfg]), mem.peak_bytes, mem.memory_kind, rss)
    t0, m0, kind, r0 = rows[("one-step", 6)]
    print(f"\nHamNet ({solver}) training step, batch {batch}, {size}×{size}, on {device}; ratios vs one-step K=6")
    print(f"{'mode':>9} {'K':>3} {'ms':>8} {'time x':>7} {'saved MB':>9} {'saved x':>8} {'rss MB':>8} {'rss x':>6}")
    for (grad, K), (t, m, _, rss) in rows.items():
        rss_cols = f"{'-':>8} {'-':>6}" if rss is None else f"{rss / 2**20:>8.1f} {rss / r0 if r0 else float('nan'):>6.2f}"
        print(f"{grad:>9} {K:>3} {1e3 * t:>8.1f} {t / t0:>7.2f} {m / 2**20:>9.1f} {m / max(m0, 1):>8.2f} {rss_cols}")
    print(f"(saved = {kind}; rss = peak-RSS growth in a fresh subprocess, see the module docstring)")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--solvers", default="nmf", help="comma-separated solver names (default nmf)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="batch 2 at 32×32 and 3 repeats, for a smoke run")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    batch, size, repeats = (2, 32, 3) if a.quick else (16, 64, a.repeats)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.rss_child:
        solver, grad, K, batch, size = a.rss_child.split(",")
        _rss_child(solver, grad, int(K), int(batch), int(size))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for solver in a.solvers.split(","):
        bench(solver, a.device, repeats, batch, size)


if __name__ == "__main__":
    main()
