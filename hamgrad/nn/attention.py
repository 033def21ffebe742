"""Context modules beside the Hamburger, with its interface: ``(B, channels, H, W) → (B, channels, H, W)``.

Every module here has the Hamburger's breads and residual, so parameter counts and costs compare:

```text
z   = conv1x1_{channels→width}(x), flattened to (B, width, n = H·W)    lower bread (width depends on the module)
y   = mix(z)                                                            the global mixing, (B, d, n)
out = ReLU(x + BatchNorm(conv1x1_{d→channels}(y)))                     upper bread and residual
```

The mixing:

- :class:`SelfAttention` — the paper's "SA" row, the non-local block (Wang et al., *Non-local Neural Networks*,
  CVPR 2018, embedded-Gaussian form): the lower bread gives queries, keys and values (width 3d) and
  ``y = V softmax(Kᵀ Q / √d)`` through :func:`torch.nn.functional.scaled_dot_product_attention` (one head; the
  1/√d scale is the Transformer's, which the non-local block omits). Cost O(n² d): quadratic in the positions.
- :class:`DoubleAttention` — A² (Chen et al., *A²-Nets: Double Attention Networks*, NeurIPS 2018), a row of the
  paper's Table 3 and a linear-cost attention: the lower bread gives features A (d), r attention maps B and r
  attention vectors V (width d + 2r); "gather" ``G = A softmax_n(B)ᵀ`` (d × r global descriptors, a softmax over
  positions) and "distribute" ``y = G softmax_r(V)`` (each position mixes the r descriptors). Cost O(n d r). It reads
  as one step of a decomposition ``X̄ = D C`` with ``D = G`` and ``C = softmax_r(V)``, which the capture records.
- :class:`GlobalPool` — a control: the lower bread's output averaged over the positions and added back at every
  position (``y = mean_n(z) 1ᵀ``), the cheapest global signal, with no low-rank structure.

:func:`build_context` builds any of them, or a :class:`~hamgrad.nn.Hamburger` for a solver name, by name
(:data:`CONTEXTS` lists the non-ham names).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from ..solvers import available_solvers
from .hamburger import Hamburger, capturing

__all__ = ["SelfAttention", "DoubleAttention", "GlobalPool", "ContextCapture", "CONTEXTS", "build_context"]


@dataclass
class ContextCapture:
    """What a context module mixed and produced in the most recent forward pass inside its ``capture()``.

    The attribute names are :class:`~hamgrad.nn.HamCapture`'s, so figure code reads either. All tensors are detached;
    ``n = H·W`` positions flattened row-major.

    Attributes:
        x: the features the module mixes ``(B, d, n)``: the values V (self-attention), the features A (A²), the
            lower bread's output (global pooling).
        y: the mixed features ``(B, d, n)`` (what the upper bread receives).
        D: A²'s gathered descriptors ``G`` ``(B, d, r)``; ``None`` for the others.
        C: A²'s distribution weights ``softmax_r(V)`` ``(B, r, n)`` (the analogue of the ham's codes); ``None`` for
            the others.
        shape: ``(H, W)`` of the feature map.
    """

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    D: torch.Tensor | None = None
    C: torch.Tensor | None = None
    shape: tuple | None = None


class _ContextBlock(nn.Module):
    """Breads, residual and capture shared by the modules here; subclasses define ``_mix(z) -> (x, y, D, C)``."""

    def __init__(self, channels: int, d: int, width: int):
        super().__init__()
        self.channels = check_int(channels, "channels", 1)
        self.d = check_int(d, "d", 1)
        self.lower_bread = nn.Conv2d(channels, width, 1)
        self.upper_bread = nn.Sequential(nn.Conv2d(d, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self._capture: ContextCapture | None = None

    def capture(self):
        """Context manager yielding a :class:`ContextCapture` filled by each forward pass inside it (the last one
        wins)."""
        return capturing(self, ContextCapture())

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map ``x`` ``(B, channels, H, W)`` to the same shape. ``generator`` is accepted so that every context
        module is called like :class:`~hamgrad.nn.Hamburger`; these modules draw no random numbers."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, channels={self.channels}, H, W), got {tuple(x.shape)}")
        B, _, H, W = x.shape
        mixed, y, D, C = self._mix(self.lower_bread(x).flatten(2))
        cap = self._capture
        if cap is not None:
            cap.x, cap.y, cap.shape = mixed.detach(), y.detach(), (H, W)
            cap.D, cap.C = (None if t is None else t.detach() for t in (D, C))
        return F.relu(x + self.upper_bread(y.reshape(B, self.d, H, W)))


class SelfAttention(_ContextBlock):
    """The non-local self-attention block (the paper's "SA" row) on ``scaled_dot_product_attention``.

    Args:
        channels: input and output channels.
        d: channels of the queries, keys and values (the paper's Table 3 uses 512).

    ``forward(x, generator=None)`` maps ``(B, channels, H, W)`` to the same shape (see the module docstring);
    ``capture()`` records the values and the attention output (:class:`ContextCapture`).

    Raises:
        TypeError, ValueError: for a non-int or non-positive ``channels`` or ``d``.
    """

    def __init__(self, channels: int, d: int = 512):
        super().__init__(channels, d, 3 * check_int(d, "d", 1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, d={self.d}"

    def _mix(self, z):
        # (B, 1 head, n, d) each, contiguous in d: the layout torch's fused kernels (flash attention on CPU) take
        q, k, v = z.transpose(1, 2).contiguous().unsqueeze(1).split(self.d, dim=3)
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)
        return v.squeeze(1).transpose(1, 2), y, None, None


class DoubleAttention(_ContextBlock):
    """A² double attention (Chen et al., NeurIPS 2018): gather r global descriptors, distribute them to every position.

    Args:
        channels: input and output channels.
        d: channels of the features A and of the descriptors (512 in the paper's Table 3).
        rank: r, the number of attention maps and descriptors (the ham's rank; 64 in Table 3).

    ``forward(x, generator=None)`` maps ``(B, channels, H, W)`` to the same shape (see the module docstring);
    ``capture()`` records A, the output, the descriptors ``D = G`` and the distribution weights ``C``.

    Raises:
        TypeError, ValueError: for a non-int or non-positive ``channels``, ``d`` or ``rank``.
    """

    def __init__(self, channels: int, d: int = 512, rank: int = 64):
        super().__init__(channels, d, check_int(d, "d", 1) + 2 * check_int(rank, "rank", 1))
        self.rank = rank

    def extra_repr(self) -> str:
        return f"channels={self.channels}, d={self.d}, rank={self.rank}"

    def _mix(self, z):
        A, maps, vectors = z.split((self.d, self.rank, self.rank), dim=1)
        G = A @ maps.softmax(dim=2).transpose(1, 2)  # gather: (B, d, r)
        C = vectors.softmax(dim=1)  # distribute: each position's weights over the r descriptors
        return A, G @ C, G, C


class GlobalPool(_ContextBlock):
    """The global-average-pooling control: the lower bread's output averaged over all positions, added back
    everywhere through the upper bread and the residual.

    Args:
        channels: input and output channels.
        d: channels of the pooled vector.

    Raises:
        TypeError, ValueError: for a non-int or non-positive ``channels`` or ``d``.
    """

    def __init__(self, channels: int, d: int = 512):
        super().__init__(channels, d, d)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, d={self.d}"

    def _mix(self, z):
        return z, z.mean(dim=2, keepdim=True).expand_as(z), None, None


#: The non-ham context modules by name (solver names build a Hamburger, see :func:`build_context`).
CONTEXTS = {"sa": SelfAttention, "a2": DoubleAttention, "gap": GlobalPool}


def build_context(name: str, channels: int, *, d: int = 512, rank: int = 64, steps=(6, 7), grad: str = "one-step",
                  solver_kwargs: dict | None = None) -> nn.Module:
    """A context module by name: ``"sa"``, ``"a2"``, ``"gap"`` (see :data:`CONTEXTS`) or a registered solver name
    (``"nmf"``, ``"vq"``, ``"cd"``, ...), which builds ``Hamburger(channels, d, solver=name, rank, steps, grad,
    solver_kwargs)``.

    Args:
        name: the module's name.
        channels: its input and output channels.
        d: its inner channels.
        rank: r for the hams and A² (unused by self-attention and global pooling).
        steps: the Hamburger's solver steps (used only for a solver name).
        grad: the Hamburger's gradient mode (used only for a solver name).
        solver_kwargs: the Hamburger's solver arguments (used only for a solver name).

    Returns:
        the untrained module.

    Raises:
        ValueError: for an unknown name (or bad arguments of the module).
    """
    if name in CONTEXTS:
        cls = CONTEXTS[name]
        return cls(channels, d=d, rank=rank) if cls is DoubleAttention else cls(channels, d=d)
    if name in available_solvers():
        return Hamburger(channels, d=d, solver=name, rank=rank, steps=steps, grad=grad, solver_kwargs=solver_kwargs)
    raise ValueError(f"unknown context module name={name!r}; expected one of {sorted(CONTEXTS)} or a registered "
                     f"solver {available_solvers()}")
