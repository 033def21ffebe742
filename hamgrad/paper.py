"""The paper's six figures: compute each with the public API, draw it with :mod:`hamgrad.plots`, save PNG + JSON.

Used by the notebooks in ``notebooks/`` and by ``hamgrad figures``; every step is a function a user can call::

    from hamgrad import paper
    result = paper.compute("flow", quick=True)        # plain data (what the JSON holds)
    fig = paper.plot("flow", result)                  # a matplotlib Figure
    paper.save("flow", result, fig, "figures")        # figures/flow.png and figures/flow.json
    paper.load("flow", "figures")                     # the saved result back (None if there is none)
    paper.run_all("figures", quick=False)             # all six, resumable: finished figures are kept

Sizes: ``quick=True`` is the CI size (seconds per figure); the full size is what ``figures/`` in the repository
holds; one folder holds one size (writing the other size into it is refused unless ``force=True``). The ablation
behind figures 4–6 is a resumable :func:`hamgrad.experiments.run_ablation` sweep in ``ablation_dir`` (default
``runs/paper-ablation[-quick]``); pass ``ablation_dir`` to use a sweep you ran yourself. Figures 4–6 record the sweep
they were drawn from and are recomputed when it differs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import plots
from .analysis import accumulative_ratio, compare_gradients, eigvals, gradient_flow, jacobian, svdvals
from .experiments import AblationConfig, load_model, load_results, read_config, run_ablation
from .fixed_point import FixedPoint
from .solvers import CD, NMF, SoftVQ

__all__ = ["FIGURES", "compute", "plot", "save", "load", "run", "run_all", "quick_from_env", "ablation_config",
           "block_accumulative_ratio", "block_feature_maps"]

#: Figure names in the order they are produced (4–6 share the ablation sweep).
FIGURES = ("spectrum", "flow", "agreement", "ablation", "accumulative_ratio", "feature_maps")
_FROM_SWEEP = ("ablation", "accumulative_ratio", "feature_maps")


def quick_from_env() -> bool:
    """Whether the environment asks for the quick (CI) size, as CI and the notebooks do.

    Returns:
        ``True`` when ``HAMGRAD_QUICK`` is ``1``, ``true`` or ``yes`` (any case), else ``False``.
    """
    return os.environ.get("HAMGRAD_QUICK", "0").strip().lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------- figures 1–3: the solvers themselves
def _size(quick: bool) -> dict:
    """Problem size of figures 1–3: (d, n, r), steps K, and the top-k eigenvalues kept per step."""
    return dict(d=16, n=48, r=4, K=6, k=6) if quick else dict(d=64, n=256, r=8, K=6, k=12)


def _configs(r: int) -> list:
    """(label, solver) pairs of figures 1 and 2 at rank r: every ham at the paper's temperature, VQ at several."""
    return [("NMF", NMF(rank=r)), ("VQ, 1/T = 1", SoftVQ(rank=r, inv_t=1.0)),
            ("VQ, 1/T = 10", SoftVQ(rank=r, inv_t=10.0)), ("VQ, 1/T = 100", SoftVQ(rank=r, inv_t=100.0)),
            ("CD, 1/T = 100", CD(rank=r, inv_t=100.0))]


def _solver_data(d: int, n: int, r: int, nonnegative: bool, seed: int = 0) -> torch.Tensor:
    """float64 features ``(d, n)``. NMF gets non-negative low-rank data ``X = A B + 0.1·noise``; VQ and CD get
    standard Gaussian features, whose directions spread over the sphere (on the non-negative data every column
    points the same way and the soft assignments collapse onto one basis)."""
    g = torch.Generator().manual_seed(seed)
    if not nonnegative:
        return torch.randn(d, n, generator=g, dtype=torch.float64)
    A = torch.rand(d, r, generator=g, dtype=torch.float64)
    B = torch.rand(r, n, generator=g, dtype=torch.float64) ** 4
    return A @ B + 0.1 * torch.rand(d, n, generator=g, dtype=torch.float64)


def _trajectories(quick: bool):
    """``(label, solver, x, trajectory h^0 … h^K)`` for every configuration of figures 1 and 2."""
    size = _size(quick)
    for label, s in _configs(size["r"]):
        x = _solver_data(size["d"], size["n"], size["r"], nonnegative=getattr(s, "nonnegative", False))
        h0 = s.init(x, generator=torch.Generator().manual_seed(1))
        yield label, s, x, FixedPoint.from_solver(s).unroll(x, h0, size["K"])


