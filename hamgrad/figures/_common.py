"""What several figures share: the synthetic problems of figures 1–3, and the ablation sweep and its trained HamNet
behind figures 4–6."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..experiments import AblationConfig, load_model, load_results, read_config, run_ablation
from ..fixed_point import FixedPoint
from ..grad import PAPER_MODE
from ..solvers import CD, NMF, SoftVQ


# ---------------------------------------------------------------------- figures 1–3: the solvers themselves
def size(quick: bool) -> dict:
    """Problem size of figures 1–3: (d, n, r), steps K, and the top-k eigenvalues kept per step."""
    return dict(d=16, n=48, r=4, K=6, k=6) if quick else dict(d=64, n=256, r=8, K=6, k=12)


def configs(r: int) -> list:
    """(label, solver) pairs of figures 1 and 2 at rank r: every ham at the paper's temperature, VQ at several."""
    return [("NMF", NMF(rank=r)), ("VQ, 1/T = 1", SoftVQ(rank=r, inv_t=1.0)),
            ("VQ, 1/T = 10", SoftVQ(rank=r, inv_t=10.0)), ("VQ, 1/T = 100", SoftVQ(rank=r, inv_t=100.0)),
            ("CD, 1/T = 100", CD(rank=r, inv_t=100.0))]


def solver_data(d: int, n: int, r: int, nonnegative: bool, seed: int = 0) -> torch.Tensor:
    """float64 features ``(d, n)``. NMF gets non-negative low-rank data ``X = A B + 0.1·noise``; VQ and CD get
    standard Gaussian features, whose directions spread over the sphere (on the non-negative data every column
    points the same way and the soft assignments collapse onto one basis)."""
    g = torch.Generator().manual_seed(seed)
    if not nonnegative:
        return torch.randn(d, n, generator=g, dtype=torch.float64)
    A = torch.rand(d, r, generator=g, dtype=torch.float64)
    B = torch.rand(r, n, generator=g, dtype=torch.float64) ** 4
    return A @ B + 0.1 * torch.rand(d, n, generator=g, dtype=torch.float64)


def trajectories(quick: bool):
    """``(label, solver, x, trajectory h^0 … h^K)`` for every configuration of figures 1 and 2."""
    sz = size(quick)
    for label, s in configs(sz["r"]):
        x = solver_data(sz["d"], sz["n"], sz["r"], nonnegative=getattr(s, "nonnegative", False))
        h0 = s.init(x, generator=torch.Generator().manual_seed(1))
        yield label, s, x, FixedPoint.from_solver(s).unroll(x, h0, sz["K"])


# ---------------------------------------------------------------------- figures 4–6: the ablation sweep
def ablation_config(quick: bool) -> AblationConfig:
    """The sweep behind figures 4–6: every ham × {one-step-coef (the paper's), one-step, BPTT} in the V2 block, plus
    the baseline (:class:`hamgrad.experiments.AblationConfig`'s defaults).

    Args:
        quick: the CI size (a few iterations) instead of the full one (2 seeds × 300 iterations).

    Returns:
        The :class:`hamgrad.experiments.AblationConfig`.
    """
    if quick:
        return AblationConfig.quick(iters=20, log_every=5, checkpoint_every=10)
    return AblationConfig(seeds=2, iters=300)


def ablation_dir(quick: bool, folder) -> Path:
    """The sweep's folder: ``folder``, or by default ``runs/paper-ablation`` (``-quick`` at the quick size)."""
    return Path(folder) if folder is not None else Path("runs") / (
        "paper-ablation-quick" if quick else "paper-ablation")


def finished(rows, what: str) -> list:
    """The finished rows (``status`` ok) of a sweep's rows.

    Raises:
        ValueError: naming ``what`` when there are none.
    """
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    if not rows:
        raise ValueError(f"{what} holds no finished runs")
    return rows


def sweep(quick: bool, folder, progress: bool) -> tuple[Path, list]:
    """The sweep's folder and finished rows. The built-in sweep is run or resumed (finished runs are kept); a folder
    holding a sweep of another config (one you ran with ``hamgrad ablate``) is read as it is."""
    out = ablation_dir(quick, folder)
    config = ablation_config(quick)
    if not (out / "config.json").exists() or read_config(out) == config:
        run_ablation(config, out, device="cpu", progress=progress)
    return out, finished(load_results(out), f"ablation_dir={str(out)!r}")


def sweep_source(quick: bool, folder) -> dict:
    """What figures 4–6 were drawn from: the sweep's folder and a digest of its config and rows (``None`` while the
    folder holds no sweep), so that a figure drawn from another sweep, or from fewer runs, is recomputed."""
    out = ablation_dir(quick, folder)
    digest = hashlib.sha256()
    for name in ("config.json", "results.jsonl"):
        path = out / name
        if not path.exists():
            return {"sweep": str(out), "digest": None}
        digest.update(path.read_bytes())
    return {"sweep": str(out), "digest": digest.hexdigest()[:16]}


def trained_hamnet(quick: bool, folder, progress: bool):
    """The first finished NMF run of the sweep trained with the paper's one-step (``one-step-coef``; or the first ham
    run), with the sweep's validation data: ``(model, images, labels, run_id)``."""
    out, rows = sweep(quick, folder, progress)
    ham_rows = [r for r in rows if r["grad"] is not None]  # not the baseline, nor a context module's run
    if not ham_rows:
        raise ValueError(f"the sweep in {str(out)!r} has no finished run with a ham")
    row = next((r for r in ham_rows if r["solver"] == "nmf" and r["grad"] == PAPER_MODE), ham_rows[0])
    config = read_config(out)
    model = load_model(out, row["run_id"])
    ds = config.dataset()
    val = [ds[config.train_samples + i] for i in range(min(config.val_samples, 16))]
    images = torch.stack([v[0] for v in val])
    labels = torch.stack([v[1] for v in val])
    return model, images, labels, row["run_id"]


def block_features(model, images, seed: int = 0):
    """The head block's input and output feature maps ``(B, C, H, W)`` and its capture, in eval mode."""
    if model.block is None:
        raise ValueError("the model has no context module (HamNet(ham=None)): nothing to capture")
    seen = {}
    handle = model.block.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    try:
        with torch.no_grad(), model.block.capture() as cap:
            model(images, generator=torch.Generator().manual_seed(seed))
    finally:
        handle.remove()
    return seen["x"], seen["y"], cap
