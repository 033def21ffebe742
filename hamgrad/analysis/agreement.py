"""Gradient agreement (docs/theory.md §5): each gradient mode's ``∂L/∂x`` (and ``∂L/∂θ``) against a reference mode.

:func:`compare_gradients` runs :func:`hamgrad.solve` once per mode from the same initial state, differentiates a
loss, and reports the cosine similarity and norm ratio to the reference gradient with the wall time and memory of
forward + backward, measured by :func:`hamgrad.profiling.measure` (CUDA: peak allocated memory; CPU: the bytes
autograd saves for backward, the part of the peak that grows with the differentiated steps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from .._checks import check_float_tensor, check_steps
from ..fixed_point import as_state
from ..grad import as_fixed_point, parse_grad_mode, solve
from ..profiling import measure

__all__ = ["ModeGradient", "GradientComparison", "compare_gradients"]


@dataclass
class ModeGradient:
    """One mode against the reference: ``cosine_x``, ``norm_ratio_x = ‖g‖ / ‖g_ref‖`` (and the same for the
    module's parameters, ``None`` without a module), the loss, wall time and memory of forward + backward.

    ``converged`` is whether the mode's implicit backward solves all converged (``None`` for the other modes, whose
    backward solves nothing); an unconverged one gives a NaN gradient, so its cosines are ``nan``.
    ``backward_residual`` is the largest relative residual of those solves (``None`` likewise), and
    ``forward_residual`` is ``‖h^K − h^{K−1}‖ / ‖h^K‖``: how far the K-step solve is from a fixed point."""

    mode: str
    steps: int
    cosine_x: float
    norm_ratio_x: float
    cosine_params: float | None
    norm_ratio_params: float | None
    loss: float
    seconds: float
    peak_bytes: int
    memory_kind: str
    converged: bool | None = None
    backward_residual: float | None = None
    forward_residual: float = math.nan


@dataclass
class GradientComparison:
    """The reference's own row and one row per compared mode. ``reference_converged`` is ``False`` when the
    reference's implicit backward did not converge (then it is no reference: every cosine is ``nan``)."""

    reference: ModeGradient
    modes: list = field(default_factory=list)

    @property
    def reference_converged(self) -> bool:
        """``False`` when the reference mode's backward solve did not converge, else ``True``."""
        return self.reference.converged is not False

    def to_dict(self) -> dict:
        """Plain data: ``{"reference": row, "modes": [row, ...], "reference_converged": bool}``."""
        return {"reference": asdict(self.reference), "modes": [asdict(m) for m in self.modes],
                "reference_converged": self.reference_converged}

    def rows(self) -> list[dict]:
        """One dict per compared mode (a table without pandas)."""
        return [asdict(m) for m in self.modes]


