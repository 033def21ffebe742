"""Sweep benchmark: ``hamgrad ablate`` in one process vs as Ray tasks on N local workers, and Ray's start-up cost.

Run: ``python benchmarks/bench_sweep.py [--size quick|default] [--iters N] [--workers 2] [--threads 1,2]``. The
sweep is every ham × {one-step, BPTT} in the V1 block plus the baseline, one seed (7 runs: the sweep the README's
timings measured), at ``AblationConfig.quick`` (10 iterations per run) or the default size (``AblationConfig``, 500
iterations), ``--iters`` replacing the iterations. Prints wall
times and their ratios, all measured in this process; nothing is asserted (these machines are shared and noisy).

1. In-process (``workers=1``, no Ray) with each number of torch threads in ``--threads``.
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

from hamgrad.experiments import AblationConfig, load_results, run_ablation, runner


def _sweep_seconds(config, **kwargs) -> tuple[float, list]:
    runner._data.cache_clear()  # every sweep generates its data once, as a fresh process (or Ray worker) does
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_ablation(config, out, progress=False, **kwargs)
        return time.perf_counter() - start, load_results(out)


def _warm_up() -> str:
    import hamgrad.experiments  # noqa: F401  (what a run's task imports first)

    return f"{os.getpid()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("quick", "default"), default="quick")
    parser.add_argument("--iters", type=int, help="training iterations per run (default: the size's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", default="1,2", help="torch threads of the in-process sweeps (the first is the "
                                                         "reference of the Ray sweep's mIoU)")
    args = parser.parse_args()
    fields = {"grads": ("one-step", "bptt"), "blocks": ("v1",)}
    fields.update({} if args.iters is None else {"iters": args.iters})
    config = AblationConfig.quick(**fields) if args.size == "quick" else AblationConfig(seeds=1, **fields)
    print(f"sweep: {args.size} size, {config.iters} iterations per run, {len(config.runs())} runs; "
          f"{os.cpu_count()} CPU cores (shared)")

    default_threads = torch.get_num_threads()
    _sweep_seconds(AblationConfig.quick(iters=1))  # warm-up: torch's first calls, untimed
    seconds, reference = {}, None
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        seconds[threads], rows = _sweep_seconds(config)
        reference = reference or rows
        print(f"[1] in-process, {threads} torch thread(s):          {seconds[threads]:7.1f} s")
    torch.set_num_threads(default_threads)

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
          f"the first in-process sweep: {same})")
    for threads, seq in seconds.items():
        print(f"    speed-up over in-process, {threads} thread(s):    {seq / ray_s:5.2f}x; counting Ray's start-up "
              f"{seq / (ray_s + startup):5.2f}x")


if __name__ == "__main__":
    main()
