"""What a context module costs: parameters, MACs, memory and time, in training and in inference (the paper's Table 3).

::

    from hamgrad import cost
    row = cost.context_cost("sa", 64)                          # one module on one (1, 512, 64, 64) map
    result = cost.compare_contexts(("sa", "nmf"), sides=(16, 32, 64))   # rows, SA/ham ratios, log-log slopes
    print(cost.to_markdown(result))

The setting is Table 3's: one feature map of ``channels = 512``, ``d = 512``, ``r = 64``, ``K = 6`` steps in
training and 7 in inference, the hams in the paper's V1 block (Table 3's 0.50M parameters of Ham (NMF) are V1's two
512 × 512 convs; V2's cheese would add 0.26M). A training step is the module's forward in training mode and the backward of a fixed
random output gradient (the input requires a gradient, as inside a network); inference is the forward in evaluation
mode under ``torch.no_grad()``.

**MACs** are counted by :class:`torch.utils.flop_counter.FlopCounterMode` as its FLOPs / 2: it counts matrix
products and convolutions (mm, bmm, addmm, convolution, scaled-dot-product attention) and nothing else — no
elementwise work (softmax's exponentials, NMF's multiplicative updates, normalisations, BatchNorm, ReLU, the residual),
no reductions, no copies. torch 2.13 registers no formula for the CPU flash-attention kernel
(``_scaled_dot_product_flash_attention_for_cpu`` and its backward) and would count SDPA on CPU as 0; this module
maps them to torch's own SDPA formulas. By that count the paper's Table 3 MACs (SA 292G, Ham (NMF) 17.6G) match a
128 × 128 map.

**Memory** is the peak of memory allocated during the call above the allocation at its start: on CUDA
``torch.cuda.max_memory_allocated``; on CPU (where torch keeps no allocator statistics) the running sum of the
allocations and frees of torch's CPU allocator that ``torch.profiler`` records (``profile_memory=True``), at its
maximum. It counts every tensor and scratch buffer torch allocates (the attention matrix of the math backend, the
flash kernel's blocks), not the parameters and the input allocated before the call, nor memory outside torch's
allocator. (:func:`hamgrad.profiling.measure`'s CPU measure, the tensors saved for backward, would be 0 in inference
and would miss transient buffers such as a forward's attention matrix.) It is measured in a separate call from the
times (the profiler slows the call down; some torch builds print a line on stderr when it starts and stops).

**Time** is the median over ``repeats`` calls, after one untimed call (the one that counts the MACs and the memory),
of: on CUDA the wall time with the device synchronised; on CPU the process's CPU time (``time.process_time``), which
other processes sharing the cores do not inflate as they do the wall time (with one torch thread it is the wall time
of an idle machine, near enough; with several it sums their work). The wall times are kept too
(``*_wall_seconds``).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop, sdpa_flop

from ._checks import check_choice, check_device, check_int
from ._files import atomic_write, write_text
from .experiments import AblationConfig, load_results
from .grad import PAPER_MODE, mode_label
from .nn import CONTEXTS, build_context
from .profiling import synchronize

__all__ = ["ContextCost", "PAPER_TABLE3", "PAPER_RATIOS", "count_macs", "peak_memory", "context_cost",
           "compare_contexts", "fit_slopes", "to_markdown", "save", "ablation_costs", "ablation_markdown",
           "DEFAULT_CONTEXTS", "SDPA_BACKENDS"]

#: The modules :func:`compare_contexts` measures by default: self-attention, A², the three hams, global pooling.
DEFAULT_CONTEXTS = ("sa", "a2", "nmf", "vq", "cd", "gap")

#: ``sdpa_backend`` values: ``None`` lets torch choose; ``"math"`` forces the composite kernel that materialises the
#: n × n attention matrix (as the paper's non-local block does); the others force one fused kernel.
SDPA_BACKENDS = (None, "math", "flash", "efficient", "cudnn")

#: The paper's Table 3 (one 512-channel map, measured on a GPU): parameters (M), MACs (G), memory (MB) and time (ms).
PAPER_TABLE3 = {
    "sa": {"params_m": 1.00, "gmacs": 292.0, "train_mb": 5253.0, "infer_mb": 2148.0, "train_ms": 242.0,
           "infer_ms": 82.2},
    "nmf": {"params_m": 0.50, "gmacs": 17.6, "train_mb": 202.0, "infer_mb": 98.0, "train_ms": 15.6, "infer_ms": 7.7},
    "cd": {"params_m": 0.50, "gmacs": 16.2, "train_mb": 162.0, "infer_mb": 102.0, "train_ms": 20.0, "infer_ms": 13.0},
}

#: The paper's SA / Ham (NMF) ratios from Table 3 (time 15.5×, training memory 26×).
PAPER_RATIOS = {key: PAPER_TABLE3["sa"][key] / PAPER_TABLE3["nmf"][key]
                for key in ("params_m", "gmacs", "train_mb", "infer_mb", "train_ms", "infer_ms")}



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
        name, label: the module's name (``build_context``) and a label (``"sa (math)"`` for a forced SDPA backend).
        height, width, batch, channels, d, rank, steps, version: the setting (``steps`` = (train, eval) K and
            ``version`` the Hamburger block, hams only).
        n: positions ``height · width``.
        params: number of parameters.
        macs: MACs of the inference forward; train_macs: of a training step (forward + backward).
        train_bytes, infer_bytes: peak memory of a training step and of an inference forward.
        memory_kind: ``"cuda_max_allocated"`` or ``"cpu_allocator_peak"``.
        train_seconds, infer_seconds: median times (``time_kind``: ``"cpu_process_time"`` or ``"cuda_wall"``);
        train_wall_seconds, infer_wall_seconds: median wall times; repeats: how many calls each median is over.
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
    version: str
    params: int
    macs: int
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


def _cpu_allocator_peak(fn) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
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


def _median_seconds(fn, device, repeats: int) -> tuple[float, float]:
    """Median (CPU time of the process on CPU, else wall time) and median wall time of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(cpu if device.type == "cpu" else wall), statistics.median(wall)


