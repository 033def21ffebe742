"""The Table-1-style summary of a sweep: best (mean) over seeds per solver, Hamburger block and gradient mode (and per
solver steps K when K is a sweep axis), plus the baseline and the runs that failed. Columns and rows name each mode,
and the paper's one-step (``one-step-coef``, the official code's rule) is marked "(paper)"."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from ..grad import PAPER_MODE, mode_label

__all__ = ["Summary", "SummaryCell", "summarize", "finished_rows", "ablation_table"]

_METRICS = {"miou": "mIoU (%)", "pixel_acc": "pixel accuracy (%)",
            "miou_disagree": "mIoU (%) on the validation images whose regional majorities disagree"}
_ROW_KEYS = ("solver", "grad", "seed", "miou", "curve")


@dataclass
class SummaryCell:
    """One solver × gradient mode × solver steps K × Hamburger block (``solver="none"``, ``grad=None``,
    ``steps=None``, ``block=None`` for the baseline; ``solver`` a context module's name and the rest ``None`` for a
    context run) over its finished seeds.

    ``miou`` and ``pixel_acc`` map ``"best"``, ``"mean"`` and ``"std"`` (population, over seeds) to fractions in
    [0, 1]; ``miou_disagree`` the same for the mIoU on the images whose regional majorities disagree (``None`` for
    the global task); ``diverged`` counts the runs whose training loss became NaN or Inf; ``skipped_steps`` of
    ``trained_steps`` training steps (over the seeds) skipped their optimizer step because an implicit backward
    solve did not converge.
    """

    solver: str
    grad: str | None
    seeds: list
    miou: dict
    pixel_acc: dict
    diverged: int
    steps: int | None = None
    block: str | None = None
    skipped_steps: int = 0
    trained_steps: int = 0
    miou_disagree: dict | None = None


@dataclass
class Summary:
    """The cells of a sweep in the order their first run finished, and the runs recorded as failed (``run_id`` and
    ``error``). ``to_markdown()`` names the ``task`` and renders Table 1 for mIoU and for pixel accuracy (and, for
    the regional task, for the mIoU on the images whose regional majorities disagree): with one K, rows are solver ×
    block and columns gradient modes; with several, rows are solver × block × mode and columns K (the metric against K
    per mode). Entries are best (mean) over seeds in percent; the no-ham baseline, the other context modules and the
    task's closed-form ``ceiling`` (:meth:`hamgrad.data.RegionalShapes.global_ceiling`, when given) follow each table
    on their own lines."""

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
        hams = list(dict.fromkeys((c.solver, c.block) for c in self.cells if c.grad is not None))
        for key, title in _METRICS.items():
            if key == "miou_disagree" and not any(c.miou_disagree for c in self.cells):
                continue
            if not hams:  # a sweep of context modules only: no ham table
                lines.append(f"{title}, best (mean) over seeds")
            elif len(ks) <= 1:
                at = f", K = {ks[0]}" if ks else ""
                lines += [f"{title}{at}, best (mean) over seeds", "",
                          "| ham | block | " + " | ".join(map(mode_label, self.grads)) + " |",
                          "|---" * (len(self.grads) + 2) + "|"]
                for solver, block in hams:
                    entries = [self._entry(solver, g, ks[0] if ks else None, key, block) for g in self.grads]
                    lines.append(f"| {solver} | {block} | " + " | ".join(entries) + " |")
            else:
                lines += [f"{title} against solver steps K, best (mean) over seeds", "",
                          "| ham | block | mode | " + " | ".join(f"K = {k}" for k in ks) + " |",
                          "|---" * (len(ks) + 3) + "|"]
                for solver, block in hams:
                    for g in self.grads:
                        entries = [self._entry(solver, g, k, key, block) for k in ks]
                        lines.append(f"| {solver} | {block} | {mode_label(g)} | " + " | ".join(entries) + " |")
            lines.append("")
            if any(c.grad is None and c.solver == "none" for c in self.cells):
                lines += [f"no ham (baseline, HamNet(ham=None)): {self._entry('none', None, None, key)}", ""]
            contexts = [c.solver for c in self.cells if c.grad is None and c.solver != "none"]
            if contexts:
                lines += ["other context modules (HamNet(context=...)): "
                          + ", ".join(f"{c} {self._entry(c, None, None, key)}" for c in contexts), ""]
            if self.ceiling is not None and self.ceiling.get(key) is not None:
                share = (f" (the {100 * self.ceiling['disagree_fraction']:.0f}% that disagree)"
                         if key == "miou_disagree" else "")
                lines += [f"global ceiling (closed form: the best one label for all shape pixels of each image, what "
                          f"one pooled vector can carry){share}: {100 * self.ceiling[key]:.1f}", ""]
        seeds = sorted({len(c.seeds) for c in self.cells})
        lines.append(f"seeds per entry: {', '.join(map(str, seeds)) or '0'}")
        if PAPER_MODE in self.grads:
            lines.append(f"{mode_label(PAPER_MODE)}: the paper's one-step gradient as the official Hamburger code "
                         f"computes it (K steps without graph, then one code update with the bases held constant)")
        diverged = [f"{self._name(c, ks)}: {c.diverged}" for c in self.cells if c.diverged]
        if diverged:
            lines.append("diverged runs (loss NaN/Inf): " + ", ".join(diverged))
        skipped = [f"{self._name(c, ks)}: {c.skipped_steps} of {c.trained_steps}"
                   for c in self.cells if c.skipped_steps]
        if skipped:
            lines.append("training steps skipped (the implicit backward solve did not converge, its gradient is NaN): "
                         + ", ".join(skipped))
        if self.failed:
            lines.append(f"failed runs ({len(self.failed)}, not in the tables; rerun the command to try them again):")
            lines += [f"- {f['run_id']}: {f['error']}" for f in self.failed]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _name(c: SummaryCell, ks: list) -> str:
        """``solver/grad[/block][/K]`` of a cell, for the notes under the tables."""
        return "/".join([c.solver, str(c.grad)] + ([c.block] if c.block else []) + ([f"K{c.steps}"] if len(ks) > 1
                                                                                      else []))

    def _entry(self, solver: str, grad: str | None, steps: int | None, key: str, block: str | None = None) -> str:
        for c in self.cells:
            if c.solver == solver and c.grad == grad and (grad is None or (c.steps, c.block) == (steps, block)):
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
    """Group result rows (as :func:`hamgrad.experiments.run_ablation` writes them) by solver, mode, K and block.

    Args:
        rows: dicts with at least ``solver``, ``grad``, ``seed``, ``miou``, ``pixel_acc`` and ``diverged`` (and
            ``steps``, ``block``, ``status``, ``miou_disagree``; a ham row without ``block`` is a V1 row; rows with
            ``status == "failed"`` are listed in ``failed``, not in the cells).
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
            ham = row["grad"] is not None
            key = (row["solver"], row["grad"], row.get("steps") if ham else None,
                   row.get("block", "v1") if ham else None)
            groups.setdefault(key, []).append(row)
    for (solver, grad, steps, block), group in groups.items():
        disagree = [r.get("miou_disagree") for r in group]
        summary.cells.append(SummaryCell(
            solver=solver, grad=grad, steps=steps, block=block, seeds=sorted(r["seed"] for r in group),
            miou=_stats([r["miou"] for r in group]), pixel_acc=_stats([r["pixel_acc"] for r in group]),
            diverged=sum(bool(r["diverged"]) for r in group),
            skipped_steps=sum(r.get("skipped_steps") or 0 for r in group),
            trained_steps=sum(r.get("iters") or 0 for r in group),
            miou_disagree=_stats(disagree) if any(v is not None for v in disagree) else None))
    return summary


