"""The resumable ablation runner: ``run_ablation(config, out_dir)``, in this process or on Ray.

Layout of ``out_dir``::

    config.json                  the AblationConfig of the sweep (a different config is refused)
    ablate.lock                  held by the running driver (pid, host, start time); a second driver is refused
    results.jsonl, results.csv   one row per finished (or failed) run (the CSV holds the scalar columns)
    summary.md, summary.json     the Table-1-style summary
    runs/<run_id>/checkpoint.pt  model, optimizer, step, RNG states and training curve of each run

Resuming: ``results.jsonl`` is the record of finished runs; a run listed there with ``status="ok"`` is never trained
again. Its rows are checked against ``config.json`` when read (a repeated row is dropped, a row of a run not in the
config ignored, each with a warning). Any other run restarts from its latest checkpoint (saved every
``checkpoint_every`` iterations and when training ends; resumed only by the run and config that wrote it), restoring
the model, the optimizer, the global torch RNG (the ham's random initialisation), the batch-sampling generator and the
curve, so a resumed run follows the same trajectory as an uninterrupted one. Every file is written to a temporary
name unique to its writer and moved into place with ``os.replace``, so a sweep killed at any moment leaves either the
old or the new file. Only the driver writes the results and summary; on Ray, workers write their runs' checkpoints.
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import json
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..nn import HamNet
from .._checks import check_device, check_int
from .._files import atomic_write, write_text
from .config import AblationConfig, RunSpec, _number
from .metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from .summary import Summary, summarize

__all__ = ["run_ablation", "load_results", "read_config", "load_model", "build_model", "CSV_COLUMNS"]

#: Columns of ``results.csv`` (``results.jsonl`` rows also hold ``iou`` per class and the training ``curve``).
#: ``status`` is ``"ok"`` or ``"failed"`` (then ``error`` says why, after ``attempts`` tries); ``resumed_from`` is the
#: training step the run last resumed from (0: trained from the start); ``steps``/``eval_steps`` and ``block`` (the
#: Hamburger's version, ``"v1"`` or ``"v2"``) are ``None`` for the no-ham baseline and the context modules.
#: ``solver`` names the head's module: a solver, a context module of ``AblationConfig.contexts``, or ``none``.
#: ``miou_disagree``/``pixel_acc_disagree`` score the validation images whose regional majorities disagree
#: (``AblationConfig.task == "regional"``; ``None`` for the global task).
CSV_COLUMNS = ("run_id", "status", "solver", "grad", "block", "seed", "steps", "eval_steps", "iters", "miou",
               "pixel_acc", "miou_disagree", "pixel_acc_disagree", "final_loss", "diverged", "train_seconds",
               "eval_seconds", "resumed_from", "finished_at", "error")
_OWN_FILES = ("config.json", "results.jsonl", "results.csv", "summary.md", "summary.json")
_LOCK = "ablate.lock"
#: Keys of a finished (``status == "ok"``) row besides the run's identity.
_REQUIRED = ("miou", "pixel_acc", "iou", "diverged", "curve")


# ---------------------------------------------------------------------- files
def _csv_text(rows: list) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if r.get(k) is None else r[k] for k in CSV_COLUMNS} for r in rows)
    return buf.getvalue()


def _write_results(out: Path, rows: list) -> None:
    write_text(out / "results.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
    write_text(out / "results.csv", _csv_text(rows))


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


def _row_problem(row: dict, spec: RunSpec | None) -> str | None:
    """Why ``row`` is not a row of run ``spec`` (``None`` when it is)."""
    if spec is None:
        return "its run is not in the sweep's config"
    expected = {"solver": spec.module, "grad": spec.grad, "seed": spec.seed, "block": spec.block}
    if spec.steps is not None:  # (the baseline has no K; its rows from before K was an axis say the config's)
        expected["steps"] = spec.steps
    wrong = [f"{k}={row.get(k)!r} (expected {v!r})" for k, v in expected.items() if row.get(k) != v]
    if wrong:
        return "it does not match its run: " + ", ".join(wrong)
    if row.get("status", "ok") == "ok":
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            return f"it lacks {missing}"
    return None


def load_results(out_dir) -> list[dict]:
    """The rows of the sweep in ``out_dir`` (from ``results.jsonl``), in the order they were recorded, checked
    against its ``config.json``: a repeated row of a run is dropped, and a row of a run that is not in the config
    (or that does not match its run) is ignored, each with a warning. Rows have ``status`` ``"ok"`` or
    ``"failed"`` (then ``error`` holds the run's last error and the metrics are ``None``), and ``block``: a ham row
    written before the block was an axis (it has no ``block``) is a V1 row and reads ``"v1"``.

    Args:
        out_dir: the sweep's folder.

    Returns:
        A list of row dicts (empty when no run has finished yet).

    Raises:
        ValueError: naming the file (and line) when ``config.json`` is not a valid config, or a line of
            ``results.jsonl`` is not a JSON object with a ``run_id`` (a truncated or foreign file).
    """
    out = Path(out_dir)
    path = out / "results.jsonl"
    if not path.exists():
        return []
    specs = {s.run_id: s for s in read_config(out).runs()}
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
        problem = _row_problem(row, specs.get(row["run_id"]))
        if problem:
            ignored.append(f"line {number} (run {row['run_id']}): {problem}")
            continue
        seen.add(row["run_id"])
        row.setdefault("status", "ok")  # rows written before failed runs were recorded
        rows.append(row)
    if ignored:
        warnings.warn(f"{path}: ignored {len(ignored)} row(s): " + "; ".join(ignored), stacklevel=2)
    return rows


def _check_out_dir(out: Path) -> None:
    """Refuse, before writing anything, an ``out`` that is a file or a non-empty folder without a sweep."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir={str(out)!r} exists and is not a folder")
    if out.is_dir() and not (out / "config.json").exists() and any(p.name != _LOCK for p in out.iterdir()):
        raise ValueError(f"out_dir={str(out)!r} is not empty and holds no sweep (no config.json); choose another "
                         f"folder")


