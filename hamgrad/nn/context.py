"""The other context modules of the paper's Table 3, with the Hamburger's interface:
``(B, channels, H, W) → (B, channels, H, W)``, lower bread, global mixing, upper bread, residual, ``capture()``.

Each follows its paper, read beside mmsegmentation's decode head where one exists (``da_head.py``, ``apc_head.py``,
``dm_head.py``). What a segmentation head does after the module (per-branch 3×3 convolutions, the concatenation with
the input and a 3×3 bottleneck, the classifier) becomes the frame every module here shares (:mod:`hamgrad.nn._block`):
one 1×1 upper bread with BatchNorm on the module's output, added to the input, then a ReLU. The lower breads are
convolution + BatchNorm + ReLU, as in those heads; ``n = H·W``.

- :class:`DualAttention` — **DA**, DANet's dual attention (Fu et al., *Dual Attention Network for Scene
  Segmentation*, CVPR 2019). A 3×3 lower bread (DANet's ``conv5a`` and ``conv5c``) gives two d-channel maps. The
  position attention module on the first: queries and keys (d/8 channels each) and values (d) by 1×1 convolutions,
  ``pam = z_p + γ_p · V softmax_j(q_iᵀ k_j)`` (no 1/√d scale). The channel attention module on the second, with the
  d channels as the tokens: ``cam = z_c + γ_c · softmax(max_row(E) − E) z_c`` with ``E = z_c z_cᵀ`` (d × d); as a
  softmax is unchanged by a shift along its row, that is ``softmax(−E) z_c``. Both run on
  :func:`torch.nn.functional.scaled_dot_product_attention` (scale 1); ``γ_p``, ``γ_c`` start at 0 as in DANet.
  The upper bread receives ``pam + cam``. Cost O(n² d): the position attention is quadratic in the positions.
- :class:`AdaptivePyramidContext` — **APC**, APCNet's adaptive context modules (He et al., *Adaptive Pyramid Context
  Network for Semantic Segmentation*, CVPR 2019), one per pyramid scale s (1, 2, 3, 6). Each has its own d-channel
  lower bread ``x_s``; region features ``y_s = conv1x1(AvgPool_{s×s}(input))`` (d × s²); a global vector
  ``g = conv1x1(mean_n(x_s))``; the global-guided local affinities ``α_s = sigmoid(conv1x1_{d→s²}(x_s + g))``
  (s² × n); and the module's output ``x_s + y_s α_s`` (the adaptive context added to ``x_s``, as in the paper). The
  upper bread receives the scales' outputs stacked (``len(scales) · d`` channels). Cost O(n d Σ s²).
- :class:`DynamicFilters` — **DM**, DMNet's dynamic convolutional modules (He et al., *Dynamic Multi-scale Filters
  for Semantic Segmentation*, ICCV 2019), one per filter size k (1, 3, 5, 7). Each has its own d-channel lower bread
  ``x_k``; a k × k filter per image and channel generated from the input, ``conv1x1(AvgPool_{k×k}(input))``; the
  depthwise convolution of ``x_k`` with those filters (zero padding keeps the size), then BatchNorm + ReLU. The
  upper bread receives the sizes' outputs stacked. Cost O(n d Σ k²).
- :class:`AttentionalClassFeature` — **ACF**, ACFNet's attentional class feature module (Zhang et al., *ACFNet:
  Attentional Class Feature Network for Semantic Segmentation*, ICCV 2019; no mmsegmentation head). A coarse
  segmentation head (a 1×1 convolution to ``classes`` logits, softmax over the classes) gives the class
  probabilities ``P`` (classes × n); the lower bread gives the features ``F`` (d × n); the class centers are the
  probability-weighted means ``D = F Pᵀ diag(P 1)⁻¹`` (d × classes); each position's attentional class feature is
  ``D P`` (the centers mixed by its own class probabilities), followed by ACF's 1×1 convolution (+ BatchNorm + ReLU)
  and the upper bread. ``D P`` is a rank-``classes`` product like A²'s and the hams', and ``capture()`` records
  ``D`` and ``C = P``. Assumed where the paper leaves it open: the coarse head is one 1×1 convolution on the
  module's input, trained only through the module (ACFNet also supervises it with its own loss); the centers are
  normalised by each class's probability mass (a class with no mass gets a zero center). Cost O(n d classes).

The paper's Table 3 measures each module on one (1, 512, 128, 128) map. The configuration used here for that row
(MACs counted by :func:`hamgrad.cost.count_macs`, i.e. every convolution and matrix product; parameters in M = 2²⁰,
the paper's unit; the paper's numbers in brackets):

- DA ``DualAttention(512, d=512)``: 5.07M [4.82M]; 250.2G [79.5G]. The paper's 4.82M parameters are DANet's two
  3 × 3 512 → 512 convolutions and the d = 512 position attention (5.05M); those convolutions alone are 77.3G
  MACs, and the position attention's n² products another 154.6G, so the paper's 79.5G cannot include them: its
  convolutions alone come to 82.7G (+4%), and its inference memory (2203 MB, SA's 2148 MB) says the n × n map was
  there. The 1 × 1 upper bread adds 0.25M and 4.3G.
- APC ``AdaptivePyramidContext(512, d=256)``: 1.77M [2.03M]; 17.61G [17.6G]. At d = 256 per scale the MACs are
  the paper's; at d = 512 they would be 35.2G. (A global vector taken from the input instead of ``x_s`` would add
  the 0.25M the parameter count lacks, at no MAC cost.)
- DM ``DynamicFilters(512, d=512)``: 3.01M [3.00M]; 35.09G [35.1G].
- ACF ``AttentionalClassFeature(512, d=512, classes=19)``: 0.76M [0.75M]; 13.36G [79.5G]. The paper's 0.75M are
  three 512 × 512 1×1 convolutions, which this module has (lower bread, ACF's output convolution, upper bread); its
  other products are n·d·classes each, so 79.5G would need about 2,600 classes (150 classes: 16.7G). The paper's
  79.5G is DA's figure to three digits; ACF's MACs cannot be pinned down from the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from ._block import _ContextBlock

__all__ = ["DualAttention", "AdaptivePyramidContext", "DynamicFilters", "AttentionalClassFeature"]


def _sizes(values, name: str, odd: bool = False) -> tuple:
    """A non-empty tuple of ints >= 1 (odd ones when ``odd``)."""
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a non-empty tuple of ints, got {values!r}")
    for v in values:
        check_int(v, f"each of {name}", 1)
        if odd and v % 2 == 0:
            raise ValueError(f"{name} must be odd (a centred filter), got {tuple(values)}")
    return tuple(values)


class DualAttention(_ContextBlock):
    """DA: DANet's position and channel attention, side by side (see the module docstring).

    Args:
        channels: input and output channels.
        d: channels of each branch (DANet's ``inter_channels``; 512 in the Table-3 row); queries and keys have
            ``d // 8``.

    ``forward(x, generator=None)`` maps ``(B, channels, H, W)`` to the same shape; ``capture()`` records the lower
    bread's two branches ``x`` ``(B, 2d, n)`` (position branch first) and ``y = pam + cam`` ``(B, d, n)``.

    Raises:
        TypeError, ValueError: for a non-int ``channels`` or ``d``, ``channels < 1`` or ``d < 8``.
    """

    def __init__(self, channels: int, d: int = 512):
        check_int(d, "d", 8)
        super().__init__(channels, d, 2 * d, kernel=3, norm=True)
        self.key_channels = d // 8
        self.qkv = nn.Conv1d(d, 2 * self.key_channels + d, 1)  # the position module's query, key, value
        self.gamma_position = nn.Parameter(torch.zeros(1))
        self.gamma_channel = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, d={self.d}"

    def _mix(self, z, x):
        z_p, z_c = z.split(self.d, dim=1)
        k = self.key_channels
        # positions as tokens: (B, 1 head, n, ·) each
        q, key, v = self.qkv(z_p).transpose(1, 2).unsqueeze(1).split((k, k, self.d), dim=3)
        pam = F.scaled_dot_product_attention(q, key, v, scale=1.0).squeeze(1).transpose(1, 2)
        # channels as tokens, the n positions as their features: softmax(−E) z_c with E = z_c z_cᵀ
        c = z_c.unsqueeze(1)
        cam = F.scaled_dot_product_attention(-c, c, c, scale=1.0).squeeze(1)
        return z, z_p + self.gamma_position * pam + z_c + self.gamma_channel * cam, None, None


class AdaptivePyramidContext(_ContextBlock):
    """APC: APCNet's adaptive context modules, one per pyramid scale (see the module docstring).

    Args:
        channels: input and output channels.
        d: channels of each scale's module (256 in the Table-3 row).
        scales: the pyramid's pooling sizes s (APCNet's 1, 2, 3, 6); each module mixes s² region features.

    ``forward(x, generator=None)`` maps ``(B, channels, H, W)`` to the same shape; ``capture()`` records the lower
    bread's output ``x`` and the modules' outputs ``y``, both ``(B, len(scales)·d, n)`` (scale by scale).

    Raises:
        TypeError, ValueError: for non-int or non-positive ``channels``, ``d`` or scales, or empty ``scales``.
    """

    def __init__(self, channels: int, d: int = 512, scales=(1, 2, 3, 6)):
        scales = _sizes(scales, "scales")
        width = len(scales) * check_int(d, "d", 1)
        super().__init__(channels, d, width, norm=True, upper_in=width)
        self.scales = scales
        self.regions = nn.ModuleList(nn.Conv2d(channels, d, 1) for _ in scales)
        self.global_info = nn.ModuleList(nn.Conv1d(d, d, 1) for _ in scales)
        self.affinity = nn.ModuleList(nn.Conv1d(d, s * s, 1) for s in scales)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, d={self.d}, scales={self.scales}"

    def _mix(self, z, x):
        out = []
        for s, x_s, region, glob, affinity in zip(self.scales, z.split(self.d, dim=1), self.regions,
                                                  self.global_info, self.affinity):
            y_s = region(F.adaptive_avg_pool2d(x, s)).flatten(2)                  # (B, d, s²) region features
            alpha = torch.sigmoid(affinity(x_s + glob(x_s.mean(dim=2, keepdim=True))))   # (B, s², n)
            out.append(x_s + y_s @ alpha)
        return z, torch.cat(out, dim=1), None, None


class DynamicFilters(_ContextBlock):
    """DM: DMNet's dynamic convolutional modules, one per filter size (see the module docstring).

    Args:
        channels: input and output channels.
        d: channels of each size's module (512 in the Table-3 row).
        filter_sizes: the generated filters' sizes k (DMNet's 1, 3, 5, 7; odd, so that the filter is centred).

    ``forward(x, generator=None)`` maps ``(B, channels, H, W)`` to the same shape; ``capture()`` records the lower
    bread's output ``x`` and the modules' outputs ``y``, both ``(B, len(filter_sizes)·d, n)`` (size by size).

    Raises:
        TypeError, ValueError: for non-int or non-positive ``channels``, ``d`` or sizes, an even size, or empty
            ``filter_sizes``.
    """

    def __init__(self, channels: int, d: int = 512, filter_sizes=(1, 3, 5, 7)):
        filter_sizes = _sizes(filter_sizes, "filter_sizes", odd=True)
        width = len(filter_sizes) * check_int(d, "d", 1)
        super().__init__(channels, d, width, norm=True, upper_in=width)
        self.filter_sizes = filter_sizes
        self.generators = nn.ModuleList(nn.Conv2d(channels, d, 1) for _ in filter_sizes)
        self.norms = nn.ModuleList(nn.BatchNorm2d(d) for _ in filter_sizes)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, d={self.d}, filter_sizes={self.filter_sizes}"

    def _mix(self, z, x):
        B, _, H, W = x.shape
        groups = B * self.d
        out = []
        for k, x_k, generator, norm in zip(self.filter_sizes, z.split(self.d, dim=1), self.generators, self.norms):
            filters = generator(F.adaptive_avg_pool2d(x, k))                      # (B, d, k, k)
            # every image's channels as the groups of one depthwise convolution
            y = F.conv2d(x_k.reshape(1, groups, H, W), filters.reshape(groups, 1, k, k), padding=k // 2,
                         groups=groups)
            out.append(F.relu(norm(y.reshape(B, self.d, H, W))).flatten(2))
        return z, torch.cat(out, dim=1), None, None


class AttentionalClassFeature(_ContextBlock):
    """ACF: ACFNet's class centers from a coarse segmentation, mixed back per position (see the module docstring).

    Args:
        channels: input and output channels.
        d: channels of the features and class centers (512 in the Table-3 row).
        classes: classes of the coarse segmentation head (19 in the Table-3 row, ACFNet's Cityscapes;
            :class:`~hamgrad.nn.HamNet` passes its ``num_classes``).

    ``forward(x, generator=None)`` maps ``(B, channels, H, W)`` to the same shape; ``capture()`` records the features
    ``x`` ``(B, d, n)``, what the upper bread receives ``y`` (ACF's output convolution of ``D C``), the class centers
    ``D`` ``(B, d, classes)`` and the coarse class probabilities ``C`` ``(B, classes, n)``.

    Raises:
        TypeError, ValueError: for non-int or non-positive ``channels``, ``d`` or ``classes``.
    """

    def __init__(self, channels: int, d: int = 512, classes: int = 19):
        check_int(classes, "classes", 1)
        super().__init__(channels, d, d, norm=True)
        self.classes = classes
        self.coarse = nn.Conv2d(channels, classes, 1)
        self.output = nn.Sequential(nn.Conv1d(d, d, 1, bias=False), nn.BatchNorm1d(d), nn.ReLU())

    def extra_repr(self) -> str:
        return f"channels={self.channels}, d={self.d}, classes={self.classes}"

    def _mix(self, z, x):
        P = self.coarse(x).flatten(2).softmax(dim=1)                              # (B, classes, n)
        mass = P.sum(dim=2).clamp_min(torch.finfo(P.dtype).tiny)                  # (B, classes)
        centers = (z @ P.transpose(1, 2)) / mass.unsqueeze(1)                     # (B, d, classes)
        return z, self.output(centers @ P), centers, P
