"""The gradient probes of an ablation sweep: along training, the cosine and norm ratio of each gradient mode's
gradient to BPTT's (encoder and lower bread) and ρ(J_K), from the ``probes`` that the runs of
:func:`hamgrad.experiments.run_ablation` record (:mod:`hamgrad.experiments.probes`)."""

from __future__ import annotations

from pathlib import Path

from .. import plots
from ..experiments import read_config
from . import _common
from ._registry import register

_SERIES = ("step", "encoder", "lower_bread", "rho", "rho_mean", "rho_residual", "rho_steps")


def from_rows(rows) -> dict:
    """The figure's series from a sweep's rows: one entry per finished run with probes.

    Args:
        rows: the rows of :func:`hamgrad.experiments.load_results` (dicts with ``run_id``, ``solver``, ``grad``,
            ``block``, ``steps``, ``seed`` and ``probes``); failed runs and rows without probes
            (``probe_every=None``, or written before probes existed) are left out.

    Returns:
        ``{"runs": [{"run_id", "solver", "grad", "block", "steps", "seed", "every", "step", "encoder", "lower_bread",
        "rho", "rho_mean", "rho_residual", "rho_steps"}], "skipped": [{"run_id", "reason"}]}``: ``encoder`` and
        ``lower_bread`` map ``mode_norm``, ``bptt_norm``, ``cosine`` and ``norm_ratio`` to one value per probed step
        (``None`` where undefined); ``skipped`` lists the runs without a ham.

    Raises:
        ValueError: when a row is not a sweep row, or no finished run holds probes.
    """
    for r in rows:
        if not isinstance(r, dict) or "run_id" not in r or "solver" not in r:
            raise ValueError(f"rows must be sweep rows (hamgrad.experiments.load_results), got {r!r:.80}")
    runs, skipped = [], []
    for r in _common.finished(rows, "rows"):
        p = r.get("probes")
        if p is None:
            continue
        if "skipped" in p:
            skipped.append({"run_id": r["run_id"], "reason": p["skipped"]})
            continue
        runs.append({**{k: r.get(k) for k in ("run_id", "solver", "grad", "block", "steps", "seed")},
                     "every": p["every"], **{k: p[k] for k in _SERIES}})
    if not runs:
        raise ValueError("rows hold no gradient probes: run the sweep with probes (AblationConfig.probe_every, "
                         "hamgrad ablate --probe-every N) and at least one ham")
    return {"runs": runs, "skipped": skipped}


def read(folder) -> dict:
    """The figure's numbers from the sweep in ``folder`` as it is (nothing is trained or resumed), as
    :func:`hamgrad.figures.ablation.read` reads it.

    Returns:
        :func:`from_rows` of its finished rows, with ``sweep`` (the folder) and ``config`` (its config as a dict).

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
