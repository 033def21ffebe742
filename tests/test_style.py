"""One visual language across the figures (hamgrad.style, hamgrad.plots), checked on the Figure objects, not on
pixels: the same solver has the same colour and the same mode the same line style in every figure function; the
colours of entries that share a figure stay apart for colour-blind readers; no legend covers a label and no label is
cut off; step axes have integer ticks; no raw TeX braces; coinciding curves stay visible; plots does not import the
figure registry."""

from __future__ import annotations

import ast
import itertools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgb
from matplotlib.lines import Line2D
from matplotlib.text import Text

from hamgrad import plots, style

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- small plain data for every figure function
def _spectrum_data():
    runs = []
    for i, label in enumerate(["NMF", "VQ, 1/T = 1", "VQ, 1/T = 100", "CD, 1/T = 100"]):
        eig = [[[1.5 - 0.1 * t + 0.1 * i, 0.0], [0.3, 0.2], [0.3, -0.2]] for t in range(5)]
        runs.append({"label": label, "t": list(range(5)), "eigvals": eig, "rho": [1.5 - 0.1 * t + 0.1 * i
                                                                                  for t in range(5)],
                     "sigma": [3.0 + i] * 5})
    return {"runs": runs}


def _flow_data():
    runs = []
    for i, label in enumerate(["contractive F: 0.8·tanh(Wh + Ux)", "NMF", "VQ, 1/T = 1", "VQ, 1/T = 100",
                               "CD, 1/T = 100"]):
        # VQ and CD at 1/T = 100 draw the same numbers, as in the committed figure 2
        scale = 10.0 if "100" in label else 1.0 + i
        runs.append({"label": label, "t": [1, 2, 3, 4, 5, 6], "dh_dh0": [scale * 0.5 ** t for t in range(1, 7)],
                     "dh_dx": [scale * (1 + 0.1 * t) for t in range(1, 7)], "state_limit": 2.0 if i < 2 else None,
                     "state_bound": 4.0 if i == 0 else None})
    return {"runs": runs}


def _agreement_data(label="NMF, d = 16"):
    ks = [1, 2, 3, 4, 6, 8]
    modes = {m: {"cosine": [1 - 10 ** (-2 - 0.1 * j - 0.3 * i) for i in range(len(ks))],
                 "norm_ratio": [1 - 0.01 * (j + 1)] * len(ks), "seconds": [1e-3 * (k + j) for k in ks],
                 "peak_mb": [0.3 * (k if m == "bptt" else 1) for k in ks]}
             for j, m in enumerate(["one-step", "one-step-coef", "truncated:2", "bptt"])}
    return {"K": ks, "modes": modes, "reference": "implicit (K = 500)", "label": label, "memory_kind": "saved"}


def _ablation_data(steps=(None,)):
    table, curves = [{"solver": "none", "grad": None, "steps": None, "best": 51.0, "mean": 50.8, "n": 2}], []
    for i, solver in enumerate(["nmf", "vq", "cd"]):
        for j, grad in enumerate(["one-step", "bptt"]):
            for k in steps:
                table.append({"solver": solver, "grad": grad, "steps": k, "best": 80.0 + i + j, "mean": 79.0 + i - j,
                              "n": 2})
            for seed in range(2):
                curves.append({"solver": solver, "grad": grad, "steps": steps[0], "seed": seed,
                               "step": [25, 50, 75, 100], "loss": [1.0, 0.5 - 0.1 * j, 0.3, 0.2]})
    curves.append({"solver": "none", "grad": None, "steps": None, "seed": 0, "step": [25, 50, 75, 100],
                   "loss": [1.0, 0.6, 0.4, 0.35]})
    return {"metric": "mIoU", "table": table, "curves": curves}


def _ratio_data():
    k = list(range(1, 33))
    before = [1 - 0.5 * 0.8 ** i for i in k]
    after = [1 - 0.3 * 0.7 ** i for i in k]
    return {"run_id": "nmf_one-step_seed0", "module": "Hamburger", "p": 2, "k": k, "before": before, "after": after,
            "before_std": [0.01] * 32, "after_std": [0.01] * 32}


def _feature_data():
    g = np.random.default_rng(0)
    maps = lambda: [g.random((8, 8)).tolist() for _ in range(4)]  # noqa: E731
    label = np.zeros((32, 32), dtype=int)
    label[4:12, 4:12] = 2
    return {"module": "Hamburger", "image": g.random((32, 32, 3)).tolist(), "label": label.tolist(),
            "channels": [4, 40, 5, 26], "before": maps(), "after": maps(), "bases": [3, 2, 6, 5], "codes": maps()}


