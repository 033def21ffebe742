"""Figure functions: each takes a figure's results in plain-data form (the dicts :mod:`hamgrad.figures` builds and
saves as JSON) and returns a :class:`matplotlib.figure.Figure`. They compute nothing beyond what drawing needs.

Figures of your own solver: :func:`flow`, :func:`spectrum`, :func:`agreement` and :func:`ratio` take the result
objects of the analysis API (one or several; a ``dict`` maps labels to results) and draw the same figures, and
:func:`sweep` draws the ablation figure of a sweep of your own::

    flows = {"ISTA": hg.gradient_flow(s, x, h0, steps=8)}
    hamgrad.plots.flow(flows)                          # ‖∂hᵗ/∂h⁰‖₂ and ‖∂hᵗ/∂x‖₂ against t
    hamgrad.plots.spectrum(eigs, norms=norms)          # eigs[t] = hg.eigvals(J_t), norms[t] = hg.spectral_norm(J_t)
    hamgrad.plots.agreement([hg.compare_gradients(s, x, loss, steps=K) for K in (1, 2, 4, 8)])
    hamgrad.plots.ratio(hg.accumulative_ratio(Z_in), hg.accumulative_ratio(Z_out))
    hamgrad.plots.sweep("runs/mine")                   # the folder of `hamgrad ablate --out runs/mine`

Convention (every figure): ``J_t = ∂F/∂h (hᵗ, x)`` and ``B_t = ∂F/∂x (hᵗ, x)`` are the Jacobians at the state
*before* step t+1, t = 0 … K, so ``∂hᵗ/∂h⁰ = J_{t−1}⋯J_0`` and ``∂hᵗ/∂x = Σ_{s<t} J_{t−1}⋯J_{s+1} B_s``.

Each also accepts the plain data the figure's JSON holds (one schema per figure; results become plain data with
``.to_dict()``):

- flow: ``{"runs": [{"label", "t", "dh_dh0", "dh_dx", ...}]}``, each run a :class:`hamgrad.analysis.GradientFlow`'s
  ``to_dict()`` plus its label (limits and bounds: ``None`` where not drawn);
- spectrum: ``{"runs": [{"label", "t", "eigvals", "rho", "sigma"}]}``, ``eigvals[i]`` the ``[re, im]`` pairs of
  ``J_{t[i]}``'s eigenvalues, ``rho``/``sigma`` its spectral radius and norm;
- agreement: ``{"K", "modes": {mode: {"cosine", "norm_ratio", "seconds", "peak_mb"}}, "reference", "label",
  "memory_kind"}``, one list entry per K;
- accumulative ratio: ``{"k", "before", "after", "before_std", "after_std", "p"}``;
- sweep (ablation): ``{"table": [{"solver", "grad", "block", "steps", "best", "mean", "n"}], "curves": [{"solver",
  "grad", "block", "steps", "seed", "step", "loss"}], "metric"}`` (:func:`hamgrad.figures.ablation.from_rows` builds
  it from rows; a ham row without ``block``, from before the block was an axis, is drawn as V1).

Jupyter shows a returned figure as a PNG when it is a cell's value, with no ``%matplotlib`` needed.

Style: seaborn's ``whitegrid`` theme, its colour-blind-safe palette, labelled axes, log scales where values span
decades. Figures are built without pyplot, so nothing global is touched and no window opens.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from contextlib import contextmanager

import numpy as np
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from .grad import mode_label

__all__ = ["jacobian_spectrum", "vanishing_exploding", "gradient_agreement", "ablation", "ablation_steps",
           "accumulative_ratio", "feature_maps", "context_scaling", "context_tradeoff"]

#: The index convention every figure's labels follow.
CONVENTION = "J_t = ∂F/∂h(hᵗ, x), B_t = ∂F/∂x(hᵗ, x) at the state before step t+1, t = 0…K"


class _InlineFigure(Figure):
    """A Figure that Jupyter shows as a PNG when it is a cell's value (no ``%matplotlib``, no pyplot)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def _palette(n: int) -> list:
    return sns.color_palette("colorblind", max(n, 1))


@contextmanager
def _styled():
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _figure(nrows: int, ncols: int, width: float, height: float, title: str):
    fig = _InlineFigure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.suptitle(title)
    return fig, axes


