"""A reader for a PASCAL VOC-layout segmentation folder (no downloads, no torchvision).

Expected layout:

```text
root/JPEGImages/<id>.jpg
root/SegmentationClass/<id>.png          palette (mode "P") or greyscale PNGs whose values are class indices
root/ImageSets/Segmentation/<split>.txt  one id per line (train.txt, val.txt, ...)
```

Label values are 0 (background) to 20, and 255 marks object borders and "difficult" regions to ignore.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .._checks import check_int
from ._args import check_index, check_pair

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VOCSegmentation"]

#: Per-channel RGB mean and standard deviation of ImageNet, for images scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _read(path: Path, what: str, convert) -> Image.Image:
    """``convert`` applied to the fully decoded image at ``path``; an unreadable file is a ValueError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return convert(im).copy()
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError, truncated data, bad chunks
        raise ValueError(f"{what} {path} is not a readable image (corrupt or truncated file: {err})") from None


class VOCSegmentation(Dataset):
    """PASCAL VOC semantic segmentation from a VOC-layout folder.

    Args:
        root: the folder holding ``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/Segmentation/``.
        split: the name of the id list, ``root/ImageSets/Segmentation/<split>.txt`` (e.g. ``"train"``, ``"val"``).
        size: ``None`` to keep each image's size, or ``(H, W)`` (an int ``s`` means ``(s, s)``) to resize every image
            bilinearly and its label by nearest neighbour, so labels keep only values that were there.
        crop: ``None``, or ``(h, w)`` (an int means a square) for a random crop taken after resizing; an image smaller
            than the crop is padded first (image with the mean colour, i.e. 0 after normalisation; label with 255).
        seed: non-negative int; the crop of item ``i`` is a function of ``(seed, i)`` only, whatever the access order.

    Items are ``(image, label)``: ``image`` float32 ``(3, H, W)`` normalised with :data:`IMAGENET_MEAN` and
    :data:`IMAGENET_STD`; ``label`` int64 ``(H, W)`` with class indices in ``[0, 21)`` and 255 (:attr:`ignore_index`).

    Raises:
        TypeError: when ``split`` is not a non-empty str, or ``size``, ``crop`` or ``seed`` is not an int (or pair).
        FileNotFoundError: naming the missing folder, split file, or the image or label file of a listed id (all are
            checked when the dataset is built).
        ValueError: when ``size``, ``crop`` or ``seed`` is out of range; on an empty split file; when an item is
            read, on an image or label file that cannot be decoded (corrupt or truncated), on a label PNG that is not
            a palette or greyscale image, holds a value outside ``[0, 21)`` and 255, or differs in size from its
            image.
    """

    num_classes = 21
    ignore_index = 255

    def __init__(self, root, split: str = "train", size=None, crop=None, seed: int = 0):
        if not isinstance(split, str) or not split:
            raise TypeError(f"split must be a non-empty str such as 'train' or 'val', got {split!r}")
        self.root = Path(root)
        self.split = split
        self.size = None if size is None else check_pair(size, "size", 1)
        self.crop = None if crop is None else check_pair(crop, "crop", 1)
        self.seed = check_int(seed, "seed", 0)
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOC root folder not found: {self.root}")
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"split file not found: {split_file}")
        self.ids = tuple(line.strip() for line in split_file.read_text().splitlines() if line.strip())
        if not self.ids:
            raise ValueError(f"split file lists no ids: {split_file}")
        for i in range(len(self.ids)):
            for path in (self.image_path(i), self.label_path(i)):
                if not path.is_file():
                    raise FileNotFoundError(f"file for id {self.ids[i]!r} of split {split!r} not found: {path}")

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """The JPEG of item ``index``.

        Returns:
            ``root/JPEGImages/<id>.jpg``.

        Raises:
            TypeError: when ``index`` is not an int.
            IndexError: when ``index`` is out of range.
        """
        return self.root / "JPEGImages" / f"{self.ids[check_index(index, len(self))]}.jpg"

    def label_path(self, index: int) -> Path:
        """The label PNG of item ``index``.

        Returns:
            ``root/SegmentationClass/<id>.png``.

        Raises:
            TypeError: when ``index`` is not an int.
            IndexError: when ``index`` is out of range.
        """
        return self.root / "SegmentationClass" / f"{self.ids[check_index(index, len(self))]}.png"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = check_index(index, len(self))
        image_path, label_path = self.image_path(i), self.label_path(i)
        image = _read(image_path, "image", lambda im: im.convert("RGB"))
        label = _read(label_path, "label", lambda im: im)
        if label.mode not in ("P", "L"):
            raise ValueError(f"label {label_path} must be a palette ('P') or greyscale ('L') PNG of class "
                             f"indices, got mode {label.mode!r}")
        if image.size != label.size:
            raise ValueError(f"image {image_path} is {image.size[0]}x{image.size[1]} (WxH) but label {label_path} "
                             f"is {label.size[0]}x{label.size[1]}")
        if self.size is not None:
            h, w = self.size
            image = image.resize((w, h), Image.Resampling.BILINEAR)
            label = label.resize((w, h), Image.Resampling.NEAREST)
        x = np.asarray(image, dtype=np.float32) / 255.0
        x = ((x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)).transpose(2, 0, 1)
        y = np.asarray(label, dtype=np.int64)
        bad = (y >= self.num_classes) & (y != self.ignore_index)
        if bad.any():
            raise ValueError(f"label {label_path} holds value {int(y[bad][0])}, outside [0, {self.num_classes}) "
                             f"and the ignore value {self.ignore_index}")
        if self.crop is not None:
            x, y = self._random_crop(x, y, np.random.default_rng((self.seed, i)))
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

    def _random_crop(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        """Pad (image 0, label 255) up to the crop size where needed, then cut a uniformly placed window."""
        ch, cw = self.crop
        pad_h, pad_w = max(ch - y.shape[0], 0), max(cw - y.shape[1], 0)
        if pad_h or pad_w:
            x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)))
            y = np.pad(y, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_index)
        top = int(rng.integers(y.shape[0] - ch + 1))
        left = int(rng.integers(y.shape[1] - cw + 1))
        return x[:, top:top + ch, left:left + cw], y[top:top + ch, left:left + cw]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, size={self.size}, "
                f"crop={self.crop}, seed={self.seed}) with {len(self)} images")