def _probes_data():
    runs = []
    for i, solver in enumerate(["nmf", "vq", "cd"]):
        for j, grad in enumerate(["one-step", "one-step-coef", "bptt"]):
            for seed in range(2):
                group = {"mode_norm": [1.0 + 0.1 * t for t in range(4)], "bptt_norm": [1.0] * 4,
                         "cosine": [0.9 - 0.1 * j + 0.01 * (seed + t) for t in range(4)],
                         "norm_ratio": [1.0 + 0.1 * t for t in range(4)]}
                # every mode starts from the same weights: ρ at step 0 is the same for all (coinciding markers)
                runs.append({"run_id": f"{solver}_{grad}_seed{seed}", "solver": solver, "grad": grad, "block": "v2",
                             "steps": 6, "seed": seed, "every": 5, "step": [0, 5, 10, 15], "encoder": group,
                             "lower_bread": {**group, "cosine": [c - 0.2 for c in group["cosine"]]},
                             "rho": [1.4] + [1.2 + 0.1 * (i + j + t) for t in range(3)], "rho_mean": [1.0] * 4,
                             "rho_residual": [1e-4] * 4, "rho_steps": [20] * 4})
    return {"runs": runs, "skipped": []}


CONTEXTS = ["sa", "sa (math)", "a2", "nmf", "vq", "cd", "gap"]


def _context_cost_data():
    rows, slopes = [], {}
    for i, label in enumerate(CONTEXTS):
        slope = 1.7 if label.startswith("sa") else 1.0
        for n in (256, 1024, 4096, 16384):
            rows.append({"label": label, "n": n, "channels": 512, "d": 512, "rank": 64, "device": "cpu",
                         # SA's two kernels take the same training time, as measured (figures/context_cost.json)
                         "time_kind": "cpu_process_time",
                         "train_seconds": 1e-5 * (1 + 0.2 * max(i - (label == "sa (math)"), 0)) * n ** slope,
                         "infer_seconds": 5e-6 * (1 + 0.2 * i) * n ** slope,
                         "train_bytes": 2 ** 12 * (1 + 0.2 * i) * n ** slope,
                         "infer_bytes": 2 ** 11 * (1 + 0.2 * i) * n ** slope})
        slopes[label] = {"train_seconds": slope, "infer_seconds": slope, "train_bytes": slope, "infer_bytes": slope,
                         "n": [1024, 4096, 16384]}
    return {"rows": rows, "slopes": slopes}


def _context_ablation_data():
    rows = []
    for i, label in enumerate(["none", "nmf (one-step)", "vq (one-step)", "cd (one-step)", "sa", "a2", "gap"]):
        cost = 0.0 if label == "none" else 1.0 + i
        rows.append({"label": label, "miou_mean": 0.8 + 0.01 * i, "miou_best": 0.81 + 0.01 * i,
                     "train_seconds": 0.005 * cost, "train_bytes": 2 ** 20 * 7 * cost})
    return {"rows": rows}


FIGURES = {
    "jacobian_spectrum": lambda: plots.jacobian_spectrum(_spectrum_data()),
    "vanishing_exploding": lambda: plots.vanishing_exploding(_flow_data()),
    "flow (user)": lambda: plots.flow([{k: v for k, v in r.items() if k != "label"} for r in _flow_data()["runs"]],
                                      labels=[r["label"] for r in _flow_data()["runs"]]),
    "gradient_agreement": lambda: plots.gradient_agreement(_agreement_data()),
    "ablation": lambda: plots.ablation(_ablation_data()),
    "ablation_steps": lambda: plots.ablation_steps(_ablation_data(steps=(1, 2, 4))),
    "accumulative_ratio": lambda: plots.accumulative_ratio(_ratio_data()),
    "ratio (user)": lambda: plots.ratio(np.asarray(_ratio_data()["before"]), np.asarray(_ratio_data()["after"]),
                                        labels=("input", "output")),
    "feature_maps": lambda: plots.feature_maps(_feature_data()),
    "context_scaling": lambda: plots.context_scaling(_context_cost_data()),
    "context_tradeoff": lambda: plots.context_tradeoff(_context_ablation_data()),
    "probes": lambda: plots.probes(_probes_data()),
}


def _drawn(fig):
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


