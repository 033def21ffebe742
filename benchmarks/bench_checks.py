"""What the context modules' input checks cost: each module's forward pass with the checks over without them.

Run: ``python benchmarks/bench_checks.py [--device cpu|cuda] [--repeats 15] [--quick]`` (``OMP_NUM_THREADS=1`` on a
shared CPU). Every context module (:mod:`hamgrad.nn._block`) checks its input (dtype, device, shape: no host sync;
NaN/Inf: one pass and one host sync, before the lower bread) and its mixed features (overflow: one pass and one
host sync, before the upper bread). This script times one inference forward pass of each module on one
``(2, 512, 32, 32)`` map (``--quick``: ``(2, 64, 16, 16)``) with those checks and with them replaced by no-ops, in
alternating rounds in this process, and prints the median over rounds of the ratio. Times as in
``bench_core.py``: CUDA wall time, or this process's CPU time. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import hamgrad.nn._block as block
from bench_core import _seconds
from hamgrad.nn import build_context

_CHECKS = ("check_feature_map", "check_finite", "check_mixing")


def _time(module, x, device, repeats: int) -> float:
    with torch.no_grad():
        module(x)  # warm-up
        return statistics.median(_seconds(lambda: module(x), device) for _ in range(repeats))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per median")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds with and without the checks")
    p.add_argument("--quick", action="store_true", help="64 channels, a 16 × 16 map, 3 repeats, 1 round")
    a = p.parse_args(argv)
    channels, side = (64, 16) if a.quick else (512, 32)
    repeats, rounds = (3, 1) if a.quick else (a.repeats, a.rounds)
    x = torch.randn(2, channels, side, side, generator=torch.Generator().manual_seed(0)).to(a.device)
    checks = {name: getattr(block, name) for name in _CHECKS}
    print(f"context modules' checks: forward with / without, x {tuple(x.shape)} on {a.device}, {repeats} calls a "
          f"median, {rounds} round(s)")
    for name in ("gap", "sa", "a2", "da", "apc", "dm", "acf"):
        torch.manual_seed(0)
        module = build_context(name, channels, d=channels // 4 if name == "da" else channels,
                               rank=8).to(a.device).eval()
        ratios = []
        for _ in range(rounds):
            with_checks = _time(module, x, a.device, repeats)
            for check in _CHECKS:
                setattr(block, check, lambda *args, **kwargs: None)
            try:
                without = _time(module, x, a.device, repeats)
            finally:
                for check, fn in checks.items():
                    setattr(block, check, fn)
            ratios.append(with_checks / without)
        print(f"{name:>4}: {1e3 * with_checks:8.2f} ms with the checks, ratio to without {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
