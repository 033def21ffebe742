"""What a context module costs: parameters, MACs, memory and time, in training and in inference (the paper's Table 3).

```python
from hamgrad import cost
row = cost.context_cost("sa", 64)                          # one module on one (1, 512, 64, 64) map
result = cost.compare_contexts(("sa", "nmf"), sides=(64, 128))   # interleaved rounds, ratios to the ham, slopes
print(cost.to_markdown(result))
```

**The setting** is Table 3's: one feature map of ``channels = 512``, ``d = 512``, ``r = 64``, ``K = 6`` steps in
training and 7 in inference, the hams in the paper's V1 block (Table 3's 0.50M parameters of Ham (NMF) are V1's two
512 × 512 convs; V2's cheese would add 0.26M). A training step is the module's forward in training mode and the
backward of a fixed random output gradient (the input requires a gradient, as inside a network); inference is the
forward in evaluation mode under ``torch.no_grad()``.

**Counting conventions** (each one a choice; the defaults are the paper's):

- *The hams* run as the official Hamburger code trains them: ``grad="one-step-coef"`` — the initial projection
  ``softmax(DᵀX)``, K steps without graph, the official code's last code update with D held constant
  (``compute_coef``), the readout ``D C`` — between the two 512 × 512 breads. ``macs`` counts the forward of a training
  step (K = ``steps[0]`` = 6), which is what Table 3's MACs are: 17.54G for NMF at 128 × 128 by hand (breads 2 × 4.29G,
  initial projection 0.54G, six steps 6 × 1.21G, the code update 0.61G, readout 0.54G), so that SA / Ham (NMF) is
  292.06 / 17.54 = 16.65×, the paper's ratio. ``infer_macs`` counts the inference forward (K = ``steps[1]``) and
  ``train_macs`` forward + backward. Another ``grad`` (e.g. ``"one-step"``, whose output is the state's ``D C``)
  counts that mode instead.
- *CD*: FlopCounterMode counts what runs, 16.65G; the paper's 16.2G is the official CD2D less its initial projection
  (0.54G). The official CD (and VQ) step recomputes the codes from the bases and never reads the initial codes, so
  their projection is dead code for the output; a counter that traces the output's graph and drops dead code does not
  count it, while NMF's first step reads the initial codes (its 17.6G includes them). hamgrad's CD solves the ridge
  system with ``torch.linalg.solve``, which FlopCounterMode does not count (the official inverse-then-``bmm`` counts
  ``n r²`` = 0.07G there).
- *A²*: the row ``"a2"`` is Table 3's A², with as many attention maps and vectors as feature channels
  (``c_m = c_n = d`` = 512: 25.77G at 128 × 128 by hand, the paper's 25.7G); ``"a2-r"`` is the A² that
  ``build_context("a2")`` and HamNet build, with ``c_n = r`` = 64 (10.74G).
- *Parameters* are counted exactly and printed both in the paper's unit, M = 2²⁰ (SA: 1,051,136 = 1.00M), and in
  millions (1.05).

**MACs** are counted by :class:`torch.utils.flop_counter.FlopCounterMode` as its FLOPs / 2: it counts matrix
products and convolutions (mm, bmm, addmm, convolution, scaled-dot-product attention) and nothing else — no
elementwise work (softmax's exponentials, NMF's multiplicative updates, normalisations, BatchNorm, ReLU, the residual),
no reductions, no linear solves, no copies. torch 2.13 registers no formula for the CPU flash-attention kernel
(``_scaled_dot_product_flash_attention_for_cpu`` and its backward) and would count SDPA on CPU as 0; this module
maps them to torch's own SDPA formulas.

**Memory** is the peak of memory allocated during the call above the allocation at its start: on CUDA
``torch.cuda.max_memory_allocated``; on CPU (where torch keeps no allocator statistics) the running sum of the
allocations and frees of torch's CPU allocator that ``torch.profiler`` records (``profile_memory=True``), at its
maximum. It counts every tensor and scratch buffer torch allocates (the attention matrix of the math backend, the
flash kernel's blocks), not the parameters and the input allocated before the call, nor memory outside torch's
allocator. (:func:`hamgrad.profiling.measure`'s CPU measure, the tensors saved for backward, would be 0 in inference
and would miss transient buffers such as a forward's attention matrix.) It is measured once per module, apart from
the timed calls. The profiler's library (kineto) writes two ``USDT:`` trace markers to the process's stderr each time
a profile starts and stops; :func:`peak_memory` keeps them off stderr (anything else kineto writes there is passed on).

**Time** of one call is, on CUDA, the wall time with the device synchronised; on CPU the process's CPU time
(``time.process_time``; the wall times are kept too, ``*_wall_seconds``). Other jobs on a shared machine still bend
both (cache, memory bandwidth, clock, and with several threads the waits of one on another), so
:func:`compare_contexts` runs every module's training step and inference forward once per *round*, in a new random
order each round, each call beside a call of the reference module (the NMF ham; the two in a random order), and
reports each module's time as its ratio to that reference call: the median over the rounds and the spread (min–max,
quartiles). A module's ``*_seconds`` is the median of its own calls.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop, sdpa_flop

from ._checks import check_choice, check_device, check_int
from ._files import atomic_write, write_text
from .experiments import AblationConfig, load_results
from .grad import PAPER_MODE, mode_label
from .nn import CONTEXTS, build_context
from .profiling import synchronize

__all__ = ["ContextCost", "PAPER_TABLE3", "TABLE3_SETTING", "count_macs", "peak_memory", "context_cost",
           "compare_contexts", "fit_slopes", "to_markdown", "save", "ablation_costs", "ablation_markdown",
           "DEFAULT_CONTEXTS", "SDPA_BACKENDS", "REFERENCE"]

#: The paper's Table 3, its eight rows in its order (one 512-channel 128 × 128 map, d = 512, r = 64, on a GPU):
#: parameters in the paper's unit M = 2²⁰, MACs (G), memory in MB (read here as 2²⁰ bytes) and time (ms), each of a
#: training step and of inference. The numbers are the paper's (its Table 3, as the authors' poster prints it).
PAPER_TABLE3 = {
    "sa": {"params_m": 1.00, "gmacs": 292.0, "train_mb": 5253.0, "infer_mb": 2148.0, "train_ms": 242.0,
           "infer_ms": 82.2},
    "da": {"params_m": 4.82, "gmacs": 79.5, "train_mb": 2395.0, "infer_mb": 2203.0, "train_ms": 72.6,
           "infer_ms": 64.4},
    "a2": {"params_m": 1.01, "gmacs": 25.7, "train_mb": 326.0, "infer_mb": 165.0, "train_ms": 22.9, "infer_ms": 8.0},
    "apc": {"params_m": 2.03, "gmacs": 17.6, "train_mb": 458.0, "infer_mb": 264.0, "train_ms": 26.5, "infer_ms": 11.6},
    "dm": {"params_m": 3.00, "gmacs": 35.1, "train_mb": 557.0, "infer_mb": 268.0, "train_ms": 65.7, "infer_ms": 23.3},
    "acf": {"params_m": 0.75, "gmacs": 79.5, "train_mb": 1380.0, "infer_mb": 627.0, "train_ms": 71.0,
            "infer_ms": 22.6},
    "cd": {"params_m": 0.50, "gmacs": 16.2, "train_mb": 162.0, "infer_mb": 102.0, "train_ms": 20.0, "infer_ms": 13.0},
    "nmf": {"params_m": 0.50, "gmacs": 17.6, "train_mb": 202.0, "infer_mb": 98.0, "train_ms": 15.6, "infer_ms": 7.7},
}

#: The setting Table 3 fixes; :func:`to_markdown` sets the measured rows beside the paper's at this setting.
TABLE3_SETTING = {"height": 128, "width": 128, "batch": 1, "channels": 512, "d": 512, "rank": 64, "steps": (6, 7),
                  "version": "v1", "table3": True}

#: The module every other is timed beside and divided by: the NMF ham (Table 3's "Ham (NMF)").
REFERENCE = "nmf"

#: ``sdpa_backend`` values: ``None`` lets torch choose; ``"math"`` forces the composite kernel that materialises the
#: n × n attention matrix (as the paper's non-local block does); the others force one fused kernel.
SDPA_BACKENDS = (None, "math", "flash", "efficient", "cudnn")

_HAMS = ("cd", "nmf", "vq")


def _default_contexts() -> tuple:
    registered = [name for name in PAPER_TABLE3 if name in CONTEXTS or name in _HAMS]
    rest = [name for name in CONTEXTS if name not in PAPER_TABLE3]
    return (*registered, "a2-r", *(h for h in _HAMS if h not in registered), *rest)


#: The rows :func:`compare_contexts` measures by default: every registered context module (``hamgrad.nn.CONTEXTS``)
#: and the hams, Table 3's rows first in its order, then hamgrad's A² at rank r (``"a2-r"``), the VQ ham and the rest.
DEFAULT_CONTEXTS = _default_contexts()


def _as_registered(formula):
    """torch's SDPA formulas are already wrapped to take tensors; mark them so FlopCounterMode does not wrap again."""
    def count(*args, **kwargs):
        return formula(*args, **kwargs)
    count._get_raw = True
    return count


