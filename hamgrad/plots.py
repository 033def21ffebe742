"""Figure functions: each takes a figure's results in plain-data form (the dicts :mod:`hamgrad.figures` builds and
saves as JSON) and returns a :class:`matplotlib.figure.Figure`. They compute nothing beyond what drawing needs.

Figures of your own solver: :func:`flow`, :func:`spectrum`, :func:`agreement` and :func:`ratio` take the result
objects of the analysis API (one or several; a ``dict`` maps labels to results) and draw the same figures, and
:func:`sweep` and :func:`probes` draw the ablation figure and the gradient probes of a sweep of your own:

```python
flows = {"ISTA": hg.gradient_flow(s, x, h0, steps=8)}
hamgrad.plots.flow(flows)                          # ‖∂hᵗ/∂h⁰‖₂ and ‖∂hᵗ/∂x‖₂ against t
hamgrad.plots.spectrum(eigs, norms=norms)          # eigs[t] = hg.eigvals(J_t), norms[t] = hg.spectral_norm(J_t)
hamgrad.plots.agreement([hg.compare_gradients(s, x, loss, steps=K) for K in (1, 2, 4, 8)])
hamgrad.plots.ratio(hg.accumulative_ratio(Z_in), hg.accumulative_ratio(Z_out), labels=("input", "output"))
hamgrad.plots.sweep("runs/mine")                   # the folder of `hamgrad ablate --out runs/mine`
hamgrad.plots.probes("runs/mine")                  # its gradient probes along training
```

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
- accumulative ratio: ``{"k", "before", "after", "before_std", "after_std", "p", "labels"}`` (``p`` and ``labels``
  optional);
- sweep (ablation): ``{"table": [{"solver", "grad", "block", "steps", "best", "mean", "n"}], "curves": [{"solver",
  "grad", "block", "steps", "seed", "step", "loss"}], "metric"}`` (:func:`hamgrad.experiments.summary.ablation_table`
  builds it from rows; a ham row without ``block``, from before the block was an axis, is drawn as V1);
- probes: ``{"runs": [{"solver", "grad", "block", "steps", "seed", "step", "encoder", "lower_bread", "rho", ...}]}``,
  the series of :func:`hamgrad.experiments.probes.probe_series`.

Jupyter shows a returned figure as a PNG when it is a cell's value, with no ``%matplotlib`` needed.

Style: one visual language, from :mod:`hamgrad.style`: colour and marker shape name the solver (and its
temperature), line style, marker fill and hatch the gradient mode, in every figure. Legends sit outside the axes
(they never cover a label), step axes have integer ticks, log scales are used where values span decades. Figures
are built without pyplot, so nothing global is touched and no window opens.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from . import style
from .grad import mode_label

__all__ = ["jacobian_spectrum", "vanishing_exploding", "gradient_agreement", "ablation", "ablation_steps",
           "accumulative_ratio", "feature_maps", "context_scaling", "context_tradeoff", "mark_quick"]

#: The index convention every figure's labels follow.
CONVENTION = "J_t = ∂F/∂h(hᵗ, x), B_t = ∂F/∂x(hᵗ, x) at the state before step t+1, t = 0…K"


class _InlineFigure(Figure):
    """A Figure that Jupyter shows as a PNG when it is a cell's value (no ``%matplotlib``, no pyplot)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def _figure(width: float, height: float, title: str) -> Figure:
    fig = _InlineFigure(figsize=(width, height), layout="constrained")
    fig.suptitle(title)
    return fig


def mark_quick(fig: Figure) -> Figure:
    """Mark a figure drawn at the quick (CI) size: a line under its title says it is a smoke test.

    Args:
        fig: a figure of this module.

    Returns:
        ``fig``, its title extended.
    """
    fig.suptitle(f"{fig.get_suptitle()}\n[quick size: a smoke test of the code, not the paper's measurement]".lstrip(),
                 fontsize="medium")
    return fig


def _log_if_spread(ax, values, axis: str = "y", decades: float = 1.5) -> None:
    v = np.asarray([x for x in np.ravel(values) if x is not None and np.isfinite(x) and x > 0])
    if v.size and np.log10(v.max() / v.min()) >= decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        if np.log10(v.max() / v.min()) < 2.5:
            _plain_log_ticks(ax, axis)


