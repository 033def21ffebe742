"""Spectrum benchmark: the top-k singular values of ∂y/∂x through K NMF steps (h^0 held fixed, as in BPTT).

Run: ``python benchmarks/bench_spectrum.py [--device cpu|cuda] [--quick] [--scipy] [--no-reference]``. Prints times,
matvec counts (one matvec = J or Jᵀ applied to one vector) and accuracy; nothing is asserted (these machines are
shared and noisy: the load average is printed with every timing).

1. Per-product cost at the paper size (d, n, r) = (512, 4096, 64), K = 6, on blocks of 2 vectors (svdvals' default
   block): the product ``svdvals`` makes for ``∂y/∂x = G M`` in the state space (``M Mᵀ`` by the hand-derived
   ``x_cogram`` plus the readout's ``GᵀG``), against a ``JᵀJ`` product on the input side through the same
   hand-derived linearisation and through ``torch.func`` (``AutogradLinearization`` of the unrolled solve); and the
   state-space product's GEMM floor: its matrix products recorded, then replayed alone on operands of the same shapes,
   strides and sharing.
2. Matrix-free vs dense at (64, 256, 8), K = 6 (``--quick``: (32, 128, 4)): ``svdvals(method="lanczos")`` against
   ``torch.func.jacrev`` + ``torch.linalg.svdvals`` of the 16384 × 16384 Jacobian, in one run; the time ratio
   (goal ≥ 10×) and the agreement. The dense side takes about 14 minutes on 2 CPU cores (``--skip dense``).
3. The paper size, where the dense Jacobian (2·10^6 × 2·10^6) is out of reach: time, matvecs and residuals of σ_max
   to 1e-3, the top-k to 1e-3 and the top-k to ``--tol`` (default 2e-4: a relative residual ρ puts a singular value
   within ρ / (1 + √(1 − ρ)) ≈ ρ/2 of the spectrum, so 2e-4 gives the goal's accuracy, the top-6 to 1e-4, which the
   goal wants in ≤ 25 s on 2 CPU cores), with that bound and their accuracy against a reference run to ``--ref-tol``
   (default 1e-6, another start block); ``--scipy`` adds SciPy's ``svds`` (ARPACK) on ``J.to_scipy()``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.func import jacrev
from torch.utils._python_dispatch import TorchDispatchMode

import hamgrad as hg
from hamgrad.analysis import svdvals, unrolled_jacobian
from hamgrad.analysis.linearize import AutogradLinearization, NMFLinearization
from hamgrad.analysis.operators import linear_operator
from hamgrad.profiling import synchronize


def _load() -> str:
    """The 1-minute load average (the machine is shared)."""
    return "load %.1f" % os.getloadavg()[0]


def _problem(d, n, r, device, dtype=torch.float32, seed=0):
    """NMF, uniform random non-negative x and h^0."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(d, n, generator=g, device=device, dtype=dtype)
    s = hg.NMF(rank=r)
    return s, x, s.init(x, generator=g)


def _unrolled_fn(s, steps):
    """``f(h0, x) = (readout after K steps,)`` for autograd."""
    def f(h, x):
        for _ in range(steps):
            h = s.step(x, h)
        return (s.readout(x, h),)
    return f


def _product_time(product, size, device, b=2, reps=3):
    """Mean seconds per vector of ``product`` on a block of ``b`` vectors of length ``size``."""
    v = torch.randn(b, size, generator=torch.Generator().manual_seed(1)).to(device)
    product(v)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        product(v)
    synchronize(device)
    return (time.perf_counter() - start) / reps / b