def _prepare_out_dir(config: AblationConfig, out: Path, overwrite: bool) -> None:
    """Check that ``out`` (existing, locked) holds this config's sweep or none; with ``overwrite`` clear another."""
    config_path = out / "config.json"
    if not config_path.exists():
        write_text(config_path, config.to_json())
        return
    try:
        old = read_config(out)
    except ValueError as err:
        reason = str(err)
    else:
        if old == config:
            return
        diff = [f"{k}: {v!r} -> {config.to_dict()[k]!r}" for k, v in old.to_dict().items()
                if config.to_dict().get(k) != v]
        reason = "it holds a sweep with a different config (" + "; ".join(diff) + ")"
    if not overwrite:
        raise ValueError(f"out_dir={str(out)!r}: {reason}; pass overwrite=True (hamgrad ablate --overwrite) to "
                         f"replace its sweep, or choose another folder")
    for name in _OWN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "runs", ignore_errors=True)
    write_text(config_path, config.to_json())


class _SweepLock:
    """An exclusive lock on a sweep folder for the process that writes it (``out/ablate.lock``).

    The lock is an ``fcntl.flock`` on the file, which the kernel releases when its holder exits in any way (a
    SIGKILL included), so a lock left by a dead driver is simply taken over; the file names the holder (pid, host,
    start time) for the refusal message and is emptied on release.
    """

    def __init__(self, out: Path):
        self.path = out / _LOCK
        self.fd = None

    def __enter__(self):
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise ValueError(f"out_dir={str(self.path.parent)!r} is being written by another hamgrad ablate "
                             f"({holder}, lock {self.path}); wait for it to finish or stop it") from None
        previous = self._holder(fd)
        if previous != "unknown holder":
            warnings.warn(f"{self.path}: taking over the lock of a driver that is no longer running ({previous})",
                          stacklevel=3)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing releases the flock

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (ValueError, TypeError, KeyError):
            return "unknown holder"


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
                  grad=spec.grad, version=spec.block)


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