def _plain_log_ticks(ax, axis: str = "x") -> None:
    """Tick labels of a log axis that spans few decades as plain numbers (5, 10, 20 rather than 5×10⁰)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    target.set_major_locator(LogLocator(base=10))
    target.set_major_formatter(plain)
    target.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    target.set_minor_formatter(plain)


def _integer_ticks(ax, axis: str = "x") -> None:
    """Ticks at integers only (a step count)."""
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def _line(ax, x, y, st: dict, label=None, **kw):
    """One curve in a style of :func:`hamgrad.style.styles` (colour, marker, line style, marker fill)."""
    return ax.plot(x, y, color=st["color"], marker=st["marker"] or None, linestyle=st["linestyle"],
                   fillstyle=st["fillstyle"], markersize=st["markersize"], label=label, **kw)[0]


def _handle(st: dict, label: str, line: bool = True) -> Line2D:
    """A legend entry drawn in a style."""
    return Line2D([], [], color=st["color"], marker=st["marker"] or None, fillstyle=st["fillstyle"],
                  markersize=st["markersize"], linestyle=st["linestyle"] if line else "none", label=label)


def _end_labels(ax, lines, min_gap: float = 0.07) -> None:
    """Name each line at its right end (in its colour, joined by a thin leader), the names pushed apart vertically
    so that none covers another: lines of one colour are told apart without the legend."""
    ends = []
    for line in lines:
        xy = np.asarray(line.get_xydata(), dtype=float)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy):
            ends.append((line, xy[-1]))
    if not ends:
        return
    ax.autoscale_view()
    to_axes = ax.transAxes.inverted()
    ys = [to_axes.transform(ax.transData.transform(xy))[1] for _, xy in ends]
    order = np.argsort(ys)
    placed = np.empty(len(ys))
    floor = -np.inf
    for i in order:
        placed[i] = max(ys[i], floor + min_gap)
        floor = placed[i]
    placed -= max(0.0, placed.max() - 1.0)  # keep the top name inside the axes' height
    for (line, xy), y in zip(ends, placed):
        ax.annotate(line.get_label(), xy=tuple(xy), xytext=(1.03, y), textcoords="axes fraction", va="center",
                    fontsize="x-small", color=line.get_color(),
                    arrowprops=dict(arrowstyle="-", color=line.get_color(), lw=0.6, shrinkA=0, shrinkB=3))


def _legend(fig, handles, where: str = "lower center", ncol: int | None = None, title: str | None = None):
    """A figure legend outside every axes (constrained layout makes room), so it covers no label or data."""
    handles = [h for h in handles if h is not None]
    ncol = ncol or min(len(handles), 4)
    return fig.legend(handles=handles, loc=f"outside {where}", ncol=ncol, title=title, fontsize="small",
                      title_fontsize="small")


# ---------------------------------------------------------------------- figures of any solver, from result objects
__all__ += ["CONVENTION", "flow", "spectrum", "agreement", "ratio", "sweep", "probes"]


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


def _with_convention(fig: Figure, *lines: str) -> Figure:
    """The figure's title with the index convention (and any further lines) below it, one line each."""
    fig.set_figwidth(max(fig.get_figwidth(), 6.4))
    fig.suptitle("\n".join([fig.get_suptitle(), *lines]), fontsize="medium")
    return fig


def flow(results, labels=None) -> Figure:
    """The gradient-flow figure (:func:`vanishing_exploding`) of one or several :func:`hamgrad.gradient_flow`
    results.

    Args:
        results: a :class:`hamgrad.analysis.GradientFlow` (or its ``to_dict()``), a list of them, a dict label →
            result, or the figure's plain data ``{"runs": [...]}`` (drawn as it is).
        labels: a label per result (a str for one); default ``run 1``, ``run 2``, ….

    Returns:
        A :class:`matplotlib.figure.Figure`, its title stating what is drawn (no claim about the data) and the
        index convention.

    Raises:
        TypeError: for results that are not gradient flows.
        ValueError: for labels that do not match the results.
    """
    if isinstance(results, dict) and "runs" in results:
        return vanishing_exploding(results)
    is_one = lambda r: isinstance(_plain(r), dict) and "dh_dx" in _plain(r)  # noqa: E731
    runs = [{**_none_if_nan(_plain(r)), "label": label} for label, r in _labelled(results, labels, is_one, "results")]
    return _with_convention(vanishing_exploding({"runs": runs}), CONVENTION,
                            r"$\partial h^t/\partial h^0 = J_{t-1}\cdots J_0$,   "
                            r"$\partial h^t/\partial x = \Sigma_{s<t}\, J_{t-1}\cdots J_{s+1} B_s$")


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
            the ‖J_t‖₂ panel empty.
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
        label: what was compared, shown in the title (and, when it names a solver of :mod:`hamgrad.style`, its
            colour).

    Returns:
        A :class:`matplotlib.figure.Figure`; a reference whose backward solve did not converge is marked in the title
        ("NOT CONVERGED", with its residual), as every cosine against it is ``nan``.

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
    unconverged = [c["reference"] for c in cmps if c["reference"].get("converged") is False]
    note = "" if not unconverged else (
        f", NOT CONVERGED: its backward residual {max(r['backward_residual'] for r in unconverged):.3g} > tol, "
        "its gradient is NaN")
    rows = [row for c in cmps for row in c["modes"]]
    ks = sorted({row["steps"] for row in rows})
    modes = {}
    for row in rows:
        modes.setdefault(row["mode"], {key: [math.nan] * len(ks) for key in ("cosine", "norm_ratio", "seconds",
                                                                            "peak_mb")})
        i, m = ks.index(row["steps"]), modes[row["mode"]]
        m["cosine"][i], m["norm_ratio"][i] = row["cosine_x"], row["norm_ratio_x"]
        m["seconds"][i], m["peak_mb"][i] = row["seconds"], row["peak_bytes"] / 2 ** 20
    return gradient_agreement({"K": ks, "modes": modes, "reference": f"{ref_mode} (K = {ref_steps}{note})",
                               "label": label, "memory_kind": cmps[0]["reference"]["memory_kind"]})


def ratio(before, after=None, *, labels=("before", "after"), p: float | None = None) -> Figure:
    """The accumulative-ratio figure (:func:`accumulative_ratio`) from :func:`hamgrad.accumulative_ratio` tensors of
    the features before and after a layer: mean (and standard deviation over the leading dimensions, when batched).

    Args:
        before: a tensor or array ``(..., k)``, the ratio of the features going in; or the figure's plain data
            (e.g. :func:`hamgrad.figures.block_accumulative_ratio`), drawn as it is, with its own ``p``.
        after: the same for the features coming out, of the same shape (``None`` with plain data).
        labels: the legend's names of the two curves.
        p: the power the ratios were computed with, shown on the axis; ``None`` takes the plain data's ``p`` (a
            tensor does not carry it: the axis then names no p).

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: for shapes that differ or are empty, or ``labels`` that are not two names.
    """
    if isinstance(labels, str) or len(labels) != 2:
        raise ValueError(f"labels must be two names (before, after), got {labels!r}")
    if isinstance(before, dict):
        result = dict(before)
        result.setdefault("labels", list(labels))
        if p is not None:
            result["p"] = p
        return accumulative_ratio(result)
    if after is None:
        raise ValueError("after is missing: pass the ratios of the features before and after the layer")
    arrays = [np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float) for v in (before, after)]
    if arrays[0].shape != arrays[1].shape or arrays[0].ndim < 1 or arrays[0].shape[-1] < 1:
        raise ValueError(f"before and after must be accumulative ratios of one shape (..., k), got shapes "
                         f"{arrays[0].shape} and {arrays[1].shape}")
    flat = [a.reshape(-1, a.shape[-1]) for a in arrays]
    result = {"k": list(range(1, flat[0].shape[1] + 1)), "p": p, "labels": [str(label) for label in labels]}
    for key, a in zip(("before", "after"), flat):
        result[key] = a.mean(0).tolist()
        result[key + "_std"] = a.std(0).tolist() if a.shape[0] > 1 else None
    return accumulative_ratio(result)