def _spectrum(quick: bool, **_) -> dict:
    """Figure 1: the top-k eigenvalues of ``J_t = ∂F/∂h (hᵗ, x)`` and ``ρ(J_t)``, ``‖J_t‖₂`` for ``t = 0 … K``."""
    size = _size(quick)
    runs = []
    for label, s, x, traj in _trajectories(quick):
        eig, rho, sigma = [], [], []
        for h in traj:
            J = jacobian(s, h, x, wrt="h")
            spec = eigvals(J, k=size["k"])
            eig.append(spec.to_dict()["values"])
            rho.append(float(spec.values[0].abs()))
            sigma.append(float(svdvals(J, k=1).values[0]))
        runs.append({"label": label, "solver": s.name, "hparams": s.hparams(), "t": list(range(size["K"] + 1)),
                     "eigvals": eig, "rho": rho, "sigma": sigma})
    return {"size": size, "note": "J_t = dF/dh (h^t, x), t = 0..K", "runs": runs}


def contractive_model(n: int = 32, m: int = 16, scale: float = 0.8, seed: int = 0):
    """A contractive user model ``F(h, x) = scale·tanh(W h + U x)`` with ``‖W‖₂ = 1`` (so ``‖J‖₂ <= scale``),
    read out by ``G(h, x) = V h``. Figures 2 and 3 use it as the case where the paper's propositions hold
    (docs/theory.md §3).

    Args:
        n: the state's size (``h`` is ``(n, 4)``).
        m: the input's size (``x`` is ``(m, 4)``).
        scale: the contraction factor, a bound on ``‖J‖₂``.
        seed: seeds W, U, V, x and h0.

    Returns:
        ``(model, x, h0)``: a :class:`hamgrad.FixedPoint`, the input and the initial state ``(h,)``, in float64.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = W / torch.linalg.matrix_norm(W, ord=2)
    U = torch.randn(n, m, generator=g, dtype=torch.float64) / m ** 0.5
    V = torch.randn(8, n, generator=g, dtype=torch.float64) / n ** 0.5
    fp = FixedPoint(lambda h, x: (scale * torch.tanh(W @ h[0] + U @ x),), readout=lambda h, x: V @ h[0],
                    name=f"{scale}·tanh(Wh + Ux)")
    x = torch.randn(m, 4, generator=g, dtype=torch.float64)
    return fp, x, (torch.randn(n, 4, generator=g, dtype=torch.float64),)


def _flow(quick: bool, **_) -> dict:
    """Figure 2: :func:`hamgrad.analysis.gradient_flow` of the contractive model and of every configuration of
    figure 1 (the limits where ``ρ(J_K) < 1``, the bounds where ``L_h < 1``; ``limit_reason`` says why not)."""
    size = _size(quick)
    fp, x, h0 = contractive_model()
    cases = [("contractive F: 0.8·tanh(Wh + Ux)", fp, x, fp.unroll(x, h0, size["K"]))]
    cases += list(_trajectories(quick))
    runs = []
    for label, model, x, traj in cases:
        flow = gradient_flow(model, x, traj[0], steps=size["K"], generator=torch.Generator().manual_seed(2))
        runs.append({"label": label, **flow.to_dict()})
    return {"size": size, "runs": runs}


def _agreement(quick: bool, **_) -> dict:
    """Figure 3 on soft VQ at 1/T = 2 on Gaussian features, where the solver converges (ρ(J*) ≈ 0.99 at the full
    size, slowly), so the implicit gradient after 500 forward steps (GMRES backward) is a well-defined reference."""
    size = _size(quick)
    ks = [1, 2, 4, 6] if quick else [1, 2, 3, 4, 6, 8, 12, 16, 24]
    s = SoftVQ(rank=size["r"], inv_t=2.0)
    x = _solver_data(size["d"], size["n"], size["r"], nonnegative=False)[None]
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    mode_names = ["one-step", "one-step-coef", "truncated:2", "bptt"]
    modes = {m: {key: [] for key in ("cosine", "norm_ratio", "seconds", "peak_mb")} for m in mode_names}
    reference = None
    for K in ks:
        valid = [m for m in mode_names if not (m == "truncated:2" and K < 2)]
        cmp = compare_gradients(s, x, lambda y: (w * y).sum(), steps=K, modes=valid, reference="implicit",
                                reference_steps=500, generator=torch.Generator().manual_seed(1), adjoint="gmres",
                                max_iter=3000, strict=True)
        reference = cmp.reference
        got = {m.mode: m for m in cmp.modes}
        for name in mode_names:
            m = got.get(name)
            for key, value in (("cosine", m and m.cosine_x), ("norm_ratio", m and m.norm_ratio_x),
                               ("seconds", m and m.seconds), ("peak_mb", m and m.peak_bytes / 2 ** 20)):
                modes[name][key].append(math.nan if m is None else float(value))
    return {"size": size, "label": f"soft VQ, 1/T = 2, d={size['d']}, n={size['n']}, r={size['r']}",
            "reference": "implicit (500 forward steps, GMRES)", "K": ks, "modes": modes,
            "memory_kind": reference.memory_kind}


# ---------------------------------------------------------------------- figures 4–6: the trained HamNet
def ablation_config(quick: bool) -> AblationConfig:
    """The sweep behind figures 4–6: every ham × {one-step, BPTT} plus the baseline.

    Args:
        quick: the CI size (a few iterations) instead of the full one (2 seeds × 300 iterations).

    Returns:
        The :class:`hamgrad.experiments.AblationConfig`.
    """
    if quick:
        return AblationConfig.quick(iters=20, log_every=5, checkpoint_every=10)
    return AblationConfig(seeds=2, iters=300)


def _ablation_dir(quick: bool, ablation_dir) -> Path:
    return Path(ablation_dir) if ablation_dir is not None else Path("runs") / (
        "paper-ablation-quick" if quick else "paper-ablation")


def _sweep(quick: bool, ablation_dir, progress: bool) -> tuple[Path, list]:
    """The sweep's folder and finished rows. The built-in sweep is run or resumed (finished runs are kept); a folder
    holding a sweep of another config (one you ran with ``hamgrad ablate``) is read as it is."""
    out = _ablation_dir(quick, ablation_dir)
    config = ablation_config(quick)
    if not (out / "config.json").exists() or read_config(out) == config:
        run_ablation(config, out, device="cpu", progress=progress)
    rows = [r for r in load_results(out) if r.get("status", "ok") == "ok"]
    if not rows:
        raise ValueError(f"ablation_dir={str(out)!r} holds no finished runs")
    return out, rows


def _sweep_source(quick: bool, ablation_dir) -> dict:
    """What figures 4–6 were drawn from: the sweep's folder and a digest of its config and rows (``None`` while the
    folder holds no sweep), so that a figure drawn from another sweep, or from fewer runs, is recomputed."""
    out = _ablation_dir(quick, ablation_dir)
    digest = hashlib.sha256()
    for name in ("config.json", "results.jsonl"):
        path = out / name
        if not path.exists():
            return {"sweep": str(out), "digest": None}
        digest.update(path.read_bytes())
    return {"sweep": str(out), "digest": digest.hexdigest()[:16]}


def _ablation(quick: bool, ablation_dir=None, progress: bool = False) -> dict:
    out, rows = _sweep(quick, ablation_dir, progress)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["solver"], r["grad"], r.get("steps") if r["grad"] else None), []).append(100 * r["miou"])
    table = [{"solver": s, "grad": g, "steps": k, "best": max(v), "mean": float(np.mean(v)), "n": len(v)}
             for (s, g, k), v in groups.items()]
    curves = [{"solver": r["solver"], "grad": r["grad"], "steps": r.get("steps"), "seed": r["seed"],
               "step": r["curve"]["step"], "loss": r["curve"]["loss"]} for r in rows]
    return {"metric": "mIoU", "sweep": str(out), "table": table, "curves": curves,
            "config": read_config(out).to_dict()}


def _trained_hamnet(quick: bool, ablation_dir, progress: bool):
    """The first finished NMF one-step run of the sweep (or the first ham run), with the sweep's validation data."""
    out, rows = _sweep(quick, ablation_dir, progress)
    ham_rows = [r for r in rows if r["grad"] is not None]  # not the baseline, nor a context module's run
    if not ham_rows:
        raise ValueError(f"the sweep in {str(out)!r} has no finished run with a ham")
    row = next((r for r in ham_rows if r["solver"] == "nmf" and r["grad"] == "one-step"), ham_rows[0])
    config = read_config(out)
    model = load_model(out, row["run_id"])
    ds = config.dataset()
    val = [ds[config.train_samples + i] for i in range(min(config.val_samples, 16))]
    images = torch.stack([v[0] for v in val])
    labels = torch.stack([v[1] for v in val])
    return model, images, labels, row["run_id"]


