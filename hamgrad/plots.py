"""Figure functions: each takes a figure's results in plain-data form (the dicts :mod:`hamgrad.paper` builds and saves
as JSON) and returns a :class:`matplotlib.figure.Figure`. They compute nothing beyond what drawing needs.

Style: seaborn's ``whitegrid`` theme, its colour-blind-safe palette, labelled axes, log scales where values span
decades. Figures are built without pyplot, so nothing global is touched and no window opens.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

__all__ = ["jacobian_spectrum", "vanishing_exploding", "gradient_agreement", "ablation", "ablation_steps",
           "accumulative_ratio", "feature_maps"]


def _palette(n: int) -> list:
    return sns.color_palette("colorblind", max(n, 1))


@contextmanager
def _styled():
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _figure(nrows: int, ncols: int, width: float, height: float, title: str):
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.suptitle(title)
    return fig, axes


def _log_if_spread(ax, values, axis: str = "y", decades: float = 1.5) -> None:
    v = np.asarray([x for x in np.ravel(values) if x is not None and np.isfinite(x) and x > 0])
    if v.size and np.log10(v.max() / v.min()) >= decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def jacobian_spectrum(result: dict) -> Figure:
    """Figure 1: eigenvalues of J_t = ∂F/∂h in the complex plane (unit circle drawn, colour = step t), and
    ρ(J_t) and ‖J_t‖₂ against t, one line per solver configuration."""
    runs = result["runs"]
    with _styled():
        fig, axes = _figure(2, len(runs), 3.2 * len(runs), 6.4, "Jacobian scale and spectrum of one solver step")
        colors = _palette(len(runs))
        theta = np.linspace(0, 2 * np.pi, 256)
        steps_max = max(max(r["t"]) for r in runs)
        viridis = sns.color_palette("viridis", steps_max)
        for j, run in enumerate(runs):
            ax = axes[0, j]
            ax.plot(np.cos(theta), np.sin(theta), color="0.5", lw=1, ls="--", label="unit circle")
            pts = [np.asarray(ev, dtype=float).reshape(-1, 2) for ev in run["eigvals"]]
            # the first step (from the random start) can dwarf the rest: scale the axes to steps t >= 2
            later = np.concatenate(pts[1:] or pts)
            lim = 1.15 * max(1.0, float(np.abs(later[:, 0] + 1j * later[:, 1]).max()))
            clipped = 0
            for t, ev in zip(run["t"], pts):
                inside = np.abs(ev[:, 0] + 1j * ev[:, 1]) <= lim
                clipped += int((~inside).sum())
                ax.scatter(ev[inside, 0], ev[inside, 1], s=16, color=viridis[t - 1], edgecolor="none")
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
        axes[0, -1].text(1.02, 0.5, f"colour: step t = 1…{steps_max}\n(dark → light)", transform=axes[0, -1].transAxes,
                         fontsize=7, va="center")
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
            ax.set_xlabel("solver step t")
            ax.set_ylabel(name)
            _log_if_spread(ax, [v for r in runs for v in (r["rho"] + r["sigma"])])
        ax_r.legend(fontsize=7, ncol=2)
    return fig


def vanishing_exploding(result: dict) -> Figure:
    """Figure 2: ‖∂h^t/∂h^0‖₂ (vanishing) and ‖∂h^t/∂x‖₂ (growth) against t on log scales, with the
    Proposition-3 bound L_G·L_x/(1 − L_h) (where L_h < 1) and the Proposition-2 implicit limit as dashed lines."""
    runs = result["runs"]
    with _styled():
        fig, axes = _figure(1, 2, 10, 4, "Gradients through the unrolled solver: vanishing w.r.t. h⁰, growing w.r.t. x")
        ax0, ax1 = axes[0]
        for color, run in zip(_palette(len(runs)), runs):
            ax0.plot(run["t"], run["dh_dh0"], marker="o", ms=3, color=color, label=run["label"])
            ax1.plot(run["t"], run["dh_dx"], marker="o", ms=3, color=color, label=run["label"])
            if run.get("implicit_limit") is not None:
                ax1.axhline(run["implicit_limit"], color=color, ls="--", lw=1)
            if run.get("bound") is not None:
                ax1.axhline(run["bound"], color=color, ls=":", lw=1)
        ax0.set_yscale("log")
        ax1.set_yscale("log")
        ax0.set_ylabel("‖∂hᵗ/∂h⁰‖₂")
        ax1.set_ylabel("‖∂hᵗ/∂x‖₂")
        for ax in (ax0, ax1):
            ax.set_xlabel("solver step t")
        ax0.legend(fontsize=7)
        ax1.plot([], [], color="0.3", ls="--", label="implicit limit ‖(I − J*)⁻¹B*‖ (Prop. 2)")
        ax1.plot([], [], color="0.3", ls=":", label="bound L_G·L_x/(1 − L_h) (Prop. 3)")
        ax1.legend(fontsize=7)
    return fig


def gradient_agreement(result: dict) -> Figure:
    """Figure 3: cosine and norm ratio of each mode's ∂L/∂x against the reference, and wall time and memory, vs K."""
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
                ax.plot(ks, vals[key], marker="o", ms=4, color=colors[mode], label=mode)
            ax.set_xlabel("solver steps K")
            ax.set_ylabel(label)
            if log:
                _log_if_spread(ax, [v for vals in modes.values() for v in vals[key]], decades=1.0)
        axes[0, 0].axhline(1.0, color="0.4", lw=1, ls="--")
        axes[0, 0].legend(fontsize=7)
    return fig