# ---------------------------------------------------------------------- the same solver, the same colour everywhere
def _solver_colours(name: str, fig) -> dict:
    """``{(solver, 1/T): {colours}}`` of the curves, bars and markers of one figure, read from the Figure: which
    solver each artist belongs to is known from the data the test drew (labels, panel titles, tick labels)."""
    known = {"NMF": ("nmf", None), "VQ, 1/T = 1": ("vq", 1.0), "VQ, 1/T = 100": ("vq", 100.0),
             "CD, 1/T = 100": ("cd", 100.0), "nmf": ("nmf", None), "vq": ("vq", 100.0), "cd": ("cd", 100.0),
             "nmf (one-step)": ("nmf", None), "vq (one-step)": ("vq", 100.0), "cd (one-step)": ("cd", 100.0),
             "sa": ("sa", None), "sa (math)": ("sa", None), "a2": ("a2", None), "gap": ("gap", None),
             "NMF, d = 16": ("nmf", None)}
    found: dict = {}

    def add(label, color):
        key = known.get(re.sub(r" \(slope [0-9.]+\)$", "", str(label)))
        if key is not None:
            found.setdefault(key, set()).add(to_hex(color))

    for ax in fig.axes:
        for line in ax.get_lines():
            add(line.get_label(), line.get_color())
            if name in ("ablation", "ablation_steps"):  # one panel per solver, titled by it
                add(ax.get_title().lower(), line.get_color())
    if name == "probes":  # one column per solver, titled by it; its curves are labelled by mode (not the 1 line)
        for col, top in enumerate(fig.axes[:len(fig.axes) // 5]):
            for ax in fig.axes[col::len(fig.axes) // 5]:
                for line in ax.get_lines():
                    if not line.get_label().startswith("_"):
                        add(top.get_title().lower(), line.get_color())
        for container in ax.containers:  # the ablation's bars: one per solver, in tick order
            ticks = [t.get_text().lower() for t in ax.get_xticklabels()]
            for tick, patch in zip(ticks, container.patches):
                add(tick, patch.get_edgecolor())
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.texts):
            if isinstance(handle, Line2D):
                add(text.get_text(), handle.get_color())
    if name == "gradient_agreement":  # every mode's curve is the compared solver's
        for line in fig.axes[0].get_lines()[:4]:
            add("NMF, d = 16", line.get_color())
    if name == "accumulative_ratio":  # the "after" curve is the run's module (run_id nmf_one-step_seed0)
        add("nmf", fig.axes[0].get_lines()[1].get_color())
    # the no-ham baseline's black is drawn as "no ham", not a solver: leave the title-matched black lines out
    return {key: {c for c in colors if c != "#000000" or key[0] == "none"} for key, colors in found.items()}


def test_each_solver_has_one_colour_in_every_figure_and_solvers_differ():
    seen: dict = {}
    for name, make in FIGURES.items():
        for key, colors in _solver_colours(name, make()).items():
            for c in colors:
                seen.setdefault(key, {}).setdefault(c, []).append(name)
    # every solver and temperature appears in several figures
    assert {k: len({f for fs in v.values() for f in fs}) >= 2 for k, v in seen.items()} == {k: True for k in seen}
    assert {("nmf", None), ("vq", 1.0), ("vq", 100.0), ("cd", 100.0), ("sa", None), ("a2", None)} <= set(seen)
    for key, colors in seen.items():
        assert len(colors) == 1, f"{key} is drawn in {len(colors)} colours: {colors}"
    firsts = {key: next(iter(colors)) for key, colors in seen.items()}
    assert len(set(firsts.values())) == len(firsts), firsts


def test_each_gradient_mode_has_one_line_style_in_every_figure():
    styles: dict = {}

    def add(mode, linestyle, where):
        styles.setdefault(mode, {}).setdefault(str(linestyle), set()).add(where)

    for line in plots.gradient_agreement(_agreement_data()).axes[0].get_lines()[:4]:
        add(line.get_label().split(":")[0].removesuffix(" (paper)"), line.get_linestyle(), "agreement")
    for ax in plots.ablation_steps(_ablation_data(steps=(1, 2, 4))).axes:
        for line in ax.get_lines():
            if line.get_label().endswith("(mean)") and not line.get_label().startswith("no ham"):
                add(line.get_label().removesuffix(" (mean)").removesuffix(" (paper)"), line.get_linestyle(),
                    "ablation_steps")
    data = _ablation_data()
    fig = plots.ablation(data)
    for ax in fig.axes[1:]:
        solver = ax.get_title().lower()
        curves = [c for c in data["curves"] if c["solver"] in (solver, "none")]
        for c, line in zip(curves, ax.get_lines()):
            if c["grad"] is not None:
                add(c["grad"], line.get_linestyle(), "ablation loss")
    hatches = {c.get_label().removesuffix(" (mean)").removesuffix(" (paper)"): c.patches[0].get_hatch()
               for c in fig.axes[0].containers}
    for ax in plots.probes(_probes_data()).axes:  # every curve of the probes figure is labelled by its mode
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                add(line.get_label().removesuffix(" (paper)"), line.get_linestyle(), "probes")
    assert set(styles) == {"one-step", "bptt", "truncated", "one-step-coef"}
    assert {m for m, found in styles.items() for where in found.values() if "probes" in where} == \
        {"one-step", "one-step-coef", "bptt"}
    for mode, found in styles.items():
        assert len(found) == 1, f"{mode} is drawn in the line styles {found}"
    assert len({next(iter(v)) for v in styles.values()}) == len(styles)  # modes differ from each other
    assert hatches["one-step"] != hatches["bptt"]


# ---------------------------------------------------------------------- colour-blind safety (an independent reference)
# Machado, Oliveira & Fernandes (2009), severity 1.0, applied to linear sRGB; then CIELAB (D65) and ΔE*ab (CIE76).
_CVD = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
}


def _lab(color, vision: str) -> np.ndarray:
    c = np.asarray(to_rgb(color))
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    linear = np.clip(_CVD[vision] @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_lab_reference_on_known_values():
    # sRGB white, black and pure red in CIELAB (D65): L 100, 0 and (53.2, 80.1, 67.2)
    np.testing.assert_allclose(_lab("#ffffff", "normal"), [100, 0, 0], atol=0.05)
    np.testing.assert_allclose(_lab("#000000", "normal"), [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(_lab("#ff0000", "normal"), [53.24, 80.09, 67.20], atol=0.1)
    # a deuteranope sees red and green far closer than a normal viewer does
    red_green = {v: np.linalg.norm(_lab("#ff0000", v) - _lab("#00aa00", v)) for v in _CVD}
    assert red_green["deuteranopia"] < 0.5 * red_green["normal"]


GROUPS = {  # the entries that share a figure
    "figures 1–2": ["contractive F", "NMF", "VQ, 1/T = 1", "VQ, 1/T = 10", "VQ, 1/T = 100", "CD, 1/T = 100"],
    "figure 4 and the context figures": ["none", "nmf", "vq", "cd", "sa", "a2", "gap"],
}


@pytest.mark.parametrize("group", GROUPS)
def test_colours_sharing_a_figure_stay_apart_for_colour_blind_readers(group):
    _apart(GROUPS[group], 20)


def test_every_context_module_keeps_a_colour_and_a_marker_of_its_own():
    # all eleven in one context figure: colours at least ΔE 12 apart, and every marker different
    labels = GROUPS["figure 4 and the context figures"] + ["da", "apc", "dm", "acf"]
    _apart(labels, 12)
    markers = [style.solver_style(label)["marker"] for label in labels]
    assert len(set(markers)) == len(markers)


def _apart(labels, threshold):
    colors = {label: style.solver_style(label)["color"] for label in labels}
    for (a, ca), (b, cb) in itertools.combinations(colors.items(), 2):
        for vision in _CVD:
            delta = np.linalg.norm(_lab(ca, vision) - _lab(cb, vision))
            assert delta >= threshold, f"{a} {ca} and {b} {cb}: ΔE {delta:.1f} for {vision} vision"


def test_extra_colours_for_a_users_labels_stay_apart_and_show_on_white():
    first = list(style.EXTRA_COLORS[:3])
    for ca, cb in itertools.combinations(first, 2):
        for vision in _CVD:
            assert np.linalg.norm(_lab(ca, vision) - _lab(cb, vision)) >= 20, (ca, cb, vision)
    for c in [*style.EXTRA_COLORS, *style.SOLVER_COLORS.values()]:
        assert np.linalg.norm(_lab(c, "normal") - _lab("#ffffff", "normal")) >= 25, c


def test_styles_of_a_users_labels():
    st = style.styles(["NMF", "ISTA", "FISTA", "ISTA"])
    assert st["NMF"]["color"] == style.solver_style("NMF")["color"]
    assert st["ISTA"]["color"] != st["FISTA"]["color"] and st["ISTA"]["marker"] != st["FISTA"]["marker"]
    assert {st["ISTA"]["color"], st["FISTA"]["color"]}.isdisjoint({st["NMF"]["color"]})
    assert style.parse_label("VQ, 1/T = 2.5") == {"family": "vq", "inv_t": 2.5, "mode": None, "variant": None}
    assert style.parse_label("nmf_truncated:2_seed0")["mode"] == "truncated"
    assert style.parse_label("sa (math)")["variant"] == "math"
    assert style.parse_label("nmf (one-step-coef (paper), v2)") == {"family": "nmf", "inv_t": None,
                                                                    "mode": "one-step-coef", "variant": None}
    assert style.parse_label("contractive F: tanh(Wh)")["variant"] is None
    # temperatures between the anchors sit between their colours; the default 1/T of a bare "vq" is 100
    mid = np.asarray(to_rgb(style.solver_style("VQ, 1/T = 3.1623")["color"]))
    lo, hi = (np.asarray(to_rgb(style.TEMPERATURE_COLORS["vq"][t])) for t in (1.0, 10.0))
    np.testing.assert_allclose(mid, (lo + hi) / 2, atol=1 / 255)
    assert style.solver_style("vq") == style.solver_style("VQ, 1/T = 100")
    with pytest.raises(ValueError, match="mode must be a gradient mode"):
        style.mode_style("backprop")


# ---------------------------------------------------------------------- what a reader sees of each figure
def _shown_ticks(axis) -> list:
    """The tick labels an axis draws: visible, not empty, at a tick inside the view (matplotlib keeps labels of
    ticks outside it, undrawn)."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    return [t.label1 for t in ticks if t.label1.get_visible() and t.label1.get_text().strip()
            and lo - 1e-12 * abs(hi - lo) <= t.get_loc() <= hi + 1e-12 * abs(hi - lo)]


def _texts(fig) -> list:
    """(what, Text) of every text a reader reads: axis labels, ticks, titles, texts, legends' texts, the title."""
    out = [("title", fig._suptitle)] if fig._suptitle is not None else []
    for i, ax in enumerate(fig.axes):
        out += [(f"axes {i} title", ax.title)]
        if ax.axison:  # an image panel draws no axes
            out += [(f"axes {i} x label", ax.xaxis.label), (f"axes {i} y label", ax.yaxis.label)]
            out += [(f"axes {i} tick", t) for t in _shown_ticks(ax.xaxis) + _shown_ticks(ax.yaxis)]
        out += [(f"axes {i} text", t) for t in ax.texts]
        if ax.get_legend() is not None:
            out += [(f"axes {i} legend", t) for t in ax.get_legend().texts]
    for j, legend in enumerate(fig.legends):
        out += [(f"figure legend {j}", t) for t in legend.texts]
    return [(what, t) for what, t in out if t.get_visible() and t.get_text().strip()]


def _label_boxes(fig, renderer) -> list:
    """(what, bbox) of every label a reader reads and of every legend box."""
    boxes = [(f"{what} {t.get_text()!r}", t.get_window_extent(renderer)) for what, t in _texts(fig)
             if "legend" not in what]
    boxes += [(f"axes {i} legend", ax.get_legend().get_window_extent(renderer)) for i, ax in enumerate(fig.axes)
              if ax.get_legend() is not None]
    boxes += [(f"figure legend {j}", legend.get_window_extent(renderer)) for j, legend in enumerate(fig.legends)]
    return boxes


@pytest.mark.parametrize("name", FIGURES)
def test_no_legend_covers_a_label_and_nothing_is_cut_off(name):
    fig = FIGURES[name]()
    renderer = _drawn(fig)
    boxes = _label_boxes(fig, renderer)
    legends = [(what, box) for what, box in boxes if "legend" in what]
    for (lw, lb), (tw, tb) in itertools.product(legends, boxes):
        if lw != tw and lb.overlaps(tb):
            overlap = min(lb.x1, tb.x1) - max(lb.x0, tb.x0), min(lb.y1, tb.y1) - max(lb.y0, tb.y0)
            assert min(overlap) <= 1, f"{lw} covers {tw}"
    width, height = fig.bbox.width, fig.bbox.height
    for what, t in _texts(fig):
        b = t.get_window_extent(renderer)
        assert b.x0 >= -1 and b.y0 >= -1 and b.x1 <= width + 1 and b.y1 <= height + 1, \
            f"{what} {t.get_text()!r} is cut off ({b} in {width:.0f} × {height:.0f})"


@pytest.mark.parametrize("name", FIGURES)
def test_step_axes_have_integer_ticks(name):
    fig = FIGURES[name]()
    _drawn(fig)
    checked = 0
    for ax in fig.axes:
        label = ax.get_xlabel()
        if re.search(r"step|steps K|singular values k", label):
            lo, hi = sorted(ax.get_xlim())
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), (label, ticks)
            checked += 1
    if name in ("jacobian_spectrum", "vanishing_exploding", "flow (user)", "gradient_agreement", "ablation",
                "ablation_steps", "accumulative_ratio", "ratio (user)", "probes"):
        assert checked > 0


@pytest.mark.parametrize("name", FIGURES)
def test_no_raw_tex_braces_in_any_text(name):
    fig = FIGURES[name]()
    _drawn(fig)  # mathtext that does not parse raises here
    for t in fig.findobj(Text):
        outside_math = re.sub(r"\$[^$]*\$", "", t.get_text())
        assert not re.search(r"[_^]\{", outside_math), t.get_text()


def test_user_flow_title_makes_no_claim_about_the_data():
    title = FIGURES["flow (user)"]().get_suptitle()
    assert not re.search(r"vanish|grow|explod", title, re.I), title
    assert "J_t = ∂F/∂h(hᵗ, x)" in title


@pytest.mark.parametrize("name", ["vanishing_exploding", "context_scaling", "gradient_agreement", "probes"])
def test_curves_that_coincide_stay_visible(name):
    # two curves with the same numbers (VQ and CD at 1/T = 100 in figure 2; SA's two kernels; modes equal at a K)
    # must differ in marker shape, size or fill, so the one drawn first is not hidden under the other
    fig = FIGURES[name]()
    pairs = 0
    for ax in fig.axes:
        lines = [ln for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "") and len(ln.get_xdata())]
        for a, b in itertools.combinations(lines, 2):
            xa, xb = np.asarray(a.get_xdata(), float), np.asarray(b.get_xdata(), float)
            ya, yb = np.asarray(a.get_ydata(), float), np.asarray(b.get_ydata(), float)
            if xa.shape != xb.shape or not np.allclose(xa, xb):
                continue
            same = np.isclose(ya, yb, rtol=0.03)
            if same.any():
                pairs += 1
                assert (a.get_marker(), a.get_markersize(), a.get_fillstyle()) != \
                       (b.get_marker(), b.get_markersize(), b.get_fillstyle()), (a.get_label(), b.get_label())
    assert pairs > 0  # the data above does hold coinciding curves


def test_feature_maps_have_colour_bars_and_state_their_normalisation():
    data = _feature_data()
    fig = plots.feature_maps(data)
    bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    assert len(bars) == len(data["channels"]) + 1  # one per channel (before and after together), one for the codes
    assert "colour scales" in fig.get_suptitle()
    images = {ax.get_title(): ax.get_images()[0] for ax in fig.axes if ax.get_images()}
    for j, c in enumerate(data["channels"]):
        before, after = images[f"channel {c}, before"], images[f"channel {c}, after"]
        assert before.norm.vmin == after.norm.vmin and before.norm.vmax == after.norm.vmax
        joint = np.concatenate([np.ravel(data["before"][j]), np.ravel(data["after"][j])])
        assert (before.norm.vmin, before.norm.vmax) == (joint.min(), joint.max())
    codes = [images[f"code of basis {b}"].norm for b in data["bases"]]
    assert len({(n.vmin, n.vmax) for n in codes}) == 1


def test_context_tradeoff_log_ticks_are_plain_numbers():
    fig = plots.context_tradeoff(_context_ablation_data())
    _drawn(fig)
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_xticklabels(which="both") if t.get_text()]
        assert labels and not any("times" in s or "^" in s for s in labels), labels
        assert all(re.fullmatch(r"[0-9.]+", s) for s in labels), labels


# ---------------------------------------------------------------------- one direction: figures use plots, not back
def test_plots_and_style_do_not_import_the_figure_registry():
    for module in ("plots", "style"):
        tree = ast.parse((REPO / "hamgrad" / f"{module}.py").read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if "figures" in m or m == "paper"], (module, imported)
    code = ("import sys, hamgrad.plots as p; p.sweep; "
            "print(sorted(m for m in sys.modules if m.startswith('hamgrad.figures') or m == 'hamgrad.paper'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
