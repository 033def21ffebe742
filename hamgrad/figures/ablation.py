"""Figure 4: the gradient-mode ablation of HamNet (the Table-1 analogue and the training curves, or mIoU against the
solver steps K when K is an axis of the sweep), per ham, mode and Hamburger block, from a sweep of
:func:`hamgrad.experiments.run_ablation`."""

from __future__ import annotations

from pathlib import Path

from .. import plots
from ..experiments import read_config
from ..experiments.summary import ablation_table as from_rows  # figure 4's table; plots.sweep builds it the same way
from . import _common
from ._registry import register


def read(folder) -> dict:
    """The figure's numbers from the sweep in ``folder`` as it is (nothing is trained or resumed).

    Args:
        folder: a sweep folder written by :func:`hamgrad.experiments.run_ablation` or ``hamgrad ablate``.

    Returns:
        :func:`hamgrad.experiments.summary.ablation_table` of its finished rows, with ``sweep`` (the folder) and
        ``config`` (its :class:`hamgrad.experiments.AblationConfig` as a dict).

    Raises:
        ValueError: when the folder holds no finished run, or a damaged sweep file (naming it).
    """
    return _result(*_common.read_sweep(folder))


def _result(folder: Path, rows: list) -> dict:
    result = from_rows(rows)
    return {"metric": result["metric"], "sweep": str(folder), "table": result["table"], "curves": result["curves"],
            "config": read_config(folder).to_dict()}


def compute(quick: bool, ablation_dir=None, progress: bool = False, **_) -> dict:
    """Figure 4's numbers: the built-in sweep (:func:`hamgrad.figures.ablation_config`) is run or resumed in
    ``ablation_dir``, a folder holding a sweep of another config is read as it is (see :func:`read`).

    Args:
        quick: the CI size of the built-in sweep, and its default folder ``runs/paper-ablation-quick``.
        ablation_dir: the sweep's folder (default ``runs/paper-ablation[-quick]``).
        progress: show progress bars while training.

    Returns:
        As :func:`read`.

    Raises:
        ValueError: when the sweep holds no finished run, or a damaged sweep file (naming it).
    """
    return _result(*_common.sweep(quick, ablation_dir, progress))


#: Draw figure 4: ``plot(result) -> Figure`` for :func:`compute`'s result or its JSON.
plot = plots.sweep


register("ablation", compute, plot, from_sweep=True)