def _log_if_spread(ax, values, axis: str = "y", decades: float = 1.5) -> None:
    v = np.asarray([x for x in np.ravel(values) if x is not None and np.isfinite(x) and x > 0])
    if v.size and np.log10(v.max() / v.min()) >= decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


# ---------------------------------------------------------------------- figures of any solver, from result objects
__all__ += ["CONVENTION", "flow", "spectrum", "agreement", "ratio", "sweep"]


def _plain(result):
    """A result object as plain data (its ``to_dict()``), plain data unchanged."""
    return result.to_dict() if callable(getattr(result, "to_dict", None)) else result


def _labelled(results, labels, is_one, what: str) -> list:
    """``[(label, result), ...]`` from one result, a list of them or a dict label → result; ``is_one(r)`` tells a
    single result (an object or its plain data) from a collection. Missing labels become ``run 1``, ``run 2``, …"""
    if isinstance(results, dict) and not is_one(results):
        if labels is not None:
            raise ValueError(f"labels must be None when {what} is a dict (its keys are the labels)")
        labels, results = list(results), list(results.values())
    elif is_one(results):
        results = [results]
    elif isinstance(results, (list, tuple)):
        results = list(results)
    else:
        raise TypeError(f"{what} must be a result, a list of results or a dict label → result, got "
                        f"{type(results).__name__}")
    labels = [labels] if isinstance(labels, str) else [None] * len(results) if labels is None else list(labels)
    if len(labels) != len(results):
        raise ValueError(f"labels has {len(labels)} entries for {len(results)} result(s) in {what}")
    if not results:
        raise ValueError(f"{what} is empty: pass at least one result")
    for r in results:
        if not is_one(r):
            raise TypeError(f"{what} holds a {type(r).__name__}, which is not a result this figure draws")
    return [(f"run {i + 1}" if label is None else str(label), r) for i, (label, r) in enumerate(zip(labels, results))]