_ATEN = torch.ops.aten
_SDPA_CPU = {_ATEN._scaled_dot_product_flash_attention_for_cpu: _as_registered(sdpa_flop),
             _ATEN._scaled_dot_product_flash_attention_for_cpu_backward: _as_registered(sdpa_backward_flop)}


@dataclass
class ContextCost:
    """The cost of one context module on one ``(batch, channels, height, width)`` map (see the module docstring).

    Attributes:
        name, label: the row's name (see :func:`context_cost`) and a label (``"sa (math)"`` for a forced SDPA
            backend, ``"a2 (r=64)"`` for ``"a2-r"``).
        height, width, batch, channels, d, rank, steps, grad, version: the setting (``steps`` = (train, eval) K,
            ``grad`` the gradient mode and ``version`` the Hamburger block: hams only).
        table3: whether the rows Table 3 configures its own way were built so (see :func:`context_cost`).
        n: positions ``height · width``.
        params: number of parameters.
        macs: MACs of the forward of a training step (Table 3's MACs); infer_macs: of the inference forward;
            train_macs: of a training step, forward + backward.
        train_bytes, infer_bytes: peak memory of a training step and of an inference forward.
        memory_kind: ``"cuda_max_allocated"`` or ``"cpu_allocator_peak"``.
        train_times, infer_times: each timed call, one per round (``time_kind``: ``"cpu_process_time"`` or
            ``"cuda_wall"``); train_seconds, infer_seconds: their medians.
        train_reference_times, infer_reference_times: the reference module's time beside each of those calls
            (:func:`compare_contexts`; empty without a reference).
        train_wall_seconds, infer_wall_seconds: median wall times; repeats: the number of rounds.
        device, dtype: where it ran.
    """

    name: str
    label: str
    height: int
    width: int
    n: int
    batch: int
    channels: int
    d: int
    rank: int
    steps: tuple
    grad: str
    version: str
    table3: bool
    params: int
    macs: int
    infer_macs: int
    train_macs: int
    train_bytes: int
    infer_bytes: int
    memory_kind: str
    train_seconds: float
    infer_seconds: float
    time_kind: str
    train_wall_seconds: float
    infer_wall_seconds: float
    repeats: int
    device: str
    dtype: str
    train_times: list = field(default_factory=list)
    infer_times: list = field(default_factory=list)
    train_reference_times: list = field(default_factory=list)
    infer_reference_times: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {**asdict(self), "steps": list(self.steps)}


