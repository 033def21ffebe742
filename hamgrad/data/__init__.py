"""Offline segmentation datasets for HamNet ablations.

- :class:`GlobalContextShapes`: procedural images whose per-pixel labels depend on the whole image (the majority
  colour family of the shapes in it), so that a global context module is needed to label them; generated on the fly,
  deterministic for a seed. See :mod:`hamgrad.data.synthetic` for the construction.
- :class:`RegionalShapes`: shapes on tiles of R scattered, tinted regions, each shape labelled with its own region's
  majority family, so that one pooled vector per image is not enough (:meth:`RegionalShapes.global_ceiling` scores
  the best one-label-per-image labeller); ``regions=1`` is a global-majority task. See
  :mod:`hamgrad.data.regional`.
- :class:`VOCSegmentation`: a reader for a PASCAL VOC-layout folder, for users who have VOC.
"""

from .regional import TINT_RANGE, RegionalShapes, RegionLayout
from .synthetic import KINDS, GlobalContextShapes, ShapeLayout
from .voc import IMAGENET_MEAN, IMAGENET_STD, VOCSegmentation

__all__ = ["GlobalContextShapes", "ShapeLayout", "KINDS", "RegionalShapes", "RegionLayout", "TINT_RANGE", "VOCSegmentation", "IMAGENET_MEAN", "IMAGENET_STD"]
