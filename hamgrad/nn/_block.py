"""The frame every non-ham context module shares: lower bread, mixing, upper bread, residual, capture.

::

    z   = lower_bread(x), flattened to (B, width, n = H·W)     a 1×1 (or 3×3) convolution, optionally BatchNorm + ReLU
    y   = mix(z, x)                                          the module's global mixing, (B, upper_in, n)
    out = ReLU(x + BatchNorm(conv1x1_{upper_in→channels}(y)))   upper bread and residual

:mod:`hamgrad.nn.attention` (self-attention, A², global pooling) and :mod:`hamgrad.nn.context` (DA, APC, DM, ACF)
subclass :class:`_ContextBlock` and define ``_mix``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from .hamburger import capturing


@dataclass
class ContextCapture:
    """What a context module mixed and produced in the most recent forward pass inside its ``capture()``.

    The attribute names are :class:`~hamgrad.nn.HamCapture`'s, so figure code reads either. All tensors are detached;
    ``n = H·W`` positions flattened row-major.

    Attributes:
        x: the features the module mixes: the values V (self-attention), the features A (A²), the lower bread's
            output (the others; for DA, APC and DM its branches stacked along the channels).
        y: the mixed features ``(B, ·, n)`` that the upper bread receives.
        D: the descriptors of a module whose mixing is a product ``D C``: A²'s gathered descriptors ``G``
            ``(B, d, r)``, ACF's class centers ``(B, d, classes)``; ``None`` for the others.
        C: the weights that distribute them: A²'s ``softmax_r(V)`` ``(B, r, n)``, ACF's coarse class probabilities
            ``(B, classes, n)`` (the analogue of the ham's codes); ``None`` for the others.
        shape: ``(H, W)`` of the feature map.
    """

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    D: torch.Tensor | None = None
    C: torch.Tensor | None = None
    shape: tuple | None = None


class _ContextBlock(nn.Module):
    """Breads, residual and capture shared by the context modules; subclasses define ``_mix(z, x) -> (x, y, D, C)``
    with ``z`` the lower bread's output ``(B, width, n)`` and ``x`` the block's input ``(B, channels, H, W)``.

    Args:
        channels: input and output channels.
        d: the module's inner channels.
        width: the lower bread's output channels.
        kernel: the lower bread's kernel size (1 or 3, zero-padded to keep the map's size).
        norm: lower bread as convolution + BatchNorm + ReLU (the segmentation heads' ConvModule) instead of a
            convolution with a bias.
        upper_in: the upper bread's input channels (default ``d``).
    """

    def __init__(self, channels: int, d: int, width: int, *, kernel: int = 1, norm: bool = False,
                 upper_in: int | None = None):
        super().__init__()
        self.channels = check_int(channels, "channels", 1)
        self.d = check_int(d, "d", 1)
        conv = nn.Conv2d(channels, width, kernel, padding=kernel // 2, bias=not norm)
        self.lower_bread = nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU()) if norm else conv
        self.upper_bread = nn.Sequential(nn.Conv2d(d if upper_in is None else upper_in, channels, 1, bias=False),
                                         nn.BatchNorm2d(channels))
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
        mixed, y, D, C = self._mix(self.lower_bread(x).flatten(2), x)
        cap = self._capture
        if cap is not None:
            cap.x, cap.y, cap.shape = mixed.detach(), y.detach(), (H, W)
            cap.D, cap.C = (None if t is None else t.detach() for t in (D, C))
        return F.relu(x + self.upper_bread(y.reshape(B, -1, H, W)))