def _sdpa_context(backend):
    if backend is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kinds = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION}
    return sdpa_kernel([kinds[backend]])


def context_cost(name: str, height: int, width: int | None = None, *, batch: int = 1, channels: int = 512,
                 d: int = 512, rank: int = 64, steps=(6, 7), grad: str = "one-step", version: str = "v1",
                 device="cpu", dtype=torch.float32, repeats: int = 3, seed: int = 0,
                 sdpa_backend: str | None = None) -> ContextCost:
    """Parameters, MACs, memory and time of one context module (see the module docstring for what each counts).

    Args:
        name: a context module name for :func:`hamgrad.nn.build_context` (``"sa"``, ``"a2"``, ``"gap"``, or a solver
            name such as ``"nmf"`` for the Hamburger).
        height: the feature map's height.
        width: its width (default ``height``).
        batch: the batch size (Table 3: 1).
        channels: the module's input and output channels (Table 3: 512).
        d: its inner channels (Table 3: 512).
        rank: r for the hams and A² (Table 3: 64).
        steps: the hams' solver steps in training and in evaluation (Table 3: (6, 7)).
        grad: the hams' gradient mode (see :func:`hamgrad.solve`).
        version: the hams' Hamburger block, ``"v1"`` (Table 3's) or ``"v2"``.
        device: where to measure.
        dtype: the floating dtype to measure in.
        repeats: timed calls per median (after one untimed call).
        seed: seeds the module's weights, the input, the output gradient and the hams' initial states.
        sdpa_backend: one of :data:`SDPA_BACKENDS`; forces scaled-dot-product attention's kernel (``"math"``
            materialises the attention matrix). The row's label says which.

    Returns:
        a :class:`ContextCost`.

    Raises:
        ValueError, TypeError: for an unknown name or backend, non-positive sizes, or a non-floating dtype.
    """
    width = height if width is None else width
    for value, arg in ((height, "height"), (width, "width"), (batch, "batch"), (repeats, "repeats")):
        check_int(value, arg, 1)
    check_choice(sdpa_backend, "sdpa_backend", SDPA_BACKENDS)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    device = check_device(device)
    torch.manual_seed(seed)
    module = build_context(name, channels, d=d, rank=rank, steps=steps, grad=grad, version=version)
    module = module.to(device=device, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=g, device=device, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(x.shape, generator=g, device=device, dtype=dtype)

    def train():
        module.train()
        x.grad = None
        for p in module.parameters():
            p.grad = None
        module(x, generator=g).backward(grad_out)

    def infer():
        module.eval()
        with torch.no_grad():
            module(x, generator=g)

    with _sdpa_context(sdpa_backend):  # one untimed call of each counts the MACs and the memory together
        train_macs, (train_bytes, kind) = count_macs(lambda: peak_memory(train, device), result=True)
        macs, (infer_bytes, _) = count_macs(lambda: peak_memory(infer, device), result=True)
        train_seconds, train_wall = _median_seconds(train, device, repeats)
        infer_seconds, infer_wall = _median_seconds(infer, device, repeats)
    return ContextCost(
        name=name, label=name if sdpa_backend is None else f"{name} ({sdpa_backend})", height=height, width=width,
        n=height * width, batch=batch, channels=channels, d=d, rank=rank, steps=tuple(steps), version=version,
        params=sum(p.numel() for p in module.parameters()), macs=macs, train_macs=train_macs,
        train_bytes=train_bytes, infer_bytes=infer_bytes, memory_kind=kind, train_seconds=train_seconds,
        infer_seconds=infer_seconds, time_kind="cpu_process_time" if device.type == "cpu" else "cuda_wall",
        train_wall_seconds=train_wall, infer_wall_seconds=infer_wall, repeats=repeats, device=str(device),
        dtype=str(dtype).replace("torch.", ""))


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


def _ratios(rows: list) -> list:
    """SA over each ham at every size, for the keys Table 3 reports."""
    keys = {"params": "params_m", "macs": "gmacs", "train_bytes": "train_mb", "infer_bytes": "infer_mb",
            "train_seconds": "train_ms", "infer_seconds": "infer_ms"}
    out = []
    for sa in (r for r in rows if r["name"] == "sa"):
        for ham in (r for r in rows if r["n"] == sa["n"] and r["name"] not in CONTEXTS):
            out.append({"numerator": sa["label"], "denominator": ham["label"], "height": sa["height"],
                        "width": sa["width"],
                        **{k: sa[k] / ham[k] if ham[k] else math.nan for k in keys},
                        "paper": {k: PAPER_RATIOS[p] for k, p in keys.items()} if ham["name"] == "nmf" else None})
    return out


def compare_contexts(names=DEFAULT_CONTEXTS, sides=(64, 128), *, fit_from: int = 32 * 32, progress: bool = False,
                     sdpa_backends=(None,), **kwargs) -> dict:
    """:func:`context_cost` of every module on square maps of every side, with SA / ham ratios and log-log slopes.

    Args:
        names: module names (see :func:`context_cost`).
        sides: square map sides (``height = width``).
        fit_from: the smallest n in the slope fit (:func:`fit_slopes`).
        progress: print one line per measured row.
        sdpa_backends: self-attention (``"sa"``) is measured once per entry (see ``sdpa_backend`` of
            :func:`context_cost`); e.g. ``(None, "math")`` adds the materialised attention matrix.
        kwargs: the other arguments of :func:`context_cost` (batch, channels, d, rank, steps, device, dtype,
            repeats, seed).

    Returns:
        plain data: ``rows`` (:meth:`ContextCost.to_dict` each), ``ratios`` (SA over each ham at each side, with the
        paper's ratios beside SA / NMF), ``slopes`` (:func:`fit_slopes`), ``fit_from``, ``paper`` (Table 3),
        ``torch``.

    Raises:
        ValueError: for empty ``names`` or ``sides`` (and see :func:`context_cost`).
    """
    names, sides = tuple(names), tuple(sides)
    if not names or not sides:
        raise ValueError(f"names and sides must be non-empty, got names={names}, sides={sides}")
    rows = []
    for side in sides:
        for name in names:
            for backend in (sdpa_backends if name == "sa" else (None,)):
                row = context_cost(name, side, side, sdpa_backend=backend, **kwargs).to_dict()
                rows.append(row)
                if progress:
                    print(f"{row['label']:>10} {side:>4}×{side:<4} train {1e3 * row['train_seconds']:9.1f} ms "
                          f"{row['train_bytes'] / 2**20:9.1f} MB   infer {1e3 * row['infer_seconds']:9.1f} ms "
                          f"{row['infer_bytes'] / 2**20:9.1f} MB", flush=True)
    return {"rows": rows, "ratios": _ratios(rows), "slopes": fit_slopes(rows, fit_from), "fit_from": fit_from,
            "paper": PAPER_TABLE3, "torch": torch.__version__}


def to_markdown(result: dict) -> str:
    """The :func:`compare_contexts` result as markdown: the cost table per map size, the SA / ham ratios beside the
    paper's, and the fitted slopes."""
    rows = result["rows"]
    first = rows[0]
    lines = [f"Context modules on a ({first['batch']}, {first['channels']}, H, W) map, d = {first['d']}, "
             f"r = {first['rank']}, K = {first['steps'][0]} train / {first['steps'][1]} eval, hams in the "
             f"{first['version'].upper()} block; {first['device']}, "
             f"{first['dtype']}; memory: {first['memory_kind']}; time: {first['time_kind']}, median of "
             f"{first['repeats']}", "",
             "| module | H×W | params (M) | MACs (G) | train MB | infer MB | train ms | infer ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['height']}×{r['width']} | {r['params'] / 1e6:.2f} | "
                     f"{r['macs'] / 1e9:.2f} | "
                     f"{r['train_bytes'] / 2**20:.1f} | {r['infer_bytes'] / 2**20:.1f} | "
                     f"{1e3 * r['train_seconds']:.1f} | {1e3 * r['infer_seconds']:.1f} |")
    if result["ratios"]:
        lines += ["", "| ratio | H×W | params | MACs | train memory | infer memory | train time | infer time |",
                  "|---|---|---|---|---|---|---|---|"]
        keys = ("params", "macs", "train_bytes", "infer_bytes", "train_seconds", "infer_seconds")
        for q in result["ratios"]:
            lines.append(f"| {q['numerator']} / {q['denominator']} | {q['height']}×{q['width']} | "
                         + " | ".join(f"{q[k]:.2f}×" for k in keys) + " |")
        paper = PAPER_RATIOS
        lines.append("| paper: SA / Ham (NMF), GPU | 128×128 (by the MACs) | "
                     + " | ".join(f"{paper[k]:.1f}×" for k in ("params_m", "gmacs", "train_mb", "infer_mb",
                                                                 "train_ms", "infer_ms")) + " |")
    if result["slopes"]:
        lines += ["", f"log-log slopes against n = H·W (fitted over n >= {result['fit_from']}):", "",
                  "| module | train time | infer time | train memory | infer memory | MACs |",
                  "|---|---|---|---|---|---|"]
        for label, s in result["slopes"].items():
            lines.append(f"| {label} | " + " | ".join(f"{s[k]:.2f}" for k in _SLOPE_KEYS) + " |")
    return "\n".join(lines) + "\n"


def save(result: dict, out, name: str = "context_cost", fig=None, markdown: str | None = None) -> list[Path]:
    """Write ``out/name.json`` (the result), ``out/name.md`` (``markdown``, by default :func:`to_markdown` of the
    result) and, when ``fig`` is given, ``out/name.png``; each to a temporary name first, then moved into place.
    Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(result) if markdown is None else markdown
    files = {out / f"{name}.json": json.dumps(result, allow_nan=True) + "\n", out / f"{name}.md": markdown}
    if fig is not None:
        atomic_write(out / f"{name}.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    for path, text in files.items():
        write_text(path, text)
    return list(files) + ([out / f"{name}.png"] if fig is not None else [])


def ablation_costs(out_dir, *, repeats: int = 5, device="cpu") -> dict:
    """Accuracy per unit of cost of a context sweep (``hamgrad ablate --contexts``): each module's validation mIoU
    beside its cost as the head of that sweep's HamNet.

    The cost is :func:`context_cost` of the module alone on the sweep's head input (``batch_size`` × the encoder's
    channels × (image_size / output_stride)², with the sweep's d, r, K, gradient mode and block), measured here and
    now; the no-context baseline costs 0. ``run_seconds`` is the mean wall time of a whole training run from the sweep's
    results (encoder included, on whatever else the machine was doing then).

    Args:
        out_dir: a sweep folder written by :func:`hamgrad.experiments.run_ablation`.
        repeats: timed calls per median.
        device: where to measure the costs.

    Returns:
        plain data: ``sweep``, ``shape`` (the head input), ``config``, and ``rows`` in the order the sweep finished
        them: ``label`` (the module, and for a ham its mode, the paper's marked, and block), ``name``, ``grad``,
        ``block``, ``seeds``, ``miou_best``, ``miou_mean``, ``miou_std``, ``run_seconds``
        and the cost fields ``params``, ``macs``, ``train_macs``, ``train_bytes``, ``infer_bytes``,
        ``train_seconds``, ``infer_seconds``, ``memory_kind``, ``time_kind``.

    Raises:
        ValueError: when ``out_dir`` holds no sweep or no finished run.
    """
    out = Path(out_dir)
    config_path = out / "config.json"
    if not config_path.exists():
        raise ValueError(f"out_dir={str(out)!r} holds no sweep (no config.json)")
    config = AblationConfig.from_json(config_path.read_text(encoding="utf-8"))
    results = load_results(out)
    if not results:
        raise ValueError(f"out_dir={str(out)!r} holds no finished runs")
    channels = config.width * config.output_stride // 2  # the last encoder stage: width · 2^(log2(stride) − 1)
    side = config.image_size // config.output_stride
    groups: dict = {}
    for r in results:
        groups.setdefault((r["solver"], r["grad"], r["block"]), []).append(r)
    rows = []
    k = config.step_values[0]
    for (name, grad, block), group in groups.items():
        miou = [r["miou"] for r in group]
        row = {"label": name if grad is None else f"{name} ({mode_label(grad)}, {block})", "name": name,
               "grad": grad, "block": block, "seeds": len(group), "miou_best": max(miou), "miou_mean": statistics.fmean(miou),
               "miou_std": statistics.pstdev(miou),
               "run_seconds": statistics.fmean(r["train_seconds"] for r in group)}
        if name == "none":
            row.update(params=0, macs=0, train_macs=0, train_bytes=0, infer_bytes=0, train_seconds=0.0,
                       infer_seconds=0.0, memory_kind=None, time_kind=None)
        else:
            steps = (k, k) if block is None else (k, config.eval_steps_for(k, block))  # (K: hams only)
            c = context_cost(name, side, batch=config.batch_size, channels=channels, d=config.d, rank=config.rank,
                             steps=steps, grad=grad or PAPER_MODE, version=block or "v2", device=device,
                             repeats=repeats)
            row.update({k: getattr(c, k) for k in ("params", "macs", "train_macs", "train_bytes", "infer_bytes",
                                                   "train_seconds", "infer_seconds", "memory_kind", "time_kind")})
        rows.append(row)
    return {"sweep": str(out), "shape": [config.batch_size, channels, side, side], "config": config.to_dict(),
            "rows": rows, "torch": torch.__version__}


def ablation_markdown(result: dict) -> str:
    """The :func:`ablation_costs` result as a markdown table."""
    b, c, h, w = result["shape"]
    lines = [f"Context ablation: validation mIoU (%) beside the context module's cost on its ({b}, {c}, {h}, {w}) "
             f"input", "",
             "| module | mIoU best (mean ± std) | seeds | run time (s) | params (k) | MACs (M) | train step (ms) | "
             "train MB | infer (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | {100 * r['miou_best']:.1f} ({100 * r['miou_mean']:.1f} ± "
                     f"{100 * r['miou_std']:.1f}) | {r['seeds']} | {r['run_seconds']:.0f} | {r['params'] / 1e3:.1f} | "
                     f"{r['macs'] / 1e6:.1f} | {1e3 * r['train_seconds']:.2f} | {r['train_bytes'] / 2**20:.2f} | "
                     f"{1e3 * r['infer_seconds']:.2f} |")
    return "\n".join(lines) + "\n"