def finished_rows(rows, what: str) -> list:
    """The finished rows (``status`` ok) of a sweep's rows.

    Args:
        rows: result rows as :func:`hamgrad.experiments.load_results` returns them.
        what: what the rows are, named in the error (e.g. ``"the sweep folder 'runs/x'"``).

    Returns:
        The rows whose ``status`` is ``"ok"`` (rows without a status count as finished).

    Raises:
        ValueError: naming ``what`` when there are none.
    """
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    if not rows:
        raise ValueError(f"{what} holds no finished runs")
    return rows


def _cell(row: dict) -> tuple:
    """``(solver, grad, block, steps)`` of a row; block and K only for a ham (a ham row without a block is V1's)."""
    ham = row["grad"] is not None
    return (row["solver"], row["grad"], row.get("block", "v1") if ham else None, row.get("steps") if ham else None)


def ablation_table(rows, what: str = "rows") -> dict:
    """The ablation figure's numbers (figure 4, :func:`hamgrad.plots.sweep`) from a sweep's rows, failed runs left
    out: mean and best mIoU per solver, gradient mode, Hamburger block and solver steps K, and every run's training
    curve.

    Args:
        rows: the rows of :func:`hamgrad.experiments.load_results` (dicts with ``solver``, ``grad``, ``steps``,
            ``block``, ``seed``, ``miou`` and ``curve``; a ham row without ``block`` is a V1 row).
        what: what the rows are, named when none finished.

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
    rows = finished_rows(rows, what)
    groups: dict = {}
    for r in rows:
        groups.setdefault(_cell(r), []).append(100 * r["miou"])
    table = [{"solver": s, "grad": g, "block": b, "steps": k, "best": max(v), "mean": statistics.fmean(v),
              "n": len(v)} for (s, g, b, k), v in groups.items()]
    curves = [{**dict(zip(("solver", "grad", "block", "steps"), _cell(r))), "seed": r["seed"],
               "step": r["curve"]["step"], "loss": r["curve"]["loss"]} for r in rows]
    return {"metric": "mIoU", "table": table, "curves": curves}
