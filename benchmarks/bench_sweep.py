"""Sweep benchmark: ``hamgrad ablate`` in one process vs as Ray tasks on N local workers, and Ray's start-up cost.

Run: ``python benchmarks/bench_sweep.py [--iters 10] [--workers 2]``. The sweep is ``AblationConfig.quick`` (every ham
× {one-step, BPTT} plus the baseline, one seed: 7 runs) with ``--iters`` iterations per run. Prints wall times and
their ratios, all measured in this process; nothing is asserted (these machines are shared and noisy).

1. In-process (``workers=1``, no Ray) with 1 torch thread and with ``--workers`` threads.
2. Ray's start-up: ``ray.init`` of a local instance with ``--workers`` CPUs, then the first task on each worker (its
   process start and its import of torch and hamgrad), which every sweep on a fresh instance pays once.
3. The same sweep on that instance with ``workers=--workers`` (one CPU and one torch thread per run).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from hamgrad.experiments import AblationConfig, load_results, run_ablation


def _sweep_seconds(config, **kwargs) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_ablation(config, out, progress=False, **kwargs)
        return time.perf_counter() - start, load_results(out)


def _warm_up() -> str:
    import hamgrad.experiments  # noqa: F401  (what a run's task imports first)

    return f"{os.getpid()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="training iterations per run (quick default 10)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    config = AblationConfig.quick(iters=args.iters)
    runs = len(config.runs())
    print(f"sweep: AblationConfig.quick(iters={args.iters}), {runs} runs; {os.cpu_count()} CPU cores (shared)")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seq1, reference = _sweep_seconds(config)
    torch.set_num_threads(args.workers)
    seqn, _ = _sweep_seconds(config)
    torch.set_num_threads(threads)
    print(f"[1] in-process, 1 torch thread:            {seq1:7.1f} s")
    print(f"    in-process, {args.workers} torch threads:           {seqn:7.1f} s")

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.perf_counter()
    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - start
    task = ray.remote(_warm_up).options(num_cpus=1)
    pids = set(ray.get([task.remote() for _ in range(args.workers)]))
    startup = time.perf_counter() - start
    print(f"[2] Ray start-up: import + ray.init {init:.1f} s; with the first task on {len(pids)} worker(s) "
          f"{startup:.1f} s")

    ray_s, rows = _sweep_seconds(config, workers=args.workers)
    ray.shutdown()
    same = {r["run_id"]: r["miou"] for r in rows} == {r["run_id"]: r["miou"] for r in reference}
    print(f"[3] Ray, {args.workers} workers (instance up):          {ray_s:7.1f} s   (mIoU per run identical to "
          f"the 1-thread in-process sweep: {same})")
    print(f"    speed-up over in-process, 1 thread:       {seq1 / ray_s:5.2f}x; counting Ray's start-up "
          f"{seq1 / (ray_s + startup):5.2f}x")
    print(f"    speed-up over in-process, {args.workers} threads:      {seqn / ray_s:5.2f}x; counting Ray's start-up "
          f"{seqn / (ray_s + startup):5.2f}x")


if __name__ == "__main__":
    main()