def _sweep_figure_data(source, key: str, from_rows) -> dict:
    """A sweep figure's plain data: ``source`` itself when it is that data (a dict holding ``key``), else
    ``from_rows`` (the :mod:`hamgrad.experiments` function that builds it) of the rows of a sweep folder or of the
    rows given."""
    if isinstance(source, dict) and key in source:
        return source
    if isinstance(source, (str, os.PathLike)):
        from .experiments import load_results, read_config

        data = from_rows(load_results(source), f"the sweep folder {str(source)!r}")
        return {"config": read_config(source).to_dict(), **data}  # (the config names the task)
    if isinstance(source, (list, tuple)):
        return from_rows(source)
    raise TypeError(f"source must be a sweep folder, its rows or the figure's plain data, got {type(source).__name__}")


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
    from .experiments.summary import ablation_table

    source = _sweep_figure_data(source, "table", ablation_table)
    ks = {row.get("steps") for row in source["table"] if row["grad"] is not None}
    return (ablation_steps if len(ks) > 1 else ablation)(source)


def _seed_band(runs: list, value) -> tuple:
    """``(steps, mean, low, high)`` over the runs (seeds) of ``value(run)``, a list per probed step: each step's
    mean, minimum and maximum over the runs that probed it (``None`` values left out; ``nan`` where none is left)."""
    by_step: dict = {}
    for run in runs:
        for step, v in zip(run["step"], value(run)):
            by_step.setdefault(step, []).append(np.nan if v is None else v)
    steps = sorted(by_step)
    stats = [(np.nanmean(v), np.nanmin(v), np.nanmax(v)) if not np.all(np.isnan(v)) else (np.nan,) * 3
             for v in (np.asarray(by_step[t], dtype=float) for t in steps)]
    return (np.asarray(steps), *np.asarray(stats, dtype=float).reshape(-1, 3).T)


#: The rows of the probes figure: (parameter group or ``None`` for ρ, quantity, y label).
_PROBE_ROWS = (
    ("encoder", "cosine", "encoder\n" + r"$\cos(g_{\mathrm{mode}},\, g_{\mathrm{BPTT}})$"),
    ("lower_bread", "cosine", "lower bread\n" + r"$\cos(g_{\mathrm{mode}},\, g_{\mathrm{BPTT}})$"),
    ("encoder", "norm_ratio", "encoder\n" + r"$\Vert g_{\mathrm{mode}}\Vert\, /\, \Vert g_{\mathrm{BPTT}}\Vert$"),
    ("lower_bread", "norm_ratio",
     "lower bread\n" + r"$\Vert g_{\mathrm{mode}}\Vert\, /\, \Vert g_{\mathrm{BPTT}}\Vert$"),
    (None, "rho", r"$\rho(J_K)$" + "\nlargest over the batch"),
)


