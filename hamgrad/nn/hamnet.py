"""HamNet: a small segmentation network with a Hamburger head, small enough to train on a laptop CPU.

```text
encoder   log2(output_stride) stages of [3×3 conv stride 2, 3×3 conv], BatchNorm + ReLU;
          stage i has width·2^i channels
head      squeeze 1×1 conv → context module (a Hamburger, or another module of CONTEXTS; or nothing)
          → align 3×3 conv → 1×1 classifier
output    logits upsampled bilinearly to the input size
```

The encoder is deliberately shallow: its receptive field (19 pixels at output stride 4, 43 at 8, before the align
conv) is local, so any global reasoning must come from the head's context module. ``HamNet(ham=None)`` is the
baseline with the same encoder and head minus the Hamburger block; ``HamNet(context="sa")`` puts self-attention (or
``"a2"``, ``"gap"``, ``"da"``, ``"apc"``, ``"dm"``, ``"acf"``, see :mod:`hamgrad.nn.attention` and
:mod:`hamgrad.nn.context`) where the Hamburger was.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_steps
from .attention import CONTEXTS, build_context
from .hamburger import Hamburger

__all__ = ["HamNet"]


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class HamNet(nn.Module):
    """A minimal semantic-segmentation network: shallow conv encoder, context head, classifier, upsampling.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        width: channels of the first encoder stage (doubled at each further stage).
        output_stride: 4 or 8 (2 or 3 stride-2 stages); the ham sees ``(H / output_stride) · (W / output_stride)``
            positions.
        ham: a solver name (``"nmf"``, ``"vq"``, ``"cd"``, ...) or ``None`` for the baseline without the block.
        d: channels of the ham (see :class:`Hamburger`; ignored when ``ham=None``, as are the next five); ``d`` also
            sizes the other context modules.
        rank: r, the number of bases of the ham (and of A²).
        steps: ``(train, eval)`` numbers of solver steps K, or one int for both (default 6 and 6, the official
            settings.py's).
        grad: the gradient mode through the K steps, one of ``hg.GRAD_MODES`` (default the paper's one-step,
            ``"one-step-coef"``).
        version: the Hamburger block, ``"v2"`` (the official HamNet's, with the cheese) or ``"v1"`` (the paper's).
        solver_kwargs: further keyword arguments of the solver (e.g. ``{"inv_t": 100.0}`` for ``"vq"``).
        context: another context module in the Hamburger's place, by name: ``"sa"`` (:class:`SelfAttention`),
            ``"a2"`` (:class:`DoubleAttention`), ``"gap"`` (:class:`GlobalPool`), ``"da"`` (:class:`DualAttention`),
            ``"apc"`` (:class:`AdaptivePyramidContext`), ``"dm"`` (:class:`DynamicFilters`), ``"acf"``
            (:class:`AttentionalClassFeature`, whose coarse segmentation predicts ``num_classes`` classes); a solver
            name is the same as ``ham=``. ``None`` (the default): the head is the one ``ham`` names.

    ``forward(images, generator=None)`` maps ``(B, in_channels, H, W)`` to logits ``(B, num_classes, H, W)``;
    ``H`` and ``W`` must be multiples of ``output_stride``. ``generator`` seeds the ham's random initial state.
    The head's context module is ``self.block``: ``self.hamburger`` for a ham (``None`` otherwise and for the
    baseline), ``self.context`` for the other modules; ``model.block.capture()`` records any of them.

    Raises:
        TypeError: when ``num_classes``, ``in_channels`` or ``width`` is not an int (and the :class:`Hamburger`'s
            errors for the block's arguments).
        ValueError: when one of them is below 1, ``output_stride`` is not 4 or 8, a module name is unknown, or
            ``context`` is given together with a ``ham`` other than the default ``"nmf"`` or ``None`` (and the
            :class:`Hamburger`'s errors for the block's arguments).

    Examples:
        >>> import torch
        >>> from hamgrad.nn import HamNet
        >>> model = HamNet(num_classes=4, width=8, ham="vq", d=16, rank=4, solver_kwargs={"inv_t": 10.0})
        >>> images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> model(images, generator=torch.Generator().manual_seed(1)).shape
        torch.Size([2, 4, 32, 32])
        >>> HamNet(num_classes=4, ham=None).hamburger is None      # the baseline without the block
        True
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, output_stride: int = 4,
                 ham: str | None = "nmf", d: int = 64, rank: int = 8, steps=(6, 6), grad: str = "one-step-coef",
                 version: str = "v2", solver_kwargs: dict | None = None, context: str | None = None):
        super().__init__()
        check_steps(num_classes, "num_classes")
        check_steps(in_channels, "in_channels")
        check_steps(width, "width")
        if output_stride not in (4, 8):
            raise ValueError(f"output_stride must be 4 or 8, got {output_stride!r}")
        self.num_classes, self.output_stride = num_classes, output_stride
        self.encoder_frozen = False
        stages, c_in = [], in_channels
        for i in range(int(math.log2(output_stride))):
            c_out = width * 2 ** i
            stages += [_conv_block(c_in, c_out, 3, stride=2), _conv_block(c_out, c_out, 3)]
            c_in = c_out
        self.encoder = nn.Sequential(*stages)
        self.squeeze = _conv_block(c_in, c_in, 1)
        if ham in CONTEXTS:
            raise ValueError(f"ham={ham!r} is not a solver; pass context={ham!r} for that module")
        if context is not None and ham not in (None, "nmf"):
            raise ValueError(f"give the head's module once: ham={ham!r} and context={context!r} were both given")
        name = ham if context is None else context
        block = None if name is None else build_context(name, c_in, d=d, rank=rank, classes=num_classes,
                                                        steps=steps, grad=grad, version=version,
                                                        solver_kwargs=solver_kwargs)
        # a Hamburger keeps its attribute name (and so the state-dict keys of existing checkpoints)
        self.hamburger = block if isinstance(block, Hamburger) else None
        self.context = None if isinstance(block, Hamburger) else block
        self.align = _conv_block(c_in, c_in, 3)
        self.classifier = nn.Conv2d(c_in, num_classes, 1)

    #: The parts :meth:`load_encoder` copies: everything before the head's context module.
    ENCODER_PARTS = ("encoder", "squeeze")

    def load_encoder(self, source: "HamNet", freeze: bool = False) -> "HamNet":
        """Copy the encoder and the head's squeeze conv (weights and BatchNorm statistics) from another HamNet, e.g.
        one trained with another context module, so that only the head trains anew.

        Args:
            source: a HamNet with the same ``in_channels``, ``width`` and ``output_stride``.
            freeze: keep the copied parts as they are from now on: their parameters stop requiring gradients (an
                optimizer built over ``model.parameters()`` leaves them alone) and their BatchNorms stay in eval mode
                under ``model.train()`` (running statistics neither used nor updated from the batch).

        Returns:
            This model.

        Raises:
            TypeError: when ``source`` is not a HamNet or ``freeze`` not a bool.
            ValueError: when the source's encoder has other shapes (naming the first that differs).
        """
        if not isinstance(source, HamNet):
            raise TypeError(f"source must be a HamNet, got {type(source).__name__}")
        check_bool(freeze, "freeze")
        states = {part: getattr(source, part).state_dict() for part in self.ENCODER_PARTS}
        for part, theirs in states.items():  # every part checked before any is copied
            for key, value in getattr(self, part).state_dict().items():
                if key not in theirs or theirs[key].shape != value.shape:
                    got = "missing" if key not in theirs else f"of shape {tuple(theirs[key].shape)}"
                    raise ValueError(f"source's {part}.{key} is {got}, where this model's is of shape "
                                     f"{tuple(value.shape)}: the two HamNets need the same in_channels, width and "
                                     f"output_stride")
        for part, theirs in states.items():
            getattr(self, part).load_state_dict(theirs)
        self.encoder_frozen = freeze
        for part in self.ENCODER_PARTS:
            getattr(self, part).requires_grad_(not freeze)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "HamNet":
        """As :meth:`torch.nn.Module.train`; a frozen encoder (:meth:`load_encoder`) stays in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            for part in self.ENCODER_PARTS:
                getattr(self, part).eval()
        return self

    @property
    def block(self) -> nn.Module | None:
        """The head's context module (a :class:`Hamburger` or a module of :data:`CONTEXTS`) or ``None``."""
        return self.hamburger if self.hamburger is not None else self.context

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-pixel class logits.

        Args:
            images: ``(B, in_channels, H, W)`` with ``H`` and ``W`` multiples of ``output_stride``.
            generator: seeds the ham's random initial state (``None``: torch's global generator).

        Returns:
            Logits ``(B, num_classes, H, W)``.

        Raises:
            ValueError: when ``images`` is not 4-dimensional or its height or width is not a multiple of
                ``output_stride``.
        """
        if images.dim() != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
        H, W = images.shape[-2:]
        if H % self.output_stride or W % self.output_stride:
            raise ValueError(f"image height and width must be multiples of output_stride={self.output_stride}, "
                             f"got {H}×{W}")
        z = self.squeeze(self.encoder(images))
        if self.block is not None:
            z = self.block(z, generator=generator)
        logits = self.classifier(self.align(z))
        return F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
