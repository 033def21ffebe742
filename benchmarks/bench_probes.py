"""Probe benchmark: what gradient probes cost a training run, and how accurate their ρ(J_K) is.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_probes.py [--solvers nmf,vq,cd] [--grad one-step] [--iters N]
[--probe-every N] [--images 2]``. Prints ratios measured in this process; nothing is asserted (these machines are
shared and noisy).

1. Overhead: for each ham, one run of the default size (``AblationConfig``: batch 16, 64×64 images, d = 64, r = 8,
   K = 6; ``--iters`` replaces its 500 iterations, a multiple of ``--probe-every`` keeps the probes' share) with probes
   every ``--probe-every`` iterations (default: the config's) and the same run without, alternately, in this process,
   on one torch thread. Printed: the process CPU time of each run (training and evaluation) and its ratio, the
   wall-clock training time and its ratio, and the probes' own CPU time as a share of the rest of the probed run's
   (measured inside that run, so both parts see the same load: the steadiest of the three on a shared machine).
2. Accuracy of ρ(J_K): on the first ``--images`` images of a training batch, the probe's estimate (Arnoldi, at most
   ``RHO_ITERS`` steps, stopping at relative residual ``RHO_TOL``) against the largest eigenvalue modulus of each
   image's dense ``∂F/∂h`` (``jacrev`` and ``torch.linalg.eigvals`` in float64), at the initial weights and at the
   probed run's final weights.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from torch.func import jacrev

from hamgrad.experiments import AblationConfig, build_model, load_model, load_results, probe, run_ablation, runner
from hamgrad.experiments.probes import RHO_ITERS, RHO_TOL
from hamgrad.experiments.runner import _data

_PROBE_CPU = [0.0]


def _cpu_timed_probe(*args, **kwargs):
    """The runner's probe, its process CPU time added to ``_PROBE_CPU``."""
    start = time.process_time()
    try:
        return probe(*args, **kwargs)
    finally:
        _PROBE_CPU[0] += time.process_time() - start
from hamgrad.fixed_point import flatten_state, unflatten_state


def _timed_run(config: AblationConfig, out: str) -> tuple[float, dict]:
    """Process CPU seconds of one sweep of one run, and its row."""
    start = time.process_time()
    run_ablation(config, out, progress=False)
    return time.process_time() - start, load_results(out)[0]


def _dense_radii(model, images) -> list:
    """The largest eigenvalue modulus of each image's ∂F/∂h at h^K (float64, dense), in training mode, from the
    initial state torch's global RNG draws now."""
    with model.hamburger.capture() as cap:
        model(images)
    s, z, h = model.hamburger.solver, cap.x.double(), tuple(t.double() for t in cap.info.state)
    radii = []
    for b in range(len(images)):
        hb = tuple(t[b] for t in h)
        J = jacrev(lambda v: flatten_state(s.step(z[b], unflatten_state(v, hb))))(flatten_state(hb))
        radii.append(float(torch.linalg.eigvals(J).abs().max()))
    return radii


def _accuracy(model, images, labels, what: str) -> None:
    model.train()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    record = probe(model, images, labels)
    torch.set_rng_state(state)
    start = time.process_time()
    dense = _dense_radii(model, images)
    error = abs(record["rho"] - max(dense)) / max(dense)
    print(f"    {what:<16} ρ = {record['rho']:.6f} after {record['rho_steps']:2d} Arnoldi steps (residual "
          f"{record['rho_residual']:.1e}); dense {max(dense):.6f}: relative error {error:.1e} (dense: "
          f"{time.process_time() - start:.0f} s CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvers", default="nmf,vq,cd")
    parser.add_argument("--grad", default=AblationConfig().grads[0], help="the runs' gradient mode")
    parser.add_argument("--iters", type=int, help="training iterations per run (default: the config's)")
    parser.add_argument("--probe-every", type=int, default=AblationConfig().probe_every)
    parser.add_argument("--images", type=int, default=2, help="images of the accuracy check (0: skip it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    iters = {} if args.iters is None else {"iters": args.iters}
    print(f"{os.cpu_count()} CPU cores (shared), load {os.getloadavg()[0]:.2f}; one torch thread; "
          f"probes every {args.probe_every} iterations; Arnoldi: at most {RHO_ITERS} steps, tolerance {RHO_TOL:g}")
    totals = {"probed": 0.0, "plain": 0.0, "probes": 0.0}
    runner.probe = _cpu_timed_probe
    with tempfile.TemporaryDirectory() as tmp:
        _timed_run(AblationConfig.quick(solvers=("nmf",), grads=(args.grad,), iters=2, baseline=False),
                   f"{tmp}/warm-up")  # torch's first calls, untimed
        for solver in args.solvers.split(","):
            kw = dict(solvers=(solver,), grads=(args.grad,), seeds=1, baseline=False, **iters)
            probed_cfg = AblationConfig(**kw, probe_every=args.probe_every)
            plain_cfg = AblationConfig(**kw, probe_every=None)
            cpu_plain, plain = _timed_run(plain_cfg, f"{tmp}/{solver}-plain")
            _PROBE_CPU[0] = 0.0
            cpu_probed, probed = _timed_run(probed_cfg, f"{tmp}/{solver}-probed")
            cpu_probes = _PROBE_CPU[0]
            totals["probed"] += cpu_probed
            totals["plain"] += cpu_plain
            totals["probes"] += cpu_probes
            p = probed["probes"]
            print(f"[1] {solver} {args.grad}, {probed_cfg.iters} iterations, {len(p['step'])} probes "
                  f"(Arnoldi steps {p['rho_steps']}):\n"
                  f"    CPU {cpu_probed:.1f} s vs {cpu_plain:.1f} s = {cpu_probed / cpu_plain:.3f}x; wall (training) "
                  f"{probed['train_seconds']:.1f} s vs {plain['train_seconds']:.1f} s = "
                  f"{probed['train_seconds'] / plain['train_seconds']:.3f}x; inside the probed run, the probes' CPU "
                  f"{cpu_probes:.1f} s = {100 * cpu_probes / (cpu_probed - cpu_probes):.1f}% of the rest "
                  f"({1e3 * cpu_probes / len(p['step']):.0f} ms each)")
            if args.images:
                config = probed_cfg
                images, labels = _data(config)
                images, labels = images[:args.images], labels[:args.images].long()
                spec = config.runs()[0]
                torch.manual_seed(spec.seed)
                _accuracy(build_model(config, spec), images, labels, "initial weights")
                _accuracy(load_model(f"{tmp}/{solver}-probed", spec.run_id), images, labels, "trained weights")
    rest = totals["probed"] - totals["probes"]
    print(f"[1] all hams: CPU {totals['probed']:.1f} s vs {totals['plain']:.1f} s = "
          f"{totals['probed'] / totals['plain']:.3f}x; the probes' CPU {100 * totals['probes'] / rest:.1f}% of the "
          f"rest of the probed runs; load now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