def _block_features(model, images, seed: int = 0):
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


def _accumulative_ratio(quick: bool, ablation_dir=None, progress: bool = False) -> dict:
    model, images, _, run_id = _trained_hamnet(quick, ablation_dir, progress)
    return block_accumulative_ratio(model, images, run_id)


def block_accumulative_ratio(model, images, run_id: str | None = None) -> dict:
    """Figure 5's numbers for any trained :class:`hamgrad.nn.HamNet` with a head block (a Hamburger or another
    context module, ``model.block``): the accumulative ratio of the block's input and output features on
    ``images`` (mean and std over the images), in eval mode. ``run_id`` is recorded for the figure."""
    before, after, _ = _block_features(model, images)
    B, C = before.shape[:2]
    rb = accumulative_ratio(before.reshape(B, C, -1).double()).cpu().numpy()
    ra = accumulative_ratio(after.reshape(B, C, -1).double()).cpu().numpy()
    return {"run_id": run_id, "module": type(model.block).__name__, "p": 2, "images": B,
            "k": list(range(1, rb.shape[-1] + 1)),
            "before": rb.mean(0).tolist(), "after": ra.mean(0).tolist(),
            "before_std": rb.std(0).tolist(), "after_std": ra.std(0).tolist()}


def _feature_maps(quick: bool, ablation_dir=None, progress: bool = False) -> dict:
    model, images, labels, run_id = _trained_hamnet(quick, ablation_dir, progress)
    return block_feature_maps(model, images, labels, run_id)


