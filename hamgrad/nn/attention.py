"""Attention modules beside the Hamburger, with its interface: ``(B, channels, H, W) → (B, channels, H, W)``, and the
registry of every context module by name.

Every module here has the V1 Hamburger's breads and residual (the frame of :mod:`hamgrad.nn._block`;
``Hamburger(version="v1")``), so parameter counts and costs compare with it::

    z   = conv1x1_{channels→width}(x), flattened to (B, width, n = H·W)    lower bread (width depends on the module)
    y   = mix(z)                                                            the global mixing, (B, d, n)
    out = ReLU(x + BatchNorm(conv1x1_{d→channels}(y)))                     upper bread and residual

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

The other rows of Table 3 (DA, APC, DM, ACF) are in :mod:`hamgrad.nn.context`. :func:`build_context` builds any
context module, or a :class:`~hamgrad.nn.Hamburger` for a solver name, by name (:data:`CONTEXTS` lists the non-ham
names).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from ..solvers import available_solvers
from ._block import ContextCapture, _ContextBlock
from .context import AdaptivePyramidContext, AttentionalClassFeature, DualAttention, DynamicFilters
from .hamburger import Hamburger

__all__ = ["SelfAttention", "DoubleAttention", "GlobalPool", "ContextCapture", "CONTEXTS", "build_context"]


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

    def _mix(self, z, x):
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

    def _mix(self, z, x):
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

    def _mix(self, z, x):
        return z, z.mean(dim=2, keepdim=True).expand_as(z), None, None


#: The non-ham context modules by name (solver names build a Hamburger, see :func:`build_context`).
CONTEXTS = {"sa": SelfAttention, "a2": DoubleAttention, "gap": GlobalPool, "da": DualAttention,
            "apc": AdaptivePyramidContext, "dm": DynamicFilters, "acf": AttentionalClassFeature}


def build_context(name: str, channels: int, *, d: int = 512, rank: int = 64, classes: int = 19, steps=(6, 6),
                  grad: str = "one-step-coef", version: str = "v2", solver_kwargs: dict | None = None) -> nn.Module:
    """A context module by name: ``"sa"``, ``"a2"``, ``"gap"``, ``"da"``, ``"apc"``, ``"dm"``, ``"acf"`` (see
    :data:`CONTEXTS`) or a registered solver name (``"nmf"``, ``"vq"``, ``"cd"``, ...), which builds
    ``Hamburger(channels, d, solver=name, rank, steps, grad, version, solver_kwargs)`` (the defaults are the
    Hamburger's).

    Args:
        name: the module's name.
        channels: its input and output channels.
        d: its inner channels (per branch for DA, APC and DM).
        rank: r for the hams and A² (unused by the others).
        classes: the coarse segmentation's classes of ACF (unused by the others).
        steps: the Hamburger's solver steps (used only for a solver name).
        grad: the Hamburger's gradient mode (used only for a solver name).
        version: the Hamburger's block, ``"v1"`` or ``"v2"`` (used only for a solver name).
        solver_kwargs: the Hamburger's solver arguments (used only for a solver name).

    Returns:
        the untrained module.

    Raises:
        ValueError: for an unknown name (or bad arguments of the module).
    """
    if name in CONTEXTS:
        cls = CONTEXTS[name]
        if cls is DoubleAttention:
            return cls(channels, d=d, rank=rank)
        return cls(channels, d=d, classes=classes) if cls is AttentionalClassFeature else cls(channels, d=d)
    if name in available_solvers():
        return Hamburger(channels, d=d, solver=name, rank=rank, steps=steps, grad=grad, version=version,
                         solver_kwargs=solver_kwargs)
    raise ValueError(f"unknown context module name={name!r}; expected one of {sorted(CONTEXTS)} or a registered "
                     f"solver {available_solvers()}")