def ablation(result: dict) -> Figure:
    """Figure 4: the Table-1 analogue (mean with best marked, per solver and gradient mode, no-ham baseline as a
    line) and the training-loss curves of every run."""
    table, curves = result["table"], result["curves"]
    grads = sorted({row["grad"] for row in table if row["solver"] != "none"})
    solvers = [s for s in dict.fromkeys(row["solver"] for row in table) if s != "none"]
    with _styled():
        fig, axes = _figure(1, 2, 11, 4, "One-step vs BPTT: HamNet ablation on the global-context shapes")
        ax0, ax1 = axes[0]
        colors = dict(zip(grads, _palette(len(grads))))
        width = 0.8 / max(len(grads), 1)
        for i, g in enumerate(grads):
            rows = {r["solver"]: r for r in table if r["grad"] == g}
            xs = [j + (i - (len(grads) - 1) / 2) * width for j in range(len(solvers))]
            means = [rows[s]["mean"] if s in rows else np.nan for s in solvers]
            best = [rows[s]["best"] if s in rows else np.nan for s in solvers]
            ax0.bar(xs, means, width=width * 0.95, color=colors[g], label=f"{g} (mean)")
            ax0.scatter(xs, best, marker="_", s=200, color="k", zorder=3, label="best" if i == 0 else None)
        for r in table:
            if r["solver"] == "none":
                ax0.axhline(r["mean"], color="0.3", ls="--", lw=1, label="no ham (mean)")
        ax0.set_xticks(range(len(solvers)), [s.upper() for s in solvers])
        ax0.set_ylabel(f"val {result.get('metric', 'mIoU')} (%)")
        ax0.legend(fontsize=7, loc="lower right")
        for c in curves:
            color = colors.get(c["grad"], "0.3")
            ls = {"nmf": "-", "vq": "--", "cd": ":"}.get(c["solver"], "-.")
            ax1.plot(c["step"], c["loss"], color=color, ls=ls, lw=1, alpha=0.8)
        ax1.set_xlabel("training step")
        ax1.set_ylabel("training loss (cross-entropy)")
        _log_if_spread(ax1, [v for c in curves for v in c["loss"]], decades=1.0)
        for g in grads:
            ax1.plot([], [], color=colors[g], label=g)
        for s, ls in (("nmf", "-"), ("vq", "--"), ("cd", ":"), ("none", "-.")):
            ax1.plot([], [], color="0.3", ls=ls, label=s)
        ax1.legend(fontsize=7, ncol=2)
    return fig


def ablation_steps(result: dict) -> Figure:
    """Figure 4 when the sweep's solver steps K is an axis: validation mIoU against K, one panel per solver, one line
    per gradient mode (mean over seeds, the best marked), the no-ham baseline as a dashed line."""
    table = result["table"]
    grads = list(dict.fromkeys(row["grad"] for row in table if row["solver"] != "none"))
    solvers = list(dict.fromkeys(row["solver"] for row in table if row["solver"] != "none"))
    ks = sorted({row["steps"] for row in table if row["solver"] != "none"})
    colors = dict(zip(grads, _palette(len(grads))))
    with _styled():
        fig, axes = _figure(1, len(solvers), 3.6 * len(solvers), 3.6,
                            "One-step vs BPTT against the solver steps K (HamNet on the global-context shapes)")
        for ax, solver in zip(axes[0], solvers):
            for g in grads:
                rows = sorted((r for r in table if (r["solver"], r["grad"]) == (solver, g)), key=lambda r: r["steps"])
                x = [r["steps"] for r in rows]
                ax.plot(x, [r["mean"] for r in rows], color=colors[g], marker="o", label=f"{g} (mean)")
                ax.scatter(x, [r["best"] for r in rows], color=colors[g], marker="_", s=150, zorder=3)
            for r in table:
                if r["solver"] == "none":
                    ax.axhline(r["mean"], color="0.3", ls="--", lw=1, label="no ham (mean)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_title(solver.upper())
            ax.set_xlabel("solver steps K in training (evaluation K + 1)")
        values = [r[key] for r in table for key in ("mean", "best")]
        for ax in axes[0]:  # one scale for every ham
            ax.set_ylim(min(values) - 3, max(values) + 3)
        axes[0, 0].scatter([], [], color="0.3", marker="_", s=150, label="best")
        axes[0, 0].set_ylabel(f"val {result.get('metric', 'mIoU')} (%)")
        axes[0, 0].legend(fontsize=7)
    return fig


def accumulative_ratio(result: dict) -> Figure:
    """Figure 5: accumulative ratio Σ_{i≤k}σ_i^p / Σσ_i^p of the features before and after the Hamburger module."""
    with _styled():
        fig, axes = _figure(1, 1, 5.5, 4, "Accumulative ratio of feature singular values")
        ax = axes[0, 0]
        c = _palette(2)
        for key, color, label in (("before", c[0], "before Hamburger"), ("after", c[1], "after Hamburger")):
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
    and the codes C_j of a few bases as spatial maps."""
    channels, codes = result["channels"], result["codes"]
    ncols = max(len(channels), len(codes), 2)
    with _styled():
        fig, axes = _figure(4, ncols, 2.0 * ncols, 8.4, "Feature maps before and after Hamburger")
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
