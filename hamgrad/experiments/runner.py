"""The resumable ablation runner: ``run_ablation(config, out_dir)``, in this process or on Ray.

Layout of ``out_dir``:

```text
config.json                  the AblationConfig of the sweep (another config is refused, unless it only adds runs)
ablate.lock                  held by the running driver (pid, host, start time, token); a second driver is refused;
                             removed when the driver ends
results.jsonl, results.csv   one row per finished (or failed) run (the CSV holds the scalar columns)
summary.md, summary.json     the Table-1-style summary
runs/<run_id>/checkpoint.pt  model, optimizer, step, RNG states, training curve and probes of each run
runs/<run_id>/run.lock       held by the process training the run (one at a time, also across drivers)
```

Resuming: ``results.jsonl`` is the record of finished runs; a run listed there with ``status="ok"`` is never trained
again. Its rows are checked against ``config.json`` when read (a repeated row is dropped; a row of a run not in the
config, of another number of iterations, with an unknown status or a metric that is not a number in [0, 1] is
ignored, each with a warning naming the file and line). Any other run restarts from its latest checkpoint (saved every
``checkpoint_every`` iterations and when training ends; resumed only by the run and config that wrote it), restoring
the model, the optimizer, the global torch RNG (the ham's random initialisation), the batch-sampling generator, the
curve and the gradient probes taken so far (:mod:`hamgrad.experiments.probes`), so a resumed run follows the same
trajectory, and records the same probes, as an uninterrupted one. Every file is written to a temporary
name unique to its writer and moved into place with ``os.replace``, so a sweep killed at any moment leaves either the
old or the new file (and temporary files a kill left behind are removed by the next driver, or by the run's next
writer). Only the driver writes the results and summary; on Ray, workers write their runs' checkpoints.

Faults that are not a run's: a full disk (or quota) stops the sweep with "no space left on device" (nothing is
recorded as failed; rerun to resume); a driver killed while its Ray workers still train leaves them to stop at their
next checkpoint, without writing it, once another driver has taken the sweep over (each checkpoint write checks that
the lock still names the driver that started the run, and a run's next writer waits for the previous one to stop).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import errno
import functools
import importlib
import io
import json
import math
import os
import shutil
import socket
import sys
import time
import uuid
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..nn import HamNet
from .._checks import check_bool, check_device, check_int
from .._files import atomic_write, write_text
from ..grad import ConvergenceWarning
from .._modules import module_from_source
from ..solvers import register_solver, solver_factory
from .config import AblationConfig, RunSpec, _number
from .metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from .probes import _device_rng, append, new_series, probe
from .summary import Summary, summarize

__all__ = ["run_ablation", "load_results", "read_config", "load_model", "build_model", "CSV_COLUMNS"]

#: Columns of ``results.csv`` (``results.jsonl`` rows also hold ``iou`` per class, the training ``curve`` and the
#: gradient ``probes``: see :func:`hamgrad.experiments.probes.new_series`; ``None`` with ``probe_every=None``, and
#: ``{"every", "skipped"}`` with the reason for a run without a ham).
#: ``status`` is ``"ok"`` or ``"failed"`` (then ``error`` says why, after ``attempts`` tries); ``resumed_from`` is the
#: training step the run last resumed from (0: trained from the start); ``unconverged_backward`` counts the implicit
#: backward solves that did not converge (their gradients are NaN) and ``skipped_steps`` the training steps whose
#: optimizer step was skipped for that (the iteration still counts); ``steps``/``eval_steps`` and ``block`` (the
#: Hamburger's version, ``"v1"`` or ``"v2"``) are ``None`` for the no-ham baseline and the context modules.
#: ``solver`` names the head's module: a solver, a context module of ``AblationConfig.contexts``, or ``none``.
#: ``miou_disagree``/``pixel_acc_disagree`` score the validation images whose regional majorities disagree
#: (``AblationConfig.task == "regional"``; ``None`` for the global task).
CSV_COLUMNS = ("run_id", "status", "solver", "grad", "block", "seed", "steps", "eval_steps", "iters", "miou",
               "pixel_acc", "miou_disagree", "pixel_acc_disagree", "final_loss", "diverged", "skipped_steps",
               "unconverged_backward", "train_seconds",
               "eval_seconds", "resumed_from", "finished_at", "error")
_OWN_FILES = ("config.json", "results.jsonl", "results.csv", "summary.md", "summary.json")
_LOCK = "ablate.lock"
_RUN_LOCK = "run.lock"
#: Keys of a finished (``status == "ok"``) row besides the run's identity.
_REQUIRED = ("miou", "pixel_acc", "iou", "diverged", "curve")
#: The config fields that only choose runs (a sweep may grow along them); every other field must match for a
#: checkpoint or row to be kept.
_AXES = ("solvers", "grads", "blocks", "seeds", "steps", "contexts", "baseline")
#: Errors of the storage, not of a run: they stop the sweep instead of being recorded as a failed run.
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


# ---------------------------------------------------------------------- files
def _csv_text(rows: list) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if r.get(k) is None else r[k] for k in CSV_COLUMNS} for r in rows)
    return buf.getvalue()


def _write_results(out: Path, rows: list) -> None:
    """Write ``results.jsonl`` and ``results.csv`` (each only where it does not already hold ``rows``)."""
    _write_if_changed(out / "results.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
    _write_if_changed(out / "results.csv", _csv_text(rows))


def _write_if_changed(path: Path, text: str) -> None:
    """:func:`write_text` unless ``path`` already holds ``text`` (a finished sweep is summarised without writing)."""
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        write_text(path, text)


def read_config(out_dir) -> AblationConfig:
    """The :class:`AblationConfig` of the sweep in ``out_dir`` (its ``config.json``).

    Args:
        out_dir: the sweep's folder.

    Returns:
        The sweep's :class:`AblationConfig`.

    Raises:
        ValueError: naming the file when it is missing, not JSON, or not a valid AblationConfig.
    """
    path = Path(out_dir) / "config.json"
    try:
        return AblationConfig.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} not found: {str(out_dir)!r} holds no sweep") from None
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a valid sweep config ({err})") from None


def _fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _row_problem(row: dict, spec: RunSpec | None, config: AblationConfig) -> str | None:
    """Why ``row`` is not a row of run ``spec`` of ``config`` (``None`` when it is)."""
    if spec is None:
        return "its run is not in the sweep's config"
    expected = {"solver": spec.module, "grad": spec.grad, "seed": spec.seed, "block": spec.block}
    if spec.steps is not None:  # (the baseline has no K; its rows from before K was an axis say the config's)
        expected["steps"] = spec.steps
    wrong = [f"{k}={row.get(k)!r} (expected {v!r})" for k, v in expected.items() if row.get(k) != v]
    if wrong:
        return "it does not match its run: " + ", ".join(wrong)
    status = row.get("status", "ok")
    if status not in ("ok", "failed"):
        return f"its status {status!r} is neither 'ok' nor 'failed'"
    if row.get("iters", config.iters) != config.iters:
        return f"it was trained for iters={row['iters']!r}, the config says {config.iters}"
    if status == "ok":
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            return f"it lacks {missing}"
        bad = [f"{k}={row[k]!r}" for k in ("miou", "pixel_acc") if not _fraction(row[k])]
        if not isinstance(row["diverged"], bool):
            bad.append(f"diverged={row['diverged']!r}")
        if not isinstance(row["iou"], list) or not all(v is None or _fraction(v) for v in row["iou"]):
            bad.append("iou (not a list of numbers in [0, 1])")
        curve = row["curve"]
        if not isinstance(curve, dict) or not all(isinstance(curve.get(k), list) for k in ("step", "loss")):
            bad.append("curve (not {'step': [...], 'loss': [...]})")
        if bad:
            return "its metrics are not numbers in [0, 1] as a finished run writes them: " + ", ".join(bad)
    return None


def load_results(out_dir) -> list[dict]:
    """The rows of the sweep in ``out_dir`` (from ``results.jsonl``), in the order they were recorded, checked
    against its ``config.json``: a repeated row of a run is dropped, and a row of a run that is not in the config,
    that does not match its run, was trained for another number of iterations, has an unknown ``status`` or metrics
    that are not numbers in [0, 1] (NaN, a string, ...) is ignored, each with a warning naming the file and line.
    Rows have ``status`` ``"ok"`` or ``"failed"`` (then ``error`` holds the run's last error and the metrics are
    ``None``), and ``block``: a ham row written before the block was an axis (it has no ``block``) is a V1 row and
    reads ``"v1"``.

    Args:
        out_dir: the sweep's folder.

    Returns:
        A list of row dicts (empty when no run has finished yet).

    Raises:
        ValueError: naming the file (and line) when ``config.json`` is not a valid config, ``results.jsonl`` is not
            a file, or a line of it is not a JSON object with a ``run_id`` (a truncated or foreign file).
    """
    out = Path(out_dir)
    path = out / "results.jsonl"
    if not path.exists():
        return []
    if not path.is_file():
        raise ValueError(f"{path} is not a file (the sweep's rows go there): move it away")
    config = read_config(out)
    specs = {s.run_id: s for s in config.runs()}
    rows, seen, ignored = [], set(), []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not a JSON row (truncated or damaged file: {err})") from None
        if not isinstance(row, dict) or not isinstance(row.get("run_id"), str):
            raise ValueError(f"{path} line {number} is not a sweep row (a JSON object with a run_id)")
        if row["run_id"] in seen:
            ignored.append(f"line {number}: a repeated row of run {row['run_id']}")
            continue
        if "block" not in row:  # written before the block was an axis: a V1 run (or no ham)
            row["block"] = "v1" if row.get("grad") is not None else None
        problem = _row_problem(row, specs.get(row["run_id"]), config)
        if problem:
            ignored.append(f"line {number} (run {row['run_id']}): {problem}")
            continue
        seen.add(row["run_id"])
        row.setdefault("status", "ok")  # rows written before failed runs were recorded
        rows.append(row)
    if ignored:
        warnings.warn(f"{path}: ignored {len(ignored)} row(s): " + "; ".join(ignored), stacklevel=2)
    return rows


def _check_out_dir(out: Path, repair: bool) -> None:
    """Refuse, before writing anything, an ``out`` that is a file, a non-empty folder without a sweep (unless
    ``repair`` and it holds a sweep's rows or runs), or a sweep whose own files are folders."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir={str(out)!r} exists and is not a folder")
    if not out.is_dir():
        return
    for name in (*_OWN_FILES, _LOCK):
        if (out / name).exists() and not (out / name).is_file():
            raise ValueError(f"{out / name} is not a file (the sweep writes its {name} there): move it away")
    if (out / "runs").exists() and not (out / "runs").is_dir():
        raise ValueError(f"{out / 'runs'} is not a folder (the sweep's runs go there): move it away")
    if (out / "config.json").exists():
        return
    if repair and ((out / "results.jsonl").exists() or (out / "runs").is_dir()):
        return
    if any(p.name != _LOCK for p in out.iterdir()):
        hint = (" (it has a results.jsonl or runs/: pass repair=True, hamgrad ablate --repair, to rebuild "
                "config.json and keep its finished runs)" if (out / "results.jsonl").exists() or
                (out / "runs").is_dir() else "; choose another folder")
        raise ValueError(f"out_dir={str(out)!r} is not empty and holds no sweep (no config.json){hint}")


def _training_fields(config: AblationConfig) -> dict:
    """The config's fields that are not sweep axes: two configs that agree on them train the same runs alike."""
    return {k: v for k, v in config.to_dict().items() if k not in _AXES}


def _extends(old: AblationConfig, new: AblationConfig) -> bool:
    """Whether ``new`` is ``old`` with more runs (more seeds, solvers, modes, blocks, K values, context modules)."""
    return (_training_fields(old) == _training_fields(new)
            and {s.run_id for s in old.runs()} <= {s.run_id for s in new.runs()})


def _diff(old: AblationConfig, new: AblationConfig) -> str:
    a, b = old.to_dict(), new.to_dict()
    return "; ".join(f"{k}: {v!r} -> {b.get(k)!r}" for k, v in a.items() if b.get(k) != v)


def _checkpoint_configs(out: Path) -> dict:
    """The config each checkpoint in ``out/runs`` names, by run id (checkpoints that cannot be read are left out)."""
    found = {}
    for path in sorted(out.glob("runs/*/checkpoint.pt")):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            found[path.parent.name] = AblationConfig.from_json(ckpt["config"])
        except Exception:  # a damaged checkpoint says nothing about the config; the run will name it when resumed
            continue
    return found


def _repair(config: AblationConfig, out: Path, reason: str) -> None:
    """Rebuild a missing or damaged ``config.json`` as ``config`` when the sweep's checkpoints and rows agree with it
    (keeping every finished run), or refuse naming what disagrees."""
    written = _checkpoint_configs(out)
    other = {run: c for run, c in written.items() if _training_fields(c) != _training_fields(config)}
    if other:
        run, c = next(iter(other.items()))
        raise ValueError(f"out_dir={str(out)!r}: cannot repair config.json with this config: the checkpoint of run "
                         f"{run} (and {len(other) - 1} more) was written by another one ({_diff(c, config)}); give "
                         f"the sweep's own settings")
    runs = {s.run_id for s in config.runs()}
    rows = []
    if (out / "results.jsonl").is_file():
        for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line)["run_id"])
            except (ValueError, TypeError, KeyError):
                continue
    missing = sorted((set(written) | set(rows)) - runs)
    if missing:
        raise ValueError(f"out_dir={str(out)!r}: cannot repair config.json with this config: it lacks runs the sweep "
                         f"has ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); give settings that "
                         f"include them")
    if not written:
        warnings.warn(f"{out}: no readable checkpoint to check the config against; its rows are kept on their run, "
                      f"K and iterations alone", stacklevel=4)
    warnings.warn(f"{out / 'config.json'}: rebuilt ({reason}); the sweep's finished runs are kept", stacklevel=4)
    write_text(out / "config.json", config.to_json())


