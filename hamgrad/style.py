"""One visual language for every figure hamgrad draws: the paper's figures 1–6, the cost and context figures and the
figures of a user's own solver (:mod:`hamgrad.plots` draws them all through this module).

- **Colour = what was solved**: a fixed colour per solver or context module, and per temperature for the
  temperature-controlled hams (soft VQ from light to dark blue as ``1/T`` grows, CD likewise in green).
- **Marker shape = the solver's family** (NMF ○, VQ □, CD △, SA ✚, A² ✖, GAP ▽, DA ★, APC ⬠, DM ⬡, ACF ◊, the
  contractive reference ◇),
  so that two curves that coincide stay visible (the shapes differ) and a reader who cannot tell the colours apart
  can tell the shapes.
- **Line style, marker fill and bar hatch = the gradient mode**: one-step solid and filled, BPTT dashed and open,
  truncated:k dotted and half-filled, the official one-step-coef dash-dotted, implicit dash-dot-dotted. A curve of no
  gradient mode (a forward quantity, a context module's cost) is solid with open markers.

The colours are Paul Tol's colour-blind-safe qualitative sets (the orange is Okabe–Ito's): within the sets of
entries that share a figure (figures 1–2; figure 4 with the context figures' hams, SA, A² and GAP), every two
colours differ by CIELAB ΔE ≥ 20 for normal, protanope and deuteranope vision, and by ΔE ≥ 12 once DA, APC, DM and
ACF join the context figures, whose markers differ as well (``tests/test_style.py`` checks it). Labels the table does not know (a user's ``"ISTA"``) get the
:data:`EXTRA_COLORS` and :data:`EXTRA_MARKERS` in order, skipping colours already used in the figure.

```python
from hamgrad import style
style.solver_style("VQ, 1/T = 10")     # {'color': '#4477AA', 'marker': 's'}
style.mode_style("truncated:2")        # {'linestyle': ':', 'fillstyle': 'bottom', 'hatch': '..', ...}
style.styles(["NMF", "ISTA"])          # NMF its own colour; ISTA the first extra colour
with style.theme():                    # seaborn's whitegrid look, the sizes of every hamgrad figure
    ...
```
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.colors import to_hex, to_rgb

__all__ = ["SOLVER_COLORS", "TEMPERATURE_COLORS", "DEFAULT_INV_T", "MARKERS", "MODE_STYLES", "NO_MODE",
           "EXTRA_COLORS", "EXTRA_MARKERS", "CATEGORY_COLORS", "REFERENCE_COLOR", "parse_label", "solver_style",
           "mode_style", "styles", "theme"]

#: Colour of each solver or context module without a temperature (``none`` is the no-context baseline; the
#: contractive model is figure 2's user model that satisfies the propositions).
SOLVER_COLORS = {
    "nmf": "#E69F00",          # orange
    "sa": "#AA4499",           # purple
    "a2": "#663333",           # brown
    "gap": "#999999",          # grey
    "da": "#882255",           # wine
    "apc": "#DDCC77",          # sand
    "dm": "#CC3311",           # red
    "acf": "#BB5566",          # rose
    "none": "#000000",         # black
    "contractive": "#000000",  # black
}

#: Colours of the temperature-controlled hams at anchor values of ``1/T``; values between anchors are interpolated
#: in log(1/T), values outside them take the nearest anchor.
TEMPERATURE_COLORS = {
    "vq": {1.0: "#66CCEE", 10.0: "#4477AA", 100.0: "#332288"},   # cyan → blue → indigo
    "cd": {1.0: "#88CCAA", 100.0: "#228833"},                    # light → dark green
}

#: ``1/T`` of a VQ or CD label that names no temperature (the paper's and the solvers' default).
DEFAULT_INV_T = {"vq": 100.0, "cd": 100.0}

#: Marker of each solver family.
MARKERS = {"nmf": "o", "vq": "s", "cd": "^", "sa": "P", "a2": "X", "gap": "v", "da": "*", "apc": "p", "dm": "h",
           "acf": "d", "none": "", "contractive": "D"}

#: Line style, marker fill, bar hatch and marker size of each gradient mode (``truncated:k`` for every k). The sizes
#: fall from the filled to the open markers, so that modes that coincide at a point show as concentric markers.
MODE_STYLES = {
    "one-step": {"linestyle": "-", "fillstyle": "full", "hatch": "", "markersize": 8.0},
    "truncated": {"linestyle": ":", "fillstyle": "bottom", "hatch": "..", "markersize": 7.0},
    "one-step-coef": {"linestyle": "-.", "fillstyle": "left", "hatch": "\\\\", "markersize": 7.0},
    "implicit": {"linestyle": (0, (5, 1.5, 1, 1.5, 1, 1.5)), "fillstyle": "top", "hatch": "xx", "markersize": 6.0},
    "bptt": {"linestyle": "--", "fillstyle": "none", "hatch": "//", "markersize": 5.0},
}

#: The style of a curve of no gradient mode (a forward quantity, a context module).
NO_MODE = {"linestyle": "-", "fillstyle": "none", "hatch": "", "markersize": 5.5}

#: Colours and markers, in order, for the labels the table does not know (a user's solvers).
EXTRA_COLORS = ("#999933", "#EE6677", "#AA3377", "#44AA99", "#117733", "#997700", "#555555")
EXTRA_MARKERS = ("D", "<", ">", "8", "H", "1", "2")

#: Colours of data categories (the classes of a label map): Tol's pale set, apart from the solvers' colours.
CATEGORY_COLORS = ("#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00")

#: Reference lines (the unit circle, ρ = 1, a limit or bound, a cosine of 1).
REFERENCE_COLOR = "#555555"

_FAMILIES = {"nmf": "nmf", "vq": "vq", "softvq": "vq", "soft vq": "vq", "cd": "cd", "sa": "sa", "a2": "a2",
             "a²": "a2", "gap": "gap", "da": "da", "apc": "apc", "dm": "dm", "acf": "acf", "none": "none",
             "contractive": "contractive"}
_FAMILY = re.compile(r"^\s*(soft\s*vq|contractive|nmf|vq|cd|sa|a2|a²|gap|da|apc|dm|acf|none)(?![a-z0-9])", re.I)
_INV_T = re.compile(r"(?:1\s*/\s*T|inv_t)\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")
_TAIL = re.compile(r"\s\((.*)\)\s*$")  # the parenthesised tail: "nmf (one-step-coef (paper), v2)"
_BLOCK = re.compile(r"v[0-9]+", re.I)


def _mode_name(mode: str | None) -> str | None:
    """``"truncated:2"`` → ``"truncated"``; a name that is not a gradient mode → ``None``."""
    if mode is None:
        return None
    name = str(mode).strip().lower().split(":")[0]
    return name if name in MODE_STYLES else None


def parse_label(label: str) -> dict:
    """What a figure label names: ``{"family", "inv_t", "mode", "variant"}``.

    Args:
        label: a curve's label, e.g. ``"VQ, 1/T = 10"``, ``"soft VQ, 1/T = 2, d=64"``, ``"nmf (one-step)"``,
            ``"nmf (one-step-coef (paper), v2)"``, ``"sa (math)"``, ``"nmf_one-step_seed0"`` or a user's ``"ISTA"``.

    Returns:
        A dict: ``family`` one of the keys of :data:`MARKERS` (``None`` for a label the table does not know),
        ``inv_t`` the temperature ``1/T`` for VQ and CD (the default when the label names none, else ``None``),
        ``mode`` a gradient mode named in parentheses or after an underscore (else ``None``), ``variant`` another
        parenthesised word such as ``"math"`` (else ``None``; a block such as ``v2`` is neither).
    """
    text = str(label)
    m = _FAMILY.match(text.replace("_", " "))
    family = _FAMILIES[re.sub(r"\s+", " ", m.group(1).lower())] if m else None
    inv_t = None
    if family in TEMPERATURE_COLORS:
        t = _INV_T.search(text)
        inv_t = float(t.group(1)) if t else DEFAULT_INV_T[family]
    mode = variant = None
    tail = _TAIL.search(text)
    if tail:
        for part in re.split(r",\s*", tail.group(1)):
            part = re.sub(r"\s*\(paper\)$", "", part.strip())
            if _mode_name(part):
                mode = _mode_name(part)
            elif part and not _BLOCK.fullmatch(part):
                variant = part
    elif "_" in text:
        parts = text.split("_")
        mode = next((_mode_name(p) for p in parts[1:] if _mode_name(p)), None)
    return {"family": family, "inv_t": inv_t, "mode": mode, "variant": variant}


def _ramp(anchors: dict, inv_t: float) -> str:
    """The colour at ``inv_t`` on a ramp given at anchor temperatures, interpolated in log(1/T)."""
    keys = sorted(anchors)
    x = math.log10(min(max(inv_t, keys[0]), keys[-1]))
    for lo, hi in zip(keys, keys[1:]):
        if x <= math.log10(hi):
            w = (x - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
            return to_hex((1 - w) * np.asarray(to_rgb(anchors[lo])) + w * np.asarray(to_rgb(anchors[hi])))
    return anchors[keys[-1]]


def solver_style(label: str) -> dict | None:
    """The fixed colour and marker of the solver or module a label names.

    Args:
        label: a curve's label (see :func:`parse_label`).

    Returns:
        ``{"color": hex, "marker": str}``, or ``None`` for a label the table does not know (see :func:`styles`).
    """
    p = parse_label(label)
    if p["family"] is None:
        return None
    color = (_ramp(TEMPERATURE_COLORS[p["family"]], p["inv_t"]) if p["family"] in TEMPERATURE_COLORS
             else SOLVER_COLORS[p["family"]])
    return {"color": color, "marker": MARKERS[p["family"]]}


def mode_style(mode: str | None) -> dict:
    """The line style, marker fill and bar hatch of a gradient mode.

    Args:
        mode: ``"one-step"``, ``"bptt"``, ``"truncated:k"``, ``"one-step-coef"``, ``"implicit"``, or ``None`` (no
            gradient mode: a forward quantity or a context module).

    Returns:
        ``{"linestyle", "fillstyle", "hatch", "markersize"}`` (:data:`MODE_STYLES`, or :data:`NO_MODE` for
        ``None``).

    Raises:
        ValueError: for a name that is not a gradient mode.
    """
    if mode is None:
        return dict(NO_MODE)
    name = _mode_name(mode)
    if name is None:
        raise ValueError(f"mode must be a gradient mode ({', '.join(MODE_STYLES)}, truncated:k) or None, got "
                         f"{mode!r}")
    return dict(MODE_STYLES[name])


def styles(labels) -> dict:
    """The style of every curve of one figure: known solvers and modules their fixed colour and marker, unknown
    labels the :data:`EXTRA_COLORS` and :data:`EXTRA_MARKERS` in order, skipping colours the figure already uses.

    Args:
        labels: the figure's labels, in drawing order (repeats allowed).

    Returns:
        A dict label → ``{"color", "marker", "linestyle", "fillstyle", "hatch", "markersize"}``: the mode's
        line style, fill and hatch where the label names a mode (``"nmf (one-step)"``), otherwise those of
        :data:`NO_MODE`; a variant such as ``"sa (math)"`` keeps its module's colour and marker, drawn larger.
    """
    labels = list(dict.fromkeys(str(label) for label in labels))
    known = {label: solver_style(label) for label in labels}
    used = {s["color"] for s in known.values() if s is not None}
    extra_colors = [c for c in EXTRA_COLORS if c not in used] or list(EXTRA_COLORS)
    out, n = {}, 0
    for label in labels:
        base = known[label]
        if base is None:
            base = {"color": extra_colors[n % len(extra_colors)], "marker": EXTRA_MARKERS[n % len(EXTRA_MARKERS)]}
            n += 1
        p = parse_label(label)
        out[label] = {**base, **mode_style(p["mode"])}
        if p["variant"]:
            out[label]["markersize"] += 3.0
    return out


@contextmanager
def theme():
    """The look of every hamgrad figure: seaborn's ``whitegrid`` style at the ``notebook`` context, slightly smaller
    fonts, legends with a light frame. Nothing global is changed after the ``with`` block.

    Yields:
        Nothing; draw the figure inside the block.
    """
    rc = {"legend.framealpha": 0.9, "legend.edgecolor": "0.8", "axes.titlesize": "medium",
          "figure.titlesize": "large", "lines.linewidth": 1.6, "lines.markeredgewidth": 1.2, "hatch.linewidth": 0.8}
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85), mpl.rc_context(rc):
        yield