# ---------------------------------------------------------------------- training
def _lr(config: AblationConfig, step: int) -> float:
    """Linear warm-up over the first 5% of iterations, then cosine decay to 0."""
    warmup = max(1, round(0.05 * config.iters))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.iters - warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _train_step(model: HamNet, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
    """One optimisation step on a batch; returns the (detached) cross-entropy loss."""
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _device_rng(device: torch.device):
    return None if device.type == "cpu" else torch.get_device_module(device.type)


def _save_checkpoint(path: Path, config: AblationConfig, spec: RunSpec, model, optimizer, state: dict,
                     batches: torch.Generator, device) -> None:
    rng = _device_rng(device)
    payload = {**state, "run_id": spec.run_id, "config": config.to_json(),
               "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "rng_torch": torch.get_rng_state(), "rng_batches": batches.get_state(),
               "rng_device": None if rng is None else rng.get_rng_state(device)}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(path: Path, config: AblationConfig, spec: RunSpec, device) -> dict:
    """The checkpoint of run ``spec`` at ``path``; one that cannot be read, or that another run or another config
    wrote, is refused with a ValueError naming the file (never resumed)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ... on a damaged file
        raise ValueError(f"checkpoint {path} cannot be read (truncated or not a hamgrad checkpoint: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}); delete it to restart run "
                         f"{spec.run_id}") from None
    ours = isinstance(ckpt, dict) and ckpt.get("run_id") == spec.run_id and _same_config(ckpt.get("config"), config)
    if not ours:
        owner = ckpt.get("run_id") if isinstance(ckpt, dict) else None
        raise ValueError(f"checkpoint {path} was not written by run {spec.run_id} of this sweep's config (it names "
                         f"run {owner!r}{'' if owner is None else ' of another config' if owner == spec.run_id else ''}"
                         f"); delete it to restart the run")
    return ckpt


def _same_config(text, config: AblationConfig) -> bool:
    """Whether ``text`` (a checkpoint's config JSON) is ``config``: compared as configs, so that a checkpoint written
    before a field existed matches the config read from the same sweep's ``config.json``."""
    try:
        return AblationConfig.from_json(text) == config
    except (TypeError, ValueError):
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


def _run(config: AblationConfig, spec: RunSpec, run_dir: Path, device: torch.device, bar) -> dict:
    """Train (or resume) and evaluate one run; returns its results row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    images, labels = _data(config)
    n_train = config.train_samples
    torch.manual_seed(spec.seed)
    model = build_model(config, spec).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches = torch.Generator().manual_seed(spec.seed)
    state = {"step": 0, "diverged": False, "train_seconds": 0.0, "curve": {"step": [], "loss": []}}
    if ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path, config, spec, device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_torch"].cpu())
        batches.set_state(ckpt["rng_batches"].cpu())
        rng = _device_rng(device)
        if rng is not None and ckpt["rng_device"] is not None:
            rng.set_rng_state(ckpt["rng_device"].cpu(), device)
        state = {k: ckpt[k] for k in state}
        bar.update(state["step"])
    resumed_from = state["step"]

    model.train()
    running = torch.zeros((), device=device)
    since_log, start = 0, time.perf_counter()
    while state["step"] < config.iters and not state["diverged"]:
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, state["step"])
        idx = torch.randint(n_train, (config.batch_size,), generator=batches)
        running += _train_step(model, optimizer, images[idx].to(device), labels[idx].to(device).long())
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
        "train_seconds": round(state["train_seconds"], 3), "eval_seconds": round(time.perf_counter() - start, 3),
        "resumed_from": resumed_from,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "curve": state["curve"],
    }


def run_ablation(config: AblationConfig, out_dir, *, overwrite: bool = False, device="cpu",
                 progress: bool = True, workers: int = 1, address: str | None = None, cpus_per_run: float = 1,
                 gpus_per_run: float = 0, retries: int = 1) -> Summary:
    """Train and evaluate every run of ``config`` (see :class:`AblationConfig`), resumably, into ``out_dir``.

    Each run trains :class:`hamgrad.nn.HamNet` on the task's dataset (``config.task``:
    :class:`hamgrad.data.GlobalContextShapes` or :class:`hamgrad.data.RegionalShapes`) with seed-controlled weights,
    batches and ham initialisations, evaluates mIoU and pixel accuracy on the validation items (for the regional task
    also on those whose regional majorities disagree), and appends one row to ``results.jsonl``/``results.csv``; the
    Table-1-style summary (naming the task, and for the regional task its closed-form global ceiling) is rewritten
    after every run. Calling it again on the same folder resumes the sweep (see the module docstring); finished runs
    are skipped, runs recorded as failed are tried again.

    With ``workers=1`` and no ``address`` the runs train one after another in this process (Ray is not imported).
    Otherwise each run is a Ray task (``pip install 'hamgrad[ray]'``): up to ``workers`` at once, each reserving
    ``cpus_per_run`` CPUs (its torch threads) and ``gpus_per_run`` GPUs; the driver (this process) is the only writer
    of the results and summary, and a run's checkpoints stay in ``out_dir/runs``, so ``out_dir`` must be on a
    filesystem every worker shares. A run gives the same numbers either way (bitwise on CPU at the same number of
    torch threads).

    Args:
        config: the sweep.
        out_dir: its folder (created if needed). A folder holding a sweep of a different config, or other files, is
            refused unless ``overwrite=True``, which deletes that sweep's files (only the ones this runner writes).
        device: where to train (``"cpu"``, ``"cuda"``, a ``torch.device``); with Ray, on each worker (with an
            ``address``, a worker without that device records its runs as failed, naming the device).
        progress: show a tqdm progress bar and print the summary at the end.
        workers: how many runs train at once (1: in this process).
        address: ``None`` starts a local Ray instance when ``workers > 1`` (a Ray instance already started in this
            process is used as it is); ``"auto"`` or ``"HOST:PORT"`` attaches to a running Ray cluster.
        cpus_per_run: Ray CPUs (torch threads) of each run (ignored in-process).
        gpus_per_run: Ray GPUs of each run (ignored in-process); ``device="cuda"`` on Ray needs
            ``gpus_per_run > 0``, and a fraction lets runs share a GPU.
        retries: how many times a run that raises (or whose worker dies) is tried again before it is recorded as
            a failed row (``status="failed"`` with its ``error``; shown in the summary).

    Returns:
        the :class:`~hamgrad.experiments.Summary` of the sweep's rows (also in ``summary.md``/``summary.json``).

    Raises:
        ValueError: naming the argument or file: a ``device`` this machine lacks; an ``out_dir`` that is a file, holds
            other files or another config's sweep (without ``overwrite``), or is locked by another running driver
            (``out_dir/ablate.lock`` names it; the lock of a driver that died is taken over); a damaged
            ``results.jsonl``, ``config.json`` or checkpoint, or a checkpoint another run or config wrote; Ray
            missing when ``workers > 1`` or ``address`` is given.
    """
    if not isinstance(config, AblationConfig):
        raise TypeError(f"config must be an AblationConfig, got {type(config).__name__}")
    device = check_device(device, here=address is None)  # on a cluster, each worker checks its own
    check_int(workers, "workers", 1)
    check_int(retries, "retries", 0)
    if address is not None and (not isinstance(address, str) or not address):
        raise TypeError(f"address must be 'auto' or 'HOST:PORT', got {address!r}")
    _number(cpus_per_run, "cpus_per_run", 0.0, inclusive=False)
    _number(gpus_per_run, "gpus_per_run", 0.0, inclusive=True)
    if (workers > 1 or address is not None) and device.type == "cuda" and gpus_per_run == 0:
        raise ValueError(f"device={str(device)!r} on Ray needs gpus_per_run > 0 (hamgrad ablate --gpus-per-run): Ray "
                         f"hides the GPUs from a task that reserves none")
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with _SweepLock(out):
        _prepare_out_dir(config, out, overwrite)
        rows = load_results(out)
        _write_results(out, rows)  # the CSV follows the JSON lines even if a kill fell between the two writes
        done = {r["run_id"] for r in rows if r["status"] == "ok"}
        tabulate = functools.partial(summarize, grads=config.grads, task=config.task_name,
                                     ceiling=_global_ceiling(config))
        pending = [spec for spec in config.runs() if spec.run_id not in done]
        for spec in pending:  # a damaged or foreign checkpoint stops the sweep before anything trains
            path = out / "runs" / spec.run_id / "checkpoint.pt"
            if path.exists():
                _load_checkpoint(path, config, spec, "cpu")

        def record(row: dict) -> None:
            rows[:] = [r for r in rows if r["run_id"] != row["run_id"]] + [row]  # a failed row gives way
            _write_results(out, rows)
            _write_summary(out, tabulate(rows))

        if workers == 1 and address is None:
            _run_here(config, pending, out, device, retries, progress, record, total=len(config.runs()))
        else:
            _run_on_ray(config, pending, out, device, retries, progress, record, workers=workers, address=address,
                        cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
        summary = tabulate(rows)
        _write_summary(out, summary)
    if progress:
        print(summary.to_markdown())
    return summary


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
                    row = _run(config, spec, out / "runs" / spec.run_id, device, bar)
                    break
                except Exception as err:  # a kill (KeyboardInterrupt, SystemExit) is not retried
                    error = _error_text(err)
                    _warn_retry(spec, attempt, retries, error)
                    row = _failed_row(config, spec, error, attempt)
            record(row)


def _ray_task(config: AblationConfig, spec: RunSpec, run_dir: str, device: str, threads: int) -> dict:
    """One run in a Ray worker (its torch threads set to its CPU reservation)."""
    torch.set_num_threads(threads)
    with tqdm(disable=True) as bar:
        return _run(config, spec, Path(run_dir), check_device(device), bar)


def _check_reachable(address: str) -> None:
    """A ``HOST:PORT`` address must accept a connection (Ray itself would retry for minutes); ``"auto"`` is Ray's."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be 'auto' or 'HOST:PORT', got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise ValueError(f"address={address!r}: no Ray cluster answers there ({err}); start one with "
                         f"`ray start --head --port={port}` or check the address") from None