def _prepare_out_dir(config: AblationConfig, out: Path, overwrite: bool, repair: bool) -> None:
    """Check that ``out`` (existing, locked) holds this config's sweep, a sweep it extends, or none; with
    ``overwrite`` clear another; with ``repair`` rebuild a missing or damaged ``config.json``."""
    config_path = out / "config.json"
    if not config_path.exists():
        if repair and ((out / "results.jsonl").exists() or any(out.glob("runs/*/checkpoint.pt"))):
            _repair(config, out, "it was missing")
        else:
            write_text(config_path, config.to_json())
        return
    try:
        old = read_config(out)
    except ValueError as err:
        if repair:
            _repair(config, out, f"it was damaged: {err}")
            return
        if not overwrite:
            raise ValueError(f"{err}; pass repair=True (hamgrad ablate --repair, with the sweep's settings) to rebuild "
                             f"it and keep the finished runs") from None
        reason = str(err)
    else:
        if old == config:
            return
        if _extends(old, config):
            added = len(config.runs()) - len(old.runs())
            warnings.warn(f"{config_path}: the sweep grows by {added} run(s) ({_diff(old, config)}); its finished "
                          f"runs are kept", stacklevel=3)
            write_text(config_path, config.to_json())
            return
        reason = "it holds a sweep with a different config (" + _diff(old, config) + ")"
    if not overwrite:
        raise ValueError(f"out_dir={str(out)!r}: {reason}; a config may only add runs (seeds, solvers, modes, "
                         f"blocks, K, contexts) to a sweep: pass overwrite=True (hamgrad ablate --overwrite) to delete its sweep "
                         f"and start again, or choose another folder")
    for name in _OWN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "runs", ignore_errors=True)
    write_text(config_path, config.to_json())


