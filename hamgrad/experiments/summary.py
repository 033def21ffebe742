"""The Table-1-style summary of a sweep: best (mean) over seeds per solver and gradient mode, plus the baseline."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

__all__ = ["Summary", "SummaryCell", "summarize"]

_METRICS = {"miou": "mIoU (%)", "pixel_acc": "pixel accuracy (%)"}


@dataclass
class SummaryCell:
    """One solver × gradient mode (``solver="none"``, ``grad=None`` for the baseline; ``solver`` a context module's
    name and ``grad=None`` for a context run) over its finished seeds.

    ``miou`` and ``pixel_acc`` map ``"best"``, ``"mean"`` and ``"std"`` (population, over seeds) to fractions in
    [0, 1]; ``diverged`` counts the runs whose training loss became NaN or Inf.
    """

    solver: str
    grad: str | None
    seeds: list
    miou: dict
    pixel_acc: dict
    diverged: int


@dataclass
class Summary:
    """The cells of a sweep in the order their first run finished. ``to_markdown()`` renders Table 1 for mIoU and for
    pixel accuracy: rows are solvers, columns gradient modes, entries best (mean) over seeds in percent; the no-ham
    baseline follows each table on its own line."""

    grads: list
    cells: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"grads": list(self.grads), "cells": [asdict(c) for c in self.cells]}

    def to_markdown(self) -> str:
        lines = []
        for key, title in _METRICS.items():
            lines += [f"{title}, best (mean) over seeds", "",
                      "| ham | " + " | ".join(self.grads) + " |", "|---" * (len(self.grads) + 1) + "|"]
            solvers = list(dict.fromkeys(c.solver for c in self.cells if c.grad is not None))
            for solver in solvers:
                entries = [self._entry(solver, g, key) for g in self.grads]
                lines.append(f"| {solver} | " + " | ".join(entries) + " |")
            lines.append("")
            if any(c.grad is None and c.solver == "none" for c in self.cells):
                lines += [f"no ham (baseline, HamNet(ham=None)): {self._entry('none', None, key)}", ""]
            contexts = [c.solver for c in self.cells if c.grad is None and c.solver != "none"]
            if contexts:
                lines += ["other context modules (HamNet(context=...)): "
                          + ", ".join(f"{c} {self._entry(c, None, key)}" for c in contexts), ""]
        seeds = sorted({len(c.seeds) for c in self.cells})
        lines.append(f"seeds per entry: {', '.join(map(str, seeds)) or '0'}")
        diverged = [f"{c.solver}/{c.grad}: {c.diverged}" for c in self.cells if c.diverged]
        if diverged:
            lines.append("diverged runs (loss NaN/Inf): " + ", ".join(diverged))
        return "\n".join(lines) + "\n"

    def _entry(self, solver: str, grad: str | None, key: str) -> str:
        for c in self.cells:
            if c.solver == solver and c.grad == grad:
                stats = getattr(c, key)
                return f"{100 * stats['best']:.1f} ({100 * stats['mean']:.1f})"
        return "–"


def _stats(values: list) -> dict:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"best": float("nan"), "mean": float("nan"), "std": float("nan")}
    return {"best": max(finite), "mean": statistics.fmean(finite), "std": statistics.pstdev(finite)}


def summarize(rows: list, grads: list | tuple) -> Summary:
    """Group result rows (as :func:`hamgrad.experiments.run_ablation` writes them) by solver and mode.

    Args:
        rows: dicts with at least ``solver``, ``grad``, ``seed``, ``miou``, ``pixel_acc`` and ``diverged``.
        grads: the table's columns, in order.
    """
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["solver"], row["grad"]), []).append(row)
    summary = Summary(grads=list(grads))
    for (solver, grad), group in groups.items():
        summary.cells.append(SummaryCell(
            solver=solver, grad=grad, seeds=sorted(r["seed"] for r in group),
            miou=_stats([r["miou"] for r in group]), pixel_acc=_stats([r["pixel_acc"] for r in group]),
            diverged=sum(bool(r["diverged"]) for r in group)))
    return summary