def count_macs(fn, result: bool = False):
    """MACs of ``fn()`` as :class:`~torch.utils.flop_counter.FlopCounterMode` counts them (FLOPs / 2; matrix products
    and convolutions only, see the module docstring), with the CPU flash-attention kernels counted.

    Args:
        fn: a callable with no arguments; it runs once.
        result: also return what ``fn()`` returned.

    Returns:
        the MAC count (int), or ``(macs, fn())`` with ``result=True``.
    """
    with FlopCounterMode(display=False, custom_mapping=_SDPA_CPU) as counter:
        value = fn()
    macs = counter.get_total_flops() // 2
    return (macs, value) if result else macs


@contextlib.contextmanager
def _without_trace_markers():
    """Keep kineto's ``USDT:`` trace markers off stderr while the profiler starts or stops.

    kineto (torch's profiler library) emits a ``profiler_start`` and a ``profiler_stop`` marker for USDT probes
    through its logger, which torch 2.13's build prints on file descriptor 2 at the default log level; raising
    ``KINETO_LOG_LEVEL`` past them would hide kineto's errors too, and only works before kineto's first use. So fd 2
    goes to a temporary file for the duration, and every line but the markers is written back to stderr.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("USDT:")]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


def _cpu_allocator_peak(fn) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _without_trace_markers():
        prof.start()
    try:
        fn()
    finally:
        with _without_trace_markers():
            prof.stop()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    current = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        current += size
        peak = max(peak, current)
    return peak


def peak_memory(fn, device="cpu") -> tuple[int, str]:
    """Peak memory allocated by torch during ``fn()`` above the allocation at its start (see the module docstring).

    Args:
        fn: a callable with no arguments; it runs once.
        device: where ``fn`` allocates (``"cpu"``, ``"cuda"``, a ``torch.device``).

    Returns:
        ``(bytes, kind)`` with kind ``"cuda_max_allocated"`` or ``"cpu_allocator_peak"``.

    Raises:
        ValueError: for a device that is neither CPU nor CUDA.
    """
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, "cuda_max_allocated"
    if device.type != "cpu":
        raise ValueError(f"device must be a CPU or CUDA device, got {str(device)!r}")
    return _cpu_allocator_peak(fn), "cpu_allocator_peak"


def _sdpa_context(backend):
    if backend is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kinds = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION}
    return sdpa_kernel([kinds[backend]])


def _build(name: str, channels: int, d: int, rank: int, steps, grad: str, version: str, table3: bool,
           solver_kwargs: dict | None = None):
    """The module of a cost row: :func:`hamgrad.nn.build_context`'s, except, with ``table3``, the rows Table 3
    configures its own way: ``"a2"`` with c_m = c_n = d and ``"apc"`` with d/2 channels per scale; ``"a2-r"`` is
    A² with ``rank`` maps (``build_context("a2")``)."""
    if name == "a2-r" or (name == "a2" and not table3):
        return build_context("a2", channels, d=d, rank=rank)
    if table3 and name == "a2":
        return build_context("a2", channels, d=d, rank=d)
    if table3 and name == "apc":
        return build_context("apc", channels, d=max(d // 2, 1))
    return build_context(name, channels, d=d, rank=rank, steps=steps, grad=grad, version=version,
                         solver_kwargs=solver_kwargs)


class _Case:
    """One module on one input, ready for its training step, its inference forward and the counts."""

    def __init__(self, name, height, width, *, batch, channels, d, rank, steps, grad, version, table3, device, dtype,
                 seed, sdpa_backend, solver_kwargs=None):
        self.name, self.backend, self.device = name, sdpa_backend, device
        self.setting = dict(height=height, width=width, n=height * width, batch=batch, channels=channels, d=d,
                            rank=rank, steps=tuple(steps), grad=grad, version=version, table3=table3)
        self.label = f"a2 (r={rank})" if name == "a2-r" else name
        if sdpa_backend is not None:
            self.label += f" ({sdpa_backend})"
        torch.manual_seed(seed)
        self.module = _build(name, channels, d, rank, steps, grad, version, table3,
                             solver_kwargs).to(device=device, dtype=dtype)
        self.g = torch.Generator(device=device).manual_seed(seed)
        self.x = torch.randn(batch, channels, height, width, generator=self.g, device=device, dtype=dtype,
                             requires_grad=True)
        self.grad_out = torch.randn(self.x.shape, generator=self.g, device=device, dtype=dtype)
        self.dtype = str(dtype).replace("torch.", "")

    def train(self):
        with _sdpa_context(self.backend):
            self.module.train()
            self.x.grad = None
            for p in self.module.parameters():
                p.grad = None
            self.module(self.x, generator=self.g).backward(self.grad_out)

    def train_forward(self):
        with _sdpa_context(self.backend), torch.no_grad():
            self.module.train()
            self.module(self.x, generator=self.g)

    def infer(self):
        with _sdpa_context(self.backend), torch.no_grad():
            self.module.eval()
            self.module(self.x, generator=self.g)

    def counts(self) -> dict:
        """Parameters, MACs and peak memory (three untimed calls, which also warm the module up)."""
        macs = count_macs(self.train_forward)
        train_macs, (train_bytes, kind) = count_macs(lambda: peak_memory(self.train, self.device), result=True)
        infer_macs, (infer_bytes, _) = count_macs(lambda: peak_memory(self.infer, self.device), result=True)
        return dict(params=sum(p.numel() for p in self.module.parameters()), macs=macs, infer_macs=infer_macs,
                    train_macs=train_macs, train_bytes=train_bytes, infer_bytes=infer_bytes, memory_kind=kind)


def _timed(fn, device) -> tuple[float, float]:
    """``(time, wall time)`` of one call of ``fn``: the time is the process's CPU time on CPU, the wall time on CUDA
    (with the device synchronised)."""
    synchronize(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    wall = time.perf_counter() - start
    return (time.process_time() - start_cpu if device.type == "cpu" else wall), wall


def _interleaved(cases: list, rounds: int, device, seed: int, reference: int | None = None) -> list:
    """Each case's training step and inference forward, once per round, every round in a new random order. With a
    ``reference`` (an index into ``cases``), every other call is timed beside a call of the reference's same phase,
    the two in a random order, so that each ratio compares two calls made moments apart.

    Returns:
        per case ``{"train": [times], "infer": [...], "train_wall": [...], "infer_wall": [...], "train_ref": [...],
        "infer_ref": [...]}``, round by round; ``*_ref`` holds the reference's time beside each call (the reference's
        own time for the reference; empty without one).
    """
    keys = ("train", "infer", "train_wall", "infer_wall", "train_ref", "infer_ref")
    times = [{k: [] for k in keys} for _ in cases]
    calls = [(i, phase) for i in range(len(cases)) for phase in ("train", "infer")]
    order = random.Random(seed)
    for _ in range(rounds):
        order.shuffle(calls)
        for i, phase in calls:
            if reference is None or i == reference:
                t, wall = _timed(getattr(cases[i], phase), device)
                t_ref = t
            elif order.random() < 0.5:
                t_ref, _ = _timed(getattr(cases[reference], phase), device)
                t, wall = _timed(getattr(cases[i], phase), device)
            else:
                t, wall = _timed(getattr(cases[i], phase), device)
                t_ref, _ = _timed(getattr(cases[reference], phase), device)
            times[i][phase].append(t)
            times[i][f"{phase}_wall"].append(wall)
            if reference is not None:
                times[i][f"{phase}_ref"].append(t_ref)
    return times


def _measure(cases: list, rounds: int, device, seed: int, progress: bool = False,
             reference: int | None = None) -> list:
    """:class:`ContextCost` of each case: counts first, then the interleaved timed rounds (see :func:`_interleaved`
    for ``reference``)."""
    counts = []
    for case in cases:
        counts.append(case.counts())
        if progress:
            c = counts[-1]
            print(f"{case.label:>12} {case.setting['height']:>4}×{case.setting['width']:<4} counted: "
                  f"{c['macs'] / 1e9:8.2f} GMACs, train {c['train_bytes'] / 2**20:8.1f} MB, infer "
                  f"{c['infer_bytes'] / 2**20:8.1f} MB", flush=True)
    times = _interleaved(cases, rounds, device, seed, reference)
    rows = []
    for case, c, t in zip(cases, counts, times):
        rows.append(ContextCost(
            name=case.name, label=case.label, **case.setting, **c,
            train_seconds=statistics.median(t["train"]), infer_seconds=statistics.median(t["infer"]),
            time_kind="cpu_process_time" if device.type == "cpu" else "cuda_wall",
            train_wall_seconds=statistics.median(t["train_wall"]), infer_wall_seconds=statistics.median(t["infer_wall"]),
            repeats=rounds, device=str(device), dtype=case.dtype, train_times=t["train"], infer_times=t["infer"],
            train_reference_times=t["train_ref"], infer_reference_times=t["infer_ref"]))
        if progress:
            r = rows[-1]
            print(f"{r.label:>12} {r.height:>4}×{r.width:<4} train {1e3 * r.train_seconds:9.1f} ms   infer "
                  f"{1e3 * r.infer_seconds:9.1f} ms   (median of {rounds})", flush=True)
    return rows


def _check_args(height, width, batch, repeats, sdpa_backend, dtype):
    for value, arg in ((height, "height"), (width, "width"), (batch, "batch"), (repeats, "repeats")):
        check_int(value, arg, 1)
    check_choice(sdpa_backend, "sdpa_backend", SDPA_BACKENDS)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")


def context_cost(name: str, height: int, width: int | None = None, *, batch: int = 1, channels: int = 512,
                 d: int = 512, rank: int = 64, steps=(6, 7), grad: str = PAPER_MODE, version: str = "v1",
                 table3: bool = True, device="cpu", dtype=torch.float32, repeats: int = 3, seed: int = 0,
                 sdpa_backend: str | None = None, solver_kwargs: dict | None = None) -> ContextCost:
    """Parameters, MACs, memory and time of one context module (see the module docstring for what each counts).

    Args:
        name: a context module name for :func:`hamgrad.nn.build_context` (``"sa"``, ``"gap"``, a registered context
            module, or a solver name such as ``"nmf"`` for the Hamburger), except ``"a2"``: Table 3's A² with
            ``c_m = c_n = d``; ``"a2-r"`` is A² with ``rank`` attention maps (what ``build_context("a2")`` builds).
        height: the feature map's height.
        width: its width (default ``height``).
        batch: the batch size (Table 3: 1).
        channels: the module's input and output channels (Table 3: 512).
        d: its inner channels (Table 3: 512).
        rank: r for the hams and ``"a2-r"`` (Table 3: 64).
        steps: the hams' solver steps in training and in evaluation (Table 3: (6, 7)); an int means both.
        grad: the hams' gradient mode (see :func:`hamgrad.solve`); the default, :data:`hamgrad.PAPER_MODE`
            (``"one-step-coef"``), is the official code's training path.
        version: the hams' Hamburger block, ``"v1"`` (Table 3's) or ``"v2"``.
        table3: build the rows Table 3 configures its own way as it does (``"a2"``: c_m = c_n = d; ``"apc"``: d/2
            channels per pyramid scale, where its MACs are the paper's); ``False`` builds
            :func:`hamgrad.nn.build_context`'s module for every name.
        device: where to measure.
        dtype: the floating dtype to measure in.
        repeats: timed calls of the training step and of the inference forward (after three untimed calls that
            count the MACs and the memory), alternating.
        seed: seeds the module's weights, the input, the output gradient and the hams' initial states.
        sdpa_backend: one of :data:`SDPA_BACKENDS`; forces scaled-dot-product attention's kernel (``"math"``
            materialises the attention matrix). The row's label says which.
        solver_kwargs: keyword arguments of a ham's solver (e.g. ``{"inv_t": 10.0}``); ignored by the other rows.

    Returns:
        a :class:`ContextCost`.

    Raises:
        ValueError, TypeError: for an unknown name or backend, non-positive sizes, or a non-floating dtype.
    """
    width = height if width is None else width
    _check_args(height, width, batch, repeats, sdpa_backend, dtype)
    steps = (steps, steps) if isinstance(steps, int) and not isinstance(steps, bool) else steps
    if not isinstance(steps, (tuple, list)) or len(steps) != 2:
        raise ValueError(f"steps must be an int or a (train, eval) pair of ints, got {steps!r}")
    steps = (check_int(steps[0], "steps[0]", 1), check_int(steps[1], "steps[1]", 1))  # before anything is measured
    device = check_device(device)
    case = _Case(name, height, width, batch=batch, channels=channels, d=d, rank=rank, steps=steps, grad=grad,
                 version=version, table3=table3, device=device, dtype=dtype, seed=seed, sdpa_backend=sdpa_backend,
                 solver_kwargs=solver_kwargs)
    return _measure([case], repeats, device, seed)[0]


_SLOPE_KEYS = ("train_seconds", "infer_seconds", "train_bytes", "infer_bytes", "macs")


def fit_slopes(rows: list, fit_from: int = 32 * 32) -> dict:
    """Least-squares slopes of log(cost) against log(n) per module label, over the rows with ``n >= fit_from``.

    Args:
        rows: :meth:`ContextCost.to_dict` rows.
        fit_from: the smallest n in the fit (small maps are dominated by fixed per-call costs).

    Returns:
        ``{label: {"train_seconds": slope, "infer_seconds": …, "train_bytes": …, "infer_bytes": …, "macs": …,
        "n": [the fitted n]}}`` for every label with at least two fitted sizes (a slope is NaN where a value is 0).
    """
    if isinstance(fit_from, bool) or not isinstance(fit_from, (int, float)) or not fit_from >= 0:
        raise ValueError(f"fit_from must be a number of positions >= 0, got {fit_from!r}")
    out = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        fitted = sorted((r for r in rows if r["label"] == label and r["n"] >= fit_from), key=lambda r: r["n"])
        if len(fitted) < 2:
            continue
        logn = [math.log(r["n"]) for r in fitted]
        slopes = {}
        for key in _SLOPE_KEYS:
            values = [r[key] for r in fitted]
            if min(values) <= 0:
                slopes[key] = math.nan
                continue
            logv = [math.log(v) for v in values]
            mx, my = statistics.fmean(logn), statistics.fmean(logv)
            slopes[key] = sum((a - mx) * (b - my) for a, b in zip(logn, logv)) / sum((a - mx) ** 2 for a in logn)
        out[label] = {**slopes, "n": [r["n"] for r in fitted]}
    return out


def _spread(values: list) -> dict:
    """Median, extremes and quartiles of per-round ratios."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3}