def block_feature_maps(model, images, labels, run_id: str | None = None) -> dict:
    """Figure 6's numbers for any trained :class:`hamgrad.nn.HamNet` with a head block: the first image and label,
    its four highest-variance channels before and after ``model.block``, and the code maps of the four most active
    bases where the block has codes (the hams, A²; none for self-attention and global pooling)."""
    before, after, cap = _block_features(model, images)
    b = 0
    variance = before[b].flatten(1).var(dim=1)
    channels = variance.argsort(descending=True)[:4].tolist()
    bases = [] if cap.C is None else cap.C[b].pow(2).sum(dim=1).argsort(descending=True)[:4].tolist()
    H, W = cap.shape
    return {"run_id": run_id, "module": type(model.block).__name__, "image_index": b,
            "image": images[b].permute(1, 2, 0).clamp(0, 1).tolist(),
            "label": labels[b].tolist(), "channels": channels,
            "before": [before[b, c].tolist() for c in channels], "after": [after[b, c].tolist() for c in channels],
            "bases": bases, "codes": [cap.C[b, j].reshape(H, W).tolist() for j in bases]}


# ---------------------------------------------------------------------- dispatch, saving, the whole set
_COMPUTE = {"spectrum": _spectrum, "flow": _flow, "agreement": _agreement, "ablation": _ablation,
            "accumulative_ratio": _accumulative_ratio, "feature_maps": _feature_maps}
def _plot_ablation(result: dict):
    """Figure 4: the Table-1 analogue, or mIoU against K when the sweep's solver steps K is an axis."""
    ks = {row.get("steps") for row in result["table"] if row["solver"] != "none"}
    return (plots.ablation_steps if len(ks) > 1 else plots.ablation)(result)


_PLOT = {"spectrum": plots.jacobian_spectrum, "flow": plots.vanishing_exploding,
         "agreement": plots.gradient_agreement, "ablation": _plot_ablation,
         "accumulative_ratio": plots.accumulative_ratio, "feature_maps": plots.feature_maps}


def _check_name(name: str) -> str:
    if name not in FIGURES:
        raise ValueError(f"unknown figure name={name!r}; expected one of {FIGURES}")
    return name


def compute(name: str, quick: bool = False, *, ablation_dir=None, progress: bool = False) -> dict:
    """The numbers behind one figure, at the quick or the full size.

    Args:
        name: one of :data:`FIGURES`.
        quick: the CI size (seconds per figure) instead of the full size.
        ablation_dir: for figures 4–6, the folder of a sweep of your own; by default the built-in sweep
            (:func:`ablation_config`) is run, or resumed, in ``runs/paper-ablation`` (``-quick`` at the quick size).
        progress: show progress bars.

    Returns:
        Plain data (dicts, lists, floats, str) as the figure's JSON holds it, with ``figure``, ``quick``,
        ``seconds`` and ``torch`` (the version) added; figures 4–6 also record their ``source``: the sweep folder
        and a digest of its config and rows.

    Raises:
        ValueError: when ``name`` is not one of :data:`FIGURES`, or the sweep behind figures 4–6 holds no finished
            run.
    """
    start = time.perf_counter()
    result = _COMPUTE[_check_name(name)](quick, ablation_dir=ablation_dir, progress=progress)
    result.update(figure=name, quick=bool(quick), seconds=round(time.perf_counter() - start, 2),
                  torch=torch.__version__)
    if name in _FROM_SWEEP:
        result["source"] = _sweep_source(quick, ablation_dir)
    return result


