"""What a block's codes know about a labelling of the positions (docs/theory.md §7): the share of a label's entropy
that the positions' hard code assignments explain, beside the same share for randomly permuted codes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .._checks import check_finite, check_float_tensor, check_generator, check_int

__all__ = ["CodeInformation", "code_information"]


@dataclass
class CodeInformation:
    """Per sample: ``explained`` = I(code; label) / H(label) in [0, 1] (``nan`` where the sample's labelled
    positions carry one label only), ``chance`` = the mean of the same share over random permutations of the codes
    among the sample's labelled positions (what codes independent of the label reach on that many positions), and
    ``codes_used``, the number of distinct hard codes at those positions."""

    explained: list
    chance: list
    codes_used: list

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return asdict(self)


def _explained(code: torch.Tensor, label: torch.Tensor, rank: int, classes: int) -> float:
    """I(code; label) / H(label) of two int64 vectors, in float64."""
    joint = torch.bincount(code * classes + label, minlength=rank * classes).reshape(rank, classes).double()
    joint /= joint.sum()
    p_code, p_label = joint.sum(dim=1, keepdim=True), joint.sum(dim=0, keepdim=True)
    h_label = -torch.special.xlogy(p_label, p_label).sum()
    if h_label <= 0:
        return float("nan")
    nz = joint > 0
    mutual = (joint[nz] * (joint[nz] / (p_code * p_label)[nz]).log()).sum()
    return float((mutual / h_label).clamp(0.0, 1.0))


def code_information(codes: torch.Tensor, labels: torch.Tensor, permutations: int = 20,
                     generator: torch.Generator | None = None) -> CodeInformation:
    """How much of a labelling of the positions a block's codes carry, per sample.

    Each position gets its hard code ``argmax_r codes[b, :, i]``; over the positions whose label is not negative,
    the result is the mutual information between hard code and label as a share of the label's entropy (the
    uncertainty coefficient U(label | code)). Finite samples give positive values to codes that know nothing, so
    the same share for the codes randomly permuted among those positions is reported beside it. Use it to ask,
    for example, whether a ham's bases follow the regions of :class:`hamgrad.data.RegionalShapes`
    (:meth:`~hamgrad.data.RegionalShapes.region_map`) or some other grouping.

    Args:
        codes: ``(B, r, n)`` codes of ``n`` positions (a :class:`~hamgrad.nn.HamCapture`'s or
            :class:`~hamgrad.nn.ContextCapture`'s ``C``).
        labels: ``(B, n)`` integer labels of the same positions (e.g. a label map resized to the feature map with
            nearest-neighbour sampling and flattened row-major); negative labels are left out.
        permutations: random permutations per sample behind ``chance`` (0: no chance level, ``nan``).
        generator: a CPU ``torch.Generator`` for the permutations.

    Returns:
        A :class:`CodeInformation`.

    Raises:
        TypeError, ValueError: ``codes`` not a finite floating ``(B, r, n)`` tensor, ``labels`` not an integer
            ``(B, n)`` tensor, a sample without a labelled position, ``permutations`` not an int >= 0.

    Examples:
        Two codes that split the positions exactly as the labels do explain all of them; one code explains nothing.

        >>> import torch, hamgrad as hg
        >>> labels = torch.tensor([[0, 0, 1, 1, -1]])
        >>> codes = torch.tensor([[[1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0]]])
        >>> hg.analysis.code_information(codes, labels, permutations=0).explained
        [1.0]
        >>> hg.analysis.code_information(torch.ones(1, 1, 5), labels, permutations=0).explained
        [0.0]
    """
    check_float_tensor(codes, "codes")
    if codes.dim() != 3:
        raise ValueError(f"codes must be (B, r, n), got shape {tuple(codes.shape)}")
    check_finite(codes, "codes")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {type(labels).__name__}"
                        f"{'' if not isinstance(labels, torch.Tensor) else ' of dtype ' + str(labels.dtype)}")
    B, rank, n = codes.shape
    if tuple(labels.shape) != (B, n):
        raise ValueError(f"labels must have shape (B, n) = {(B, n)} for codes of shape {tuple(codes.shape)}, got "
                         f"{tuple(labels.shape)}")
    check_int(permutations, "permutations", 0)
    check_generator(generator, "generator", torch.device("cpu"))
    hard, labels = codes.detach().argmax(dim=1).cpu(), labels.detach().cpu().long()
    explained, chance, used = [], [], []
    for b in range(B):
        keep = labels[b] >= 0
        if not bool(keep.any()):
            raise ValueError(f"labels[{b}] has no labelled position (every label is negative)")
        code, label = hard[b][keep], labels[b][keep]
        classes = int(label.max()) + 1
        explained.append(_explained(code, label, rank, classes))
        shuffled = [_explained(code[torch.randperm(len(code), generator=generator)], label, rank, classes)
                    for _ in range(permutations)]
        chance.append(sum(shuffled) / permutations if permutations else float("nan"))
        used.append(int(code.unique().numel()))
    return CodeInformation(explained, chance, used)
