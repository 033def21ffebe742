"""The paper's Table 3 on this machine: the context modules' parameters, MACs, memory and time, and how they scale.

Run: ``python benchmarks/bench_context.py [--device cpu|cuda] [--sides 16,32,64,128] [--repeats 2] [--quick]
[--out figures]``.

Measures self-attention (torch's default SDPA kernel, and the math kernel that materialises the n × n attention
matrix as the paper's non-local block does), A², the NMF / VQ / CD hams and global pooling on one
``(1, 512, S, S)`` map per side S, with d = 512, r = 64, K = 6 in training and 7 in inference, through
:func:`hamgrad.cost.compare_contexts` (see :mod:`hamgrad.cost` for what MACs, memory and time count). Prints the
table, the SA / ham ratios measured in this process beside the paper's (GPU: time 15.5×, training memory 26×) and the
log-log slopes against n = S² fitted over S >= 32; writes ``context_cost.{json,md,png}`` (the scaling figure) to
``--out``. Nothing here is asserted; on a shared machine trust the ratios over the milliseconds.
"""

from __future__ import annotations

import argparse

import torch

from hamgrad import cost
from hamgrad.plots import context_scaling


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sides", default="16,32,64,128", help="comma-separated square map sides")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per median")
    p.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="64 channels, d 64, r 8, sides 16,32, one repeat")
    p.add_argument("--out", default="figures", help="where context_cost.{json,md,png} go (default figures)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    sides = tuple(int(s) for s in a.sides.split(","))
    size = dict(channels=512, d=512, rank=64, repeats=a.repeats)
    fit_from = 32 * 32
    if a.quick:
        sides, size, fit_from = (16, 32), dict(channels=64, d=64, rank=8, repeats=1), 16 * 16
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}")
    result = cost.compare_contexts(cost.DEFAULT_CONTEXTS, sides, fit_from=fit_from, progress=True,
                                   sdpa_backends=(None, "math"), device=a.device, **size)
    result["threads"] = torch.get_num_threads()
    print(cost.to_markdown(result))
    for path in cost.save(result, a.out, fig=context_scaling(result)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
