"""A procedural segmentation dataset whose labels need one context vector per region, not one per image.

The construction (:class:`RegionalShapes`)
------------------------------------------
Each image shows ``R`` *regions* (``regions``). A region is a set of tiles scattered over the image, every tile of
it filled with the region's **tint**: a dark RGB colour drawn per image, each channel uniform in ``[0.05, 0.45]``,
the tints of one image at least ``separation`` apart (Euclidean distance in RGB). Each region holds ``n`` tiles
(``n`` drawn from ``shapes_per_region`` for each region), each tile one shape of a colour family (a bright hue band,
as in :class:`~hamgrad.data.GlobalContextShapes`); the tiles sit in distinct cells of a ``g × g`` grid, the cells
drawn at random, so a region is not contiguous and its tiles are spread over the whole image. Between the tiles the
background is a neutral grey, brighter than any tint and darker than every shape.

**Labels.** Every pixel of a shape is labelled ``1 + m``, where ``m`` is the **majority family of the shape's own
region** (the family with strictly the most shapes in it); tiles and background are labelled ``0``. A shape's label
is not a property of the shape, nor of the image as a whole: two red discs of one image get different labels when
they sit on differently tinted tiles.

**Families.** For ``R >= 2`` a fair coin per image decides whether the regional majorities all agree (one family
``m`` drawn for all regions) or not (the ``R`` majorities drawn uniformly, conditioned on not all being equal). Each
region's families are then drawn uniformly and independently, conditioned on the region's majority being strict and
equal to its drawn majority. So in about half of the images (:meth:`RegionalShapes.disagreeing`) no single family
labels every shape right. When the regional majorities agree, the whole image's majority is the same family (it
wins every region, hence the sum); so ``R = 1`` is a global-majority task, like
:class:`~hamgrad.data.GlobalContextShapes` on tiles.

**What one pooled vector can carry.** A model whose only global information is one vector per image (global average
pooling) can carry the image's family counts, but not which tile belongs to which region: the tints are continuous,
drawn anew for every image, so a fixed set of pooled channels can only bin them. The best such labeller that gives
one label to all shape pixels of an image (with the background known) picks the label held by the most shape pixels;
:meth:`RegionalShapes.global_ceiling` scores it in closed form, over all images and over the disagreeing ones. The
oracle that knows each tile's region labels every pixel right. Attention can group tiles by tint (a pairwise
similarity), and a low-rank decomposition with ``rank >= R`` bases can give each region its own basis; that is the
claim the dataset tests.

Tiles are the grid cells less a gutter of a tenth of a cell on each side; the shapes (all of about the same area, so
the majority by count is the majority by area) sit inside their tiles with the tint visible around them. Items are
generated on the fly: item ``i`` depends only on ``(seed, i)``, through a ``torch.Generator`` seeded from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_int, check_pair
from ._args import check_index, check_nonnegative
from .synthetic import _CIRCUMRADIUS, _MAX_FAMILIES, _MIN_CELL, KINDS, _hsv_to_rgb, _shape_masks

__all__ = ["RegionalShapes", "RegionLayout", "TINT_RANGE"]

#: Range of each RGB channel of a region's tint.
TINT_RANGE = (0.05, 0.45)
_BACKGROUND_RANGE = (0.6, 0.7)  # the grey between the tiles
_SATURATION_RANGE = (0.6, 1.0)  # the shapes' HSV saturation and value: every shape is brighter than any tint
_VALUE_RANGE = (0.8, 1.0)
_SIDE_RANGE = (0.38, 0.42)  # shape side as a fraction of the grid cell: areas within a factor 1.22
_GUTTER = 0.1  # background between tiles, as a fraction of the cell on each side
# Sequential draws of the tints stay fast while the regions fill at most this fraction of the random packing limit.
_PACKING = 0.15
_TRIES = 10_000


@dataclass(frozen=True, eq=False)
class RegionLayout:
    """The metadata of one generated image (before noise).

    Attributes:
        background: (3,) RGB grey level between the tiles, in [0, 1].
        tints: (R, 3) RGB tint of each region, each channel in :data:`TINT_RANGE`.
        majorities: (R,) int64 majority family of each region; the shapes of region ``k`` are labelled
            ``1 + majorities[k]``.
        regions: (n,) int64 region of each shape.
        families: (n,) int64 family of each shape, in ``[0, num_families)``.
        kinds: (n,) int64 index into :data:`~hamgrad.data.KINDS` of each shape.
        cells: (n,) int64 grid cell of each shape's tile, ``row * grid + column``.
        centers: (n, 2) float64 centre ``(y, x)`` of each shape in pixels (pixel ``(r, c)`` is centred at
            ``(r + 0.5, c + 0.5)``).
        sides: (n,) float64 square root of each shape's area, in pixels.
        angles: (n,) float64 rotation of each shape, in radians.
        colors: (n, 3) float64 RGB colour of each shape, in [0, 1].
    """

    background: np.ndarray
    tints: np.ndarray
    majorities: np.ndarray
    regions: np.ndarray
    families: np.ndarray
    kinds: np.ndarray
    cells: np.ndarray
    centers: np.ndarray
    sides: np.ndarray
    angles: np.ndarray
    colors: np.ndarray


def _generator(seed: int, index: int) -> torch.Generator:
    """Item ``index``'s CPU generator, seeded by a hash of ``(seed, index)``: its layout is drawn first, then its
    pixel noise."""
    hi, lo = np.random.SeedSequence((seed, index)).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(hi) << 32 | int(lo))


def _max_regions(separation: float) -> int:
    """How many tints at least ``separation`` apart the sequential draw places quickly in the tint cube: a fraction
    :data:`_PACKING` of the balls of diameter ``separation`` that fill the cube grown by ``separation / 2`` on each
    side."""
    low, high = TINT_RANGE
    return int(_PACKING * (high - low + separation) ** 3 / (math.pi * separation ** 3 / 6))


class RegionalShapes(Dataset):
    """Shapes on tinted tiles, each labelled with the majority family of its region (see the module docstring).

    Args:
        num_samples: number of items (>= 1).
        size: height and width of the square images in pixels (>= 16).
        regions: R, the number of regions per image (>= 1; 1 is a global-majority task).
        num_families: number of colour families (2 to 6); ``num_classes = num_families + 1``.
        shapes_per_region: shapes (tiles) per region, an int or an inclusive range ``(low, high)`` drawn uniformly
            per region, ``low >= 1``; the ``g × g`` grid (``g = ceil(sqrt(regions · high))``) needs cells of at least
            8 pixels (``size / g >= 8``).
        separation: the least RGB distance between two tints of an image (> 0; at most what the tint cube holds for
            ``regions`` tints, about 14 regions at 0.15).
        noise: standard deviation of the Gaussian pixel noise added before clipping to [0, 1] (>= 0).
        seed: non-negative int; item ``i`` is a function of ``(seed, i)`` only.

    Items are ``(image, label)``: ``image`` float32 ``(3, size, size)`` in [0, 1], ``label`` int64 ``(size, size)`` in
    ``[0, num_classes)``, 0 for tiles and background. No pixel carries :attr:`ignore_index`. Indexing accepts
    ``-len <= i < len``.

    Raises:
        TypeError: when an integer argument is not an int, or ``separation`` or ``noise`` is not a number.
        ValueError: when an argument is out of its range, ``shapes_per_region`` is not an int or a pair, ``size``
            leaves less than 8 pixels of grid cell per tile, or ``separation`` is too large for ``regions`` tints.

    Examples:
        >>> from hamgrad.data import RegionalShapes
        >>> ds = RegionalShapes(num_samples=4, size=32, regions=2, shapes_per_region=(3, 4), seed=0)
        >>> image, label = ds[0]
        >>> image.shape, label.shape, ds.num_classes
        (torch.Size([3, 32, 32]), torch.Size([32, 32]), 4)
        >>> layout = ds.layout(0)
        >>> sorted(label.unique().tolist()) == [0] + sorted(set(1 + layout.majorities.tolist()))
        True
    """

    #: PyTorch's default ``ignore_index`` for cross-entropy; no label of this dataset uses it.
    ignore_index = -100

    def __init__(self, num_samples: int, size: int = 64, regions: int = 2, num_families: int = 3,
                 shapes_per_region=(3, 4), separation: float = 0.15, noise: float = 0.05, seed: int = 0):
        self.num_samples = check_int(num_samples, "num_samples", 1)
        self.size = check_int(size, "size", 16)
        self.regions = check_int(regions, "regions", 1)
        self.num_families = check_int(num_families, "num_families", 2)
        if self.num_families > _MAX_FAMILIES:
            raise ValueError(f"num_families must be <= {_MAX_FAMILIES} (distinguishable hue bands), "
                             f"got {num_families}")
        low, high = check_pair(shapes_per_region, "shapes_per_region", 1)
        if high < low:
            raise ValueError(f"shapes_per_region must be (low, high) with low <= high, got {shapes_per_region!r}")
        self.shapes_per_region = (low, high)
        self.grid = math.ceil(math.sqrt(self.regions * high))
        self.cell = self.size / self.grid
        if self.cell < _MIN_CELL:
            raise ValueError(f"size={size} is too small for up to {self.regions * high} tiles (regions × "
                             f"shapes_per_region[1]): they need a {self.grid}x{self.grid} grid of cells of at least "
                             f"{_MIN_CELL} pixels, so size >= {self.grid * _MIN_CELL}")
        if isinstance(separation, bool) or not isinstance(separation, (int, float)):
            raise TypeError(f"separation must be a number, got {separation!r}")
        if not separation > 0 or not math.isfinite(separation):
            raise ValueError(f"separation must be a finite number > 0, got {separation}")
        self.separation = float(separation)
        if self.regions > _max_regions(self.separation):
            raise ValueError(f"separation={separation} leaves room for at most {_max_regions(self.separation)} "
                             f"region tints in the RGB cube {list(TINT_RANGE)}^3, got regions={regions}; lower "
                             f"separation or regions")
        self.noise = check_nonnegative(noise, "noise")
        self.seed = check_int(seed, "seed", 0)
        # each pixel's grid cell, or -1 for the pixels in the gutters between the tiles
        centres = np.arange(self.size, dtype=np.float64) + 0.5
        line = np.minimum((centres // self.cell).astype(np.int64), self.grid - 1)
        inside = np.abs(centres - (line + 0.5) * self.cell) <= self.cell * (0.5 - _GUTTER)
        self._tile_cell = np.where(inside[:, None] & inside[None, :], line[:, None] * self.grid + line[None, :], -1)

    @property
    def num_classes(self) -> int:
        """Background plus one class per family."""
        return self.num_families + 1

    def __len__(self) -> int:
        return self.num_samples

    def _families(self, counts: torch.Tensor, majorities: torch.Tensor, generator: torch.Generator) -> list:
        """Each region's families: ``counts[k]`` draws, uniform, conditioned on a strict majority equal to
        ``majorities[k]`` (by rejection, 32 candidates per region at a time)."""
        R, high, F = len(counts), self.shapes_per_region[1], self.num_families
        used = torch.arange(high) < counts[:, None]  # (R, high): the first counts[k] draws of region k
        chosen = [None] * R
        while any(c is None for c in chosen):
            candidates = torch.randint(F, (32, R, high), generator=generator)
            tally = (torch.nn.functional.one_hot(candidates, F) * used[..., None]).sum(2)  # (32, R, F)
            top = tally.max(2).values
            valid = (tally.gather(2, majorities.expand(32, R)[..., None])[..., 0] == top) & \
                ((tally == top[..., None]).sum(2) == 1)
            for k in range(R):
                if chosen[k] is None and bool(valid[:, k].any()):
                    chosen[k] = candidates[int(valid[:, k].nonzero()[0, 0]), k, :int(counts[k])]
        return chosen

    def _tints(self, generator: torch.Generator) -> np.ndarray:
        """``regions`` tints uniform in the tint cube, each at least ``separation`` from those before it (candidates
        drawn 64 at a time, taken in order). A batch that cannot extend the set starts it again: the first tints can
        leave no room for the next (a tint at the cube's centre has no partner farther than half its diagonal)."""
        low, high = TINT_RANGE
        tints = []
        for _ in range(_TRIES // 64):
            placed = len(tints)
            for t in (low + (high - low) * torch.rand(64, 3, generator=generator, dtype=torch.float64)).numpy():
                if all(np.linalg.norm(t - u) >= self.separation for u in tints):
                    tints.append(t)
                    if len(tints) == self.regions:
                        return np.stack(tints)
            if len(tints) == placed:
                tints = []
        raise RuntimeError(f"could not place {self.regions} tints {self.separation} apart in {_TRIES} draws")

    def layout(self, index: int) -> RegionLayout:
        """The metadata of item ``index``: regions, tints, shapes and the regional majorities (no pixels drawn).

        Args:
            index: an item index, ``-len(self) <= index < len(self)``.

        Returns:
            The item's :class:`RegionLayout`.

        Raises:
            TypeError: when ``index`` is not an int.
            IndexError: when ``index`` is out of range.
        """
        return self._draw(_generator(self.seed, check_index(index, self.num_samples)))

    def _draw(self, g: torch.Generator) -> RegionLayout:
        """A layout from the generator ``g`` (the item's pixel noise is drawn from it next)."""
        low, high = self.shapes_per_region
        R, F = self.regions, self.num_families
        counts = torch.randint(low, high + 1, (R,), generator=g)
        if R > 1 and bool(torch.rand((), generator=g) < 0.5):  # the regional majorities disagree
            while True:
                majorities = torch.randint(F, (R,), generator=g)
                if bool((majorities != majorities[0]).any()):
                    break
        else:
            majorities = torch.randint(F, (1,), generator=g).repeat(R)
        families = torch.cat(self._families(counts, majorities, g)).numpy()
        n = len(families)
        kinds = torch.randint(len(KINDS), (n,), generator=g).numpy()
        cells = torch.randperm(self.grid * self.grid, generator=g)[:n].numpy()
        u = torch.rand(n, 7, generator=g, dtype=torch.float64).numpy()  # uniform [0, 1) draws for each shape

        def uniform(column, lo, hi):
            return lo + (hi - lo) * u[:, column]

        sides = self.cell * uniform(0, *_SIDE_RANGE)
        # keep each shape's circumscribed circle half a pixel inside its tile
        slack = np.maximum(self.cell * (0.5 - _GUTTER) - _CIRCUMRADIUS[kinds] * sides - 0.5, 0.0)
        offsets = (2.0 * u[:, 1:3] - 1.0) * slack[:, None]
        centers = (np.stack([cells // self.grid, cells % self.grid], axis=1) + 0.5) * self.cell + offsets
        angles = uniform(3, 0.0, 2.0 * math.pi)
        spacing = 1.0 / F
        hues = (families * spacing + uniform(4, -spacing / 4, spacing / 4)) % 1.0
        colors = _hsv_to_rgb(hues, uniform(5, *_SATURATION_RANGE), uniform(6, *_VALUE_RANGE))
        tints = self._tints(g)
        lo, hi = _BACKGROUND_RANGE
        background = np.full(3, lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64)))
        return RegionLayout(background=background, tints=tints, majorities=majorities.numpy(),
                            regions=torch.arange(R).repeat_interleave(counts).numpy(), families=families,
                            kinds=kinds, cells=cells, centers=centers, sides=sides, angles=angles, colors=colors)

    def masks(self, layout: RegionLayout) -> np.ndarray:
        """The pixels of each shape of ``layout``.

        Returns:
            A bool array ``(n, size, size)``, one disjoint mask per shape.
        """
        return _shape_masks(self.size, layout)

    @staticmethod
    def _shape_of(masks: np.ndarray) -> np.ndarray:
        """(size, size) index of the shape on each pixel, -1 where there is none."""
        return np.where(masks.any(axis=0), masks.argmax(axis=0), -1)

    def _tile_of(self, layout: RegionLayout) -> np.ndarray:
        """(size, size) index of the shape whose tile covers each pixel, -1 on the gutter between the tiles."""
        tile_of = np.full(self.grid * self.grid + 1, -1)  # index -1: the gutter (no cell)
        tile_of[layout.cells] = np.arange(len(layout.cells))
        return tile_of[self._tile_cell]

    def region_map(self, index: int) -> torch.Tensor:
        """The region of every pixel of item ``index``: what an oracle that knows the regions sees.

        Args:
            index: an item index, ``-len(self) <= index < len(self)``.

        Returns:
            An int64 ``(size, size)`` map: the region (``0 … regions − 1``) of the tile under each pixel (its tint
            and its shape), ``-1`` on the grey gutter between the tiles and on empty cells.

        Raises:
            TypeError: when ``index`` is not an int.
            IndexError: when ``index`` is out of range.
        """
        layout = self.layout(index)
        return torch.from_numpy(np.append(layout.regions, -1)[self._tile_of(layout)])

    @staticmethod
    def _label(layout: RegionLayout, shape_of: np.ndarray) -> torch.Tensor:
        """The label map: ``1 +`` the region's majority on each shape's pixels, 0 elsewhere (int64)."""
        classes = np.append(1 + layout.majorities[layout.regions], 0)  # index -1: no shape
        return torch.from_numpy(classes[shape_of])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = _generator(self.seed, check_index(index, self.num_samples))
        layout = self._draw(g)
        shape_of = self._shape_of(self.masks(layout))
        tile = self._tile_of(layout)
        colours = np.concatenate([layout.tints[layout.regions], layout.colors, layout.background[None]])
        n = len(layout.cells)
        image = colours[np.where(shape_of >= 0, n + shape_of, np.where(tile >= 0, tile, 2 * n))]
        image = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32))
        if self.noise > 0:
            image += self.noise * torch.randn(image.shape, generator=g)
        return image.clamp_(0.0, 1.0), self._label(layout, shape_of)

    def _indices(self, indices) -> list:
        return list(range(self.num_samples)) if indices is None else [check_index(i, self.num_samples)
                                                                       for i in indices]

    def disagreeing(self, indices=None) -> torch.Tensor:
        """Which items' regional majorities are not all equal: the images where no single label is right for every
        shape pixel (and where some region's majority differs from the image's majority).

        Args:
            indices: item indices (default: all items).

        Returns:
            A bool tensor, one entry per index.

        Raises:
            TypeError, IndexError: for a bad index.
        """
        return torch.tensor([bool((m != m[0]).any()) for m in (self.layout(i).majorities
                                                                for i in self._indices(indices))],
                            dtype=torch.bool)

    def global_ceiling(self, indices=None) -> dict:
        """The closed-form score of the best labeller that gives one label to all shape pixels of an image (what one
        pooled vector per image can carry), with the background known: on each image it labels every shape pixel
        with the label that most of them hold, so no labeller of that kind has a higher pixel accuracy.

        Scored as the ablation scores a model (:mod:`hamgrad.experiments.metrics`: one confusion matrix over the
        items), over all the given items and over the disagreeing ones (:meth:`disagreeing`).

        Args:
            indices: item indices (default: all items), e.g. a sweep's validation items.

        Returns:
            A dict: ``miou``, ``pixel_acc`` (fractions), ``miou_disagree``, ``pixel_acc_disagree`` (on the
            disagreeing items; ``None`` when there are none, e.g. ``regions=1``), ``disagree_fraction`` and
            ``images`` (how many items were scored).

        Raises:
            TypeError, IndexError: for a bad index.
        """
        from ..experiments.metrics import confusion_matrix, mean_iou, pixel_accuracy  # (it imports this package)

        conf = {False: torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)}
        conf[True] = conf[False].clone()
        indices, disagreeing = self._indices(indices), 0
        for i in indices:
            layout = self.layout(i)
            label = self._label(layout, self._shape_of(self.masks(layout)))
            best = torch.bincount(label[label > 0], minlength=self.num_classes).argmax()
            disagrees = bool((layout.majorities != layout.majorities[0]).any())
            disagreeing += disagrees
            conf[disagrees] += confusion_matrix(torch.where(label > 0, best, 0), label, self.num_classes)
        total = conf[False] + conf[True]
        some = int(conf[True].sum()) > 0
        return {"miou": mean_iou(total), "pixel_acc": pixel_accuracy(total),
                "miou_disagree": mean_iou(conf[True]) if some else None,
                "pixel_acc_disagree": pixel_accuracy(conf[True]) if some else None,
                "disagree_fraction": disagreeing / len(indices), "images": len(indices)}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={self.num_samples}, size={self.size}, regions={self.regions}, "
                f"num_families={self.num_families}, shapes_per_region={self.shapes_per_region}, "
                f"separation={self.separation}, noise={self.noise}, seed={self.seed})")