_PAPER_KEYS = {"params": "params_m", "macs": "gmacs", "train_bytes": "train_mb", "infer_bytes": "infer_mb",
               "train_seconds": "train_ms", "infer_seconds": "infer_ms"}


def _ratios(rows: list, reference: str) -> list:
    """Every row over the reference row of its size: the counts as one ratio, the times call by call against the
    reference's call beside it (median and spread over the rounds), the paper's ratio beside each where both rows
    are in Table 3 and the size is Table 3's."""
    out = []
    for ref in (r for r in rows if r["label"] == reference):
        for r in (r for r in rows if (r["height"], r["width"]) == (ref["height"], ref["width"])):
            paper = None
            if r["name"] in PAPER_TABLE3 and ref["name"] in PAPER_TABLE3 and _at_table3(r):
                paper = {k: PAPER_TABLE3[r["name"]][p] / PAPER_TABLE3[ref["name"]][p] for k, p in _PAPER_KEYS.items()}
            out.append({"label": r["label"], "name": r["name"], "reference": reference, "height": r["height"],
                        "width": r["width"],
                        **{k: r[k] / ref[k] if ref[k] else math.nan
                           for k in ("params", "macs", "infer_macs", "train_macs", "train_bytes", "infer_bytes")},
                        **{k: _spread([a / b for a, b in zip(r[f"{phase}_times"], r[f"{phase}_reference_times"])])
                           for k, phase in (("train_seconds", "train"), ("infer_seconds", "infer"))},
                        "paper": paper})
    return out


