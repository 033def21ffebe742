"""Time and memory of one call, measured the same way on every device (used by benchmarks and compare_gradients).

Memory: on CUDA, the peak of ``torch.cuda.max_memory_allocated`` above the allocation at the start. On CPU torch
has no allocator statistics, so hamgrad reports the bytes of the distinct tensors autograd saves for backward during
the call (``torch.autograd.graph.saved_tensors_hooks``): the part of the peak that grows with the number of
differentiated steps (BPTT's O(K)). It leaves out transient buffers inside one op, the same for every mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Measurement", "measure", "synchronize"]


@dataclass
class Measurement:
    """``seconds``: wall time of the call; ``peak_bytes``: see the module docstring; ``memory_kind`` says which."""

    seconds: float
    peak_bytes: int
    memory_kind: str
    result: object = None

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "peak_bytes": self.peak_bytes, "memory_kind": self.memory_kind}


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` (CUDA) before reading a clock; nothing to wait for on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device | str = "cpu") -> Measurement:
    """Run ``fn()`` once and return its wall time and peak memory (see the module docstring) with its result."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds = time.perf_counter() - start
        return Measurement(seconds, torch.cuda.max_memory_allocated(device) - base, "cuda_max_allocated", result)
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        if t.device.type != "meta":
            key = (t.untyped_storage().data_ptr(), t.device.type)
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    seconds = time.perf_counter() - start
    return Measurement(seconds, sum(seen.values()), "saved_for_backward", result)