def _run_on_ray(config, pending, out, device, retries, progress, record, *, workers, address, cpus_per_run,
                gpus_per_run) -> None:
    """The Ray engine: up to ``workers`` runs as Ray tasks at once; failures are resubmitted by this driver."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network traffic from the engine itself
    try:
        import ray
    except ImportError:
        raise ValueError(f"workers={workers}" + ("" if address is None else f", address={address!r}") +
                         " runs the sweep on Ray, which is not installed: pip install 'hamgrad[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address is None:
            ray.init(num_cpus=math.ceil(workers * cpus_per_run), num_gpus=math.ceil(workers * gpus_per_run),
                     include_dashboard=False, log_to_driver=False)
        else:
            _check_reachable(address)
            ray.init(address=address, log_to_driver=False)
    running: dict = {}
    try:
        task = ray.remote(_ray_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        threads = max(1, int(cpus_per_run))
        queue = [(spec, 1) for spec in pending]
        with tqdm(total=len(pending), unit="run", disable=not progress, dynamic_ncols=True) as bar:
            while queue or running:
                while queue and len(running) < workers:
                    spec, attempt = queue.pop(0)
                    ref = task.remote(config, spec, str(out / "runs" / spec.run_id), str(device), threads)
                    running[ref] = (spec, attempt)
                ready, _ = ray.wait(list(running), num_returns=1)
                spec, attempt = running.pop(ready[0])
                try:
                    row = ray.get(ready[0])
                except ray.exceptions.RayError as err:  # the run raised, or its worker died
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
    write_text(out / "summary.md", summary.to_markdown())
    write_text(out / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