def _read_only_summary(config: AblationConfig, out: Path, err: OSError) -> Summary | None:
    """The summary of a finished sweep of ``config`` in a folder this process cannot write (``None`` when the sweep
    is not finished or is another config's: then the write error stands)."""
    try:
        if read_config(out) != config:
            return None
        rows = load_results(out)
    except (ValueError, OSError):
        return None
    if {r["run_id"] for r in rows if r["status"] == "ok"} != {s.run_id for s in config.runs()}:
        return None
    warnings.warn(f"out_dir={str(out)!r} cannot be written ({err.strerror or err}): every run has finished, so its "
                  f"summary is printed from results.jsonl and nothing is written", stacklevel=3)
    return summarize(rows, config.grads)


class _SweepLock:
    """An exclusive lock on a sweep folder for the process that writes it (``out/ablate.lock``).

    The lock is an ``fcntl.flock`` on the file, which the kernel releases when its holder exits in any way (a
    SIGKILL included), so a lock left by a dead driver is simply taken over; the file names the holder (pid, host,
    start time) for the refusal message, and a random ``token`` that the driver's Ray tasks check before each
    checkpoint write (:func:`_check_fence`). The holder removes the file when it ends; a driver that finds the file
    replaced or removed after taking its lock takes the new one instead.
    """

    def __init__(self, out: Path):
        self.path = out / _LOCK
        self.fd = None
        self.token = uuid.uuid4().hex

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def acquire(self) -> "_SweepLock":
        """Take the lock (see the class docstring); returns ``self``."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise ValueError(f"out_dir={str(self.path.parent)!r} is being written by another hamgrad ablate "
                                 f"({holder}, lock {self.path}); wait for it to finish or stop it") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed the file as we opened it: lock the current one
        previous = self._holder(fd)
        if previous != "unknown holder":
            warnings.warn(f"{self.path}: taking over the lock of a driver that is no longer running ({previous})",
                          stacklevel=3)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "token": self.token}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and release the lock."""
        self.path.unlink(missing_ok=True)  # while still holding the lock: a driver waiting on it sees the file go
        os.close(self.fd)  # closing releases the flock

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (ValueError, TypeError, KeyError):
            return "unknown holder"


class _Superseded(RuntimeError):
    """A run's driver is gone and another driver holds the sweep: the run stops without writing."""


def _check_fence(out: Path, token: str | None) -> None:
    """Raise :class:`_Superseded` when the sweep's lock no longer names the driver (``token``) that started this
    run; ``None`` (a run in the driver's own process) is never superseded."""
    if token is None:
        return
    try:
        holder = json.loads((out / _LOCK).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict) or holder.get("token") != token:
        raise _Superseded(f"the driver that started this run is gone and {out} is no longer its sweep: the run stops "
                          f"without writing its checkpoint")