def compare_contexts(names=DEFAULT_CONTEXTS, sides=(64, 128), *, fit_from: int = 32 * 32, progress: bool = False,
                     sdpa_backends=(None,), reference: str = REFERENCE, **kwargs) -> dict:
    """:func:`context_cost` of every module on square maps of every side, timed in interleaved rounds, with each
    module's ratios to the reference module and log-log slopes.

    At each side every module is built and counted first; then each round calls every module's training step and
    inference forward once, in a new random order, each of them beside a call of the reference module's (the two in
    a random order): a time ratio compares two calls made moments apart, so that whatever else the machine does falls
    on both alike.

    Args:
        names: row names (see :func:`context_cost`).
        sides: square map sides (``height = width``).
        fit_from: the smallest n in the slope fit (:func:`fit_slopes`).
        progress: print a line per module as it is counted and as it is timed.
        sdpa_backends: self-attention (``"sa"``) is measured once per entry (see ``sdpa_backend`` of
            :func:`context_cost`); e.g. ``(None, "math")`` adds the materialised attention matrix.
        reference: the row every other is divided by (a label among the rows; default the NMF ham). Without it
            there are no ratios.
        kwargs: the other arguments of :func:`context_cost` (batch, channels, d, rank, steps, grad, version, table3,
            device, dtype, repeats = the number of rounds, seed).

    Returns:
        plain data: ``rows`` (:meth:`ContextCost.to_dict` each, with every round's times), ``ratios`` (each row over
        the reference at its side: counts as ratios, times as ``{median, min, max, q1, q3}`` of the per-round
        ratios, and at Table 3's setting the paper's ratio where both rows are in Table 3), ``reference``, ``slopes``
        (:func:`fit_slopes`), ``fit_from``, ``paper`` (:data:`PAPER_TABLE3`), ``torch``, ``threads`` and ``load``
        (the 1, 5 and 15 minute load averages at the start and at the end, where the system has them).

    Raises:
        ValueError: for empty ``names`` or ``sides``, or a name or side given twice (and see :func:`context_cost`).
    """
    names, sides = tuple(names), tuple(sides)
    if not names or not sides:
        raise ValueError(f"names and sides must be non-empty, got names={names}, sides={sides}")
    for what, values in (("names", names), ("sides", sides)):
        if len(set(values)) != len(values):
            raise ValueError(f"{what} has duplicates: {list(values)} (each row would be measured twice)")
    options = dict(batch=1, channels=512, d=512, rank=64, steps=(6, 7), grad=PAPER_MODE, version="v1", table3=True,
                   device="cpu", dtype=torch.float32, repeats=3, seed=0)
    unknown = set(kwargs) - set(options)
    if unknown:
        raise TypeError(f"compare_contexts got unexpected arguments {sorted(unknown)}; expected {sorted(options)}")
    options.update(kwargs)
    device = check_device(options.pop("device"))
    repeats, seed = options.pop("repeats"), options.pop("seed")
    for backend in sdpa_backends:
        _check_args(1, 1, options["batch"], repeats, backend, options["dtype"])
    load = [_load()]
    rows = []
    for side in sides:
        cases = [_Case(name, side, side, device=device, seed=seed, sdpa_backend=backend, **options)
                 for name in names for backend in (sdpa_backends if name == "sa" else (None,))]
        ref = next((i for i, case in enumerate(cases) if case.label == reference), None)
        rows += [row.to_dict() for row in _measure(cases, repeats, device, seed, progress, ref)]
        del cases
    load.append(_load())
    return {"rows": rows, "ratios": _ratios(rows, reference), "reference": reference,
            "slopes": fit_slopes(rows, fit_from), "fit_from": fit_from, "paper": PAPER_TABLE3,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "load": load}


