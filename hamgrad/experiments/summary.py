"""The Table-1-style summary of a sweep: best (mean) over seeds per solver and gradient mode (and per solver steps K
when K is a sweep axis), plus the baseline and the runs that failed."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

__all__ = ["Summary", "SummaryCell", "summarize"]

_METRICS = {"miou": "mIoU (%)", "pixel_acc": "pixel accuracy (%)",
            "miou_disagree": "mIoU (%) on the validation images whose regional majorities disagree"}


@dataclass
class SummaryCell:
    """One solver × gradient mode × solver steps K (``solver="none"``, ``grad=None``, ``steps=None`` for the
    baseline; ``solver`` a context module's name, ``grad=None`` and ``steps=None`` for a context run) over its
    finished seeds.

    ``miou`` and ``pixel_acc`` map ``"best"``, ``"mean"`` and ``"std"`` (population, over seeds) to fractions in
    [0, 1]; ``miou_disagree`` the same for the mIoU on the images whose regional majorities disagree (``None`` for
    the global task); ``diverged`` counts the runs whose training loss became NaN or Inf.
    """

    solver: str
    grad: str | None
    seeds: list
    miou: dict
    pixel_acc: dict
    diverged: int
    steps: int | None = None
    miou_disagree: dict | None = None


@dataclass
class Summary:
    """The cells of a sweep in the order their first run finished, and the runs recorded as failed (``run_id`` and
    ``error``). ``to_markdown()`` names the ``task`` and renders Table 1 for mIoU and for pixel accuracy (and, for
    the regional task, for the mIoU on the images whose regional majorities disagree): with one K, rows are solvers
    and columns gradient modes; with several, rows are solver × mode and columns K (the metric against K per mode).
    Entries are best (mean) over seeds in percent; the no-ham baseline, the other context modules and the task's
    closed-form ``ceiling`` (:meth:`hamgrad.data.RegionalShapes.global_ceiling`, when given) follow each table on
    their own lines."""

    grads: list
    cells: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    task: str | None = None
    ceiling: dict | None = None

    def to_dict(self) -> dict:
        return {"task": self.task, "ceiling": self.ceiling, "grads": list(self.grads),
                "cells": [asdict(c) for c in self.cells], "failed": list(self.failed)}

    @property
    def steps(self) -> list:
        """The solver steps K of the cells with a ham, in increasing order."""
        return sorted({c.steps for c in self.cells if c.grad is not None and c.steps is not None})

    def to_markdown(self) -> str:
        lines = [] if self.task is None else [f"task: {self.task}", ""]
        ks = self.steps
        solvers = list(dict.fromkeys(c.solver for c in self.cells if c.grad is not None))
        for key, title in _METRICS.items():
            if key == "miou_disagree" and not any(c.miou_disagree for c in self.cells):
                continue
            if len(ks) <= 1:
                at = f", K = {ks[0]}" if ks else ""
                lines += [f"{title}{at}, best (mean) over seeds", "",
                          "| ham | " + " | ".join(self.grads) + " |", "|---" * (len(self.grads) + 1) + "|"]
                for solver in solvers:
                    entries = [self._entry(solver, g, ks[0] if ks else None, key) for g in self.grads]
                    lines.append(f"| {solver} | " + " | ".join(entries) + " |")
            else:
                lines += [f"{title} against solver steps K, best (mean) over seeds", "",
                          "| ham | mode | " + " | ".join(f"K = {k}" for k in ks) + " |", "|---" * (len(ks) + 2) + "|"]
                for solver in solvers:
                    for g in self.grads:
                        entries = [self._entry(solver, g, k, key) for k in ks]
                        lines.append(f"| {solver} | {g} | " + " | ".join(entries) + " |")
            lines.append("")
            if any(c.grad is None and c.solver == "none" for c in self.cells):
                lines += [f"no ham (baseline, HamNet(ham=None)): {self._entry('none', None, None, key)}", ""]
            contexts = [c.solver for c in self.cells if c.grad is None and c.solver != "none"]
            if contexts:
                lines += ["other context modules (HamNet(context=...)): "
                          + ", ".join(f"{c} {self._entry(c, None, None, key)}" for c in contexts), ""]
            if self.ceiling is not None and self.ceiling.get(key) is not None:
                share = f" (the {100 * self.ceiling['disagree_fraction']:.0f}% that disagree)" if key == "miou_disagree" else ""
                lines += [f"global ceiling (closed form: the best one label for all shape pixels of each image, what "
                          f"one pooled vector can carry){share}: {100 * self.ceiling[key]:.1f}", ""]
        seeds = sorted({len(c.seeds) for c in self.cells})
        lines.append(f"seeds per entry: {', '.join(map(str, seeds)) or '0'}")
        diverged = [f"{c.solver}/{c.grad}" + (f"/K{c.steps}" if len(ks) > 1 else "") + f": {c.diverged}"
                    for c in self.cells if c.diverged]
        if diverged:
            lines.append("diverged runs (loss NaN/Inf): " + ", ".join(diverged))
        if self.failed:
            lines.append(f"failed runs ({len(self.failed)}, not in the tables; rerun the command to try them again):")
            lines += [f"- {f['run_id']}: {f['error']}" for f in self.failed]
        return "\n".join(lines) + "\n"

    def _entry(self, solver: str, grad: str | None, steps: int | None, key: str) -> str:
        for c in self.cells:
            if c.solver == solver and c.grad == grad and (grad is None or c.steps == steps):
                stats = getattr(c, key)
                if stats is None:
                    return "–"
                return f"{100 * stats['best']:.1f} ({100 * stats['mean']:.1f})"
        return "–"


def _stats(values: list) -> dict:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"best": float("nan"), "mean": float("nan"), "std": float("nan")}
    return {"best": max(finite), "mean": statistics.fmean(finite), "std": statistics.pstdev(finite)}


def summarize(rows: list, grads: list | tuple, task: str | None = None, ceiling: dict | None = None) -> Summary:
    """Group result rows (as :func:`hamgrad.experiments.run_ablation` writes them) by solver, mode and K.

    Args:
        rows: dicts with at least ``solver``, ``grad``, ``seed``, ``miou``, ``pixel_acc`` and ``diverged`` (and
            ``steps``, ``status``, ``miou_disagree``; rows with ``status == "failed"`` are listed in ``failed``, not
            in the cells).
        grads: the table's columns, in order.
        task: the task's name, printed first (``AblationConfig.task_name``).
        ceiling: the task's closed-form global ceiling (:meth:`hamgrad.data.RegionalShapes.global_ceiling`),
            printed under each table; ``None`` for none.

    Returns:
        A :class:`Summary` (``.to_markdown()``, ``.to_dict()``).
    """
    groups: dict = {}
    summary = Summary(grads=list(grads), task=task, ceiling=ceiling)
    for row in rows:
        if row.get("status", "ok") == "failed":
            summary.failed.append({"run_id": row["run_id"], "error": row.get("error")})
        else:
            steps = row.get("steps") if row["grad"] is not None else None
            groups.setdefault((row["solver"], row["grad"], steps), []).append(row)
    for (solver, grad, steps), group in groups.items():
        disagree = [r.get("miou_disagree") for r in group]
        summary.cells.append(SummaryCell(
            solver=solver, grad=grad, steps=steps, seeds=sorted(r["seed"] for r in group),
            miou=_stats([r["miou"] for r in group]), pixel_acc=_stats([r["pixel_acc"] for r in group]),
            diverged=sum(bool(r["diverged"]) for r in group),
            miou_disagree=_stats(disagree) if any(v is not None for v in disagree) else None))
    return summary