def _none_if_nan(run: dict) -> dict:
    """Scalars that are ``nan`` (a limit or bound that was not computed) become ``None``: not drawn."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in run.items()}


def _with_convention(fig: Figure, note: str) -> Figure:
    """The figure's title with the index convention below it, wrapped to the figure's width."""
    fig.set_figwidth(max(fig.get_figwidth(), 6.4))
    note = textwrap.fill(note, width=int(fig.get_figwidth() * 72 / 5.5))
    fig.suptitle(f"{fig.get_suptitle()}\n{note}", fontsize="medium")
    return fig


def flow(results, labels=None) -> Figure:
    """The vanishing/exploding figure (:func:`vanishing_exploding`) of one or several :func:`hamgrad.gradient_flow`
    results.

    Args:
        results: a :class:`hamgrad.analysis.GradientFlow` (or its ``to_dict()``), a list of them, a dict label →
            result, or the figure's plain data ``{"runs": [...]}`` (drawn as it is).
        labels: a label per result (a str for one); default ``run 1``, ``run 2``, ….

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        TypeError: for results that are not gradient flows.
        ValueError: for labels that do not match the results.
    """
    if isinstance(results, dict) and "runs" in results:
        return vanishing_exploding(results)
    is_one = lambda r: isinstance(_plain(r), dict) and "dh_dx" in _plain(r)  # noqa: E731
    runs = [{**_none_if_nan(_plain(r)), "label": label} for label, r in _labelled(results, labels, is_one, "results")]
    return _with_convention(vanishing_exploding({"runs": runs}),
                            "∂hᵗ/∂h⁰ = J_{t−1}⋯J_0,  ∂hᵗ/∂x = Σ_{s<t} J_{t−1}⋯J_{s+1}B_s;  " + CONVENTION)


def _eigenvalues(step) -> np.ndarray:
    """One step's eigenvalues as a complex array: a :class:`hamgrad.analysis.Spectrum`, its ``to_dict()``, a
    tensor or array of (complex) values, or ``[re, im]`` pairs."""
    step = _plain(step)
    values = step["values"] if isinstance(step, dict) else step
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 2 and not np.iscomplexobj(values):
        values = values[:, 0] + 1j * values[:, 1]
    if values.ndim != 1:
        raise ValueError(f"eigenvalues of one step must be a 1-D sequence (or [re, im] pairs), got shape "
                         f"{values.shape}")
    return values.astype(complex)


def _norm(value) -> float:
    """``‖J_t‖₂`` from a float, a 0-d tensor, or a singular-value :class:`hamgrad.analysis.Spectrum` (its first)."""
    value = _plain(value)
    if isinstance(value, dict):
        value = value["values"][0]
    return float(value)


def spectrum(eigvals, norms=None, *, labels=None, t=None) -> Figure:
    """The Jacobian spectrum figure (:func:`jacobian_spectrum`) of one or several runs of per-step spectra.

    Args:
        eigvals: one run: a list over steps of ``J_t``'s eigenvalues (each a :class:`hamgrad.analysis.Spectrum`
            from :func:`hamgrad.eigvals`, its ``to_dict()``, or a tensor of eigenvalues); several runs: a list of
            such lists or a dict label → list; or the figure's plain data ``{"runs": [...]}`` (drawn as it is).
            ρ(J_t) is the largest modulus given, so include the top eigenvalue.
        norms: ``‖J_t‖₂`` per step, in the same layout (floats, or :func:`hamgrad.svdvals` spectra); ``None`` leaves
            the ‖J_t‖₂ lines out.
        labels: a label per run (a str for one).
        t: the step index of each entry; default ``0, 1, …`` (``eigvals[i]`` is ``J_i`` at ``hⁱ``).

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        TypeError: for eigenvalues in another layout.
        ValueError: for ``norms``, ``labels`` or ``t`` that do not match the runs.
    """
    if isinstance(eigvals, dict) and "runs" in eigvals:
        return jacobian_spectrum(eigvals)

    def is_step(e):
        return callable(getattr(e, "to_dict", None)) or hasattr(e, "shape") or (isinstance(e, dict) and "values" in e)

    def is_one(r):
        return isinstance(r, (list, tuple)) and len(r) > 0 and all(is_step(e) for e in r)

    runs = _labelled(eigvals, labels, is_one, "eigvals")
    if norms is None:
        norm_runs = [None] * len(runs)
    else:
        if isinstance(norms, dict):
            missing = [label for label, _ in runs if label not in norms]
            if missing:
                raise ValueError(f"norms has no entry for the run(s) {missing}")
            norm_runs = [norms[label] for label, _ in runs]
        else:
            norm_runs = [norms] if len(runs) == 1 else list(norms)
        if len(norm_runs) != len(runs):
            raise ValueError(f"norms has {len(norm_runs)} run(s) for {len(runs)} run(s) of eigvals")
    data = []
    for (label, run), run_norms in zip(runs, norm_runs):
        steps = list(range(len(run))) if t is None else list(t)
        if len(steps) != len(run) or (run_norms is not None and len(run_norms) != len(run)):
            raise ValueError(f"run {label!r}: {len(run)} steps of eigenvalues, but t has {len(steps)} entries and "
                             f"norms {len(run) if run_norms is None else len(run_norms)}")
        eig = [_eigenvalues(e) for e in run]
        data.append({"label": label, "t": steps, "eigvals": [np.stack([e.real, e.imag], 1).tolist() for e in eig],
                     "rho": [float(np.abs(e).max()) if e.size else math.nan for e in eig],
                     "sigma": [math.nan] * len(run) if run_norms is None else [_norm(v) for v in run_norms]})
    return _with_convention(jacobian_spectrum({"runs": data}), CONVENTION)


def agreement(comparisons, *, label: str = "your solver") -> Figure:
    """The gradient-agreement figure (:func:`gradient_agreement`) from :func:`hamgrad.compare_gradients` results,
    one per number of steps K (each result's modes at its ``steps``).

    Args:
        comparisons: a :class:`hamgrad.analysis.GradientComparison` (or its ``to_dict()``), a list of them (one per
            K, all against the same reference), or the figure's plain data (drawn as it is).
        label: what was compared, shown in the title.

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        TypeError: for inputs that are not gradient comparisons.
        ValueError: for comparisons against different references.
    """
    if isinstance(comparisons, dict) and "modes" in comparisons and "K" in comparisons:
        return gradient_agreement(comparisons)
    is_one = lambda r: isinstance(_plain(r), dict) and "reference" in _plain(r)  # noqa: E731
    cmps = [_plain(c) for _, c in _labelled(comparisons, None, is_one, "comparisons")]
    refs = {(c["reference"]["mode"], c["reference"]["steps"]) for c in cmps}
    if len(refs) != 1:
        raise ValueError(f"comparisons must share one reference, got {sorted(refs)}")
    (ref_mode, ref_steps), = refs
    rows = [row for c in cmps for row in c["modes"]]
    ks = sorted({row["steps"] for row in rows})
    modes = {}
    for row in rows:
        modes.setdefault(row["mode"], {key: [math.nan] * len(ks) for key in ("cosine", "norm_ratio", "seconds",
                                                                            "peak_mb")})
        i, m = ks.index(row["steps"]), modes[row["mode"]]
        m["cosine"][i], m["norm_ratio"][i] = row["cosine_x"], row["norm_ratio_x"]
        m["seconds"][i], m["peak_mb"][i] = row["seconds"], row["peak_bytes"] / 2 ** 20
    return gradient_agreement({"K": ks, "modes": modes, "reference": f"{ref_mode} (K = {ref_steps})", "label": label,
                               "memory_kind": cmps[0]["reference"]["memory_kind"]})


def ratio(before, after, *, p: float = 2) -> Figure:
    """The accumulative-ratio figure (:func:`accumulative_ratio`) from :func:`hamgrad.accumulative_ratio` tensors of
    the features before and after a layer: mean (and standard deviation over the leading dimensions, when batched).

    Args:
        before: a tensor or array ``(..., k)``, the ratio of the features going in.
        after: the same for the features coming out, of the same shape.
        p: the power they were computed with (shown on the axis).

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: for shapes that differ or are empty.
    """
    arrays = [np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float) for v in (before, after)]
    if arrays[0].shape != arrays[1].shape or arrays[0].ndim < 1 or arrays[0].shape[-1] < 1:
        raise ValueError(f"before and after must be accumulative ratios of one shape (..., k), got shapes "
                         f"{arrays[0].shape} and {arrays[1].shape}")
    flat = [a.reshape(-1, a.shape[-1]) for a in arrays]
    result = {"k": list(range(1, flat[0].shape[1] + 1)), "p": p}
    for key, a in zip(("before", "after"), flat):
        result[key] = a.mean(0).tolist()
        result[key + "_std"] = a.std(0).tolist() if a.shape[0] > 1 else None
    return accumulative_ratio(result)


def sweep(source) -> Figure:
    """The ablation figure of a sweep: :func:`ablation` (mean and best mIoU per solver, block and gradient mode, and
    the training curves), or :func:`ablation_steps` (mIoU against K) when the sweep's solver steps K is an axis.

    Args:
        source: a sweep folder written by ``hamgrad ablate`` or :func:`hamgrad.experiments.run_ablation` (a path;
            read as it is, nothing is trained), its rows (:func:`hamgrad.experiments.load_results`), or the figure's
            plain data (drawn as it is).

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: when the sweep has no finished run, holds a damaged file (naming it), or rows are not sweep rows.
        TypeError: for a source of another type.
    """
    if not (isinstance(source, dict) and "table" in source):
        from .figures import ablation as figure  # the table is built where figure 4 builds it

        if isinstance(source, (str, os.PathLike)):
            source = figure.read(source)
        elif isinstance(source, (list, tuple)):
            source = figure.from_rows(source)
        else:
            raise TypeError(f"source must be a sweep folder, its rows or the figure's plain data, got "
                            f"{type(source).__name__}")
    ks = {row.get("steps") for row in source["table"] if row["grad"] is not None}
    return (ablation_steps if len(ks) > 1 else ablation)(source)


def jacobian_spectrum(result: dict) -> Figure:
    """Figure 1: eigenvalues of J_t = ∂F/∂h (hᵗ, x) in the complex plane (unit circle drawn, colour = step t), and
    ρ(J_t) and ‖J_t‖₂ against t, one line per solver configuration.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    runs = result["runs"]
    with _styled():
        fig, axes = _figure(2, len(runs), 3.2 * len(runs), 6.4, "Jacobian scale and spectrum of one solver step")
        colors = _palette(len(runs))
        theta = np.linspace(0, 2 * np.pi, 256)
        t_min = min(min(r["t"]) for r in runs)
        t_max = max(max(r["t"]) for r in runs)
        viridis = sns.color_palette("viridis", t_max - t_min + 1)
        for j, run in enumerate(runs):
            ax = axes[0, j]
            ax.plot(np.cos(theta), np.sin(theta), color="0.5", lw=1, ls="--", label="unit circle")
            pts = [np.asarray(ev, dtype=float).reshape(-1, 2) for ev in run["eigvals"]]
            # the Jacobian at the random start can dwarf the rest: scale the axes to the later steps
            later = np.concatenate(pts[1:] or pts)
            lim = 1.15 * max(1.0, float(np.abs(later[:, 0] + 1j * later[:, 1]).max()))
            clipped = 0
            for t, ev in zip(run["t"], pts):
                inside = np.abs(ev[:, 0] + 1j * ev[:, 1]) <= lim
                clipped += int((~inside).sum())
                ax.scatter(ev[inside, 0], ev[inside, 1], s=16, color=viridis[t - t_min], edgecolor="none")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_title(run["label"])
            ax.set_xlabel("Re λ")
            ax.set_ylabel("Im λ" if j == 0 else "")
            if clipped:
                ax.text(0.02, 0.98, f"{clipped} eigenvalue(s) of |λ| > {lim:.3g}\noff-scale (see ρ below)",
                        transform=ax.transAxes, fontsize=7, va="top")
            ax.legend(loc="lower left", fontsize=7)
        axes[0, -1].text(1.02, 0.5, f"colour: J_t at hᵗ,\nt = {t_min}…{t_max}\n(dark → light)",
                         transform=axes[0, -1].transAxes, fontsize=7, va="center")
        gs = axes[1, 0].get_gridspec()
        for ax in axes[1, :]:
            ax.remove()
        ax_r = fig.add_subplot(gs[1, : max(1, len(runs) // 2)])
        ax_s = fig.add_subplot(gs[1, max(1, len(runs) // 2):]) if len(runs) > 1 else ax_r
        for color, run in zip(colors, runs):
            ax_r.plot(run["t"], run["rho"], marker="o", ms=3, color=color, label=run["label"])
            ax_s.plot(run["t"], run["sigma"], marker="s", ms=3, color=color, ls="-" if ax_s is not ax_r else ":",
                      label=run["label"] if ax_s is not ax_r else None)
        for ax, name in ((ax_r, "spectral radius ρ(J_t)"), (ax_s, "spectral norm ‖J_t‖₂")):
            ax.axhline(1.0, color="0.4", lw=1, ls="--")
            ax.set_xlabel("step t (J_t = ∂F/∂h at hᵗ)")
            ax.set_ylabel(name)
            _log_if_spread(ax, [v for r in runs for v in (r["rho"] + r["sigma"])])
        ax_r.legend(fontsize=7, ncol=2)
    return fig


def vanishing_exploding(result: dict) -> Figure:
    """Figure 2: ‖∂hᵗ/∂h⁰‖₂ (vanishing) and ‖∂hᵗ/∂x‖₂ (growth) against t on log scales; in the second panel the
    state's Proposition-3 bound L_x/(1 − L_h) (dotted, where L_h = max_(t<K) ‖J_t‖ < 1) and its Proposition-2
    limit ‖(I − J_K)⁻¹B_K‖ (dashed, where ρ(J_K) < 1), the quantities that bound and limit ‖∂hᵗ/∂x‖ itself.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    runs = result["runs"]
    with _styled():
        fig, axes = _figure(1, 2, 10, 4, "Gradients through the unrolled solver: vanishing w.r.t. h⁰, growing w.r.t. x")
        ax0, ax1 = axes[0]
        for color, run in zip(_palette(len(runs)), runs):
            ax0.plot(run["t"], run["dh_dh0"], marker="o", ms=3, color=color, label=run["label"])
            ax1.plot(run["t"], run["dh_dx"], marker="o", ms=3, color=color)
            if run.get("state_limit") is not None:
                ax1.axhline(run["state_limit"], color=color, ls="--", lw=1)
            if run.get("state_bound") is not None:
                ax1.axhline(run["state_bound"], color=color, ls=":", lw=1)
        ax0.set_yscale("log")
        ax1.set_yscale("log")
        ax0.set_ylabel("‖∂hᵗ/∂h⁰‖₂ = ‖J_(t−1)⋯J_0‖₂")
        ax1.set_ylabel("‖∂hᵗ/∂x‖₂")
        for ax in (ax0, ax1):
            ax.set_xlabel("solver step t")
        ax0.legend(fontsize=7)
        ax1.plot([], [], color="0.3", ls="--", label="limit ‖(I − J_K)⁻¹B_K‖ (Prop. 2, where ρ(J_K) < 1)")
        ax1.plot([], [], color="0.3", ls=":", label="bound L_x/(1 − L_h), L over t < K (Prop. 3, where L_h < 1)")
        ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1)
    return fig


def gradient_agreement(result: dict) -> Figure:
    """Figure 3: cosine and norm ratio of each mode's ∂L/∂x against the reference, and wall time and memory, vs K.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    ks, modes = result["K"], result["modes"]
    with _styled():
        fig, axes = _figure(2, 2, 10, 7, f"Gradient modes against the {result['reference']} gradient "
                                          f"({result['label']})")
        colors = dict(zip(modes, _palette(len(modes))))
        panels = (("cosine", "cosine similarity to reference", False),
                  ("norm_ratio", "‖∂L/∂x‖ / ‖reference‖", True),
                  ("seconds", "forward + backward time (s)", True),
                  ("peak_mb", f"memory (MB, {result.get('memory_kind', '')})", True))
        for ax, (key, label, log) in zip(axes.ravel(), panels):
            for mode, vals in modes.items():
                ax.plot(ks, vals[key], marker="o", ms=4, color=colors[mode], label=mode_label(mode))
            ax.set_xlabel("solver steps K")
            ax.set_ylabel(label)
            if log:
                _log_if_spread(ax, [v for vals in modes.values() for v in vals[key]], decades=1.0)
        axes[0, 0].axhline(1.0, color="0.4", lw=1, ls="--")
        axes[0, 0].legend(fontsize=7)
    return fig


def _hams(table: list) -> tuple:
    """The ``(solver, block)`` pairs of a figure-4 table's ham rows, and their axis label: the solver, and the block
    too when the table has several. A row without ``block`` (a figure drawn before the block was an axis) is V1's."""
    hams = list(dict.fromkeys((r["solver"], r.get("block") or "v1") for r in table if r["grad"] is not None))
    several = len({b for _, b in hams}) > 1
    return hams, lambda ham: f"{ham[0].upper()} {ham[1].upper()}" if several else ham[0].upper()


def _blocks_title(hams: list) -> str:
    return "/".join(sorted({b.upper() for _, b in hams}))


def ablation(result: dict) -> Figure:
    """Figure 4: the Table-1 analogue (mean with best marked, per solver, Hamburger block and gradient mode, the
    no-ham baseline as a line) and the training-loss curves of every run. Modes are named as the tables name them,
    the paper's one-step (``one-step-coef``) marked "(paper)".

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    table, curves = result["table"], result["curves"]
    grads = list(dict.fromkeys(row["grad"] for row in table if row["grad"] is not None))
    hams, name = _hams(table)
    with _styled():
        fig, axes = _figure(1, 2, 11, 4, f"Gradient modes in HamNet (Hamburger {_blocks_title(hams)}) on the "
                                         f"global-context shapes")
        ax0, ax1 = axes[0]
        colors = dict(zip(grads, _palette(len(grads))))
        width = 0.8 / max(len(grads), 1)
        for i, g in enumerate(grads):
            rows = {(r["solver"], r.get("block") or "v1"): r for r in table if r["grad"] == g}
            xs = [j + (i - (len(grads) - 1) / 2) * width for j in range(len(hams))]
            means = [rows[h]["mean"] if h in rows else np.nan for h in hams]
            best = [rows[h]["best"] if h in rows else np.nan for h in hams]
            ax0.bar(xs, means, width=width * 0.95, color=colors[g], label=f"{mode_label(g)} (mean)")
            ax0.scatter(xs, best, marker="_", s=200, color="k", zorder=3, label="best" if i == 0 else None)
        for r in table:
            if r["solver"] == "none":
                ax0.axhline(r["mean"], color="0.3", ls="--", lw=1, label="no ham (mean)")
        ax0.set_xticks(range(len(hams)), [name(h) for h in hams])
        ax0.set_ylabel(f"val {result.get('metric', 'mIoU')} (%)")
        ax0.legend(fontsize=7, loc="lower right")
        several = len({b for _, b in hams}) > 1
        for c in curves:
            color = colors.get(c["grad"], "0.3")
            ls = {"nmf": "-", "vq": "--", "cd": ":"}.get(c["solver"], "-.")
            faint = several and (c.get("block") or "v1") == "v1"
            ax1.plot(c["step"], c["loss"], color=color, ls=ls, lw=1, alpha=0.4 if faint else 0.8)
        ax1.set_xlabel("training step")
        ax1.set_ylabel("training loss (cross-entropy)")
        _log_if_spread(ax1, [v for c in curves for v in c["loss"]], decades=1.0)
        for g in grads:
            ax1.plot([], [], color=colors[g], label=mode_label(g))
        for s, ls in (("nmf", "-"), ("vq", "--"), ("cd", ":"), ("none", "-.")):
            ax1.plot([], [], color="0.3", ls=ls, label=s)
        if several:
            ax1.plot([], [], color="0.3", alpha=0.4, label="V1 (faint)")
        ax1.legend(fontsize=7, ncol=2)
    return fig


def ablation_steps(result: dict) -> Figure:
    """Figure 4 when the sweep's solver steps K is an axis: validation mIoU against K, one panel per solver and
    Hamburger block, one line per gradient mode (mean over seeds, the best marked; the paper's one-step marked
    "(paper)"), the no-ham baseline as a dashed line.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    table = result["table"]
    grads = list(dict.fromkeys(row["grad"] for row in table if row["grad"] is not None))
    hams, name = _hams(table)
    ks = sorted({row["steps"] for row in table if row["grad"] is not None})
    colors = dict(zip(grads, _palette(len(grads))))
    with _styled():
        fig, axes = _figure(1, len(hams), 3.6 * len(hams), 3.6,
                            f"Gradient modes against the solver steps K (HamNet, Hamburger {_blocks_title(hams)}, on "
                            f"the global-context shapes)")
        for ax, ham in zip(axes[0], hams):
            for g in grads:
                rows = sorted((r for r in table if (r["solver"], r.get("block") or "v1", r["grad"]) == (*ham, g)),
                              key=lambda r: r["steps"])
                x = [r["steps"] for r in rows]
                ax.plot(x, [r["mean"] for r in rows], color=colors[g], marker="o", label=f"{mode_label(g)} (mean)")
                ax.scatter(x, [r["best"] for r in rows], color=colors[g], marker="_", s=150, zorder=3)
            for r in table:
                if r["solver"] == "none":
                    ax.axhline(r["mean"], color="0.3", ls="--", lw=1, label="no ham (mean)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_title(name(ham))
            ax.set_xlabel("solver steps K in training")
        values = [r[key] for r in table for key in ("mean", "best")]
        for ax in axes[0]:  # one scale for every ham
            ax.set_ylim(min(values) - 3, max(values) + 3)
        axes[0, 0].scatter([], [], color="0.3", marker="_", s=150, label="best")
        axes[0, 0].set_ylabel(f"val {result.get('metric', 'mIoU')} (%)")
        axes[0, 0].legend(fontsize=7)
    return fig


def accumulative_ratio(result: dict) -> Figure:
    """Figure 5: accumulative ratio Σ_{i≤k}σ_i^p / Σσ_i^p of the features before and after the Hamburger module
    (or the context module ``result["module"]`` names).

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    module = result.get("module", "Hamburger")
    with _styled():
        fig, axes = _figure(1, 1, 5.5, 4, "Accumulative ratio of feature singular values")
        ax = axes[0, 0]
        c = _palette(2)
        for key, color, label in (("before", c[0], f"before {module}"), ("after", c[1], f"after {module}")):
            mean = np.asarray(result[key])
            ax.plot(result["k"], mean, color=color, label=label)
            if result.get(key + "_std") is not None:
                std = np.asarray(result[key + "_std"])
                ax.fill_between(result["k"], mean - std, np.minimum(mean + std, 1), color=color, alpha=0.2)
        ax.set_xlabel("number of singular values k")
        ax.set_ylabel(f"accumulative ratio (p = {result.get('p', 2)})")
        ax.set_ylim(0, 1.02)
        ax.legend()
    return fig


def feature_maps(result: dict) -> Figure:
    """Figure 6: the input image and ground truth, the same channels before and after the Hamburger module,
    and the codes C_j of a few bases as spatial maps (none for a context module without codes; ``result["module"]``
    names the module, Hamburger by default).

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    channels, codes = result["channels"], result["codes"]
    ncols = max(len(channels), len(codes), 2)
    with _styled():
        fig, axes = _figure(4, ncols, 2.0 * ncols, 8.4,
                            f"Feature maps before and after {result.get('module', 'Hamburger')}")
        for ax in axes.ravel():
            ax.axis("off")
        axes[0, 0].imshow(np.asarray(result["image"]))
        axes[0, 0].set_title("input")
        label = np.asarray(result["label"])
        classes = ["0.15"] + list(_palette(int(label.max())))  # background dark, classes in the palette
        axes[0, 1].imshow(label, cmap=ListedColormap(classes), vmin=-0.5, vmax=len(classes) - 0.5,
                          interpolation="nearest")
        axes[0, 1].set_title("ground truth")
        for j, c in enumerate(channels):
            for row, key in ((1, "before"), (2, "after")):
                ax = axes[row, j]
                ax.imshow(np.asarray(result[key][j]), cmap="magma")
                ax.set_title(f"ch {c} {key}", fontsize=8)
        for j, (b, m) in enumerate(zip(result["bases"], codes)):
            axes[3, j].imshow(np.asarray(m), cmap="viridis")
            axes[3, j].set_title(f"code of basis {b}", fontsize=8)
    return fig


def context_scaling(result: dict) -> Figure:
    """Cost of the context modules against the positions n = H·W (a :func:`hamgrad.cost.compare_contexts` result):
    training and inference time and memory, log–log, one line per module, with the fitted slope drawn dashed over the
    fitted range and written in the legend.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    rows, slopes = result["rows"], result["slopes"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    panels = (("train_seconds", "training step time (s)"), ("infer_seconds", "inference time (s)"),
              ("train_bytes", "training peak memory (MB)"), ("infer_bytes", "inference peak memory (MB)"))
    first = rows[0]
    with _styled():
        fig, axes = _figure(2, 2, 10, 7.6, f"Context modules against n = H·W ({first['channels']} channels, "
                                           f"d = {first['d']}, r = {first['rank']}, {first['device']}; time: "
                                           f"{first.get('time_kind', 'wall')})")
        for ax, (key, name) in zip(axes.ravel(), panels):
            scale = 2.0 ** -20 if key.endswith("bytes") else 1.0
            for color, label in zip(_palette(len(labels)), labels):
                pts = sorted((r["n"], r[key] * scale) for r in rows if r["label"] == label)
                n, v = np.asarray(pts).T
                slope = slopes.get(label, {}).get(key)
                text = label if slope is None or not np.isfinite(slope) else f"{label} (slope {slope:.2f})"
                ax.plot(n, v, marker="o", ms=4, color=color, label=text)
                if slope is not None and np.isfinite(slope):
                    fitted = np.asarray(slopes[label]["n"], dtype=float)
                    keep = np.isin(n, fitted)
                    # the least-squares line passes through the mean of the fitted points in log-log
                    c = np.mean(np.log(v[keep])) - slope * np.mean(np.log(n[keep]))
                    ax.plot(fitted, np.exp(c) * fitted ** slope, color=color, ls="--", lw=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("positions n = H·W")
            ax.set_ylabel(name)
            ax.legend(fontsize=7)
    return fig


def context_tradeoff(result: dict) -> Figure:
    """Accuracy per unit of cost of the context ablation (a :func:`hamgrad.cost.ablation_costs` result): mean mIoU
    (best as an open marker) against the head block's training-step time and training memory, one point per module.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    rows = result["rows"]
    with _styled():
        fig, axes = _figure(1, 2, 10, 4.2, "Context ablation: validation mIoU against the context module's cost")
        colors = _palette(len(rows))
        for ax, key, name in ((axes[0, 0], "train_seconds", "context module: training-step time (ms)"),
                              (axes[0, 1], "train_bytes", "context module: training peak memory (MB)")):
            scale = 1e3 if key == "train_seconds" else 2.0 ** -20
            for color, r in zip(colors, rows):
                if r[key] <= 0:  # the no-context baseline costs nothing: a horizontal line
                    ax.axhline(100 * r["miou_mean"], color=color, ls=":", label=f"{r['label']} (no cost)")
                    continue
                x = r[key] * scale
                ax.scatter([x], [100 * r["miou_mean"]], color=color, s=40, label=r["label"])
                ax.scatter([x], [100 * r["miou_best"]], color=color, s=40, facecolor="none")
                ax.annotate(r["label"], (x, 100 * r["miou_mean"]), textcoords="offset points", xytext=(5, -10),
                            fontsize=7, color=color)
            ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel("validation mIoU (%), mean ● / best ○")
        axes[0, 0].legend(fontsize=7)
    return fig