def _load():
    """The system's 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _at_table3(row: dict) -> bool:
    """Whether a row was measured at Table 3's setting."""
    return all((tuple(row[k]) if k == "steps" else row[k]) == v for k, v in TABLE3_SETTING.items())


def _ratio_cell(q: dict, key: str) -> str:
    value = q[key]
    if isinstance(value, dict):
        text = f"{value['median']:.2f}× [{value['min']:.2f}–{value['max']:.2f}]"
    else:
        text = f"{value:.2f}×"
    paper = q["paper"]
    return text if paper is None else f"{text} ({paper[key]:.2f}×)"


def to_markdown(result: dict) -> str:
    """The :func:`compare_contexts` result as markdown: the cost table per map size, every row's ratios to the
    reference (times: median [min–max] over the rounds; the paper's ratio in parentheses), Table 3 beside the paper
    when a side matches its setting, and the fitted slopes (or a line saying why there are none).

    Raises:
        ValueError: when ``result`` has no rows.
    """
    rows = result.get("rows") if isinstance(result, dict) else None
    if not rows:
        raise ValueError("result has no rows: nothing to tabulate (pass what compare_contexts returned)")
    first = rows[0]
    load = result.get("load")
    lines = [f"Context modules on a ({first['batch']}, {first['channels']}, H, W) map, d = {first['d']}, "
             f"r = {first['rank']}, K = {first['steps'][0]} train / {first['steps'][1]} eval, hams in the "
             f"{first['version'].upper()} block with gradient {first['grad']}; MACs of the training forward (Table "
             f"3's count) and of inference; {first['device']}, {first['dtype']}, {result.get('threads', '?')} threads; "
             f"memory: {first['memory_kind']}; time: {first['time_kind']}, median of {first['repeats']} interleaved "
             f"rounds" + (f"; load average {load[0][0]:.2f} at the start, {load[-1][0]:.2f} at the end"
                          if load and load[0] else ""), "",
             "| module | H×W | params (M = 2²⁰) | params (10⁶) | MACs train (G) | MACs infer (G) | train MB | infer MB | "
             "train ms | infer ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['height']}×{r['width']} | {r['params'] / 2**20:.2f} | "
                     f"{r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.2f} | {r['infer_macs'] / 1e9:.2f} | "
                     f"{r['train_bytes'] / 2**20:.1f} | {r['infer_bytes'] / 2**20:.1f} | "
                     f"{1e3 * r['train_seconds']:.1f} | {1e3 * r['infer_seconds']:.1f} |")
    if result["ratios"]:
        lines += ["", f"Each module over {result['reference']} at the same size; times: the median over the rounds of "
                      f"the ratio to the {result['reference']} call beside it [min–max]; in parentheses, at Table 3's "
                      f"setting, the paper's ratio (its GPU).", "",
                  "| module | H×W | params | MACs | train memory | infer memory | train time | infer time |",
                  "|---|---|---|---|---|---|---|---|"]
        for q in result["ratios"]:
            lines.append(f"| {q['label']} / {q['reference']} | {q['height']}×{q['width']} | "
                         + " | ".join(_ratio_cell(q, k) for k in _PAPER_KEYS) + " |")
    lines += _table3_markdown(result)
    if not result["slopes"]:
        lines += ["", f"no log-log slopes: no module has two or more sizes with n >= {result['fit_from']}"]
    else:
        lines += ["", f"log-log slopes against n = H·W (fitted over n >= {result['fit_from']}):", "",
                  "| module | train time | infer time | train memory | infer memory | MACs |",
                  "|---|---|---|---|---|---|"]
        for label, s in result["slopes"].items():
            lines.append(f"| {label} | " + " | ".join(f"{s[k]:.2f}" for k in _SLOPE_KEYS) + " |")
    return "\n".join(lines) + "\n"