def _cosine_and_ratio(g: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """``(cos(g, ref), ‖g‖ / ‖ref‖)`` in float64; ``nan`` where a norm is zero."""
    g, ref = g.double(), ref.double()
    g_norm, ref_norm = float(g.norm()), float(ref.norm())
    cosine = float(g @ ref) / (g_norm * ref_norm) if g_norm > 0 and ref_norm > 0 else math.nan
    ratio = g_norm / ref_norm if ref_norm > 0 else math.nan
    return cosine, ratio


def _checked_loss(loss):
    """``loss`` if it is a one-element tensor with a graph to ``y``; otherwise an error naming ``loss_fn``."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn(y) must return a scalar torch.Tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn(y) must return a scalar (one element), got a tensor of shape {tuple(loss.shape)}; "
                         "reduce it, e.g. with .sum() or .mean()")
    if not loss.requires_grad:
        raise ValueError("loss_fn(y) returned a tensor without a graph to y (detached, or built from .item() or "
                         "numpy): its gradient cannot be compared")
    return loss.reshape(())


def compare_gradients(model, x: torch.Tensor, loss_fn: Callable, steps: int = 6,
                      modes: Sequence[str] = ("one-step", "bptt", "implicit"), reference: str = "implicit", *,
                      reference_steps: int | None = None, h0=None, generator: torch.Generator | None = None,
                      module: torch.nn.Module | None = None, **solve_kwargs) -> GradientComparison:
    """Compare the gradients of ``loss_fn(y)`` under several gradient modes with a reference mode.

    Args:
        model: a solver or a :class:`hamgrad.FixedPoint`.
        x: the input. If it carries a graph (e.g. computed by ``module``), gradients also flow into that graph.
        loss_fn: ``loss_fn(y) -> scalar tensor`` (differentiable in ``y``).
        steps: K for the compared modes.
        modes: gradient modes (``hg.GRAD_MODES``, ``"truncated:k"``).
        reference: the reference mode, run with ``reference_steps`` (default ``steps``) — e.g. ``"bptt"`` with
            many steps, or ``"implicit"``.
        h0: the initial state shared by every run; ``None`` draws one with ``model.init(x, generator)``.
        module: an ``nn.Module`` whose parameters' gradients are compared as well (it may compute ``x`` before
            the solve or be used by ``loss_fn`` after it).
        solve_kwargs: passed to :func:`hamgrad.solve` (``tol``, ``max_iter``, ``adjoint``, ``strict``, …).

    Returns:
        :class:`GradientComparison`; its ``reference_converged`` (and each row's ``converged``,
        ``backward_residual``, ``forward_residual``) says whether the reference is one: an implicit reference whose
        backward solve did not converge has a NaN gradient (with a :class:`hamgrad.ConvergenceWarning`), and every
        cosine against it is ``nan``.

    Raises:
        TypeError: ``model`` is not a solver or FixedPoint, ``x`` not a floating tensor, ``loss_fn`` not callable,
            ``module`` not an ``nn.Module``, or ``loss_fn(y)`` not a scalar tensor with a graph to ``y``.
        ValueError: ``steps``/``reference_steps`` below 1, an unknown or empty gradient mode list, or the errors
            :func:`hamgrad.solve` raises for the inputs.
    """
    fp = as_fixed_point(model)
    check_steps(steps)
    check_float_tensor(x, "x")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(y) -> scalar, got {type(loss_fn).__name__}")
    if isinstance(modes, str) or not modes:
        raise ValueError(f"modes must be a non-empty list of gradient modes, got {modes!r}")
    ref_steps = steps if reference_steps is None else check_steps(reference_steps, "reference_steps")
    parse_grad_mode(reference, ref_steps)
    for mode in modes:
        parse_grad_mode(mode, steps)
    if module is not None and not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module or None, got {type(module).__name__}")
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    if h0 is None:
        with torch.no_grad():
            h0 = fp.init(x.detach(), generator=generator)
    h0 = tuple(t.detach() for t in as_state(h0, "h0"))
    x_in = x if x.requires_grad else x.detach().requires_grad_(True)

    def run(mode: str, k: int):
        """One mode's flat gradients w.r.t. ``x`` and the parameters, its loss, measurement and solve info."""
        def forward_backward():
            y, info = solve(fp, x_in, k, grad=mode, h0=h0, **solve_kwargs)
            loss = _checked_loss(loss_fn(y))
            grads = torch.autograd.grad(loss, [x_in, *params], retain_graph=True, allow_unused=True)
            return float(loss.detach()), grads, info

        m = measure(forward_backward, x.device)
        loss, grads, info = m.result
        flat = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, [x_in, *params])]
        gx = flat[0].reshape(-1)
        gp = torch.cat([g.reshape(-1) for g in flat[1:]]) if params else None
        return gx, gp, loss, m, info

    ref_x, ref_p, *ref_run = run(reference, ref_steps)

    def row(mode, k, gx, gp, loss, m, info):
        """The :class:`ModeGradient` of one run against the reference."""
        cx, rx = _cosine_and_ratio(gx, ref_x)
        cp, rp = _cosine_and_ratio(gp, ref_p) if params else (None, None)
        solves = info.backward
        last = info.state
        size = float(torch.sqrt(sum(t.double().square().sum() for t in last)))
        step = info.residuals[-1] if info.residuals else math.nan
        return ModeGradient(mode, k, cx, rx, cp, rp, loss, m.seconds, m.peak_bytes, m.memory_kind,
                            converged=all(b.converged for b in solves) if solves else None,
                            backward_residual=max(b.residual for b in solves) if solves else None,
                            forward_residual=step / size if size > 0 else math.nan)

    result = GradientComparison(reference=row(reference, ref_steps, ref_x, ref_p, *ref_run))
    for mode in modes:
        result.modes.append(row(mode, steps, *run(mode, steps)))
    return result
