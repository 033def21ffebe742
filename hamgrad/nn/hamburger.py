"""The Hamburger block: lower bread, ham (a matrix decomposition), upper bread, residual; in the official code's two
versions (Gsunshine/Enjoy-Hamburger, seg/HamNet/hamburger/burger.py).

::

    z   = ReLU?(conv1x1_{channels→d}(x))             lower bread (with bias; ReLU for non-negative solvers such as NMF)
    X̄   = hg.solve(solver, z as (B, d, H·W), K, grad)  the ham: K solver steps, gradient mode ``grad``
    V1: out = ReLU(x + BN(conv1x1_{d→channels}(X̄)))                          upper bread with BatchNorm, residual
    V2: out = ReLU(x + conv1x1_{d→channels}(ReLU(BN(conv1x1_{d→d}(X̄)))))     the "cheese" ConvBNReLU, then an
                                                                            upper bread without norm, residual

``K`` is ``steps[0]`` in training mode and ``steps[1]`` in evaluation mode.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_steps
from ..grad import SolveInfo, parse_grad_mode, solve
from ..solvers import get_solver

__all__ = ["Hamburger", "HamCapture", "VERSIONS"]

#: The block versions: ``"v1"`` (the paper's block) and ``"v2"`` (the official HamNet's default, with the cheese).
VERSIONS = ("v1", "v2")


@contextlib.contextmanager
def capturing(module: nn.Module, record):
    """Make ``record`` the ``module._capture`` that its forward passes fill while the context is open; the one it
    replaces comes back on exit (captures nest). Shared by every context module's ``capture()``."""
    previous, module._capture = module._capture, record
    try:
        yield record
    finally:
        module._capture = previous


@dataclass
class HamCapture:
    """What the ham saw and produced in the most recent forward pass inside :meth:`Hamburger.capture`.

    All tensors are detached. ``n = H·W`` positions, flattened row-major, so ``x[b, c].reshape(shape)`` is channel c
    of image b as an ``H × W`` map and ``C[b, j].reshape(shape)`` is basis j's code map.

    Attributes:
        x: the ham's input ``(B, d, n)`` (the lower bread's output).
        y: the ham's output ``X̄ = D C`` read out by the solver, ``(B, d, n)`` (ridge codes for CD).
        D: the final dictionary ``(B, d, r)``.
        C: the final state's codes ``(B, r, n)`` (for ``one-step-coef``, the extra code update the output uses).
        shape: ``(H, W)`` of the feature map.
        info: the solve's :class:`hamgrad.SolveInfo` (per-step residuals and objective).
    """

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    D: torch.Tensor | None = None
    C: torch.Tensor | None = None
    shape: tuple | None = None
    info: SolveInfo | None = None