def _remove_temporaries(folder: Path) -> None:
    """Temporary files (``.NAME.PID.HEX.tmp``) that a writer killed mid-write left in ``folder``."""
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------- data and model
@functools.lru_cache(maxsize=1)
def _data(config: AblationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All items of the sweep's dataset as ``(images float32 (N, 3, H, W), labels uint8 (N, H, W))`` on the CPU,
    generated once per process."""
    ds = config.dataset()
    images, labels = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(images), torch.stack(labels).to(torch.uint8)


def _validation(config: AblationConfig) -> range:
    return range(config.train_samples, config.train_samples + config.val_samples)


@functools.lru_cache(maxsize=1)
def _disagreeing(config: AblationConfig) -> torch.Tensor | None:
    """Which validation items' regional majorities disagree (the regional task; ``None`` for the global task)."""
    return config.dataset().disagreeing(_validation(config)) if config.task == "regional" else None


def _global_ceiling(config: AblationConfig) -> dict | None:
    """The regional task's closed-form one-label-per-image ceiling on the validation items (``None`` for the global
    task, where one label per image is right)."""
    return config.dataset().global_ceiling(_validation(config)) if config.task == "regional" else None


def build_model(config: AblationConfig, spec: RunSpec) -> HamNet:
    """The untrained :class:`HamNet` of one run of the sweep (draws its weights from torch's global RNG).

    Args:
        config: the sweep's configuration.
        spec: one of ``config.runs()``.

    Returns:
        The :class:`HamNet` with the run's head (a ham, a context module, or none) and K.
    """
    if spec.solver is None:  # the baseline or a context module: no ham, so no K, mode or block
        return HamNet(config.num_classes, width=config.width, output_stride=config.output_stride, ham=None,
                      d=config.d, rank=config.rank, context=spec.context)
    return HamNet(config.num_classes, width=config.width, output_stride=config.output_stride, ham=spec.solver,
                  d=config.d, rank=config.rank, steps=(spec.steps, config.eval_steps_for(spec.steps, spec.block)),
                  grad=spec.grad, version=spec.block, solver_kwargs=dict(config.solver_args))


def load_model(out_dir, run_id: str, device="cpu") -> HamNet:
    """The trained model of run ``run_id`` of the sweep in ``out_dir``, in eval mode (from its checkpoint).

    Args:
        out_dir: the sweep's folder.
        run_id: a run of the sweep, e.g. ``"nmf_one-step_K6_seed0"``.
        device: where to put the model.

    Returns:
        The :class:`HamNet` with the checkpoint's weights, in eval mode.

    Raises:
        ValueError: when ``run_id`` is not a run of the sweep, or its checkpoint is missing, unreadable, or belongs
            to another run or config (each naming the file).
    """
    out = Path(out_dir)
    config = read_config(out)
    specs = {s.run_id: s for s in config.runs()}
    if run_id not in specs:
        raise ValueError(f"run_id={run_id!r} is not a run of the sweep in {str(out)!r}; runs: {sorted(specs)}")
    path = out / "runs" / run_id / "checkpoint.pt"
    if not path.exists():
        raise ValueError(f"run_id={run_id!r} has no checkpoint ({path} is missing)")
    model = build_model(config, specs[run_id])
    model.load_state_dict(_load_checkpoint(path, config, specs[run_id], "cpu")["model"])
    return model.to(check_device(device)).eval()


def _with_encoder(config: AblationConfig, model: HamNet) -> HamNet:
    """``model`` with the encoder of ``config.encoder_from`` (frozen with ``config.freeze_encoder``), if any."""
    if config.encoder_from is None:
        return model
    sweep, run_id = os.path.split(config.encoder_from)
    finished = {r["run_id"] for r in load_results(sweep) if r["status"] == "ok"} if os.path.isdir(sweep) else set()
    if run_id not in finished:
        raise ValueError(f"encoder_from={config.encoder_from!r}: {run_id!r} is not a finished run of a sweep in "
                         f"{sweep!r} (give 'SWEEP/RUN_ID', e.g. 'runs/table1-regional/sa_seed0')")
    try:
        return model.load_encoder(load_model(sweep, run_id), freeze=config.freeze_encoder)
    except ValueError as err:
        raise ValueError(f"encoder_from={config.encoder_from!r}: {err}") from None


# ---------------------------------------------------------------------- training
def _lr(config: AblationConfig, step: int) -> float:
    """Linear warm-up over the first 5% of iterations, then cosine decay to 0."""
    warmup = max(1, round(0.05 * config.iters))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.iters - warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _train_step(model: HamNet, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One optimisation step on a batch; returns the (detached) cross-entropy loss and how many implicit backward
    solves did not converge. Their gradients are NaN, so then the optimizer step is skipped (the weights and the
    optimizer's state stay as they were); their warnings are silenced, as the count goes into the run's row."""
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        loss.backward()
    unconverged = sum(not b.converged for m in model.modules() for b in getattr(m, "backward_solves", ()))
    if not unconverged:
        optimizer.step()
    return loss.detach(), unconverged


def _save_checkpoint(path: Path, config: AblationConfig, spec: RunSpec, model, optimizer, state: dict,
                     batches: torch.Generator, device) -> None:
    rng = _device_rng(device)
    payload = {**state, "run_id": spec.run_id, "config": config.to_json(),
               "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "rng_torch": torch.get_rng_state(), "rng_batches": batches.get_state(),
               "rng_device": None if rng is None else rng.get_rng_state(device)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory first: a full disk is then Python's OSError, not torch's writer error
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def _load_checkpoint(path: Path, config: AblationConfig, spec: RunSpec, device) -> dict:
    """The checkpoint of run ``spec`` at ``path``; one that cannot be read, or that another run or another config
    wrote, is refused with a ValueError naming the file (never resumed). A config that differs only in the sweep's
    axes (one that the sweep grew from) trains the run alike and counts as the same."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ... on a damaged file
        raise ValueError(f"checkpoint {path} cannot be read (truncated or not a hamgrad checkpoint: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}); delete it to restart run "
                         f"{spec.run_id}") from None
    owner = ckpt.get("run_id") if isinstance(ckpt, dict) else None
    same = owner == spec.run_id and (ckpt.get("config") == config.to_json() or _same_training(ckpt.get("config"),
                                                                                              config))
    if not same:
        raise ValueError(f"checkpoint {path} was not written by run {spec.run_id} of this sweep's config (it names "
                         f"run {owner!r}{'' if owner is None else ' of another config' if owner == spec.run_id else ''}"
                         f"); delete it to restart the run")
    return ckpt


def _same_training(text, config: AblationConfig) -> bool:
    """Whether the config JSON ``text`` (a checkpoint's) trains runs as ``config`` does (same non-axis fields)."""
    try:
        return _training_fields(AblationConfig.from_json(text)) == _training_fields(config)
    except (ValueError, TypeError):
        return False


def _evaluate(model: HamNet, images: torch.Tensor, labels: torch.Tensor, config: AblationConfig, seed: int,
              device: torch.device, flagged: torch.Tensor | None = None) -> tuple:
    """The confusion matrices on the validation items, over all of them and over those ``flagged`` (a bool per item;
    ``None``: no second matrix); the ham's initial state is drawn from a generator seeded ``seed``."""
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    conf = torch.zeros(config.num_classes, config.num_classes, dtype=torch.long, device=device)
    part = None if flagged is None else conf.clone()
    with torch.no_grad():
        for i in range(0, len(images), config.batch_size):
            x = images[i:i + config.batch_size].to(device)
            y = labels[i:i + config.batch_size].to(device).long()
            pred = model(x, generator=generator).argmax(1)
            conf += confusion_matrix(pred, y, config.num_classes)
            if part is not None:
                keep = flagged[i:i + config.batch_size].to(device)
                part += confusion_matrix(pred[keep], y[keep], config.num_classes)
    return conf.cpu(), None if part is None or int(part.sum()) == 0 else part.cpu()


def _identity(config: AblationConfig, spec: RunSpec) -> dict:
    """The columns of a row that name its run."""
    return {"run_id": spec.run_id, "solver": spec.module, "grad": spec.grad, "block": spec.block, "seed": spec.seed,
            "steps": spec.steps,
            "eval_steps": None if spec.steps is None else config.eval_steps_for(spec.steps, spec.block)}


def _run(config: AblationConfig, spec: RunSpec, run_dir: Path, device: torch.device, bar,
         fence: str | None = None) -> dict:
    """Train (or resume) and evaluate one run, holding its ``run.lock`` (waiting for a previous writer of the run to
    stop); returns its results row. ``fence``: the token of the driver that started the run (on Ray), checked before
    each checkpoint write (:func:`_check_fence`)."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / _RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a stale worker of a dead driver still training this run stops first
        _remove_temporaries(run_dir)  # what a writer killed mid-write left (no other writer of this run now)
        return _train_and_evaluate(config, spec, run_dir, device, bar, fence)
    finally:
        os.close(fd)


def _train_and_evaluate(config: AblationConfig, spec: RunSpec, run_dir: Path, device: torch.device, bar,
                        fence: str | None) -> dict:
    ckpt_path = run_dir / "checkpoint.pt"
    images, labels = _data(config)
    n_train = config.train_samples
    torch.manual_seed(spec.seed)
    model = _with_encoder(config, build_model(config, spec)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches = torch.Generator().manual_seed(spec.seed)
    state = {"step": 0, "diverged": False, "train_seconds": 0.0, "curve": {"step": [], "loss": []},
             "skipped_steps": 0, "unconverged_backward": 0, "probes": _probe_series(config, spec)}
    if ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path, config, spec, device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_torch"].cpu())
        batches.set_state(ckpt["rng_batches"].cpu())
        rng = _device_rng(device)
        if rng is not None and ckpt["rng_device"] is not None:
            rng.set_rng_state(ckpt["rng_device"].cpu(), device)
        state = {k: ckpt.get(k, v) for k, v in state.items()}  # older checkpoints lack the skip counts or probes
        bar.update(state["step"])
    resumed_from = state["step"]

    model.train()
    probing = state["probes"] is not None and "skipped" not in state["probes"]
    running = torch.zeros((), device=device)
    since_log, start = 0, time.perf_counter()
    while state["step"] < config.iters and not state["diverged"]:
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, state["step"])
        idx = torch.randint(n_train, (config.batch_size,), generator=batches)
        x, y = images[idx].to(device), labels[idx].to(device).long()
        if probing and state["step"] % config.probe_every == 0:  # before the update: the model stays as it was
            probe_start = time.perf_counter()
            append(state["probes"], state["step"], probe(model, x, y))
            state["probes"]["seconds"] += time.perf_counter() - probe_start
        batch_loss, unconverged = _train_step(model, optimizer, x, y)
        running += batch_loss
        state["unconverged_backward"] += unconverged
        state["skipped_steps"] += bool(unconverged)
        state["step"] += 1
        since_log += 1
        bar.update(1)
        if state["step"] % config.log_every == 0 or state["step"] == config.iters:
            loss = float(running) / since_log
            state["diverged"] = not math.isfinite(loss)
            state["curve"]["step"].append(state["step"])
            state["curve"]["loss"].append(loss if math.isfinite(loss) else None)
            running.zero_()
            since_log = 0
            bar.set_postfix(loss=f"{loss:.3f}")
            if state["step"] % config.checkpoint_every == 0 or state["step"] == config.iters or state["diverged"]:
                state["train_seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                _check_fence(run_dir.parent.parent, fence)
                _save_checkpoint(ckpt_path, config, spec, model, optimizer, state, batches, device)

    start = time.perf_counter()
    conf, disagree = _evaluate(model, images[n_train:], labels[n_train:], config, spec.seed, device,
                               _disagreeing(config))
    iou = iou_per_class(conf)
    losses = state["curve"]["loss"]
    return {
        **_identity(config, spec), "status": "ok", "iters": config.iters,
        "miou": mean_iou(conf), "pixel_acc": pixel_accuracy(conf),
        "miou_disagree": None if disagree is None else mean_iou(disagree),
        "pixel_acc_disagree": None if disagree is None else pixel_accuracy(disagree),
        "iou": [None if math.isnan(v) else v for v in iou.tolist()],
        "final_loss": losses[-1] if losses else None, "diverged": state["diverged"],
        "skipped_steps": state["skipped_steps"], "unconverged_backward": state["unconverged_backward"],
        "train_seconds": round(state["train_seconds"], 3), "eval_seconds": round(time.perf_counter() - start, 3),
        "resumed_from": resumed_from,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "curve": state["curve"], "probes": state["probes"],
    }


def _probe_series(config: AblationConfig, spec: RunSpec) -> dict | None:
    """The run's empty probe series: ``None`` without probes, the reason for a run without a ham."""
    if config.probe_every is None:
        return None
    if spec.solver is None:
        what = f"the context module {spec.context!r}" if spec.context else "the no-ham baseline"
        return {"every": config.probe_every, "skipped": f"{what} has no ham to probe"}
    return new_series(config.probe_every)


def run_ablation(config: AblationConfig, out_dir, *, overwrite: bool = False, repair: bool = False, device="cpu",
                 progress: bool = True, workers: int = 1, address: str | None = None, cpus_per_run: float = 1,
                 gpus_per_run: float = 0, retries: int = 1, verbose: bool = False) -> Summary:
    """Train and evaluate every run of ``config`` (see :class:`AblationConfig`), resumably, into ``out_dir``.

    Each run trains :class:`hamgrad.nn.HamNet` on the task's dataset (``config.task``:
    :class:`hamgrad.data.GlobalContextShapes` or :class:`hamgrad.data.RegionalShapes`) with seed-controlled weights,
    batches and ham initialisations, evaluates mIoU and pixel accuracy on the validation items (for the regional task
    also on those whose regional majorities disagree), and appends one row to ``results.jsonl``/``results.csv``; the
    Table-1-style summary (naming the task, and for the regional task its closed-form global ceiling) is rewritten
    after every run. Calling it again on the same folder resumes the sweep (see the module docstring); finished runs
    are skipped, runs recorded as failed are tried again.
    A config that adds runs to the folder's sweep (more seeds, solvers, modes, blocks, K values or context modules,
    every other field the same) grows it: its finished runs are kept.

    With ``workers=1`` and no ``address`` the runs train one after another in this process (Ray is not imported).
    Otherwise each run is a Ray task (``pip install 'hamgrad[ray]'``): up to ``workers`` at once, each reserving
    ``cpus_per_run`` CPUs (its torch threads) and ``gpus_per_run`` GPUs; the driver (this process) is the only writer
    of the results and summary, and a run's checkpoints stay in ``out_dir/runs``, so ``out_dir`` must be on a
    filesystem every worker shares. A run gives the same numbers either way (bitwise on CPU at the same number of
    torch threads). Solvers that are not hamgrad's own travel with the tasks: the worker imports the module that
    defines each (by name, or from the source the driver read when the name cannot be imported there); a class
    defined in a script or notebook is sent by value.

    Args:
        config: the sweep.
        out_dir: its folder (created if needed). A folder holding a sweep of a different config (one that does not
            only add runs), or other files, is refused unless ``overwrite=True``, which deletes that sweep's files
            (only the ones this runner writes).
        repair: rebuild a missing or damaged ``config.json`` as ``config`` when the sweep's checkpoints (each names
            the config that wrote it) and rows agree with it, keeping the finished runs.
        device: where to train (``"cpu"``, ``"cuda"``, a ``torch.device``); with Ray, on each worker (with an
            ``address``, a worker without that device records its runs as failed, naming the device).
        progress: show a tqdm progress bar, then print the summary and where the results are.
        workers: how many runs train at once (1: in this process).
        address: ``None`` starts a new local Ray instance of its own when ``workers > 1`` (never another cluster on
            the machine; a Ray instance already started in this process is used as it is); ``"auto"`` or
            ``"HOST:PORT"`` attaches to a running Ray cluster (checked to answer first).
        cpus_per_run: Ray CPUs (torch threads) of each run (ignored in-process).
        gpus_per_run: Ray GPUs of each run (ignored in-process); ``device="cuda"`` on Ray needs
            ``gpus_per_run > 0``, and a fraction lets runs share a GPU.
        retries: how many times a run that raises (or whose worker dies) is tried again before it is recorded as
            a failed row (``status="failed"`` with its ``error``; shown in the summary).
        verbose: let Ray print its own start-up lines, warnings and the workers' output (quiet by default).

    Returns:
        the :class:`~hamgrad.experiments.Summary` of the sweep's rows (also in ``summary.md``/``summary.json``).
        On storage this process cannot write, a finished sweep of ``config`` is summarised from its rows with a
        warning, writing nothing.

    Raises:
        ValueError: naming the argument or file: a ``device`` this machine lacks; an ``out_dir`` that is a file, holds
            other files or another config's sweep (without ``overwrite``), or is locked by another running driver
            (``out_dir/ablate.lock`` names it; the lock of a driver that died is taken over); a damaged
            ``results.jsonl``, ``config.json`` (``repair`` rebuilds it) or checkpoint, or a checkpoint another run or
            config wrote; Ray missing when ``workers > 1`` or ``address`` is given, or an ``address`` where no Ray
            cluster answers.
        OSError: "no space left on device" (or "disk quota exceeded") when the storage fills up: the sweep stops,
            nothing is recorded as failed, and the same call resumes it once there is room.
    """
    if not isinstance(config, AblationConfig):
        raise TypeError(f"config must be an AblationConfig, got {type(config).__name__}")
    device = check_device(device, here=address is None)  # on a cluster, each worker checks its own
    check_int(workers, "workers", 1)
    check_int(retries, "retries", 0)
    check_bool(repair, "repair")
    check_bool(verbose, "verbose")
    if address is not None and (not isinstance(address, str) or not address):
        raise TypeError(f"address must be 'auto' or 'HOST:PORT', got {address!r}")
    _number(cpus_per_run, "cpus_per_run", 0.0, inclusive=False)
    _number(gpus_per_run, "gpus_per_run", 0.0, inclusive=True)
    if (workers > 1 or address is not None) and device.type == "cuda" and gpus_per_run == 0:
        raise ValueError(f"device={str(device)!r} on Ray needs gpus_per_run > 0 (hamgrad ablate --gpus-per-run): Ray "
                         f"hides the GPUs from a task that reserves none")
    out = Path(out_dir)
    _check_out_dir(out, repair)
    if config.encoder_from is not None:  # a missing or incompatible source stops the sweep before anything is written
        _with_encoder(config, build_model(config, config.runs()[0]))
    lock = _SweepLock(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:
        summary = _read_only_summary(config, out, err) if out.is_dir() else None
        if summary is None:
            raise
        if progress:
            print(summary.to_markdown())
        return summary
    try:
        _prepare_out_dir(config, out, overwrite, repair)
        rows = load_results(out)
        _remove_temporaries(out)  # this driver is the only writer of the folder's own files
        _write_results(out, rows)  # the CSV follows the JSON lines even if a kill fell between the two writes
        done = {r["run_id"] for r in rows if r["status"] == "ok"}
        tabulate = functools.partial(summarize, grads=config.grads, task=config.title,
                                     ceiling=_global_ceiling(config))
        pending = [spec for spec in config.runs() if spec.run_id not in done]
        for run_id in done:  # (an unfinished run's next writer cleans its folder, once no other writer holds it)
            _remove_temporaries(out / "runs" / run_id)
        for spec in pending:  # a damaged or foreign checkpoint stops the sweep before anything trains
            path = out / "runs" / spec.run_id / "checkpoint.pt"
            if path.exists():
                _load_checkpoint(path, config, spec, "cpu")
        if progress and not pending:
            print(f"all {len(done)} runs of the sweep in {out} already finished")

        def record(row: dict) -> None:
            rows[:] = [r for r in rows if r["run_id"] != row["run_id"]] + [row]  # a failed row gives way
            with _stop_on_full_storage():
                _write_results(out, rows)
                _write_summary(out, tabulate(rows))

        if pending and workers == 1 and address is None:
            _run_here(config, pending, out, device, retries, progress, record, total=len(config.runs()))
        elif pending:
            _run_on_ray(config, pending, out, device, retries, progress, record, workers=workers, address=address,
                        cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, verbose=verbose, token=lock.token)
        summary = tabulate(rows)
        with _stop_on_full_storage():
            _write_summary(out, summary)
    finally:
        lock.release()
    if progress:
        failed = sum(r["status"] == "failed" for r in rows)
        print(summary.to_markdown())
        print(f"results in {out}: results.jsonl, results.csv, summary.md ({len(rows) - failed} finished"
              + (f", {failed} failed" if failed else "") + f" of {len(config.runs())} runs)")
    return summary


class _StorageFull(OSError):
    """The storage is full: the error that stops the sweep (not a run's failure)."""

    def __init__(self, err: OSError):
        where = f" writing {err.filename}" if err.filename else ""
        super().__init__(f"{_NO_SPACE[err.errno]}{where}: the sweep stopped (nothing was recorded as failed); free "
                         f"some space and rerun the same command to resume")
        self.errno = err.errno


@contextlib.contextmanager
def _stop_on_full_storage():
    """Turn a full disk (or quota) into :class:`_StorageFull`, the error that stops the sweep."""
    try:
        yield
    except OSError as err:
        if err.errno in _NO_SPACE and not isinstance(err, _StorageFull):
            raise _StorageFull(err) from err
        raise


def _failed_row(config: AblationConfig, spec: RunSpec, error: str, attempts: int) -> dict:
    return {**_identity(config, spec), "status": "failed", "iters": config.iters, "error": error,
            "attempts": attempts, **{k: None for k in _REQUIRED}, "final_loss": None,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")}


def _error_text(err: BaseException) -> str:
    """``Type: message`` of an exception on one line (the original exception of a Ray task error)."""
    err = getattr(err, "cause", None) or err
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _warn_retry(spec: RunSpec, attempt: int, retries: int, error: str) -> None:
    warnings.warn(f"run {spec.run_id} failed (attempt {attempt} of {retries + 1}): {error}"
                  + ("; trying again" if attempt <= retries else "; recorded as failed"), stacklevel=3)


def _run_here(config, pending, out, device, retries, progress, record, total) -> None:
    """The in-process engine: one run after another, each tried up to ``1 + retries`` times."""
    with tqdm(total=total * config.iters, initial=(total - len(pending)) * config.iters, unit="it",
              disable=not progress, dynamic_ncols=True) as bar:
        for spec in pending:
            bar.set_description(spec.run_id)
            for attempt in range(1, retries + 2):
                try:
                    with _stop_on_full_storage():
                        row = _run(config, spec, out / "runs" / spec.run_id, device, bar)
                    break
                except _StorageFull:
                    raise
                except Exception as err:  # a kill (KeyboardInterrupt, SystemExit) is not retried, nor a full disk
                    error = _error_text(err)
                    _warn_retry(spec, attempt, retries, error)
                    row = _failed_row(config, spec, error, attempt)
            record(row)


# ---------------------------------------------------------------------- Ray
def _solver_sources(config: AblationConfig) -> list:
    """How a Ray worker, which shares none of the driver's imports, finds each solver of the sweep that is not
    hamgrad's own: its module's name, the object's qualified name and the module's source (when it is one ``.py``
    file); or, for a class defined in a script or notebook (``__main__``) or inside a function, the object itself
    (pickled by value)."""
    sources = []
    for name in config.solvers:
        factory = solver_factory(name)
        module = getattr(factory, "__module__", None) or "__main__"
        if module == "hamgrad" or module.startswith("hamgrad."):
            continue
        qualname = getattr(factory, "__qualname__", "")
        if module == "__main__" or "<locals>" in qualname:
            sources.append({"name": name, "factory": factory})
            continue
        file = getattr(sys.modules.get(module), "__file__", None)
        source = Path(file).read_text(encoding="utf-8") if file and file.endswith(".py") else None
        sources.append({"name": name, "module": module, "qualname": qualname, "source": source, "file": file})
    return sources


def _load_solver_sources(sources: list) -> None:
    """On a Ray worker: register the driver's solvers (see :func:`_solver_sources`) that this process lacks."""
    from ..solvers.base import _REGISTRY

    for src in sources:
        if src["name"] in _REGISTRY:
            continue
        factory = src.get("factory")
        if factory is None:
            module = sys.modules.get(src["module"])
            if module is None:
                try:
                    module = importlib.import_module(src["module"])
                except ImportError:
                    if src["source"] is None:
                        raise ValueError(f"solver {src['name']!r}: its module {src['module']!r} cannot be imported on "
                                         f"this Ray worker ({socket.gethostname()}); install it on every node") from None
                    module = module_from_source(src["module"], src["source"], src["file"])
            if src["name"] in _REGISTRY:  # the module registered it when imported
                continue
            factory = functools.reduce(getattr, src["qualname"].split("."), module)
        register_solver(src["name"], factory, overwrite=True)


def _ray_task(config: AblationConfig, spec: RunSpec, run_dir: str, device: str, threads: int, sources: list,
              token: str) -> dict:
    """One run in a Ray worker (its torch threads set to its CPU reservation; the driver's solvers loaded first)."""
    torch.set_num_threads(threads)
    _load_solver_sources(sources)
    with tqdm(disable=True) as bar:
        return _run(config, spec, Path(run_dir), check_device(device), bar, fence=token)


def _is_ray_cluster(host: str, port: int, timeout: float = 10.0) -> str | None:
    """Why ``host:port`` is not a Ray cluster's head (``None`` when it answers as one): nothing listens, or what
    listens does not answer the HTTP/2 handshake that Ray's gRPC server answers (a SETTINGS frame)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            reply = b""
            while len(reply) < 9:
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError as err:
        return f"{err.strerror or err}" if isinstance(err, ConnectionError) else str(err) or type(err).__name__
    if len(reply) < 9 or reply[3] != 4:
        return "what listens there does not speak Ray's gRPC protocol"
    return None


def _resolve_address(address: str) -> str:
    """``HOST:PORT`` of the Ray cluster ``address`` names (``"auto"``: where Ray itself would look: ``RAY_ADDRESS``,
    then the address file of the last ``ray start``), checked to answer as a Ray cluster first (Ray itself would
    retry for minutes)."""
    named = f"address={address!r}"
    if address == "auto":
        from ray._common.utils import get_ray_address_file
        from ray._private.services import canonicalize_bootstrap_address

        env, file = os.environ.get("RAY_ADDRESS"), get_ray_address_file(None)
        try:
            address = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            raise ValueError(f"address='auto': no running Ray cluster was found on this machine (no RAY_ADDRESS, no "
                             f"{file}); start one with `ray start --head` or give HOST:PORT") from None
        named = f"address='auto' (found {address} " + (
            "in RAY_ADDRESS)" if env else f"in {file}, which a stopped cluster may have left behind)")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be 'auto' or 'HOST:PORT', got {address!r}")
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "false", ""):  # the check speaks plain HTTP/2
        problem = _is_ray_cluster(host.strip("[]"), int(port))
        if problem is not None:
            raise ValueError(f"{named}: no Ray cluster answers there ({problem}); start one with "
                             f"`ray start --head --port={port}` or check the address")
    return address


def _run_on_ray(config, pending, out, device, retries, progress, record, *, workers, address, cpus_per_run,
                gpus_per_run, verbose, token) -> None:
    """The Ray engine: up to ``workers`` runs as Ray tasks at once; failures are resubmitted by this driver."""
    import logging

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network traffic from the engine itself
    try:
        import ray
    except ImportError:
        raise ValueError(f"workers={workers}" + ("" if address is None else f", address={address!r}") +
                         " runs the sweep on Ray, which is not installed: pip install 'hamgrad[ray]'") from None
    sources = _solver_sources(config)
    started = not ray.is_initialized()
    if started:
        level = logging.INFO if verbose else logging.ERROR
        logging.getLogger("ray").setLevel(level)  # Ray's own lines (what ray.init's logging_level also sets)
        if address is None:  # a new instance of this process's own, never a cluster found on the machine
            ray.init(address="local", num_cpus=math.ceil(workers * cpus_per_run),
                     num_gpus=math.ceil(workers * gpus_per_run), include_dashboard=False, log_to_driver=verbose,
                     logging_level=level)
        else:
            resolved = _resolve_address(address)
            if not verbose:  # the C++ core's retry warnings while it connects (the variable costs one line of its own)
                os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
            try:
                ray.init(address=resolved, log_to_driver=verbose, logging_level=level)
            except ConnectionError as err:
                raise ValueError(f"address={address!r}: Ray could not connect to the cluster at {resolved} ({err}); "
                                 f"--verbose (verbose=True) shows Ray's own messages (e.g. an authentication token "
                                 f"that is not the cluster's)") from None
    running: dict = {}
    try:
        task = ray.remote(_ray_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        threads = max(1, int(cpus_per_run))
        queue = [(spec, 1) for spec in pending]
        with tqdm(total=len(pending), unit="run", disable=not progress, dynamic_ncols=True) as bar:
            while queue or running:
                while queue and len(running) < workers:
                    spec, attempt = queue.pop(0)
                    run_dir = out.absolute() / "runs" / spec.run_id  # a worker's working folder is not ours
                    ref = task.remote(config, spec, str(run_dir), str(device), threads, sources, token)
                    running[ref] = (spec, attempt)
                ready, _ = ray.wait(list(running), num_returns=1)
                spec, attempt = running.pop(ready[0])
                try:
                    row = ray.get(ready[0])
                except ray.exceptions.RayError as err:  # the run raised, or its worker died
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, OSError) and cause.errno in _NO_SPACE:
                        raise _StorageFull(cause) from None
                    error = _error_text(err)
                    _warn_retry(spec, attempt, retries, error)
                    if attempt <= retries:
                        queue.insert(0, (spec, attempt + 1))
                        continue
                    row = _failed_row(config, spec, error, attempt)
                record(row)
                bar.set_postfix_str(spec.run_id)
                bar.update(1)
    finally:
        for ref in running:  # interrupted: stop the runs still training (they resume from their checkpoints)
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _write_summary(out: Path, summary: Summary) -> None:
    _write_if_changed(out / "summary.md", summary.to_markdown())
    _write_if_changed(out / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