def probes(source) -> Figure:
    """The gradient-probe figure of a sweep: along training, the cosine and the norm ratio ``‖g_mode‖ / ‖g_bptt‖``
    of each gradient mode's gradient to BPTT's on the same batch from the same initial state, for the encoder and
    for the lower bread (a row each), and ρ(J_K), the spectral radius of the ham's step Jacobian at the last iterate
    (largest over the batch). One column per ham (and block and K when they are sweep axes), in the ham's colour;
    line style and marker fill name the gradient mode (:mod:`hamgrad.style`); mean over seeds with their range
    shaded. BPTT's own runs are 1 in the first four rows by definition and drawn only in the last.

    Args:
        source: a sweep folder written by ``hamgrad ablate`` or :func:`hamgrad.experiments.run_ablation` (a path;
            read as it is, nothing is trained), its rows (:func:`hamgrad.experiments.load_results`), or the figure's
            plain data (``{"runs": [...]}``, :func:`hamgrad.experiments.probes.probe_series`; drawn as it is).

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: when the sweep has no finished run with probes, holds a damaged file (naming it), or rows are
            not sweep rows.
        TypeError: for a source of another type.
    """
    from .experiments.probes import probe_series

    runs = _sweep_figure_data(source, "runs", probe_series)["runs"]

    def column(r):  # one column per ham, block and K
        return r["solver"], r.get("block") or "v1", r["steps"]

    columns = list(dict.fromkeys(column(r) for r in runs))
    grads = list(dict.fromkeys(r["grad"] for r in runs))
    several_blocks, several_k = (len({c[i] for c in columns}) > 1 for i in (1, 2))
    st = style.styles(c[0] for c in columns)
    banded = any(sum(column(r) == c and r["grad"] == g for r in runs) > 1 for c in columns for g in grads)
    with style.theme():
        fig = _figure(max(3.4 * len(columns), 7.0), 10.5,
                      f"Gradient probes during training (HamNet, Hamburger {_blocks_title([c[:2] for c in columns])})\n"
                      f"each mode's gradient against BPTT's on the training batch, from the same initial state")
        axes = np.asarray(fig.subplots(len(_PROBE_ROWS), len(columns), sharex="col", squeeze=False))
        for j, col in enumerate(columns):
            name = " ".join([col[0].upper()] + [col[1].upper()] * several_blocks + [f"K = {col[2]}"] * several_k)
            axes[0, j].set_title(name)
            for (group, key, _), ax in zip(_PROBE_ROWS, axes[:, j]):
                values = []
                for g in grads:
                    runs_g = [r for r in runs if column(r) == col and r["grad"] == g]
                    if not runs_g or (group is not None and g == "bptt"):
                        continue
                    steps, mean, low, high = _seed_band(
                        runs_g, (lambda r: r["rho"]) if group is None else (lambda r: r[group][key]))
                    s = {**st[col[0]], **style.mode_style(g)}
                    _line(ax, steps, mean, s, label=mode_label(g))
                    if len(runs_g) > 1:
                        ax.fill_between(steps, low, high, color=s["color"], alpha=0.15, lw=0)
                    values += [v for v in (mean, low, high) for v in v]
                ax.axhline(1.0, color=style.REFERENCE_COLOR, lw=0.8, ls=":")
                if key != "cosine":
                    _log_if_spread(ax, values, decades=1.0)
                _integer_ticks(ax)
            axes[-1, j].set_xlabel("training step")
        for (_, _, label), ax in zip(_PROBE_ROWS, axes[:, 0]):
            ax.set_ylabel(label)
        handles = [Line2D([], [], color=style.REFERENCE_COLOR, marker="o", label=mode_label(g), **{
            k: v for k, v in style.mode_style(g).items() if k != "hatch"}) for g in grads]
        if banded:
            handles.append(Patch(facecolor=style.REFERENCE_COLOR, alpha=0.15, label="range over seeds"))
        handles.append(Line2D([], [], color=style.REFERENCE_COLOR, lw=0.8, ls=":", label="1 (as BPTT; ρ = 1)"))
        _legend(fig, handles, ncol=min(len(handles), 5),
                title="mean over seeds, per gradient mode (colour: the ham)")
    return fig


# ---------------------------------------------------------------------- the paper's figures, from plain data
def jacobian_spectrum(result: dict) -> Figure:
    """Figure 1: eigenvalues of J_t = ∂F/∂h (hᵗ, x) in the complex plane (unit circle drawn; colour = step t, with
    a colour bar), and ρ(J_t) and ‖J_t‖₂ against t, one line per solver configuration.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    runs = result["runs"]
    n = len(runs)
    st = style.styles(r["label"] for r in runs)
    t_min = min(min(r["t"]) for r in runs)
    t_max = max(max(r["t"]) for r in runs)
    steps = np.arange(t_min, t_max + 1)
    cmap = ListedColormap([tuple(c) for c in _viridis(len(steps))])
    norm = BoundaryNorm(np.arange(t_min - 0.5, t_max + 1), cmap.N)
    with style.theme():
        fig = _figure(max(3.3 * n, 7.0), 7.0, "Jacobian scale and spectrum of one solver step")
        gs = fig.add_gridspec(2, 2 * n)
        theta = np.linspace(0, 2 * np.pi, 256)
        circles = []
        for j, run in enumerate(runs):
            ax = fig.add_subplot(gs[0, 2 * j: 2 * j + 2])
            circles.append(ax)
            ax.plot(np.cos(theta), np.sin(theta), color=style.REFERENCE_COLOR, lw=1, ls=(0, (1, 2)))
            pts = [np.asarray(ev, dtype=float).reshape(-1, 2) for ev in run["eigvals"]]
            # the Jacobian at the random start can dwarf the rest: scale the axes to the later steps
            later = np.concatenate(pts[1:] or pts)
            lim = 1.15 * max(1.0, float(np.abs(later[:, 0] + 1j * later[:, 1]).max()))
            clipped = 0
            for t, ev in zip(run["t"], pts):
                inside = np.abs(ev[:, 0] + 1j * ev[:, 1]) <= lim
                clipped += int((~inside).sum())
                ax.scatter(ev[inside, 0], ev[inside, 1], s=18, color=cmap(norm(t)), edgecolor="none",
                           marker=st[run["label"]]["marker"] or "o")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_title(run["label"])
            ax.set_xlabel("Re λ")
            ax.set_ylabel("Im λ" if j == 0 else "")
            if clipped:
                ax.text(0.03, 0.97, f"{clipped} eigenvalue(s) off-scale\n(|λ| > {lim:.3g}; see ρ below)",
                        transform=ax.transAxes, fontsize="x-small", va="top")
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=circles, shrink=0.85, pad=0.01)
        bar.set_label(r"step $t$ of $J_t$ (at $h^t$)")
        bar.set_ticks(steps if len(steps) <= 12 else MaxNLocator(integer=True))
        ax_r = fig.add_subplot(gs[1, :n])
        ax_s = fig.add_subplot(gs[1, n:])
        for run in runs:
            _line(ax_r, run["t"], run["rho"], st[run["label"]], label=run["label"])
            _line(ax_s, run["t"], run["sigma"], st[run["label"]], label=run["label"])
        for ax, name in ((ax_r, r"spectral radius $\rho(J_t)$"), (ax_s, r"spectral norm $\Vert J_t\Vert_2$")):
            ax.axhline(1.0, color=style.REFERENCE_COLOR, lw=1, ls=(0, (1, 2)))
            ax.set_xlabel(r"step $t$ ($J_t = \partial F/\partial h$ at $h^t$)")
            ax.set_ylabel(name)
            _integer_ticks(ax)
            _log_if_spread(ax, [v for r in runs for v in (r["rho"] + r["sigma"])])
        handles = [_handle(st[r["label"]], r["label"]) for r in runs]
        handles.append(Line2D([], [], color=style.REFERENCE_COLOR, lw=1, ls=(0, (1, 2)), label="1 (unit circle)"))
        _legend(fig, handles, ncol=min(len(handles), 6))
    return fig


def _viridis(n: int) -> np.ndarray:
    """n colours of viridis from dark to light (the step colour scale)."""
    from matplotlib import colormaps

    return colormaps["viridis"](np.linspace(0.0, 0.92, max(n, 1)))


def vanishing_exploding(result: dict) -> Figure:
    """Figure 2: ‖∂hᵗ/∂h⁰‖₂ and ‖∂hᵗ/∂x‖₂ against t on log scales; in the second panel each run's
    Proposition-2 limit ‖(I − J_K)⁻¹B_K‖ (a thin line, where ρ(J_K) < 1) and Proposition-3 bound L_x/(1 − L_h)
    (a dotted line, where L_h = max_(t<K) ‖J_t‖ < 1), the quantities that limit and bound ‖∂hᵗ/∂x‖ itself.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    runs = result["runs"]
    st = style.styles(r["label"] for r in runs)
    with style.theme():
        fig = _figure(10, 4.8, r"$\Vert\partial h^t/\partial h^0\Vert_2$ and $\Vert\partial h^t/\partial x\Vert_2$"
                               " through the unrolled solver")
        ax0, ax1 = fig.subplots(1, 2)
        for run in runs:
            s = st[run["label"]]
            _line(ax0, run["t"], run["dh_dh0"], s, label=run["label"])
            _line(ax1, run["t"], run["dh_dx"], s, label=run["label"])
            if run.get("state_limit") is not None:
                ax1.axhline(run["state_limit"], color=s["color"], lw=0.9, alpha=0.8)
            if run.get("state_bound") is not None:
                ax1.axhline(run["state_bound"], color=s["color"], lw=1.1, ls=(0, (1, 1.5)))
        for ax in (ax0, ax1):
            ax.set_yscale("log")
            ax.set_xlabel("solver step t")
            _integer_ticks(ax)
        ax0.set_ylabel(r"$\Vert\partial h^t/\partial h^0\Vert_2 = \Vert J_{t-1}\cdots J_0\Vert_2$")
        ax1.set_ylabel(r"$\Vert\partial h^t/\partial x\Vert_2$")
        handles = [_handle(st[r["label"]], r["label"]) for r in runs]
        handles += [Line2D([], [], color=style.REFERENCE_COLOR, lw=0.9,
                           label=r"limit $\Vert(I - J_K)^{-1}B_K\Vert$ (Prop. 2, where $\rho(J_K) < 1$)"),
                    Line2D([], [], color=style.REFERENCE_COLOR, lw=1.1, ls=(0, (1, 1.5)),
                           label=r"bound $L_x/(1 - L_h)$, $L$ over $t < K$ (Prop. 3, where $L_h < 1$)")]
        _legend(fig, handles, ncol=3 if len(handles) > 4 else 2)
    return fig


