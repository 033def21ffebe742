"""Figure 6: an image, its ground truth, feature maps before and after the head block of a trained HamNet, and the
code maps of a few bases."""

from __future__ import annotations

from .. import plots
from . import _common
from ._registry import register


def block_feature_maps(model, images, labels, run_id: str | None = None) -> dict:
    """Figure 6's numbers for any trained :class:`hamgrad.nn.HamNet` with a head block, in eval mode.

    Args:
        model: the trained HamNet.
        images: a batch ``(B, 3, H, W)`` of input images (the first is drawn).
        labels: their label maps ``(B, H, W)``.
        run_id: recorded for the figure.

    Returns:
        The first image and label, its four highest-variance channels before and after ``model.block``, and the
        code maps of the four most active bases where the block has codes (the hams, A²; none for self-attention
        and global pooling).

    Raises:
        ValueError: when the model has no head block.
    """
    before, after, cap = _common.block_features(model, images)
    b = 0
    variance = before[b].flatten(1).var(dim=1)
    channels = variance.argsort(descending=True)[:4].tolist()
    bases = [] if cap.C is None else cap.C[b].pow(2).sum(dim=1).argsort(descending=True)[:4].tolist()
    H, W = cap.shape
    return {"run_id": run_id, "module": type(model.block).__name__, "image_index": b,
            "image": images[b].permute(1, 2, 0).clamp(0, 1).tolist(),
            "label": labels[b].tolist(), "channels": channels,
            "before": [before[b, c].tolist() for c in channels], "after": [after[b, c].tolist() for c in channels],
            "bases": bases, "codes": [cap.C[b, j].reshape(H, W).tolist() for j in bases]}


def compute(quick: bool, ablation_dir=None, progress: bool = False, **_) -> dict:
    """Figure 6's numbers for the sweep's first finished NMF HamNet trained with the paper's one-step
    (``one-step-coef``; or its first ham run).

    Args:
        quick: the CI size of the built-in sweep (see :func:`hamgrad.figures.ablation.compute`).
        ablation_dir: the sweep's folder.
        progress: show progress bars while training.

    Returns:
        :func:`block_feature_maps` of the first validation image.

    Raises:
        ValueError: when the sweep has no finished run with a ham, or a damaged sweep file (naming it).
    """
    model, images, labels, run_id = _common.trained_hamnet(quick, ablation_dir, progress)
    return block_feature_maps(model, images, labels, run_id)


#: Draw figure 6: ``plot(result) -> Figure`` for :func:`compute`'s result or its JSON.
plot = plots.feature_maps


register("feature_maps", compute, plot, from_sweep=True)
