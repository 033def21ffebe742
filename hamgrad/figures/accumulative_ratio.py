"""Figure 5: the accumulative ratio of the features entering and leaving the head block of a trained HamNet."""

from __future__ import annotations

from .. import plots
from ..analysis import accumulative_ratio
from . import _common
from ._registry import register


def block_accumulative_ratio(model, images, run_id: str | None = None) -> dict:
    """Figure 5's numbers for any trained :class:`hamgrad.nn.HamNet` with a head block (a Hamburger or another
    context module, ``model.block``), in eval mode.

    Args:
        model: the trained HamNet.
        images: a batch ``(B, 3, H, W)`` of input images.
        run_id: recorded for the figure.

    Returns:
        ``{"run_id", "module", "p", "images", "k", "before", "after", "before_std", "after_std"}``: the accumulative
        ratio of the block's input and output features, mean and std over the images.

    Raises:
        ValueError: when the model has no head block.
    """
    before, after, _ = _common.block_features(model, images)
    B, C = before.shape[:2]
    rb = accumulative_ratio(before.reshape(B, C, -1).double()).cpu().numpy()
    ra = accumulative_ratio(after.reshape(B, C, -1).double()).cpu().numpy()
    return {"run_id": run_id, "module": type(model.block).__name__, "p": 2, "images": B,
            "k": list(range(1, rb.shape[-1] + 1)),
            "before": rb.mean(0).tolist(), "after": ra.mean(0).tolist(),
            "before_std": rb.std(0).tolist(), "after_std": ra.std(0).tolist()}


def compute(quick: bool, ablation_dir=None, progress: bool = False, **_) -> dict:
    """Figure 5's numbers for the sweep's first finished NMF HamNet trained with the paper's one-step
    (``one-step-coef``; or its first ham run).

    Args:
        quick: the CI size of the built-in sweep (see :func:`hamgrad.figures.ablation.compute`).
        ablation_dir: the sweep's folder.
        progress: show progress bars while training.

    Returns:
        :func:`block_accumulative_ratio` on up to 16 validation images.

    Raises:
        ValueError: when the sweep has no finished run with a ham, or a damaged sweep file (naming it).
    """
    model, images, _, run_id = _common.trained_hamnet(quick, ablation_dir, progress)
    return block_accumulative_ratio(model, images, run_id)


#: Draw figure 5: ``plot(result) -> Figure`` for :func:`compute`'s result or its JSON.
plot = plots.accumulative_ratio


register("accumulative_ratio", compute, plot, from_sweep=True)
