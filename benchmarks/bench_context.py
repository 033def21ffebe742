"""The paper's Table 3 on this machine: the context modules' parameters, MACs, memory and time, and how they scale.

Run: ``python benchmarks/bench_context.py [--device cpu|cuda] [--sides 16,32,64,128] [--repeats 3] [--threads 1]
[--quick] [--out figures]``.

Measures every row of :data:`hamgrad.cost.DEFAULT_CONTEXTS` — Table 3's eight (self-attention with torch's default
SDPA kernel and with the math kernel that materialises the n × n attention matrix as the paper's non-local block
does; DA, A², APC, DM, ACF; the CD and NMF hams in the V1 block on the official training path), hamgrad's A² at
rank r, the VQ ham and global pooling — on one ``(1, 512, S, S)`` map per side S, with d = 512, r = 64, K = 6 in
training and 7 in inference, through :func:`hamgrad.cost.compare_contexts` (see :mod:`hamgrad.cost` for what MACs,
memory and time count and how the rounds interleave). Prints the table, each row's ratios to the NMF ham (times:
median [min–max] over ``--repeats`` rounds) beside the paper's, Table 3 beside the paper at S = 128, and the log-log
slopes against n = S² fitted over S >= 32; writes ``context_cost.{json,md,png}`` (the scaling figure) to ``--out``.
Nothing here is asserted; on a shared machine trust the ratios over the milliseconds.
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
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (default 3)")
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