class _ProductRecorder(TorchDispatchMode):
    """Records the matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, in place or not) that a call makes: the op
    and its arguments, each tensor as its shape, strides and storage (so that an operand shared by several products
    stays one tensor when :func:`_replay` runs them again)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket.__name__.rstrip("_") in ("mm", "addmm", "bmm", "baddbmm"):
            self.calls.append((func, [_spec(a) for a in args], {k: _spec(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def _spec(a):
    """A recorded argument: a tensor as ``(shape, strides, storage address, offset)``, anything else as it is."""
    if not isinstance(a, torch.Tensor):
        return a
    return a.shape, a.stride(), a.untyped_storage().data_ptr(), a.storage_offset()


def _replay(calls, device):
    """A function that runs the recorded products again, on random operands made once with the recorded shapes,
    strides and sharing (float32): the products' time on warm caches, without the rest of the computation. It takes
    (and ignores) a block of vectors, like the product it stands for in :func:`_product_time`."""
    made = {}

    def operand(a):
        if not (isinstance(a, tuple) and len(a) == 4 and isinstance(a[0], torch.Size)):
            return a
        if a not in made:
            extent = 1 + sum((size - 1) * step for size, step in zip(a[0], a[1]))  # elements the strides reach
            made[a] = torch.randn(extent, device=device).as_strided(a[0], a[1])
        return made[a]

    prepared = [(func, [operand(a) for a in args], {k: operand(v) for k, v in kwargs.items()})
                for func, args, kwargs in calls]

    def run(_):
        for func, args, kwargs in prepared:
            func(*args, **kwargs)
    return run


def bench_product(device, K=6):
    """Part 1: one product per vector: in the state space, on the input side (hand-derived), through torch.func."""
    s, x, h0 = _problem(512, 4096, 64, device)
    print(f"\n[1] one product for the singular values of ∂y/∂x, NMF (512, 4096, 64), K={K}, float32 on {device}, "
          f"blocks of 2")
    G, M = unrolled_jacobian(s, x, h0, steps=K).factors
    flat = linear_operator(NMFLinearization(s, h0, x, K, readout=True), "x", h0, x, "dy/dx")
    auto = linear_operator(AutogradLinearization(_unrolled_fn(s, K), h0, x), "x", h0, x, "autograd dy/dx")
    inner = lambda V: M.cogram(G.gram(V))  # noqa: E731
    t_inner = _product_time(inner, M.shape[0], device)
    with _ProductRecorder() as recorder:
        inner(torch.randn(2, M.shape[0], device=device))
    t_gemm = _product_time(_replay(recorder.calls, device), M.shape[0], device)
    t_flat = _product_time(flat.gram, flat.shape[1], device)
    t_auto = _product_time(auto.gram, auto.shape[1], device)
    print(f"  state space: M Mᵀ GᵀG (hand-derived)   {1e3 * t_inner:8.1f} ms   ({_load()})")
    print(f"    its {len(recorder.calls)} matrix products alone (replayed with the same shapes, layouts and shared "
          f"operands, on warm caches): {1e3 * t_gemm:.1f} ms; the product takes {t_inner / t_gemm:.2f}x that")
    print(f"  input side: JᵀJ (hand-derived)         {1e3 * t_flat:8.1f} ms   ratio {t_flat / t_inner:.2f}x")
    print(f"  input side: JᵀJ (torch.func jvp + vjp) {1e3 * t_auto:8.1f} ms   ratio {t_auto / t_inner:.2f}x")


def bench_dense(device, d, n, r, k, K=6):
    """Part 2: matrix-free vs dense at a size where dense is possible."""
    s, x, h0 = _problem(d, n, r, device)
    print(f"\n[2] matrix-free vs dense, top-{k} singular values of ∂y/∂x, NMF ({d}, {n}, {r}), K={K}, float32 "
          f"on {device}: a {d * n} x {d * n} Jacobian")
    synchronize(device)
    start = time.perf_counter()
    J = unrolled_jacobian(s, x, h0, steps=K)
    spec = svdvals(J, k=k, method="lanczos", tol=1e-4, generator=torch.Generator().manual_seed(0))
    synchronize(device)
    t_free = time.perf_counter() - start
    f = _unrolled_fn(s, K)
    start = time.perf_counter()
    dense = jacrev(lambda v: f(h0, v.reshape(d, n))[0].reshape(-1), chunk_size=1024)(x.reshape(-1))
    t_jac = time.perf_counter() - start
    ref = torch.linalg.svdvals(dense)[:k].double().cpu()
    synchronize(device)
    t_dense = time.perf_counter() - start
    err = float(((spec.values - ref).abs() / ref).max())
    print(f"  matrix-free (lanczos, tol 1e-4)  {t_free:8.2f} s   {spec.matvecs} matvecs   ({_load()})")
    print(f"  dense (jacrev {t_jac:.1f} s + svdvals) {t_dense:8.2f} s   ({_load()})")
    print(f"  time ratio dense / matrix-free: {t_dense / t_free:.1f}x (goal >= 10x)")
    print(f"  values   {[round(v, 6) for v in spec.values.tolist()]}")
    print(f"  dense    {[round(v, 6) for v in ref.tolist()]}")
    print(f"  max relative difference {err:.1e}, max residual {float(spec.residuals.max()):.1e}")


def bench_paper(device, k, tol, ref_tol, block, reference, scipy, K=6):
    """Part 3: the paper size: σ_max and the top-k at a loose and at the goal's tolerance, against a reference."""
    s, x, h0 = _problem(512, 4096, 64, device)
    print(f"\n[3] paper size: top singular values of ∂y/∂x, NMF (512, 4096, 64), K={K}, float32 on {device} "
          f"({torch.get_num_threads()} threads)")
    synchronize(device)
    start = time.perf_counter()
    J = unrolled_jacobian(s, x, h0, steps=K)
    synchronize(device)
    print(f"  setup (trajectory, cached intermediates) {time.perf_counter() - start:.2f} s")
    runs = []
    for kk, tt in ((1, 1e-3), (k, 1e-3), (k, tol)):
        spec = svdvals(J, k=kk, method="lanczos", tol=tt, block=block, generator=torch.Generator().manual_seed(0))
        runs.append(spec)
        print(f"  top-{kk} tol {tt:.0e} block {block or min(kk, 2)}: {spec.seconds:7.1f} s  {spec.matvecs:4d} "
              f"matvecs ({1e3 * spec.seconds / spec.matvecs:.0f} ms each)  converged={spec.converged}  "
              f"({_load()}){'  goal <= 25 s' if (kk, tt) == (k, tol) else ''}")
        print(f"    values    {[round(v, 6) for v in spec.values.tolist()]}")
        bound = spec.residuals / (1 + (1 - spec.residuals).clamp_min(0).sqrt())
        print(f"    residuals {['%.1e' % v for v in spec.residuals.tolist()]}: each value within "
              f"{float(bound.max()):.1e} (relative) of a singular value")
    if reference:
        ref = svdvals(J, k=k, method="lanczos", tol=ref_tol, block=max(block or 2, 2),
                      generator=torch.Generator().manual_seed(1))
        print(f"  reference top-{k} tol {ref_tol:.0e}, another start block: {ref.seconds:7.1f} s  {ref.matvecs} "
              f"matvecs  converged={ref.converged}")
        print(f"    values    {[round(v, 6) for v in ref.values.tolist()]}")
        for spec in runs:
            kk = len(spec.values)
            err = (spec.values - ref.values[:kk]).abs() / ref.values[:kk]
            print(f"  accuracy of top-{kk} tol {spec.tol:.0e}: max relative error {float(err.max()):.1e} "
                  f"(per value {['%.0e' % v for v in err.tolist()]})")
    if scipy:
        import numpy as np
        from scipy.sparse.linalg import LinearOperator as SciPyOperator, svds

        sp, count = J.to_scipy(), [0]

        def counted(fn):
            """Count the products SciPy asks for."""
            def product(v):
                count[0] += 1
                return fn(v)
            return product

        op = SciPyOperator(sp.shape, matvec=counted(sp.matvec), rmatvec=counted(sp.rmatvec), dtype=sp.dtype)
        v0 = np.random.default_rng(0).standard_normal(sp.shape[1]).astype(sp.dtype)
        start = time.perf_counter()
        values = np.sort(svds(op, k=k, tol=tol, v0=v0, return_singular_vectors=False))[::-1]
        print(f"  scipy svds top-{k} tol {tol:.0e} (ARPACK on the same operator): {time.perf_counter() - start:7.1f} s"
              f"  {count[0]} matvecs  values {[round(float(v), 6) for v in values]}  ({_load()})")


def main():
    """Parse the flags and run the parts."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="dense comparison at (32, 128, 4); no reference run")
    p.add_argument("-k", type=int, default=6)
    p.add_argument("--tol", type=float, default=2e-4, help="the goal's run: residual 2e-4, values to 1e-4")
    p.add_argument("--ref-tol", type=float, default=1e-6)
    p.add_argument("--block", type=int, help="lanczos block size at the paper size (default: svdvals' min(k, 2))")
    p.add_argument("--no-reference", action="store_true", help="skip the reference run at the paper size")
    p.add_argument("--scipy", action="store_true", help="also time SciPy svds on J.to_scipy() at the paper size")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: product,dense,paper")
    args = p.parse_args()
    skip = set(args.skip.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {_load()}")
    if "product" not in skip:
        bench_product(args.device)
    if "dense" not in skip:
        bench_dense(args.device, *((32, 128, 4) if args.quick else (64, 256, 8)), args.k)
    if "paper" not in skip:
        bench_paper(args.device, args.k, args.tol, args.ref_tol, args.block,
                    reference=not (args.no_reference or args.quick), scipy=args.scipy)


if __name__ == "__main__":
    main()
