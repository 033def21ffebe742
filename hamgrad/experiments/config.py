"""The ablation's configuration: one frozen dataclass that round-trips through JSON (``config.json`` of a sweep)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

from .._checks import check_int
from ..data import GlobalContextShapes, RegionalShapes
from ..grad import PAPER_MODE, parse_grad_mode
from ..nn import CONTEXTS
from ..nn.hamburger import VERSIONS
from ..solvers import available_solvers, get_solver

__all__ = ["AblationConfig", "RunSpec", "MAX_RUNS", "TASKS"]

#: The most runs one sweep may have (a typo such as ``--seeds 100000000`` is refused before anything is built).
MAX_RUNS = 100_000

#: The sweep's datasets by task name (``AblationConfig.task``).
TASKS = {"global": GlobalContextShapes, "regional": RegionalShapes}


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep: a solver, gradient mode, solver steps K and Hamburger block (``"v1"`` or
    ``"v2"``; all ``None`` for the no-ham baseline) and a seed; or a non-ham context module (``context``: ``"sa"``,
    ``"a2"``, ``"gap"``; then ``solver``, ``grad``, ``steps`` and ``block`` are ``None``)."""

    solver: str | None
    grad: str | None
    seed: int
    steps: int | None = None
    context: str | None = None
    block: str | None = None

    @property
    def module(self) -> str:
        """The head's module as the results rows name it: the context module, the solver, or ``"none"``."""
        return self.context or self.solver or "none"

    @property
    def run_id(self) -> str:
        """A file-name-safe identifier, e.g. ``nmf_one-step-coef_v2_K6_seed0``, ``nmf_truncated2_v2_K12_seed1``,
        ``none_seed0``, ``sa_seed0``. A V1 run's id names no block (``nmf_one-step_K6_seed0``): V1 runs keep the ids
        they had before the block was a sweep axis, so that sweeps written then resume."""
        if self.context is not None:
            return f"{self.context}_seed{self.seed}"
        if self.solver is None:
            return f"none_seed{self.seed}"
        block = "" if self.block in (None, "v1") else f"_{self.block}"
        k = "" if self.steps is None else f"_K{self.steps}"
        return f"{self.solver}_{self.grad.replace(':', '')}{block}{k}_seed{self.seed}"


def _number(value, name: str, minimum: float, inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (value == minimum and not inclusive):
        raise ValueError(f"{name} must be {'>=' if inclusive else '>'} {minimum}, got {value}")
    return float(value)


def _solver_args(value) -> tuple:
    """``solver_args`` (a dict, or the pairs it is stored as) as sorted ``(key, value)`` pairs of JSON scalars."""
    pairs = value.items() if isinstance(value, dict) else value
    try:
        pairs = sorted((k, v) for k, v in pairs)
    except (TypeError, ValueError):
        raise TypeError(f"solver_args must be a dict of keyword arguments, got {value!r}") from None
    for k, v in pairs:
        if not isinstance(k, str) or not k.isidentifier():
            raise TypeError(f"solver_args keys must be argument names, got {k!r}")
        if k == "rank":
            raise ValueError("solver_args must not hold rank: the rank is the config's rank field")
        if not (v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))):
            raise TypeError(f"solver_args[{k!r}] must be a str, int, finite float, bool or None (JSON), got {v!r}")
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError(f"solver_args has a repeated key: {pairs}")
    return tuple(pairs)


def _names(value, name: str) -> tuple:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of str, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} has duplicates: {list(value)}")
    return tuple(value)