def _cell(r, p, key: str, scale: float, spec: str, paper_key: str | None = None, paper_spec: str = "") -> str:
    """hamgrad's value of ``key`` (``–`` when not measured), with the paper's in parentheses when it has one."""
    text = "–" if r is None else format(r[key] * scale, spec)
    return text if p is None or paper_key is None else f"{text} ({p[paper_key]:{paper_spec or spec}})"


def _table3_markdown(result: dict) -> list:
    """Table 3's eight rows, the paper's numbers beside hamgrad's (``–`` where hamgrad measured none), then the
    measured rows Table 3 lacks."""
    rows = [r for r in result["rows"] if _at_table3(r)]
    if not rows:
        return []
    measured = {r["label"]: r for r in rows}
    entries = [(label, measured.get(label)) for label in PAPER_TABLE3]
    entries += [(label, r) for label, r in measured.items() if label not in PAPER_TABLE3]
    lines = ["", f"Table 3 beside the paper (128×128): hamgrad's value, the paper's in parentheses. The paper measured "
                 f"memory and time on a GPU, hamgrad on {rows[0]['device']}: compare those through the ratios above.",
             "", "| row | params (M = 2²⁰) | params (10⁶) | MACs (G) | MACs / paper | train MB | infer MB | train ms | "
                 "infer ms |", "|---|---|---|---|---|---|---|---|---|"]
    for label, r in entries:
        p = PAPER_TABLE3.get(label if r is None else r["name"])
        ratio = "–" if r is None or p is None else f"{r['macs'] / 1e9 / p['gmacs']:.3f}×"
        lines.append(f"| {label} | {_cell(r, p, 'params', 2.0 ** -20, '.2f', 'params_m')} | "
                     f"{_cell(r, p, 'params', 1e-6, '.2f')} | {_cell(r, p, 'macs', 1e-9, '.2f', 'gmacs', '.1f')} | "
                     f"{ratio} | {_cell(r, p, 'train_bytes', 2.0 ** -20, '.0f', 'train_mb')} | "
                     f"{_cell(r, p, 'infer_bytes', 2.0 ** -20, '.0f', 'infer_mb')} | "
                     f"{_cell(r, p, 'train_seconds', 1e3, '.1f', 'train_ms')} | "
                     f"{_cell(r, p, 'infer_seconds', 1e3, '.1f', 'infer_ms')} |")
    return lines


