"""Tests for hamgrad.data: the global-context shapes dataset and the VOC-layout reader."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader

from hamgrad.data import IMAGENET_MEAN, IMAGENET_STD, KINDS, GlobalContextShapes, VOCSegmentation

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ----------------------------------------------------------------------------------------------- GlobalContextShapes


def test_same_seed_same_items_different_seed_different_items():
    a, b, c = GlobalContextShapes(8, seed=3), GlobalContextShapes(8, seed=3), GlobalContextShapes(8, seed=4)
    for i in range(8):
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(a[i][0], c[i][0]) for i in range(8))
    assert not torch.equal(a[0][0], a[1][0])


def test_item_independent_of_access_order_and_dataloader_workers():
    ds = GlobalContextShapes(12, seed=7)
    forward = [ds[i] for i in range(12)]
    backward = [ds[i] for i in reversed(range(12))][::-1]
    for (x1, y1), (x2, y2) in zip(forward, backward):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(ds[-1][0], forward[11][0])
    loader = DataLoader(GlobalContextShapes(12, seed=7), batch_size=3, shuffle=False, num_workers=2)
    images = torch.cat([x for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    assert torch.equal(images, torch.stack([x for x, _ in forward]))
    assert torch.equal(labels, torch.stack([y for _, y in forward]))


@pytest.mark.parametrize("size, num_families, num_shapes",
                         [(64, 3, (5, 9)), (16, 2, (2, 4)), (50, 4, 9), (96, 6, (1, 16))])
def test_shapes_dtypes_ranges(size, num_families, num_shapes):
    ds = GlobalContextShapes(6, size=size, num_families=num_families, num_shapes=num_shapes, seed=1)
    assert len(ds) == 6 and ds.num_classes == num_families + 1
    for i in range(6):
        x, y = ds[i]
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        assert y.shape == (size, size) and y.dtype == torch.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert 0 <= y.min() and y.max() < ds.num_classes and not (y == ds.ignore_index).any()
        assert (y == 0).any() and (y > 0).any()


def test_noise_free_images_are_background_grey_or_shape_colours():
    ds = GlobalContextShapes(5, noise=0.0, seed=2)
    for i in range(5):
        x, y = ds[i]
        layout = ds.layout(i)
        pixels = x.permute(1, 2, 0).numpy()
        background = pixels[y.numpy() == 0]
        np.testing.assert_allclose(background, np.broadcast_to(layout.background, background.shape), atol=1e-6)
        for mask, colour in zip(ds.masks(layout), layout.colors):
            np.testing.assert_allclose(pixels[mask], np.broadcast_to(colour, (int(mask.sum()), 3)), atol=1e-6)


def test_every_shape_pixel_is_labelled_with_the_majority_family_from_the_metadata():
    ds = GlobalContextShapes(200, seed=11)
    for i in range(len(ds)):
        layout = ds.layout(i)
        counts = np.bincount(layout.families, minlength=ds.num_families)
        assert (counts == counts.max()).sum() == 1, "the majority must be strict"
        majority = int(np.argmax(counts))
        assert ds.majority_family(i) == layout.majority == majority
        _, y = ds[i]
        y = y.numpy()
        masks = ds.masks(layout)
        assert masks.sum(axis=0).max() <= 1, "shapes must not overlap"
        assert all(m.any() for m in masks), "every shape must be drawn"
        np.testing.assert_array_equal(y, np.where(masks.any(axis=0), 1 + majority, 0))
        assert ndimage.label(y > 0, structure=EIGHT_CONNECTED)[1] == len(layout.families), "shapes must not touch"


def _family_of_colour(rgb, num_families):
    hue = colorsys.rgb_to_hsv(*rgb)[0]
    return int(round(hue * num_families)) % num_families


def test_label_is_recoverable_from_the_whole_image_by_counting_colour_families():
    """An independent reading of the pixels: count the shapes (8-connected blobs) per hue band, take the majority."""
    ds = GlobalContextShapes(100, num_families=3, seed=5)
    for i in range(len(ds)):
        x, y = ds[i]
        pixels, y = x.permute(1, 2, 0).numpy(), y.numpy()
        blobs, n = ndimage.label(y > 0, structure=EIGHT_CONNECTED)
        families = [_family_of_colour(pixels[blobs == k].mean(axis=0), 3) for k in range(1, n + 1)]
        counts = np.bincount(families, minlength=3)
        assert (counts == counts.max()).sum() == 1
        assert set(np.unique(y[y > 0])) == {1 + int(np.argmax(counts))}


def test_local_appearance_does_not_determine_the_label():
    """Shapes of one family and kind get every class across images; a shape's own family is the majority only
    sometimes, and every family is the majority about equally often."""
    ds = GlobalContextShapes(300, num_families=3, seed=0)
    labels_seen = {(f, k): set() for f in range(3) for k in range(len(KINDS))}
    own_is_majority, shapes, majorities = 0, 0, np.zeros(3)
    for i in range(len(ds)):
        layout = ds.layout(i)
        for f, k in zip(layout.families, layout.kinds):
            labels_seen[int(f), int(k)].add(1 + layout.majority)
        own_is_majority += int((layout.families == layout.majority).sum())
        shapes += len(layout.families)
        majorities[layout.majority] += 1
    assert all(seen == {1, 2, 3} for seen in labels_seen.values())
    assert 0.4 < own_is_majority / shapes < 0.7
    assert majorities.min() / len(ds) > 0.25


def test_same_shape_different_labels_in_two_images():
    ds = GlobalContextShapes(50, seed=0)
    first = {}
    for i in range(len(ds)):
        layout = ds.layout(i)
        _, y = ds[i]
        for mask, family in zip(ds.masks(layout), layout.families):
            label = set(y.numpy()[mask].tolist())
            assert len(label) == 1
            first.setdefault(int(family), set()).update(label)
    assert all(len(labels) >= 2 for labels in first.values())


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_samples=0), ValueError, "num_samples"),
    (dict(num_samples=2.0), TypeError, "num_samples"),
    (dict(num_samples=True), TypeError, "num_samples"),
    (dict(num_samples=4, size=15), ValueError, "size"),
    (dict(num_samples=4, size="64"), TypeError, "size"),
    (dict(num_samples=4, size=20), ValueError, "size=20 is too small"),
    (dict(num_samples=4, num_families=1), ValueError, "num_families"),
    (dict(num_samples=4, num_families=7), ValueError, "num_families"),
    (dict(num_samples=4, num_shapes=0), ValueError, "num_shapes"),
    (dict(num_samples=4, num_shapes=(5, 4)), ValueError, r"num_shapes\[1\]"),
    (dict(num_samples=4, num_shapes=(1, 2, 3)), ValueError, "num_shapes"),
    (dict(num_samples=4, num_shapes=(1.0, 3)), TypeError, r"num_shapes\[0\]"),
    (dict(num_samples=4, noise=-0.1), ValueError, "noise"),
    (dict(num_samples=4, noise=float("nan")), ValueError, "noise"),
    (dict(num_samples=4, seed=-1), ValueError, "seed"),
])
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        GlobalContextShapes(**kwargs)


def test_index_errors():
    ds = GlobalContextShapes(3)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds.layout(-4)
    with pytest.raises(TypeError, match="index"):
        ds[1.0]


def test_single_shape_and_fixed_count():
    ds = GlobalContextShapes(10, size=16, num_shapes=1, seed=0)
    for i in range(len(ds)):
        layout = ds.layout(i)
        assert len(layout.families) == 1 and layout.majority == layout.families[0]
        assert ndimage.label(ds[i][1] > 0, structure=EIGHT_CONNECTED)[1] == 1


# ----------------------------------------------------------------------------------------------- VOCSegmentation

IDS = {"train": ["2007_000001", "2007_000002", "2007_000003"], "val": ["2008_000001"]}
SHAPE = (20, 24)  # (H, W)


def _label_array(k: int) -> np.ndarray:
    """Known class indices: two class blocks and a 255 border around them."""
    y = np.zeros(SHAPE, dtype=np.uint8)
    y[3:12, 4:14] = 1 + k
    y[10:18, 12:22] = 15 + k
    y[2, 3:15] = 255
    y[12, 3:15] = 255
    y[:, 0] = 255
    return y


def _image_array(k: int) -> np.ndarray:
    rows, cols = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    return np.stack([rows * 10 + 20 * k, cols * 8, np.full(SHAPE, 100 + 30 * k)], axis=-1).astype(np.uint8)


def _write_png(path, array):
    im = Image.frombytes("P", array.shape[::-1], np.ascontiguousarray(array, np.uint8).tobytes())
    im.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    im.save(path)


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOC"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for split, ids in IDS.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n\n")
    for k, name in enumerate(IDS["train"] + IDS["val"]):
        Image.fromarray(_image_array(k)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        if k == 2:  # greyscale class indices are accepted too
            Image.fromarray(_label_array(k)).save(root / "SegmentationClass" / f"{name}.png")
        else:
            _write_png(root / "SegmentationClass" / f"{name}.png", _label_array(k))
    # A file in the folders that no split lists must be ignored.
    Image.fromarray(_image_array(9)).save(root / "JPEGImages" / "unlisted.jpg")
    return root


def test_voc_labels_round_trip_at_native_size(voc_root):
    ds = VOCSegmentation(voc_root, split="train")
    assert len(ds) == 3 and ds.num_classes == 21 and ds.ignore_index == 255
    for k in range(3):
        x, y = ds[k]
        assert x.shape == (3, *SHAPE) and x.dtype == torch.float32
        assert y.shape == SHAPE and y.dtype == torch.int64
        np.testing.assert_array_equal(y.numpy(), _label_array(k))
        mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        std = torch.tensor(IMAGENET_STD)[:, None, None]
        rgb = (x * std + mean).permute(1, 2, 0).numpy() * 255
        assert np.abs(rgb - _image_array(k)).mean() < 3.0  # JPEG is lossy


def test_voc_split_file_is_honoured(voc_root):
    train, val = VOCSegmentation(voc_root, "train"), VOCSegmentation(voc_root, "val")
    assert train.ids == tuple(IDS["train"]) and val.ids == tuple(IDS["val"])
    assert len(val) == 1
    np.testing.assert_array_equal(val[0][1].numpy(), _label_array(3))
    assert val.image_path(0).name == "2008_000001.jpg"


def test_voc_resize_keeps_only_valid_class_values(voc_root):
    ds = VOCSegmentation(voc_root, "train", size=(33, 17))
    for k in range(3):
        x, y = ds[k]
        assert x.shape == (3, 33, 17) and y.shape == (33, 17)
        assert set(np.unique(y.numpy())) <= set(np.unique(_label_array(k)))
        assert {0, 1 + k, 15 + k, 255} <= set(np.unique(y.numpy()))
    assert VOCSegmentation(voc_root, "val", size=8)[0][1].shape == (8, 8)


def _find_window(big: np.ndarray, small: np.ndarray):
    h, w = small.shape
    return [(r, c) for r in range(big.shape[0] - h + 1) for c in range(big.shape[1] - w + 1)
            if np.array_equal(big[r:r + h, c:c + w], small)]


def test_voc_random_crop_is_a_deterministic_window(voc_root):
    a = VOCSegmentation(voc_root, "train", crop=(9, 11), seed=1)
    b = VOCSegmentation(voc_root, "train", crop=(9, 11), seed=1)
    for k in reversed(range(3)):
        (xa, ya), (xb, yb) = a[k], b[k]
        assert xa.shape == (3, 9, 11) and ya.shape == (9, 11)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert _find_window(_label_array(k), ya.numpy())
    windows = {tuple(VOCSegmentation(voc_root, "train", crop=(9, 11), seed=s)[0][1].flatten().tolist())
               for s in range(8)}
    assert len(windows) > 1


def test_voc_crop_larger_than_image_pads_with_ignore(voc_root):
    x, y = VOCSegmentation(voc_root, "val", crop=(25, 30), seed=0)[0]
    assert x.shape == (3, 25, 30) and y.shape == (25, 30)
    assert (y[SHAPE[0]:] == 255).all() and (y[:, SHAPE[1]:] == 255).all()
    assert (x[:, SHAPE[0]:] == 0).all()
    np.testing.assert_array_equal(y[:SHAPE[0], :SHAPE[1]].numpy(), _label_array(3))


@pytest.mark.parametrize("missing", ["JPEGImages/2007_000002.jpg", "SegmentationClass/2007_000003.png",
                                     "ImageSets/Segmentation/train.txt"])
def test_voc_missing_file_is_named(voc_root, missing):
    (voc_root / missing).unlink()
    with pytest.raises(FileNotFoundError, match=str(voc_root / missing)):
        VOCSegmentation(voc_root, "train")


def test_voc_missing_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        VOCSegmentation(tmp_path / "nowhere")


def test_voc_bad_inputs(voc_root):
    (voc_root / "ImageSets" / "Segmentation" / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty.txt"):
        VOCSegmentation(voc_root, "empty")
    with pytest.raises(TypeError, match="split"):
        VOCSegmentation(voc_root, split=None)
    with pytest.raises(ValueError, match="size"):
        VOCSegmentation(voc_root, size=(0, 4))
    with pytest.raises(ValueError, match="crop"):
        VOCSegmentation(voc_root, crop=(4, 4, 4))
    with pytest.raises(ValueError, match="seed"):
        VOCSegmentation(voc_root, seed=-1)
    rgb_label = voc_root / "SegmentationClass" / "2007_000001.png"
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(rgb_label)
    with pytest.raises(ValueError, match="2007_000001.png"):
        VOCSegmentation(voc_root, "train")[0]
    _write_png(rgb_label, np.full(SHAPE, 21, np.uint8))
    with pytest.raises(ValueError, match="value 21"):
        VOCSegmentation(voc_root, "train")[0]
    _write_png(rgb_label, np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="2007_000001.png"):
        VOCSegmentation(voc_root, "train")[0]


@pytest.mark.parametrize("damaged", ["SegmentationClass/2007_000002.png", "JPEGImages/2007_000002.jpg"])
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_voc_corrupt_file_is_named(voc_root, damaged, damage):
    path = voc_root / damaged
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == "truncate" else b"not an image at all")
    ds = VOCSegmentation(voc_root, "train")
    with pytest.raises(ValueError, match=f"{path}.*corrupt or truncated"):
        ds[1]
    ds[0]  # the other items still read
