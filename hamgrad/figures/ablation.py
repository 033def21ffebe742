"""Figure 4: the gradient-mode ablation of HamNet (the Table-1 analogue and the training curves, or mIoU against the
solver steps K when K is an axis of the sweep), per ham, mode and Hamburger block, from a sweep of
:func:`hamgrad.experiments.run_ablation`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots
from ..experiments import load_results, read_config
from . import _common
from ._registry import register

_ROW_KEYS = ("solver", "grad", "seed", "miou", "curve")


def from_rows(rows) -> dict:
    """The figure's table and curves from a sweep's rows (failed runs left out).

    Args:
        rows: the rows of :func:`hamgrad.experiments.load_results` (dicts with ``solver``, ``grad``, ``steps``,
            ``block``, ``seed``, ``miou`` and ``curve``; a ham row without ``block`` is a V1 row).

    Returns:
        ``{"metric": "mIoU", "table": [{"solver", "grad", "block", "steps", "best", "mean", "n"}], "curves":
        [{"solver", "grad", "block", "steps", "seed", "step", "loss"}]}``, mIoU in percent; one table row per
        solver × mode × block × K (block and K are ``None`` for the no-ham baseline and the context modules).

    Raises:
        ValueError: when a row lacks one of those keys, or no run finished.
    """
    for r in rows:
        missing = [k for k in _ROW_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise ValueError(f"rows must be sweep rows (hamgrad.experiments.load_results), got one without "
                             f"{missing}")
    rows = _common.finished(rows, "rows")
    groups: dict = {}
    for r in rows:
        groups.setdefault(_cell(r), []).append(100 * r["miou"])
    table = [{"solver": s, "grad": g, "block": b, "steps": k, "best": max(v), "mean": float(np.mean(v)), "n": len(v)}
             for (s, g, b, k), v in groups.items()]
    curves = [{**dict(zip(("solver", "grad", "block", "steps"), _cell(r))), "seed": r["seed"],
               "step": r["curve"]["step"], "loss": r["curve"]["loss"]} for r in rows]
    return {"metric": "mIoU", "table": table, "curves": curves}


def _cell(row: dict) -> tuple:
    """``(solver, grad, block, steps)`` of a row; block and K only for a ham (a ham row without a block is V1's)."""
    ham = row["grad"] is not None
    return (row["solver"], row["grad"], row.get("block", "v1") if ham else None, row.get("steps") if ham else None)


def read(folder) -> dict:
    """The figure's numbers from the sweep in ``folder`` as it is (nothing is trained or resumed).

    Args:
        folder: a sweep folder written by :func:`hamgrad.experiments.run_ablation` or ``hamgrad ablate``.

    Returns:
        :func:`from_rows` of its finished rows, with ``sweep`` (the folder) and ``config`` (its
        :class:`hamgrad.experiments.AblationConfig` as a dict).

    Raises:
        ValueError: when the folder holds no finished run, or a damaged sweep file (naming it).
    """
    folder = Path(folder)
    return _result(folder, _common.finished(load_results(folder), f"the sweep folder {str(folder)!r}"))


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