class Hamburger(nn.Module):
    """The Hamburger block: a global-context module that replaces attention by a low-rank matrix decomposition.

    The defaults are the official HamNet's (seg/HamNet/settings.py of the official code: ``VERSION = 'V2'``,
    ``MD_D = 512``, ``MD_R = 64``, ``TRAIN_STEPS = EVAL_STEPS = 6``, ``RAND_INIT = True``) with its gradient, the
    paper's one-step: K solver steps without graph, then one more code update with the bases held constant
    (``grad="one-step-coef"``, docs/theory.md §4). ``version="v1"`` is the paper's block as hamgrad built it before
    (the same modules and initialisation), and every gradient mode of :func:`hamgrad.solve` is selectable.

    Temperatures (``solver_kwargs={"inv_t": ...}``): NMF's initial codes ``softmax(DᵀX)`` use inv_t = 1, fixed by the
    official NMF2D whatever ``INV_T`` says (settings.py's ``INV_T = 1`` is that NMF configuration); VQ and CD use the
    solvers' default inv_t = 100, the official ham.py's default ``INV_T`` and one of the two values (10 or 100) the
    official README gives for them.

    V2 is built as the official ``HamburgerV2``: a lower bread conv with bias (its bias keeps torch's default
    initialisation), the cheese ``Conv(d, d, bias=False) → BatchNorm(d) → ReLU``, an upper bread conv without bias
    and without norm; every conv weight drawn from ``N(0, 2 / out_channels)`` (the official ``_init_weight``) and the
    BatchNorm at weight 1, bias 0. It differs from the official block in two documented ways: BatchNorm keeps torch's
    momentum 0.1 (the official ``BN_MOM = 3e-4`` is for 60k iterations; over hamgrad's few hundred iterations the
    running statistics would stay near their initial values), and CD, like every ham here, draws random bases in each
    forward pass (settings.py's ``RAND_INIT = True``; the official README suggests learned bases with a manual online
    update for CD). V1 keeps torch's default initialisation of its convs.

    Args:
        channels: input and output channels of the block.
        d: channels of the ham (the lower bread maps ``channels → d``); the solver sees ``x`` of shape ``(B, d, H·W)``.
        solver: a registered solver name (``"nmf"``, ``"vq"``, ``"cd"`` or one added with ``hg.register_solver``).
        rank: r, the number of bases; ``1 <= rank < d`` (and ``rank <= H·W``, checked at the first forward).
        steps: ``(train, eval)`` numbers of solver steps K, chosen by ``self.training``; an int means both.
        grad: the gradient mode through the K steps, one of ``hg.GRAD_MODES`` (see :func:`hamgrad.solve`).
        version: ``"v2"`` (the official HamNet's block) or ``"v1"`` (the paper's: upper bread conv + BatchNorm).
        solver_kwargs: further keyword arguments of the solver (e.g. ``{"inv_t": 10.0}`` for ``"vq"``).

    ``forward(x, generator=None)``: ``x`` is ``(B, channels, H, W)``; the output has the same shape. The random
    initial state of the solver is drawn from ``generator`` (a ``torch.Generator`` on ``x.device``) or, by default,
    from torch's global generator, so ``torch.manual_seed`` makes a training run reproducible.

    Capturing the ham's input, output and state (for feature maps and accumulative-ratio plots)::

        with ham.capture() as cap:
            model(images)
        cap.x, cap.y, cap.D, cap.C, cap.shape, cap.info    # see HamCapture

    Raises:
        TypeError: when ``channels``, ``d``, ``rank`` or a number of steps is not an int, or ``solver_kwargs`` is not
            a dict (or the solver rejects one of them).
        ValueError: when one of them is below 1, ``rank >= d``, ``steps`` is not an int or a pair, ``grad`` is not a
            gradient mode valid for both step counts, ``version`` is not ``"v1"`` or ``"v2"``, ``solver`` is not
            registered, or ``grad="one-step-coef"`` is asked of a solver without ``coef_readout``.

    Examples:
        >>> import torch
        >>> from hamgrad.nn import Hamburger
        >>> ham = Hamburger(channels=16, d=32, solver="nmf", rank=4).eval()   # V2, one-step-coef, K = 6
        >>> x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> with ham.capture() as cap:
        ...     out = ham(x, generator=torch.Generator().manual_seed(1))
        >>> out.shape, cap.shape, cap.D.shape, cap.C.shape, cap.info.steps
        (torch.Size([2, 16, 8, 8]), (8, 8), torch.Size([2, 32, 4]), torch.Size([2, 4, 64]), 6)
        >>> bool((out >= 0).all())                    # the block ends in a ReLU
        True
    """

    def __init__(self, channels: int, d: int = 512, solver: str = "nmf", rank: int = 64, steps=(6, 6),
                 grad: str = "one-step-coef", version: str = "v2", solver_kwargs: dict | None = None):
        super().__init__()
        check_steps(channels, "channels")
        check_steps(d, "d")
        check_steps(rank, "rank")
        if rank >= d:
            raise ValueError(f"rank={rank} must be < d={d} (a low-rank decomposition of the d-channel features)")
        if isinstance(steps, int) and not isinstance(steps, bool):
            steps = (steps, steps)
        if not isinstance(steps, (tuple, list)) or len(steps) != 2:
            raise ValueError(f"steps must be an int or a (train, eval) pair of ints, got {steps!r}")
        self.steps = (check_steps(steps[0], "steps[0]"), check_steps(steps[1], "steps[1]"))
        for k in self.steps:
            parse_grad_mode(grad, k)
        self.version = check_choice(version, "version", VERSIONS)
        if solver_kwargs is not None and not isinstance(solver_kwargs, dict):
            raise TypeError(f"solver_kwargs must be a dict or None, got {type(solver_kwargs).__name__}")
        self.solver = get_solver(solver, rank=rank, **(solver_kwargs or {}))
        if grad == "one-step-coef" and not callable(getattr(self.solver, "coef_readout", None)):
            raise ValueError(f"grad='one-step-coef' needs a solver with coef_readout; solver={solver!r} has none")
        self.channels, self.d, self.rank, self.grad = channels, d, rank, grad
        self.nonnegative = bool(getattr(self.solver, "nonnegative", False))
        self.lower_bread = nn.Conv2d(channels, d, 1)
        if version == "v1":
            self.cheese = None
            self.upper_bread = nn.Sequential(nn.Conv2d(d, channels, 1, bias=False), nn.BatchNorm2d(channels))
        else:
            self.cheese = nn.Sequential(nn.Conv2d(d, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU())
            self.upper_bread = nn.Conv2d(d, channels, 1, bias=False)
            for conv in (self.lower_bread, self.cheese[0], self.upper_bread):
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / conv.out_channels))
        self._capture: HamCapture | None = None

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, d={self.d}, solver={self.solver!r}, steps={self.steps}, "
                f"grad={self.grad!r}, version={self.version!r}")

    def capture(self):
        """Record what the ham sees and produces while the context is open.

        Capturing records the solve's residuals and objective (one host sync per forward). Contexts nest: the
        innermost one receives the forward passes, and leaving it restores the outer one.

        Returns:
            A context manager whose ``as`` target is a :class:`HamCapture`, filled by each forward pass inside the
            block (the last one wins; its fields stay ``None`` when no forward pass ran).
        """
        return capturing(self, HamCapture())

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The block on a feature map: lower bread, K solver steps, (V2: the cheese,) upper bread, residual and ReLU.

        Args:
            x: features ``(B, channels, H, W)``; the ham sees ``(B, d, H·W)``.
            generator: a ``torch.Generator`` on ``x.device`` for the solver's random initial state; ``None`` uses
                torch's global generator.

        Returns:
            ``ReLU(x + upper_bread(X̄))`` (V2: ``ReLU(x + upper_bread(cheese(X̄)))``), the shape of ``x``.

        Raises:
            ValueError: when ``x`` is not ``(B, channels, H, W)``, when ``rank > H·W``, or when the ham's input is not
                finite (the solver's checks in :func:`hamgrad.solve`).
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, channels={self.channels}, H, W), got {tuple(x.shape)}")
        B, _, H, W = x.shape
        z = self.lower_bread(x)
        if self.nonnegative:
            z = F.relu(z)
        z = z.reshape(B, self.d, H * W)
        steps = self.steps[0] if self.training else self.steps[1]
        cap = self._capture
        y, info = solve(self.solver, z, steps, grad=self.grad, generator=generator, monitor=cap is not None)
        if cap is not None:
            D, C = info.state
            if self.grad == "one-step-coef":
                with torch.no_grad():
                    C = self.solver.coef_step(z, info.state)
            cap.x, cap.y, cap.D, cap.C = z.detach(), y.detach(), D, C
            cap.shape, cap.info = (H, W), info
        y = y.reshape(B, self.d, H, W)
        if self.cheese is not None:
            y = self.cheese(y)
        return F.relu(x + self.upper_bread(y))