@dataclass(frozen=True)
class AblationConfig:
    """A gradient-mode sweep: every solver × gradient mode × Hamburger block × seed, plus the no-ham baseline per
    seed.

    Sweep:
        solvers: registered solver names (``"nmf"``, ``"vq"``, ``"cd"``, a user's, ...; see
            :func:`hamgrad.available_solvers`).
        solver_args: keyword arguments of every solver's constructor besides ``rank`` (e.g. ``{"inv_t": 10.0}``), a
            dict of JSON scalars (str, int, float, bool, None); stored as sorted ``(key, value)`` pairs (the config
            stays hashable), written to JSON as a dict.
        grads: gradient modes (``hg.GRAD_MODES``; ``"truncated:k"`` with ``1 <= k <= steps``); the default is the
            paper's one-step as the official code computes it (``"one-step-coef"``), hamgrad's ``"one-step"`` (the
            whole last step differentiated) and ``"bptt"``.
        blocks: Hamburger blocks (``"v2"``, the official HamNet's, and/or ``"v1"``, the paper's; see
            :class:`hamgrad.nn.Hamburger`). A stored config without ``blocks`` (written before the block was an
            axis) is a V1 sweep.
        seeds: number of seeds per combination (seeds ``0 … seeds−1``); a run with seed s starts from the same
            encoder weights and batch order for every combination.
        baseline: also train ``HamNet(ham=None)`` for each seed.
        contexts: non-ham context modules in the Hamburger's place (``"sa"`` self-attention, ``"da"`` dual
            attention, ``"a2"`` double attention, ``"apc"`` adaptive pyramid context, ``"dm"`` dynamic filters,
            ``"acf"`` attentional class feature, ``"gap"`` global pooling; see :data:`hamgrad.nn.CONTEXTS`), one run
            per module and seed, with the same training budget, sized by ``d`` (and ``rank`` for A²; ACF's coarse
            head predicts the dataset's classes).
    Model (:class:`hamgrad.nn.HamNet`):
        steps: solver steps K in training, an int or a tuple of them (a sweep axis: every solver × mode × seed runs at
            each K); eval_steps: in evaluation (``None``: K for V2, as the official settings.py's
            ``EVAL_STEPS = TRAIN_STEPS = 6``, and K + 1 for V1, the paper's 6/7 and what sweeps written before the
            block axis used; an int: the same for every K and block).
        width, output_stride, d, rank: network width, output stride (4 or 8), ham channels, ham rank (< d).
        encoder_from: ``"SWEEP/RUN_ID"``, a finished run of another sweep (its folder, then its run id) whose
            encoder and squeeze conv every run of this sweep starts from (:meth:`hamgrad.nn.HamNet.load_encoder`),
            instead of drawing them; stored as an absolute path. ``None`` (the default): every run draws its own.
        freeze_encoder: with ``encoder_from``, keep that encoder as it is (only the head trains).
    Training (AdamW, linear warm-up over the first 5% of iterations then cosine decay to 0):
        iters, batch_size, lr, weight_decay.
        log_every: iterations per logged mean training loss (the training curve).
        checkpoint_every: iterations between checkpoints; a multiple of ``log_every``.
        probe_every: every this many iterations (from iteration 0, before its update), a run with a ham probes
            the training batch (:func:`hamgrad.experiments.probe`): its own gradient mode against BPTT on the
            encoder and the lower bread, and ρ(J_K). ``None`` or 0: no probes. The default, 50, gives 10
            points over 500 iterations for 6–8% of a run's CPU time at the default size
            (``benchmarks/bench_probes.py``).
    Data (the first ``train_samples`` items train, the next ``val_samples`` evaluate):
        task: ``"global"`` (:class:`hamgrad.data.GlobalContextShapes`: every shape labelled with the image's
            majority family; the default, and the meaning of a ``config.json`` without this field) or
            ``"regional"`` (:class:`hamgrad.data.RegionalShapes`: every shape labelled with its own region's
            majority, so that one pooled vector per image is not enough).
        image_size, num_families, noise, train_samples, val_samples, data_seed: both tasks.
        num_shapes: shapes per image (an int or an inclusive ``(low, high)``), the global task only.
        regions, shapes_per_region, separation: the regional task only (R regions, shapes per region, the least
            RGB distance between two region tints).
    """

    solvers: tuple = ("nmf", "vq", "cd")
    solver_args: tuple = ()
    grads: tuple = (PAPER_MODE, "one-step", "bptt")
    blocks: tuple = ("v2",)
    seeds: int = 3
    baseline: bool = True
    contexts: tuple = ()
    steps: int | tuple = 6
    eval_steps: int | None = None
    width: int = 32
    output_stride: int = 4
    d: int = 64
    rank: int = 8
    encoder_from: str | None = None
    freeze_encoder: bool = False
    iters: int = 500
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    log_every: int = 25
    checkpoint_every: int = 50
    probe_every: int | None = 50
    image_size: int = 64
    num_families: int = 3
    num_shapes: tuple = (5, 9)
    noise: float = 0.05
    task: str = "global"
    regions: int = 2
    shapes_per_region: tuple = (3, 4)
    separation: float = 0.15
    train_samples: int = 1000
    val_samples: int = 200
    data_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "solvers", _names(self.solvers, "solvers"))
        object.__setattr__(self, "grads", _names(self.grads, "grads"))
        object.__setattr__(self, "blocks", _names(self.blocks, "blocks"))
        for b in self.blocks:
            if b not in VERSIONS:
                raise ValueError(f"unknown block {b!r} in blocks; expected names from {VERSIONS}")
        object.__setattr__(self, "contexts", _names(self.contexts, "contexts"))
        for c in self.contexts:
            if c not in CONTEXTS:
                raise ValueError(f"unknown context module {c!r} in contexts; expected names from {sorted(CONTEXTS)} "
                                 f"(the hams go in solvers)")
        for name in ("num_shapes", "shapes_per_region"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if isinstance(self.steps, list):
            object.__setattr__(self, "steps", tuple(self.steps))
        if isinstance(self.steps, tuple):
            if not self.steps:
                raise ValueError("steps must be an int or a non-empty tuple of ints, got ()")
            for k in self.steps:
                check_int(k, "steps", 1)
            if len(set(self.steps)) != len(self.steps):
                raise ValueError(f"steps has duplicates: {list(self.steps)}")
        known = available_solvers()
        for s in self.solvers:
            if s not in known:
                raise ValueError(f"unknown solver {s!r} in solvers; registered: {known}")
        object.__setattr__(self, "solver_args", _solver_args(self.solver_args))
        for name in ("seeds", "width", "d", "rank", "iters", "batch_size", "log_every",
                     "checkpoint_every", "image_size", "train_samples", "val_samples"):
            check_int(getattr(self, name), name, 1)
        check_int(self.data_seed, "data_seed", 0)
        if self.eval_steps is not None:
            check_int(self.eval_steps, "eval_steps", 1)
        if self.probe_every is not None:
            check_int(self.probe_every, "probe_every (0 or None: no probes)", 0)
            if self.probe_every == 0:
                object.__setattr__(self, "probe_every", None)  # one value for "no probes"
        if not isinstance(self.steps, tuple):
            check_int(self.steps, "steps", 1)
        for k in self.step_values:
            for g in self.grads:
                for b in self.blocks:
                    parse_grad_mode(g, k)
                    parse_grad_mode(g, self.eval_steps_for(k, b))
        if not isinstance(self.baseline, bool):
            raise TypeError(f"baseline must be a bool, got {self.baseline!r}")
        if self.encoder_from is not None:
            if not isinstance(self.encoder_from, str) or not self.encoder_from.strip("/"):
                raise TypeError(f"encoder_from must be 'SWEEP/RUN_ID' (a str) or None, got {self.encoder_from!r}")
            object.__setattr__(self, "encoder_from", os.path.abspath(self.encoder_from))
        if not isinstance(self.freeze_encoder, bool):
            raise TypeError(f"freeze_encoder must be a bool, got {self.freeze_encoder!r}")
        if self.freeze_encoder and self.encoder_from is None:
            raise ValueError("freeze_encoder=True needs encoder_from (the run whose encoder to keep)")
        runs = self.seeds * (self.baseline + len(self.solvers) * len(self.grads) * len(self.blocks)
                             * len(self.step_values) + len(self.contexts))
        if runs > MAX_RUNS:  # before any list of runs is built
            raise ValueError(f"the sweep would have {runs} runs (seeds={self.seeds}); at most {MAX_RUNS}")
        if not self.solvers and not self.baseline and not self.contexts:
            raise ValueError("the sweep is empty: give at least one solver in solvers or context in contexts, or set "
                             "baseline=True")
        if bool(self.solvers) != bool(self.grads):
            raise ValueError(f"solvers and grads must both be empty or both non-empty, got solvers={self.solvers} "
                             f"and grads={self.grads}")
        if self.solvers and not self.blocks:
            raise ValueError(f"blocks must name at least one of {VERSIONS} when solvers are given, got ()")
        if self.output_stride not in (4, 8):
            raise ValueError(f"output_stride must be 4 or 8, got {self.output_stride!r}")
        if self.rank >= self.d:
            raise ValueError(f"rank={self.rank} must be < d={self.d}")
        if self.checkpoint_every % self.log_every:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be a multiple of "
                             f"log_every={self.log_every}")
        if self.image_size % self.output_stride:
            raise ValueError(f"image_size={self.image_size} must be a multiple of output_stride={self.output_stride}")
        positions = (self.image_size // self.output_stride) ** 2
        if self.rank > positions:
            raise ValueError(f"rank={self.rank} must be <= the ham's positions (image_size / output_stride)^2 = "
                             f"{positions}")
        _number(self.lr, "lr", 0.0, inclusive=False)
        _number(self.weight_decay, "weight_decay", 0.0, inclusive=True)
        self.dataset()  # the task's dataset checks image_size, num_families, noise and its own arguments
        for s in self.solvers:  # the constructor checks its arguments now, not in every run of the sweep
            try:
                solver = get_solver(s, rank=self.rank, **dict(self.solver_args))
            except Exception as err:
                raise (TypeError if isinstance(err, TypeError) else ValueError)(
                    f"solver {s!r} with rank={self.rank} and solver_args={dict(self.solver_args)}: "
                    f"{type(err).__name__}: {err}") from err
            if PAPER_MODE in self.grads and not callable(getattr(solver, "coef_readout", None)):
                raise ValueError(f"grads has {PAPER_MODE!r}, which needs a solver with coef_readout(x, h) (the "
                                 f"official code's last code update, read out); solver {s!r} has none: leave the "
                                 f"mode out (e.g. grads=('one-step', 'bptt')) or give the solver one")

    @property
    def step_values(self) -> tuple:
        """The training solver steps K of the sweep, as a tuple (one value when ``steps`` is an int)."""
        return self.steps if isinstance(self.steps, tuple) else (self.steps,)

    def eval_steps_for(self, steps: int, block: str) -> int:
        """The evaluation's solver steps for training steps K = ``steps`` in ``block``: ``eval_steps``, or when it is
        ``None`` K for ``"v2"`` (the official settings.py) and K + 1 for ``"v1"`` (the paper's 6/7)."""
        if self.eval_steps is not None:
            return self.eval_steps
        return steps + 1 if block == "v1" else steps

    @property
    def num_classes(self) -> int:
        """Background plus one class per colour family."""
        return self.num_families + 1

    @property
    def task_name(self) -> str:
        """The task and its dataset's arguments in words, as the summary names them."""
        data = f"{self.num_families} families, {self.image_size}×{self.image_size} images"
        ds = self.dataset()
        if self.task == "regional":
            low, high = ds.shapes_per_region
            return (f"regional (RegionalShapes: R = {self.regions} regions of {low}–{high} shapes, tint separation "
                    f"{self.separation}, {data})")
        low, high = ds.num_shapes
        return f"global (GlobalContextShapes: {low}–{high} shapes, {data})"

    @property
    def title(self) -> str:
        """:attr:`task_name`, and where the encoder comes from when it is another sweep's (``encoder_from``): what
        the summary names first."""
        if self.encoder_from is None:
            return self.task_name
        return (f"{self.task_name}; every run starts from the encoder of {self.encoder_from}"
                f"{' (frozen)' if self.freeze_encoder else ''}")

    def dataset(self) -> GlobalContextShapes | RegionalShapes:
        """The sweep's data, the task's dataset: items ``[0, train_samples)`` train, the next ``val_samples``
        evaluate."""
        common = dict(size=self.image_size, num_families=self.num_families, noise=self.noise, seed=self.data_seed)
        if self.task == "regional":
            return RegionalShapes(self.train_samples + self.val_samples, regions=self.regions,
                                  shapes_per_region=self.shapes_per_region, separation=self.separation, **common)
        return GlobalContextShapes(self.train_samples + self.val_samples, num_shapes=self.num_shapes, **common)

    def runs(self) -> list[RunSpec]:
        """The sweep's runs in training order: the baselines (one per seed: no ham, no K, no block) first, then
        K × block × solver × grad × seed (the smallest K first), then context × seed."""
        baseline = [RunSpec(None, None, s) for s in range(self.seeds)] if self.baseline else []
        return baseline + [RunSpec(solver, grad, s, k, block=b) for k in self.step_values for b in self.blocks
                           for solver in self.solvers for grad in self.grads for s in range(self.seeds)] + \
            [RunSpec(None, None, s, context=c) for c in self.contexts for s in range(self.seeds)]

    @classmethod
    def quick(cls, **overrides) -> "AblationConfig":
        """A tiny configuration (seconds per run) for smoke tests and CI; ``overrides`` replace any field."""
        base = dict(seeds=1, width=8, d=16, rank=4, iters=10, batch_size=4, log_every=5, checkpoint_every=5,
                    image_size=32, train_samples=16, val_samples=8)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        """Plain JSON-ready data (tuples become lists, ``solver_args`` a dict)."""
        return {f.name: dict(v) if f.name == "solver_args" else list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, data: dict) -> "AblationConfig":
        """The inverse of :meth:`to_dict`; unknown keys are an error. A missing ``blocks`` means ``("v1",)`` (a config
        written before the block was an axis describes a V1 sweep); other missing keys take their defaults."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown AblationConfig fields {unknown}; known: {sorted(names)}")
        return cls(**{"blocks": ("v1",), **data})

    def to_json(self) -> str:
        """The configuration as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "AblationConfig":
        """The inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