def gradient_agreement(result: dict) -> Figure:
    """Figure 3: each mode's ∂L/∂x against the reference: 1 − cosine (log scale, so that 0.992 and 0.997 are apart)
    and the relative norm error ‖∂L/∂x‖/‖reference‖ − 1 (symmetric log scale), and the wall time and memory of
    forward plus backward, against K. One colour (the solver's), one line style and marker fill per mode.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    ks, modes = result["K"], result["modes"]
    base = style.styles([result.get("label", "")])[result.get("label", "")]
    with style.theme():
        fig = _figure(10, 7.4, f"Gradient modes against the {result['reference']} gradient\n({result['label']})")
        axes = fig.subplots(2, 2)
        floor = np.finfo(float).eps
        floored = False
        # larger (filled) markers first: modes that coincide at a K show as concentric markers
        for mode in sorted(modes, key=lambda m: -style.mode_style(m)["markersize"]):
            vals = modes[mode]
            s = {**base, **style.mode_style(mode)}
            one_minus = 1.0 - np.asarray(vals["cosine"], dtype=float)
            floored |= bool(np.any(one_minus < floor))
            name = mode_label(mode)
            _line(axes[0, 0], ks, np.maximum(one_minus, floor), s, label=name)
            _line(axes[0, 1], ks, np.asarray(vals["norm_ratio"], dtype=float) - 1.0, s, label=name)
            _line(axes[1, 0], ks, vals["seconds"], s, label=name)
            _line(axes[1, 1], ks, vals["peak_mb"], s, label=name)
        axes[0, 0].set_yscale("log")
        axes[0, 0].set_ylabel("1 − cosine similarity to the reference"
                              + (" (floored at 2.2e-16)" if floored else ""))
        ratios = [abs(v - 1.0) for vals in modes.values() for v in vals["norm_ratio"] if np.isfinite(v) and v != 1.0]
        axes[0, 1].set_yscale("symlog", linthresh=max(min(ratios, default=1e-3), 1e-12) / 2)
        axes[0, 1].axhline(0.0, color=style.REFERENCE_COLOR, lw=1, ls=(0, (1, 2)))
        axes[0, 1].set_ylabel("‖∂L/∂x‖ / ‖reference‖ − 1 (symlog)")
        axes[1, 0].set_ylabel("forward + backward time (s)")
        axes[1, 1].set_ylabel(f"memory (MB, {result.get('memory_kind', '')})")
        for ax, key in zip(axes.ravel()[2:], ("seconds", "peak_mb")):
            _log_if_spread(ax, [v for vals in modes.values() for v in vals[key]], decades=1.0)
        for ax in axes.ravel():
            ax.set_xlabel("solver steps K")
            _integer_ticks(ax)
        for ax in axes[0]:
            _end_labels(ax, ax.get_lines()[:len(modes)])
        _legend(fig, [_handle({**base, **style.mode_style(m)}, mode_label(m)) for m in modes],
                ncol=len(modes), title=f"gradient mode ({result['label']})")
    return fig


def _tint(color, amount: float = 0.75):
    """``color`` mixed with white (a light fill behind a hatch)."""
    return tuple(1 - amount * (1 - np.asarray(to_rgb(color))))


def _hams(table: list) -> tuple:
    """The ``(solver, block)`` pairs of a figure-4 table's ham rows, and their axis label: the solver, and the block
    too when the table has several. A row without ``block`` (a figure drawn before the block was an axis) is V1's."""
    hams = list(dict.fromkeys((r["solver"], r.get("block") or "v1") for r in table if r["grad"] is not None))
    several = len({b for _, b in hams}) > 1
    return hams, lambda ham: f"{ham[0].upper()} {ham[1].upper()}" if several else ham[0].upper()


