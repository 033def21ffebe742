"""The Hamburger block (the paper's V1): lower bread, ham (a matrix decomposition), upper bread, residual.

```text
z   = ReLU?(conv1x1_{channels→d}(x))            lower bread (ReLU for non-negative solvers such as NMF)
X̄   = hg.solve(solver, z as (B, d, H·W), K, grad) the ham: K solver steps, gradient mode grad
out = ReLU(x + norm(conv1x1_{d→channels}(X̄)))    upper bread (BatchNorm) and residual
```

``K`` is ``steps[0]`` in training mode and ``steps[1]`` in evaluation mode (the paper uses 6 and 7).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_steps
from ..grad import SolveInfo, parse_grad_mode, solve
from ..solvers import get_solver

__all__ = ["Hamburger", "HamCapture"]


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

    Args:
        channels: input and output channels of the block.
        d: channels of the ham (the lower bread maps ``channels → d``); the solver sees ``x`` of shape ``(B, d, H·W)``.
        solver: a registered solver name (``"nmf"``, ``"vq"``, ``"cd"`` or one added with ``hg.register_solver``).
        rank: r, the number of bases; ``1 <= rank < d`` (and ``rank <= H·W``, checked at the first forward).
        steps: ``(train, eval)`` numbers of solver steps K, chosen by ``self.training``; an int means both.
        grad: the gradient mode through the K steps, one of ``hg.GRAD_MODES`` (see :func:`hamgrad.solve`).
        solver_kwargs: further keyword arguments of the solver (e.g. ``{"inv_t": 100.0}`` for ``"vq"``).

    ``forward(x, generator=None)``: ``x`` is ``(B, channels, H, W)``; the output has the same shape. The random
    initial state of the solver is drawn from ``generator`` (a ``torch.Generator`` on ``x.device``) or, by default,
    from torch's global generator, so ``torch.manual_seed`` makes a training run reproducible.

    Capturing the ham's input, output and state (for feature maps and accumulative-ratio plots):

    ```python
    with ham.capture() as cap:
        model(images)
    cap.x, cap.y, cap.D, cap.C, cap.shape, cap.info    # see HamCapture
    ```

    Raises:
        TypeError: when ``channels``, ``d``, ``rank`` or a number of steps is not an int, or ``solver_kwargs`` is not
            a dict (or the solver rejects one of them).
        ValueError: when one of them is below 1, ``rank >= d``, ``steps`` is not an int or a pair, ``grad`` is not a
            gradient mode valid for both step counts, ``solver`` is not registered, or ``grad="one-step-coef"`` is
            asked of a solver without ``coef_step``.

    Examples:
        >>> import torch
        >>> from hamgrad.nn import Hamburger
        >>> ham = Hamburger(channels=16, d=32, solver="nmf", rank=4, steps=(6, 7)).eval()   # eval: K = 7
        >>> x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> with ham.capture() as cap:
        ...     out = ham(x, generator=torch.Generator().manual_seed(1))
        >>> out.shape, cap.shape, cap.D.shape, cap.C.shape, cap.info.steps
        (torch.Size([2, 16, 8, 8]), (8, 8), torch.Size([2, 32, 4]), torch.Size([2, 4, 64]), 7)
        >>> bool((out >= 0).all())                    # the block ends in a ReLU
        True
    """

    def __init__(self, channels: int, d: int = 512, solver: str = "nmf", rank: int = 64, steps=(6, 7),
                 grad: str = "one-step", solver_kwargs: dict | None = None):
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
        if solver_kwargs is not None and not isinstance(solver_kwargs, dict):
            raise TypeError(f"solver_kwargs must be a dict or None, got {type(solver_kwargs).__name__}")
        self.solver = get_solver(solver, rank=rank, **(solver_kwargs or {}))
        if grad == "one-step-coef" and not callable(getattr(self.solver, "coef_readout", None)):
            raise ValueError(f"grad='one-step-coef' needs a solver with coef_readout; solver={solver!r} has none")
        self.channels, self.d, self.rank, self.grad = channels, d, rank, grad
        self.nonnegative = bool(getattr(self.solver, "nonnegative", False))
        self.lower_bread = nn.Conv2d(channels, d, 1)
        self.upper_bread = nn.Sequential(nn.Conv2d(d, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self._capture: HamCapture | None = None

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, d={self.d}, solver={self.solver!r}, steps={self.steps}, "
                f"grad={self.grad!r}")

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
        """The block on a feature map: lower bread, K solver steps, upper bread, residual and ReLU.

        Args:
            x: features ``(B, channels, H, W)``; the ham sees ``(B, d, H·W)``.
            generator: a ``torch.Generator`` on ``x.device`` for the solver's random initial state; ``None`` uses
                torch's global generator.

        Returns:
            ``ReLU(x + upper_bread(X̄))``, the shape of ``x``.

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
        out = self.upper_bread(y.reshape(B, self.d, H, W))
        return F.relu(x + out)