def save(result: dict, out, name: str = "context_cost", fig=None, markdown: str | None = None) -> list[Path]:
    """Write ``out/name.json`` (the result), ``out/name.md`` (``markdown``, by default :func:`to_markdown` of the
    result) and, when ``fig`` is given, ``out/name.png`` (without ``fig``, an older ``out/name.png`` is removed: it
    would not show this table); each to a temporary name first, then moved into place. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(result) if markdown is None else markdown
    files = {out / f"{name}.json": json.dumps(result, allow_nan=True) + "\n", out / f"{name}.md": markdown}
    if fig is not None:
        atomic_write(out / f"{name}.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    else:  # an older figure would sit beside a table it does not show
        (out / f"{name}.png").unlink(missing_ok=True)
    for path, text in files.items():
        write_text(path, text)
    return list(files) + ([out / f"{name}.png"] if fig is not None else [])


def ablation_costs(out_dir, *, repeats: int = 5, device="cpu") -> dict:
    """Accuracy per unit of cost of a context sweep (``hamgrad ablate --contexts``): each module's validation mIoU
    beside its cost as the head of that sweep's HamNet.

    The cost is :func:`context_cost` of the module alone on the sweep's head input (``batch_size`` × the encoder's
    channels × (image_size / output_stride)², with the sweep's d, r, K, gradient mode and block, each module as the
    sweep built it, the hams with the sweep's ``solver_args``), measured here and now; the no-context baseline costs
    0. ``run_seconds`` is the mean wall time of
    a whole training run from the sweep's
    results (encoder included, on whatever else the machine was doing then).

    Args:
        out_dir: a sweep folder written by :func:`hamgrad.experiments.run_ablation`.
        repeats: timed calls of each module's training step and inference forward.
        device: where to measure the costs.

    Returns:
        plain data: ``sweep``, ``task`` (the sweep's task in words), ``shape`` (the head input), ``config``, and
        ``rows`` in the order the sweep finished
        them: ``label`` (the module, and for a ham its mode, the paper's marked, block and, in a sweep over K, its K),
        ``name``, ``grad``, ``block``, ``steps`` (K; ``None`` without a ham), ``seeds``, ``miou_best``, ``miou_mean``,
        ``miou_std``, ``run_seconds``, on the regional task ``miou_disagree_mean`` (the images whose regional majorities
        disagree),
        and the cost fields ``params``, ``macs``, ``train_macs``, ``train_bytes``, ``infer_bytes``,
        ``train_seconds``, ``infer_seconds``, ``memory_kind``, ``time_kind``; ``failed``: the run ids of the runs
        recorded as failed (left out of the rows).

    Raises:
        ValueError: when ``out_dir`` holds no sweep or no finished run.
    """
    out = Path(out_dir)
    config_path = out / "config.json"
    if not config_path.exists():
        raise ValueError(f"out_dir={str(out)!r} holds no sweep (no config.json)")
    config = AblationConfig.from_json(config_path.read_text(encoding="utf-8"))
    results = load_results(out)
    failed = [r["run_id"] for r in results if r["status"] != "ok"]
    results = [r for r in results if r["status"] == "ok"]
    if not results:
        raise ValueError(f"out_dir={str(out)!r} holds no finished runs")
    channels = config.width * config.output_stride // 2  # the last encoder stage: width · 2^(log2(stride) − 1)
    side = config.image_size // config.output_stride
    groups: dict = {}
    for r in results:
        groups.setdefault((r["solver"], r["grad"], r["block"], r["steps"] if r["grad"] else None), []).append(r)
    rows = []
    many_k = len(config.step_values) > 1
    for (name, grad, block, steps_k), group in groups.items():
        k = config.step_values[0] if steps_k is None else steps_k  # (K: hams only)
        miou = [r["miou"] for r in group]
        row = {"label": name if grad is None else f"{name} ({mode_label(grad)}, {block}"
                                                  + (f", K = {k}" if many_k else "") + ")", "name": name,
               "grad": grad, "block": block, "steps": steps_k, "seeds": len(group), "miou_best": max(miou),
               "miou_mean": statistics.fmean(miou),
               "miou_std": statistics.pstdev(miou),
               "run_seconds": statistics.fmean(r["train_seconds"] for r in group)}
        if config.task == "regional":  # the images whose regional majorities disagree
            row["miou_disagree_mean"] = statistics.fmean(r["miou_disagree"] for r in group)
        if name == "none":
            row.update(params=0, macs=0, train_macs=0, train_bytes=0, infer_bytes=0, train_seconds=0.0,
                       infer_seconds=0.0, memory_kind=None, time_kind=None)
        else:
            steps = (k, k) if block is None else (k, config.eval_steps_for(k, block))  # (K: hams only)
            c = context_cost(name, side, batch=config.batch_size, channels=channels, d=config.d, rank=config.rank,
                             steps=steps, grad=grad or PAPER_MODE, version=block or "v2", table3=False,
                             device=device, repeats=repeats, solver_kwargs=dict(config.solver_args) if grad else None)
            row.update({k: getattr(c, k) for k in ("params", "macs", "train_macs", "train_bytes", "infer_bytes",
                                                   "train_seconds", "infer_seconds", "memory_kind", "time_kind")})
        rows.append(row)
    return {"sweep": str(out), "task": config.task_name, "shape": [config.batch_size, channels, side, side],
            "config": config.to_dict(),
            "rows": rows, "failed": failed, "torch": torch.__version__}


def ablation_markdown(result: dict) -> str:
    """The :func:`ablation_costs` result as a markdown table."""
    b, c, h, w = result["shape"]
    disagree = all("miou_disagree_mean" in r for r in result["rows"])
    lines = [f"Context ablation on the task {result['task']}: validation mIoU (%) beside the context module's cost on "
             f"its ({b}, {c}, {h}, {w}) input", "",
             "| module | mIoU best (mean ± std) | " + ("mIoU where the regions disagree (mean) | " if disagree else "")
             + "seeds | run time (s) | params (k) | MACs (M) | train step (ms) | train MB | infer (ms) |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if disagree else "")]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | {100 * r['miou_best']:.1f} ({100 * r['miou_mean']:.1f} ± "
                     f"{100 * r['miou_std']:.1f}) | "
                     + (f"{100 * r['miou_disagree_mean']:.1f} | " if disagree else "")
                     + f"{r['seeds']} | {r['run_seconds']:.0f} | {r['params'] / 1e3:.1f} | "
                     f"{r['macs'] / 1e6:.1f} | {1e3 * r['train_seconds']:.2f} | {r['train_bytes'] / 2**20:.2f} | "
                     f"{1e3 * r['infer_seconds']:.2f} |")
    return "\n".join(lines) + "\n"
