"""Segmentation metrics from a confusion matrix: mean IoU and pixel accuracy (the usual PASCAL VOC definitions)."""

from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts, rows = true class, columns = predicted class.

    Args:
        pred: integer tensor of predicted labels per pixel.
        target: integer tensor of true labels per pixel, the shape of ``pred``.
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        ignore_index: target label whose pixels are not counted (e.g. 255 for VOC boundaries), or ``None``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise TypeError(f"pred and target must be integer label tensors, got {pred.dtype} and {target.dtype}")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target labels must lie in [0, num_classes={num_classes}) (or be ignore_index), "
                         f"got range [{int(target.min())}, {int(target.max())}]")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"pred labels must lie in [0, num_classes={num_classes}), "
                         f"got range [{int(pred.min())}, {int(pred.max())}]")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each class, float64; NaN for a class absent from both prediction and target."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))


def mean_iou(conf: torch.Tensor) -> float:
    """The mean of :func:`iou_per_class` over the classes that occur (in the target or the prediction)."""
    iou = iou_per_class(conf)
    present = ~torch.isnan(iou)
    if not bool(present.any()):
        raise ValueError("mean_iou of an empty confusion matrix (no counted pixels)")
    return float(iou[present].mean())


def pixel_accuracy(conf: torch.Tensor) -> float:
    """The fraction of counted pixels whose predicted class is right."""
    total = conf.sum()
    if int(total) == 0:
        raise ValueError("pixel_accuracy of an empty confusion matrix (no counted pixels)")
    return float(conf.diag().sum().double() / total.double())
