"""The figure registry and what works on any registered figure: compute, plot, save, load, run, run_all."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import __version__, plots
from .._files import atomic_write, write_text
from . import _common


@dataclass(frozen=True)
class FigureSpec:
    """One registered figure.

    Attributes:
        name: the figure's name: its files are ``name.png`` and ``name.json``.
        compute: ``compute(quick, **kw) -> dict``, the figure's numbers as plain data (the keywords are
            ``ablation_dir`` and ``progress``; a figure that does not use them accepts and ignores them).
        plot: ``plot(result) -> matplotlib Figure``, drawing what ``compute`` returned (or its JSON read back).
        from_sweep: whether the figure is drawn from the ablation sweep; its result then records the sweep's
            ``source``, and a saved result is recomputed when the sweep has changed.
        schema: the version of the figure's JSON conventions: a saved result of another schema (an older hamgrad's,
            whose legend or fields may no longer match what ``plot`` draws) is recomputed, not redrawn.
    """

    name: str
    compute: Callable
    plot: Callable
    from_sweep: bool = False
    schema: int = 1


_REGISTRY: dict = {}


def register(name: str, compute: Callable, plot: Callable, *, from_sweep: bool = False, schema: int = 1,
             replace: bool = False) -> FigureSpec:
    """Add a figure, so that :func:`compute`, :func:`plot`, :func:`run` and :func:`run_all` know it.

    Args:
        name: the figure's name (also its file names in the output folder).
        compute: ``compute(quick, **kw) -> dict`` of plain data (JSON-serialisable: dicts, lists, floats, str).
        plot: ``plot(result) -> matplotlib Figure``.
        from_sweep: the figure is drawn from the ablation sweep (see :class:`FigureSpec`).
        schema: the version of its JSON conventions (see :class:`FigureSpec`); raise it when ``compute`` changes
            what it returns, so that saved results are recomputed.
        replace: replace a figure already registered under ``name``.

    Returns:
        The :class:`FigureSpec` registered.

    Raises:
        ValueError: when ``name`` is empty or already registered (unless ``replace``).
        TypeError: when ``compute`` or ``plot`` is not callable.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a figure name such as 'my_figure' (a Python identifier), got {name!r}")
    for arg, fn in (("compute", compute), ("plot", plot)):
        if not callable(fn):
            raise TypeError(f"{arg} must be callable, got {type(fn).__name__}")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise ValueError(f"schema must be an int >= 1, got {schema!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"a figure name={name!r} is already registered; pass replace=True to replace it")
    spec = FigureSpec(name, compute, plot, bool(from_sweep), schema)
    _REGISTRY[name] = spec
    return spec


def available() -> tuple:
    """The registered figures' names, in the order they were registered (the paper's six first).

    Returns:
        A tuple of str.
    """
    return tuple(_REGISTRY)


def get(name: str) -> FigureSpec:
    """The registered figure ``name``.

    Args:
        name: a name from :func:`available`.

    Returns:
        Its :class:`FigureSpec`.

    Raises:
        ValueError: when no figure of that name is registered.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown figure name={name!r}; expected one of {available()}")
    return _REGISTRY[name]


def quick_from_env() -> bool:
    """Whether the environment asks for the quick (CI) size, as CI and the notebooks do.

    Returns:
        ``True`` when ``HAMGRAD_QUICK`` is ``1``, ``true`` or ``yes`` (any case), else ``False``.
    """
    return os.environ.get("HAMGRAD_QUICK", "0").strip().lower() in ("1", "true", "yes")


def compute(name: str, quick: bool = False, *, ablation_dir=None, progress: bool = False) -> dict:
    """The numbers behind one figure, at the quick or the full size.

    Args:
        name: a registered figure (:func:`available`; the paper's six are :data:`FIGURES`).
        quick: the CI size (seconds per figure) instead of the full size.
        ablation_dir: for the figures drawn from the ablation sweep (4–6), the folder of a sweep of your own; by
            default the built-in sweep (:func:`ablation_config`) is run, or resumed, in ``runs/paper-ablation``
            (``-quick`` at the quick size).
        progress: show progress bars.

    Returns:
        Plain data (dicts, lists, floats, str) as the figure's JSON holds it, with ``figure``, ``quick``,
        ``seconds``, ``schema`` (the figure's :class:`FigureSpec` schema), ``hamgrad`` and ``torch`` (the versions)
        added; figures drawn from the sweep also record their ``source``: the sweep folder and a digest of its config
        and rows.

    Raises:
        ValueError: when ``name`` is not registered, or the sweep behind figures 4–6 holds no finished run.
    """
    spec = get(name)
    start = time.perf_counter()
    result = spec.compute(quick, ablation_dir=ablation_dir, progress=progress)
    result.update(figure=name, quick=bool(quick), seconds=round(time.perf_counter() - start, 2),
                  schema=spec.schema, hamgrad=__version__, torch=torch.__version__)
    if spec.from_sweep:
        result["source"] = _common.sweep_source(quick, ablation_dir)
    return result


def plot(name: str, result: dict):
    """Draw one figure from its numbers; a quick-size result's title says it is a smoke test.

    Args:
        name: a registered figure.
        result: its :func:`compute` result, or the JSON :func:`save` wrote, read back.

    Returns:
        A matplotlib ``Figure``.

    Raises:
        ValueError: when ``name`` is not registered.
    """
    fig = get(name).plot(result)
    return plots.mark_quick(fig) if result.get("quick") is True else fig


def save(name: str, result: dict, fig, out) -> tuple[Path, Path]:
    """Write ``out/name.png`` and ``out/name.json`` (each to a temporary name first, then moved into place).

    Args:
        name: a registered figure.
        result: its :func:`compute` result.
        fig: its :func:`plot` figure.
        out: the folder (created if missing).

    Returns:
        The paths of the PNG and the JSON.

    Raises:
        ValueError: when ``name`` is not registered.
    """
    get(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / f"{name}.png", out / f"{name}.json"
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    write_text(js, json.dumps(result, allow_nan=True) + "\n")
    return png, js


def load(name: str, out) -> dict | None:
    """The result :func:`save` wrote for figure ``name`` in ``out``.

    Args:
        name: a registered figure.
        out: the folder.

    Returns:
        The result, or ``None`` when there is none.

    Raises:
        ValueError: naming the file when it is not a figure JSON (damaged, or another figure's), or when ``name``
            is not registered.
    """
    path = Path(out) / f"{get(name).name}.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a figure JSON ({err}); delete it, or pass force=True (hamgrad figures "
                         f"--force) to recompute it") from None
    if not isinstance(result, dict) or result.get("figure") != name or not isinstance(result.get("quick"), bool):
        raise ValueError(f"{path} is not the JSON of figure {name!r}; delete it, or pass force=True (hamgrad "
                         f"figures --force) to recompute it")
    return result


def _check_sizes(out, quick: bool) -> None:
    """Refuse to write figures of one size into a folder holding figures of the other."""
    other = [f"{n}.json" for n in available() if (r := load(n, out)) is not None and r["quick"] != bool(quick)]
    if other:
        raise ValueError(f"out={str(out)!r} holds {'quick' if not quick else 'full-size'} figures ({', '.join(other)})"
                         f"; one folder holds one size: choose another folder, or pass force=True (hamgrad figures "
                         f"--force) to replace them")


def _is_current(result: dict, quick: bool, ablation_dir) -> bool:
    """Whether a figure drawn from a sweep still shows it: its recorded source matches the sweep folder now (a
    default folder that does not exist, as in a fresh clone, keeps the figure)."""
    now = _common.sweep_source(quick, ablation_dir)
    if now["digest"] is None and ablation_dir is None:
        return True
    return result.get("source", {}).get("digest") == now["digest"]


def _is_stale(name: str, result: dict, out) -> bool:
    """Whether a saved result was written under another schema of the figure (warned: it is recomputed)."""
    spec = get(name)
    if result.get("schema") == spec.schema:
        return False
    warnings.warn(f"{Path(out) / (name + '.json')} was written by hamgrad {result.get('hamgrad', '< 0.2')} under "
                  f"figure schema {result.get('schema', 0)} (now {spec.schema}): recomputing it", stacklevel=4)
    return True


def _run(name: str, out, quick: bool, ablation_dir, progress: bool, force: bool) -> tuple[dict, bool]:
    """:func:`run` without the folder's size check; returns ``(result, computed)`` (``False``: only redrawn)."""
    result = None if force else load(name, out)
    if result is not None and result["quick"] == bool(quick) and not _is_stale(name, result, out) and (
            not get(name).from_sweep or _is_current(result, quick, ablation_dir)):
        save(name, result, plot(name, result), out)
        return result, False
    result = compute(name, quick, ablation_dir=ablation_dir, progress=progress)
    save(name, result, plot(name, result), out)
    return result, True


def run(name: str, out, quick: bool = False, *, ablation_dir=None, progress: bool = False,
        force: bool = False) -> dict:
    """Compute, plot and save one figure. A figure whose JSON in ``out`` is already at this size and schema (and,
    for figures drawn from the sweep, from the same sweep, see :func:`compute`) is only redrawn; one of another
    schema (an older hamgrad's) is recomputed, with a warning.

    Args:
        name: a registered figure.
        out: the output folder.
        quick: the CI size.
        ablation_dir: the sweep behind figures 4–6 (see :func:`compute`).
        progress: show progress bars.
        force: recompute the figure even when ``out`` holds it (also at the other size).

    Returns:
        The figure's result.

    Raises:
        ValueError: when ``out`` holds figures of the other size (unless ``force``), or a damaged figure JSON.
    """
    get(name)
    if not force:
        _check_sizes(out, quick)
    return _run(name, out, quick, ablation_dir, progress, force)[0]


def run_all(out, quick: bool = False, *, names=None, ablation_dir=None, progress: bool = True,
            force: bool = False, redrawn: list | None = None) -> dict:
    """Every figure in ``names`` into ``out`` with a progress bar; resumable (see :func:`run`).

    Args:
        out: the output folder.
        quick: the CI size.
        names: the figures to run; default every registered figure.
        ablation_dir: the sweep behind figures 4–6 (see :func:`compute`).
        progress: show progress bars.
        force: recompute figures that ``out`` already holds.
        redrawn: a list that receives the names of the figures only redrawn from their JSON (not recomputed).

    Returns:
        A dict figure name → result.

    Raises:
        ValueError: when a name is not registered, ``out`` holds figures of the other size (unless ``force``,
            checked before anything is written), a damaged figure JSON, or a damaged sweep behind figures 4–6 (each
            naming the file).
        OSError: when ``out`` cannot be created (under a file, without permission), before anything is computed.
    """
    names = [get(n).name for n in (available() if names is None else names)]
    if not force:
        _check_sizes(out, quick)
    Path(out).mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails before any computation
    results = {}
    with tqdm(names, desc="figures", unit="fig", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            results[name], computed = _run(name, out, quick, ablation_dir, progress, force)
            if not computed and redrawn is not None:
                redrawn.append(name)
    return results