def _blocks_title(hams: list) -> str:
    return "/".join(sorted({b.upper() for _, b in hams}))


def _task_title(result: dict) -> str:
    """The sweep's task as a title names it (from the figure data's ``config``; rows alone: the global task), and the
    run whose encoder the sweep's runs start from, if any."""
    config = result.get("config") or {}
    task = (f"on the regional task (R = {config.get('regions')})" if config.get("task") == "regional"
            else "on the global-context shapes")
    source = config.get("encoder_from")
    if source:  # a sweep whose runs start from another run's encoder
        sweep, run = os.path.split(source)
        task += f", encoder of {os.path.basename(sweep)}/{run}{' (frozen)' if config.get('freeze_encoder') else ''}"
    return task


def _ham_of(row: dict) -> tuple:
    return row["solver"], row.get("block") or "v1"


def ablation(result: dict) -> Figure:
    """Figure 4: the Table-1 analogue (mean mIoU per solver, Hamburger block and gradient mode as bars, colour =
    solver, hatch = mode, the best run marked, the no-ham baseline as a line) and the training-loss curves of every
    run, one panel per solver and block (line style = mode). Modes are named as the tables name them, the paper's
    one-step (``one-step-coef``) marked "(paper)".

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    table, curves = result["table"], result["curves"]
    grads = list(dict.fromkeys(row["grad"] for row in table if row["grad"] is not None))
    hams, name = _hams(table)
    st = style.styles(s for s, _ in hams)
    baseline = [r for r in table if r["solver"] == "none"]
    with style.theme():
        fig = _figure(max(11, 2.6 * len(hams)), 7.6, f"Gradient modes in HamNet (Hamburger {_blocks_title(hams)}) "
                                                     f"{_task_title(result)}")
        gs = fig.add_gridspec(2, max(len(hams), 1), height_ratios=(1.15, 1))
        ax0 = fig.add_subplot(gs[0, :])
        width = 0.8 / max(len(grads), 1)
        colors = [st[s]["color"] for s, _ in hams]
        for i, g in enumerate(grads):
            rows = {_ham_of(r): r for r in table if r["grad"] == g}
            xs = [j + (i - (len(grads) - 1) / 2) * width for j in range(len(hams))]
            means = [rows[h]["mean"] if h in rows else np.nan for h in hams]
            best = [rows[h]["best"] if h in rows else np.nan for h in hams]
            hatch = style.mode_style(g)["hatch"]
            ax0.bar(xs, means, width=width * 0.92, color=[_tint(c) if hatch else c for c in colors],
                    edgecolor=colors, hatch=hatch, linewidth=1.2, label=f"{mode_label(g)} (mean)")
            ax0.scatter(xs, best, marker="_", s=260, linewidths=2, color="k", zorder=3)
        for r in baseline:
            ax0.axhline(r["mean"], color=style.SOLVER_COLORS["none"], lw=1.2, ls=(0, (1, 1.5)), label="no ham (mean)")
        ax0.set_xticks(range(len(hams)), [name(h) for h in hams])
        ax0.set_ylabel(f"val {result.get('metric', 'mIoU')} (%)")
        loss_axes = []
        for j, ham in enumerate(hams):
            ax = fig.add_subplot(gs[1, j], sharey=loss_axes[0] if loss_axes else None)
            loss_axes.append(ax)
            for c in curves:
                if c["grad"] is not None and _ham_of(c) == ham:
                    ax.plot(c["step"], c["loss"], color=st[ham[0]]["color"], lw=1.2, alpha=0.9,
                            ls=style.mode_style(c["grad"])["linestyle"])
                elif c["solver"] == "none":
                    ax.plot(c["step"], c["loss"], color=style.SOLVER_COLORS["none"], lw=1, ls=(0, (1, 1.5)))
            ax.set_title(name(ham))
            ax.set_xlabel("training step")
            _integer_ticks(ax)
        if loss_axes:
            loss_axes[0].set_ylabel("training loss (cross-entropy)")
            _log_if_spread(loss_axes[0], [v for c in curves for v in c["loss"]], decades=1.0)
        handles = []
        for g in grads:
            ms = style.mode_style(g)
            handles.append(Patch(facecolor=_tint("0.45") if ms["hatch"] else "0.45", edgecolor="0.45",
                                 hatch=ms["hatch"], label=f"{mode_label(g)}: mean (bar)"))
            handles.append(Line2D([], [], color="0.45", ls=ms["linestyle"], label=f"{mode_label(g)}: training loss"))
        handles.append(Line2D([], [], color="k", marker="_", markersize=14, mew=2, ls="none", label="best run"))
        if baseline:
            handles.append(Line2D([], [], color="k", lw=1.2, ls=(0, (1, 1.5)), label="no ham (mean; loss)"))
        _legend(fig, handles, ncol=3)
    return fig


def ablation_steps(result: dict) -> Figure:
    """Figure 4 when the sweep's solver steps K is an axis: validation mIoU against K, one panel per solver and
    Hamburger block, one line per gradient mode (mean over seeds, the best marked; the paper's one-step marked
    "(paper)"), the no-ham baseline as a dotted line.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    table = result["table"]
    grads = list(dict.fromkeys(row["grad"] for row in table if row["grad"] is not None))
    hams, name = _hams(table)
    ks = sorted({row["steps"] for row in table if row["grad"] is not None})
    st = style.styles(s for s, _ in hams)
    with style.theme():
        fig = _figure(max(3.6 * len(hams), 6.4), 4.4, f"Gradient modes against the solver steps K (HamNet, Hamburger "
                                                      f"{_blocks_title(hams)}, {_task_title(result)})")
        axes = np.atleast_1d(fig.subplots(1, len(hams), sharey=True))
        for ax, ham in zip(axes, hams):
            for g in grads:
                rows = sorted((r for r in table if r["grad"] == g and _ham_of(r) == ham), key=lambda r: r["steps"])
                s = {**st[ham[0]], **style.mode_style(g)}
                x = [r["steps"] for r in rows]
                _line(ax, x, [r["mean"] for r in rows], s, label=f"{mode_label(g)} (mean)")
                ax.scatter(x, [r["best"] for r in rows], color=s["color"], marker="_", s=150, zorder=3)
            for r in table:
                if r["solver"] == "none":
                    ax.axhline(r["mean"], color=style.SOLVER_COLORS["none"], ls=(0, (1, 1.5)), lw=1.2,
                               label="no ham (mean)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_title(name(ham))
            ax.set_xlabel("solver steps K in training")
        axes[0].set_ylabel(f"val {result.get('metric', 'mIoU')} (%)")
        handles = [Line2D([], [], color=style.REFERENCE_COLOR, marker="o", label=mode_label(m), **{
            k: v for k, v in style.mode_style(m).items() if k != "hatch"}) for m in grads]
        handles.append(Line2D([], [], color=style.REFERENCE_COLOR, marker="_", markersize=12, ls="none",
                              label="best run"))
        if any(r["solver"] == "none" for r in table):
            handles.append(Line2D([], [], color="k", lw=1.2, ls=(0, (1, 1.5)), label="no ham (mean)"))
        _legend(fig, handles, ncol=min(len(handles), 5), title="mean over seeds, per gradient mode")
    return fig


_MODULE_FAMILIES = {"Hamburger": None, "SelfAttention": "sa", "DoubleAttention": "a2", "GlobalPool": "gap"}


def accumulative_ratio(result: dict) -> Figure:
    """Figure 5: accumulative ratio ``Σ_{i≤k} σ_i^p / Σ_i σ_i^p`` of the features before (grey) and after (the
    module's colour) the Hamburger module, or the context module ``result["module"]`` names; ``result["labels"]``
    renames the two curves.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    module = result.get("module", "Hamburger")
    names = result.get("labels") or [f"before {module}", f"after {module}"]
    who = result.get("run_id") or _MODULE_FAMILIES.get(module) or names[1]
    after_style = style.styles([who])[who]
    p = result.get("p")
    with style.theme():
        fig = _figure(6.4, 4.4, "Accumulative ratio of the features' singular values")
        ax = fig.subplots()
        for key, color, label, ls in (("before", style.REFERENCE_COLOR, names[0], "-"),
                                      ("after", after_style["color"], names[1], "-")):
            mean = np.asarray(result[key], dtype=float)
            ax.plot(result["k"], mean, color=color, ls=ls, lw=1.8, label=label)
            if result.get(key + "_std") is not None:
                std = np.asarray(result[key + "_std"], dtype=float)
                ax.fill_between(result["k"], mean - std, np.minimum(mean + std, 1), color=color, alpha=0.2, lw=0)
        ax.set_xlabel("number of singular values k")
        ax.set_ylabel("accumulative ratio" + ("" if p is None else f" (p = {p:g})"))
        ax.set_ylim(0, 1.02)
        _integer_ticks(ax)
        ax.legend(loc="lower right", title="mean ± std over images" if result.get("after_std") else None,
                  title_fontsize="small")
    return fig


def feature_maps(result: dict) -> Figure:
    """Figure 6: the input image and ground truth, the same channels before and after the Hamburger module, and the
    codes C_j of a few bases as spatial maps (none for a context module without codes; ``result["module"]`` names
    the module, Hamburger by default).

    Normalisation, stated in the figure: each channel's before and after maps share one linear colour scale (the
    range of the two together), with its colour bar, so that what the block removes or adds is visible; the code
    maps share one linear scale (the range of all of them), with one colour bar.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    channels, codes = result["channels"], result["codes"]
    ncols = max(len(channels), len(codes), 2)
    module = result.get("module", "Hamburger")
    with style.theme():
        fig = _figure(2.3 * ncols + 0.8, 9.6, f"Feature maps before and after {module}")
        _with_convention(fig, "colour scales (linear): each channel's before and after share one, their joint range; "
                              "the code maps share one")
        axes = fig.subplots(4, ncols, squeeze=False)
        for ax in axes.ravel():
            ax.set_axis_off()
        axes[0, 0].imshow(np.asarray(result["image"]))
        axes[0, 0].set_title("input")
        label = np.asarray(result["label"])
        classes = ["0.15"] + [style.CATEGORY_COLORS[i % len(style.CATEGORY_COLORS)] for i in range(int(label.max()))]
        axes[0, 1].imshow(label, cmap=ListedColormap(classes), vmin=-0.5, vmax=len(classes) - 0.5,
                          interpolation="nearest")
        axes[0, 1].set_title("ground truth")
        for j, c in enumerate(channels):
            pair = [np.asarray(result["before"][j]), np.asarray(result["after"][j])]
            norm = Normalize(min(a.min() for a in pair), max(a.max() for a in pair))
            for row, key, data in ((1, "before", pair[0]), (2, "after", pair[1])):
                im = axes[row, j].imshow(data, cmap="magma", norm=norm)
                axes[row, j].set_title(f"channel {c}, {key}", fontsize="small")
            bar = fig.colorbar(im, ax=[axes[1, j], axes[2, j]], shrink=0.6, aspect=25, pad=0.02)
            bar.ax.tick_params(labelsize="x-small")
        if codes:
            maps = [np.asarray(m) for m in codes]
            norm = Normalize(min(m.min() for m in maps), max(m.max() for m in maps))
            for j, (b, m) in enumerate(zip(result["bases"], maps)):
                im = axes[3, j].imshow(m, cmap="viridis", norm=norm)
                axes[3, j].set_title(f"code of basis {b}", fontsize="small")
            bar = fig.colorbar(im, ax=list(axes[3, :len(maps)]), shrink=0.8, aspect=25, pad=0.02)
            bar.set_label("code value", fontsize="small")
            bar.ax.tick_params(labelsize="x-small")
    return fig


