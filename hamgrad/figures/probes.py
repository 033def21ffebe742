"""The gradient probes of an ablation sweep: along training, the cosine and norm ratio of each gradient mode's
gradient to BPTT's (encoder and lower bread) and ρ(J_K), from the ``probes`` that the runs of
:func:`hamgrad.experiments.run_ablation` record (:mod:`hamgrad.experiments.probes`)."""

from __future__ import annotations

from pathlib import Path

from .. import plots
from ..experiments import read_config
from ..experiments.probes import probe_series as from_rows  # the figure's series; plots.probes gathers them alike
from . import _common
from ._registry import register


def read(folder) -> dict:
    """The figure's numbers from the sweep in ``folder`` as it is (nothing is trained or resumed), as
    :func:`hamgrad.figures.ablation.read` reads it.

    Args:
        folder: a sweep folder written by :func:`hamgrad.experiments.run_ablation` or ``hamgrad ablate``.

    Returns:
        :func:`hamgrad.experiments.probes.probe_series` of its finished rows, with ``sweep`` (the folder) and
        ``config`` (its :class:`hamgrad.experiments.AblationConfig` as a dict).

    Raises:
        ValueError: when the folder holds no finished run with probes, or a damaged sweep file (naming it).
    """
    return _result(*_common.read_sweep(folder))


def _result(folder: Path, rows: list) -> dict:
    return {**from_rows(rows), "sweep": str(folder), "config": read_config(folder).to_dict()}


def compute(quick: bool, ablation_dir=None, progress: bool = False, **_) -> dict:
    """The figure's numbers: the built-in sweep of figures 4–6 (:func:`hamgrad.figures.ablation_config`, which
    probes) is run or resumed in ``ablation_dir``; a folder holding a sweep of another config is read as it is.

    Args:
        quick: the CI size, as for :func:`hamgrad.figures.ablation.compute` (as are the other two).
        ablation_dir: the sweep's folder.
        progress: show progress bars while training.

    Returns:
        As :func:`read`.

    Raises:
        ValueError: when the sweep holds no finished run with probes, or a damaged sweep file (naming it).
    """
    return _result(*_common.sweep(quick, ablation_dir, progress))


#: Draw the figure: ``plot(result) -> Figure`` for :func:`compute`'s result or its JSON.
plot = plots.probes


register("probes", compute, plot, from_sweep=True)
