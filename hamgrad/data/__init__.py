"""Offline segmentation datasets for HamNet ablations.

- :class:`GlobalContextShapes`: procedural images whose per-pixel labels depend on the whole image (the majority
  colour family of the shapes in it), so that a global context module is needed to label them; generated on the fly,
  deterministic for a seed. See :mod:`hamgrad.data.synthetic` for the construction.
- :class:`VOCSegmentation`: a reader for a PASCAL VOC-layout folder, for users who have VOC.
"""

from .synthetic import KINDS, GlobalContextShapes, ShapeLayout
from .voc import IMAGENET_MEAN, IMAGENET_STD, VOCSegmentation

__all__ = ["GlobalContextShapes", "ShapeLayout", "KINDS", "VOCSegmentation", "IMAGENET_MEAN", "IMAGENET_STD"]