def context_scaling(result: dict) -> Figure:
    """Cost of the context modules against the positions n = H·W (a :func:`hamgrad.cost.compare_contexts` result):
    training and inference time and memory, log–log, one line per module, with the fitted power law drawn as a wide
    light band over the fitted range and its slope written in the legend.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    rows, slopes = result["rows"], result["slopes"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    st = style.styles(labels)
    panels = (("train_seconds", "training step time (s)"), ("infer_seconds", "inference time (s)"),
              ("train_bytes", "training peak memory (MB)"), ("infer_bytes", "inference peak memory (MB)"))
    first = rows[0]
    with style.theme():
        fig = _figure(10.5, 8.4, f"Context modules against n = H·W ({first['channels']} channels, "
                                 f"d = {first['d']}, r = {first['rank']}, {first['device']}; time: "
                                 f"{first.get('time_kind', 'wall')})")
        axes = fig.subplots(2, 2)
        for ax, (key, name) in zip(axes.ravel(), panels):
            scale = 2.0 ** -20 if key.endswith("bytes") else 1.0
            for label in labels:
                pts = sorted((r["n"], r[key] * scale) for r in rows if r["label"] == label)
                n, v = np.asarray(pts).T
                slope = slopes.get(label, {}).get(key)
                fitted = slope is not None and np.isfinite(slope)
                _line(ax, n, v, st[label], label=f"{label} (slope {slope:.2f})" if fitted else label)
                if fitted:
                    grid = np.asarray(slopes[label]["n"], dtype=float)
                    keep = np.isin(n, grid)
                    # the least-squares line passes through the mean of the fitted points in log-log
                    c = np.mean(np.log(v[keep])) - slope * np.mean(np.log(n[keep]))
                    ax.plot(grid, np.exp(c) * grid ** slope, color=st[label]["color"], lw=5, alpha=0.18,
                            solid_capstyle="round", zorder=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("positions n = H·W")
            ax.set_ylabel(name)
            ax.legend(fontsize="x-small", loc="upper left", title="module (fitted slope)", title_fontsize="x-small")
    return fig


def context_tradeoff(result: dict) -> Figure:
    """Accuracy per unit of cost of the context ablation (a :func:`hamgrad.cost.ablation_costs` result): mean mIoU
    (best as a dash) against the head block's training-step time and training memory, one marker per module, the
    no-context baseline as a dotted line; log cost axes with plain-number ticks.

    Returns:
        A matplotlib ``Figure`` (it displays itself in Jupyter).
    """
    rows = result["rows"]
    st = style.styles(r["label"] for r in rows)
    with style.theme():
        task = result.get("task", "").split(" (")[0]  # "global" / "regional" (older results name none)
        fig = _figure(10.5, 4.8, f"Context ablation{f' ({task} task)' if task else ''}: validation mIoU against "
                                 f"the context module's cost")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, key, name in ((axes[0], "train_seconds", "context module: training-step time (ms)"),
                              (axes[1], "train_bytes", "context module: training peak memory (MB)")):
            scale = 1e3 if key == "train_seconds" else 2.0 ** -20
            for r in rows:
                s = st[r["label"]]
                if r[key] <= 0:  # the no-context baseline costs nothing: a horizontal line
                    ax.axhline(100 * r["miou_mean"], color=s["color"], lw=1.2, ls=(0, (1, 1.5)))
                    continue
                x = r[key] * scale
                _line(ax, [x], [100 * r["miou_mean"]], {**s, "markersize": 8})
                ax.plot([x], [100 * r["miou_best"]], color=s["color"], marker="_", markersize=12, mew=2)
            ax.set_xscale("log")
            _plain_log_ticks(ax, "x")
            ax.set_xlabel(name)
        axes[0].set_ylabel("validation mIoU (%): mean (marker), best (dash)")
        handles = []
        for r in rows:
            s = {**st[r["label"]], "markersize": 8}
            handles.append(Line2D([], [], color=s["color"], lw=1.2, ls=(0, (1, 1.5)), label=f"{r['label']} (no cost)")
                           if r["train_seconds"] <= 0 else _handle(s, r["label"], line=False))
        _legend(fig, handles, where="right center", ncol=1, title="context module")
    return fig
