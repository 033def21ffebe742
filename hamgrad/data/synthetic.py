"""A procedural segmentation dataset whose labels need global context.

The construction (:class:`GlobalContextShapes`)
-----------------------------------------------
Each image shows ``n`` non-overlapping shapes (``n`` drawn from ``num_shapes``) on a noisy grey background. Every
shape belongs to one of ``num_families`` colour families: hue bands spaced evenly around the colour wheel (red, green,
blue for three families). The shape's kind (square, disc or triangle), rotation, size, exact hue, saturation,
brightness and position are nuisance variables, drawn independently of its family; all kinds have the same area for
the same size. The families of the ``n`` shapes are drawn uniformly and independently, conditioned on one family having
strictly more shapes than any other: the image's **majority family** ``m``.

**Labels.** Every pixel of every shape is labelled ``1 + m``; background pixels are labelled ``0``. So the label of a
shape pixel is not a property of that shape: a red disc is labelled "red" in an image where red shapes are the majority
and "green" in one where green shapes are. A model that sees only a local patch can at best guess from the families in
that patch (its own family is the majority more often than chance, but far from always), while a model that sees the
whole image can count the shapes of each family and label every pixel right. That gap is what a global context module
(such as the Hamburger) is expected to close.

Shapes sit in distinct cells of a ``g × g`` grid (``g = ceil(sqrt(max shapes))``) with a margin, so they never touch or
overlap and every shape is visible in full. Items are generated on the fly: item ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_int
from ._args import check_index, check_nonnegative

__all__ = ["KINDS", "ShapeLayout", "GlobalContextShapes"]

#: Shape kinds, in the order of :attr:`ShapeLayout.kinds`.
KINDS = ("square", "disc", "triangle")

# Circumradius per unit side (side = sqrt(area)) of each kind, so that all kinds have the same area.
_CIRCUMRADIUS = np.array([math.sqrt(0.5), 1.0 / math.sqrt(math.pi), math.sqrt(4.0 / (3.0 * math.sqrt(3.0)))])
# Shape side as a fraction of the grid cell; the largest triangle keeps 0.06 cells of margin on each side.
_SIDE_RANGE = (0.35, 0.5)
_MIN_CELL = 8  # pixels per grid cell
_MAX_FAMILIES = 6


@dataclass(frozen=True, eq=False)
class ShapeLayout:
    """The metadata of one generated image (before noise).

    Attributes:
        background: (3,) RGB grey level of the background, in [0, 1].
        families: (n,) int64 family index of each shape, in ``[0, num_families)``.
        kinds: (n,) int64 index into :data:`KINDS` of each shape.
        centers: (n, 2) float64 centre ``(y, x)`` of each shape in pixels; pixel ``(r, c)`` is centred at
            ``(r + 0.5, c + 0.5)``.
        sides: (n,) float64 square root of each shape's area, in pixels.
        angles: (n,) float64 rotation of each shape, in radians.
        colors: (n, 3) float64 RGB colour of each shape, in [0, 1].
        majority: the family with strictly the most shapes; every shape pixel is labelled ``1 + majority``.
    """

    background: np.ndarray
    families: np.ndarray
    kinds: np.ndarray
    centers: np.ndarray
    sides: np.ndarray
    angles: np.ndarray
    colors: np.ndarray
    majority: int


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n,) hue in [0, 1), saturation, value -> (n, 3) RGB."""
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h[:, None]) % 6.0
    return v[:, None] - (v * s)[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _shape_masks(size: int, layout) -> np.ndarray:
    """(n, size, size) bool masks of the shapes of ``layout`` (its ``centers``, ``angles``, ``sides``, ``kinds``),
    each computed on the square patch of pixels that holds its circumscribed circle."""
    n = len(layout.sides)
    patch = min(size, int(np.ceil(2 * (_CIRCUMRADIUS[layout.kinds] * layout.sides).max(initial=0.0))) + 2)
    corner = np.clip(np.floor(layout.centers - patch / 2).astype(np.int64), 0, size - patch)  # (n, 2) top, left
    rows = corner[:, 0, None] + np.arange(patch)  # (n, patch)
    cols = corner[:, 1, None] + np.arange(patch)
    dy = (rows + 0.5)[:, :, None] - layout.centers[:, 0, None, None]
    dx = (cols + 0.5)[:, None, :] - layout.centers[:, 1, None, None]
    cos, sin = np.cos(layout.angles)[:, None, None], np.sin(layout.angles)[:, None, None]
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    side = layout.sides[:, None, None]
    square = np.maximum(np.abs(u), np.abs(v)) <= side / 2
    disc = u * u + v * v <= side * side / math.pi
    inradius = _CIRCUMRADIUS[2] * side / 2
    triangle = np.ones_like(square)
    for k in range(3):  # the three edges' outward normals, 120 degrees apart
        phi = math.pi / 2 + 2 * math.pi * k / 3
        triangle &= u * math.cos(phi) + v * math.sin(phi) <= inradius
    kind = layout.kinds[:, None, None]
    masks = np.zeros((n, size, size), dtype=bool)
    masks[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = \
        np.where(kind == 0, square, np.where(kind == 1, disc, triangle))
    return masks

class GlobalContextShapes(Dataset):
    """Coloured shapes whose per-pixel label is the image's majority colour family (see the module docstring).

    Args:
        num_samples: number of items (>= 1).
        size: height and width of the square images in pixels (>= 16).
        num_families: number of colour families (2 to 6); ``num_classes = num_families + 1``.
        num_shapes: shapes per image, an int or an inclusive range ``(low, high)`` drawn uniformly per image; each
            image needs a grid cell of at least 8 pixels per shape (``size / ceil(sqrt(high)) >= 8``).
        noise: standard deviation of the Gaussian pixel noise added before clipping to [0, 1] (>= 0).
        seed: non-negative int; item ``i`` is a function of ``(seed, i)`` only.

    Items are ``(image, label)``: ``image`` float32 ``(3, size, size)`` in [0, 1], ``label`` int64 ``(size, size)`` in
    ``[0, num_classes)``, 0 for background. No pixel carries :attr:`ignore_index`. Indexing accepts ``-len <= i < len``.

    Raises:
        TypeError: when an integer argument is not an int, or ``noise`` is not a number.
        ValueError: when an argument is out of its range, ``num_shapes`` is not an int or a pair, or ``size`` leaves
            less than 8 pixels of grid cell per shape.

    Examples:
        >>> from hamgrad.data import GlobalContextShapes
        >>> ds = GlobalContextShapes(num_samples=4, size=32, num_shapes=(3, 4), seed=0)
        >>> image, label = ds[0]
        >>> image.shape, label.shape, ds.num_classes
        (torch.Size([3, 32, 32]), torch.Size([32, 32]), 4)
        >>> sorted(label.unique().tolist()) == [0, 1 + ds.majority_family(0)]   # every shape: the majority family
        True
    """

    #: PyTorch's default ``ignore_index`` for cross-entropy; no label of this dataset uses it.
    ignore_index = -100

    def __init__(self, num_samples: int, size: int = 64, num_families: int = 3, num_shapes=(5, 9),
                 noise: float = 0.05, seed: int = 0):
        self.num_samples = check_int(num_samples, "num_samples", 1)
        self.size = check_int(size, "size", 16)
        self.num_families = check_int(num_families, "num_families", 2)
        if self.num_families > _MAX_FAMILIES:
            raise ValueError(f"num_families must be <= {_MAX_FAMILIES} (distinguishable hue bands), "
                             f"got {num_families}")
        if isinstance(num_shapes, (tuple, list)):
            if len(num_shapes) != 2:
                raise ValueError(f"num_shapes must be an int or a (low, high) pair, got {num_shapes!r}")
            low = check_int(num_shapes[0], "num_shapes[0]", 1)
            high = check_int(num_shapes[1], "num_shapes[1]", low)
        else:
            low = high = check_int(num_shapes, "num_shapes", 1)
        self.num_shapes = (low, high)
        self.grid = math.ceil(math.sqrt(high))
        self.cell = self.size / self.grid
        if self.cell < _MIN_CELL:
            raise ValueError(f"size={size} is too small for up to {high} shapes (num_shapes): they need a "
                             f"{self.grid}x{self.grid} grid of cells of at least {_MIN_CELL} pixels, "
                             f"so size >= {self.grid * _MIN_CELL}")
        self.noise = check_nonnegative(noise, "noise")
        self.seed = check_int(seed, "seed", 0)

    @property
    def num_classes(self) -> int:
        """Background plus one class per family."""
        return self.num_families + 1

    def __len__(self) -> int:
        return self.num_samples

    def layout(self, index: int) -> ShapeLayout:
        """The metadata of item ``index``: shapes, families and the majority family (no pixels are drawn).

        Args:
            index: an item index, ``-len(self) <= index < len(self)``.

        Returns:
            The item's :class:`ShapeLayout`.

        Raises:
            TypeError: when ``index`` is not an int.
            IndexError: when ``index`` is out of range.
        """
        i = check_index(index, self.num_samples)
        rng = np.random.default_rng((self.seed, i, 0))
        low, high = self.num_shapes
        n = int(rng.integers(low, high + 1))
        while True:  # families uniform i.i.d., conditioned on a strict majority (a tie has probability < 1)
            families = rng.integers(self.num_families, size=n)
            counts = np.bincount(families, minlength=self.num_families)
            if np.count_nonzero(counts == counts.max()) == 1:
                break
        kinds = rng.integers(len(KINDS), size=n)
        sides = self.cell * rng.uniform(*_SIDE_RANGE, size=n)
        cells = rng.choice(self.grid * self.grid, size=n, replace=False)
        # Keep each shape's circumscribed circle 1 pixel inside its cell, so shapes in adjacent cells never touch.
        slack = np.maximum(self.cell / 2 - _CIRCUMRADIUS[kinds] * sides - 1.0, 0.0)
        offsets = rng.uniform(-1.0, 1.0, size=(n, 2)) * slack[:, None]
        centers = (np.stack([cells // self.grid, cells % self.grid], axis=1) + 0.5) * self.cell + offsets
        angles = rng.uniform(0.0, 2.0 * math.pi, size=n)
        spacing = 1.0 / self.num_families
        hues = (families * spacing + rng.uniform(-spacing / 4, spacing / 4, size=n)) % 1.0
        colors = _hsv_to_rgb(hues, rng.uniform(0.6, 1.0, size=n), rng.uniform(0.6, 1.0, size=n))
        background = np.full(3, rng.uniform(0.25, 0.75))
        return ShapeLayout(background=background, families=families, kinds=kinds, centers=centers, sides=sides,
                           angles=angles, colors=colors, majority=int(np.argmax(counts)))

    def majority_family(self, index: int) -> int:
        """The global variable of item ``index``: its majority family.

        Returns:
            The family index in ``[0, num_families)``; the item's shape pixels are labelled one more than it.

        Raises:
            TypeError: when ``index`` is not an int.
            IndexError: when ``index`` is out of range.
        """
        return self.layout(index).majority

    def masks(self, layout: ShapeLayout) -> np.ndarray:
        """The pixels of each shape of ``layout``.

        Returns:
            A bool array ``(n, size, size)``, one disjoint mask per shape.
        """
        return _shape_masks(self.size, layout)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = check_index(index, self.num_samples)
        layout = self.layout(i)
        masks = self.masks(layout)
        foreground = masks.any(axis=0)
        shapes = np.einsum("nhw,nc->chw", masks.astype(np.float32), layout.colors.astype(np.float32))
        image = np.where(foreground, shapes, layout.background.astype(np.float32)[:, None, None])
        if self.noise > 0:
            rng = np.random.default_rng((self.seed, i, 1))
            image += self.noise * rng.standard_normal(image.shape, dtype=np.float32)
        np.clip(image, 0.0, 1.0, out=image)
        label = np.where(foreground, 1 + layout.majority, 0).astype(np.int64)
        return torch.from_numpy(image), torch.from_numpy(label)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={self.num_samples}, size={self.size}, "
                f"num_families={self.num_families}, num_shapes={self.num_shapes}, noise={self.noise}, "
                f"seed={self.seed})")