def plot(name: str, result: dict):
    """Draw one figure from its numbers.

    Args:
        name: one of :data:`FIGURES`.
        result: its :func:`compute` result, or the JSON :func:`save` wrote, read back.

    Returns:
        A matplotlib ``Figure``.

    Raises:
        ValueError: when ``name`` is not one of :data:`FIGURES`.
    """
    return _PLOT[_check_name(name)](result)


def save(name: str, result: dict, fig, out) -> tuple[Path, Path]:
    """Write ``out/name.png`` and ``out/name.json`` (each to a temporary name first, then moved into place)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / f"{_check_name(name)}.png", out / f"{name}.json"
    tmp_png, tmp_js = out / f".{name}.png.tmp", out / f".{name}.json.tmp"
    fig.savefig(tmp_png, dpi=110, format="png")
    tmp_js.write_text(json.dumps(result, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp_png, png)
    os.replace(tmp_js, js)
    return png, js


def load(name: str, out) -> dict | None:
    """The result :func:`save` wrote for figure ``name`` in ``out`` (``None`` when there is none).

    Raises:
        ValueError: naming the file when it is not a figure JSON (damaged, or another figure's).
    """
    path = Path(out) / f"{_check_name(name)}.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a figure JSON ({err}); delete it, or pass force=True (hamgrad figures "
                         f"--force) to recompute it") from None
    if not isinstance(result, dict) or result.get("figure") != name or not isinstance(result.get("quick"), bool):
        raise ValueError(f"{path} is not the JSON of figure {name!r}; delete it, or pass force=True (hamgrad "
                         f"figures --force) to recompute it")
    return result


def _check_sizes(out, quick: bool) -> None:
    """Refuse to write figures of one size into a folder holding figures of the other."""
    other = [f"{n}.json" for n in FIGURES if (r := load(n, out)) is not None and r["quick"] != bool(quick)]
    if other:
        raise ValueError(f"out={str(out)!r} holds {'quick' if not quick else 'full-size'} figures ({', '.join(other)})"
                         f"; one folder holds one size: choose another folder, or pass force=True (hamgrad figures "
                         f"--force) to replace them")


def _run(name: str, out, quick: bool, ablation_dir, progress: bool, force: bool) -> dict:
    """:func:`run` without the folder's size check."""
    result = None if force else load(name, out)
    if result is not None and result["quick"] == bool(quick) and (
            name not in _FROM_SWEEP or _is_current(result, quick, ablation_dir)):
        save(name, result, plot(name, result), out)
        return result
    result = compute(name, quick, ablation_dir=ablation_dir, progress=progress)
    save(name, result, plot(name, result), out)
    return result


def _is_current(result: dict, quick: bool, ablation_dir) -> bool:
    """Whether a figure drawn from a sweep still shows it: its recorded source matches the sweep folder now (a
    default folder that does not exist, as in a fresh clone, keeps the figure)."""
    now = _sweep_source(quick, ablation_dir)
    if now["digest"] is None and ablation_dir is None:
        return True
    return result.get("source", {}).get("digest") == now["digest"]


def run(name: str, out, quick: bool = False, *, ablation_dir=None, progress: bool = False,
        force: bool = False) -> dict:
    """Compute, plot and save one figure. A figure whose JSON in ``out`` is already at this size (and, for figures
    4–6, drawn from the same sweep, see :func:`compute`) is only redrawn; ``force=True`` recomputes it.

    Raises:
        ValueError: when ``out`` holds figures of the other size (unless ``force``), or a damaged figure JSON.
    """
    if not force:
        _check_sizes(out, quick)
    return _run(name, out, quick, ablation_dir, progress, force)


def run_all(out, quick: bool = False, *, names=FIGURES, ablation_dir=None, progress: bool = True,
            force: bool = False) -> dict:
    """Every figure in ``names`` into ``out`` with a progress bar; resumable (see :func:`run`).

    Raises:
        ValueError: when ``out`` holds figures of the other size (unless ``force``, checked before anything is
            written), a damaged figure JSON, or a damaged sweep behind figures 4–6 (each naming the file).
    """
    names = [_check_name(n) for n in names]
    if not force:
        _check_sizes(out, quick)
    results = {}
    with tqdm(names, desc="figures", unit="fig", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            results[name] = _run(name, out, quick, ablation_dir, progress, force)
    return results
