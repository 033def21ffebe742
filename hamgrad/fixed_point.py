"""The abstract model ``h^{t+1} = F(h^t, x)`` read out by ``y = G(h^K, x)`` (docs/theory.md §3).

A state ``h`` is a tuple of tensors (a flat "pytree"). ``F(h, x)`` must be pure: it returns a new tuple of the same
shapes and does not modify its inputs in place. Every analysis in hamgrad works on a :class:`FixedPoint`, so a user's
own solver gets the gradient modes, Jacobian operators and spectra for free.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ._checks import check_float_tensor, check_int, check_steps

State = tuple  # tuple[torch.Tensor, ...]

__all__ = ["FixedPoint", "State", "as_state", "evaluate_at", "flatten_state", "unflatten_state", "state_residual"]


def as_state(h, name: str = "h") -> State:
    """Check that ``h`` is a non-empty tuple (or list) of floating-point tensors and return it as a tuple."""
    if isinstance(h, torch.Tensor):
        raise TypeError(f"{name} must be a tuple of tensors, got a single tensor; wrap it as ({name},)")
    if not isinstance(h, (tuple, list)) or len(h) == 0:
        raise TypeError(f"{name} must be a non-empty tuple of tensors, got {type(h).__name__}")
    for i, t in enumerate(h):
        check_float_tensor(t, f"{name}[{i}]", min_dim=0)
    return tuple(h)


def evaluate_at(fn: Callable, h, x, what: str, name: str = "h"):
    """``fn(h, x)``; an error raised inside ``fn`` (torch's own, e.g. a shape mismatch) is re-raised as a ValueError
    that names the state ``name`` and the shapes and dtypes of ``h`` and ``x``."""
    try:
        return fn(h, x)
    except (RuntimeError, TypeError, IndexError, ValueError) as err:
        raise ValueError(f"{what} failed for {name} of shapes {[tuple(t.shape) for t in h]} "
                         f"({', '.join(str(t.dtype) for t in h)}) and x of shape {tuple(x.shape)} ({x.dtype}): is "
                         f"{name} a state of this model for this x? ({type(err).__name__}: {err})") from err


def flatten_state(h: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate the tensors of a state into one flat vector (in the order of the tuple)."""
    return torch.cat([t.reshape(-1) for t in h])


def unflatten_state(v: torch.Tensor, like: Sequence[torch.Tensor]) -> State:
    """Inverse of :func:`flatten_state`: split a flat vector into tensors shaped like ``like``."""
    sizes = [t.numel() for t in like]
    if v.numel() != sum(sizes):
        raise ValueError(f"flat vector has {v.numel()} entries, the state has {sum(sizes)}")
    return tuple(p.reshape(t.shape) for p, t in zip(torch.split(v, sizes), like))


def _distance(a: torch.Tensor, b: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """``‖a − b‖₂`` per sample (shape ``a.shape[:batch_dims]``). In float32/float64 one ``torch.cdist`` of the
    flattened samples: a single pass over ``a`` and ``b`` that writes no difference tensor and runs on one thread
    (with several torch threads on a busy machine, every op that splits over threads waits for the slowest of them:
    the monitor of :func:`hamgrad.solve` takes this per step). Other dtypes subtract, then take the norm."""
    batch = a.shape[:batch_dims]
    if a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64) and a.numel() and a.dim() > batch_dims:
        m = math.prod(batch)
        dist = torch.cdist(a.reshape(m, 1, -1), b.reshape(m, 1, -1), compute_mode="donot_use_mm_for_euclid_dist")
        return dist.reshape(batch)
    dims, diff = tuple(range(batch_dims, a.dim())), a - b
    return torch.linalg.vector_norm(diff, dim=dims) if dims else diff.abs()


def state_residual(h_new: Sequence[torch.Tensor], h_old: Sequence[torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
    """``‖h_new − h_old‖₂`` as a tensor (no host sync): over the whole (flattened) state for ``batch_dims=0`` (a 0-d
    tensor), else one value per sample, of shape ``h_new[0].shape[:batch_dims]`` (each sample's tensors flattened).
    """
    total = 0
    for a, b in zip(h_new, h_old):
        total = total + _distance(a, b, batch_dims).square()
    return torch.sqrt(total)


class FixedPoint:
    """The fixed-point model ``h^{t+1} = F(h^t, x)``, ``y = G(h^K, x)``.

    Args:
        F: ``F(h, x) -> h``, ``h`` a tuple of tensors. Pure (no in-place updates of its inputs).
        readout: ``G(h, x) -> y``. ``None`` means ``y = h`` (the state tuple itself).
        init: optional ``init(x, generator=None) -> h0`` used when :func:`hamgrad.solve` gets no ``h0``.
        name: a label for tables and plots.
        batch_dims: how many leading dimensions of every state tensor index independent samples (``0``: the state
            is one sample), or a function ``batch_dims(x) -> int``. :func:`hamgrad.solve` reports the forward
            residuals per sample over these dimensions (``SolveInfo.sample_residuals``).

    Raises:
        TypeError: ``F``, ``readout`` or ``init`` is not callable, or ``batch_dims`` is neither an int nor callable.
        ValueError: ``batch_dims < 0``.

    ``FixedPoint.from_solver(s)`` wraps a built-in or registered solver (``F(h, x) = s.step(x, h)``,
    ``G = s.readout``, ``init = s.init``) and keeps ``s`` in ``.solver`` for solver-specific modes (``one-step-coef``).

    Examples:
        The contraction ``F(h, x) = h/2 + x`` has the fixed point ``h* = 2x``, so ``∂h*/∂x = (1 − 1/2)⁻¹ = 2``
        (docs/theory.md §3, Proposition 2). ``one-step`` drops the factor (it differentiates only the last step),
        ``bptt`` sums it over the 30 steps and ``implicit`` solves for it:

        >>> import torch, hamgrad as hg
        >>> fp = hg.FixedPoint(lambda h, x: (0.5 * h[0] + x,), readout=lambda h, x: h[0])
        >>> x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
        >>> h0 = (torch.zeros(2, dtype=torch.float64),)
        >>> for mode in ("one-step", "bptt", "implicit"):
        ...     x.grad = None
        ...     y, info = hg.solve(fp, x, steps=30, grad=mode, h0=h0)
        ...     y.sum().backward()
        ...     print(mode, [round(v, 6) for v in y.tolist()], [round(v, 6) for v in x.grad.tolist()])
        one-step [2.0, -4.0] [1.0, 1.0]
        bptt [2.0, -4.0] [2.0, 2.0]
        implicit [2.0, -4.0] [2.0, 2.0]
    """

    def __init__(self, F: Callable, readout: Callable | None = None, init: Callable | None = None,
                 name: str | None = None, batch_dims=0):
        if not callable(F):
            raise TypeError(f"F must be callable F(h, x) -> h, got {type(F).__name__}")
        if readout is not None and not callable(readout):
            raise TypeError(f"readout must be callable G(h, x) -> y or None, got {type(readout).__name__}")
        if init is not None and not callable(init):
            raise TypeError(f"init must be callable init(x, generator=None) -> h0 or None, got {type(init).__name__}")
        self.F = F
        self._readout = readout
        self._init = init
        if not callable(batch_dims):
            check_int(batch_dims, "batch_dims", 0)
        self.name = name or getattr(F, "__name__", "F")
        self.batch_dims = batch_dims
        self.solver = None

    @classmethod
    def from_solver(cls, solver) -> "FixedPoint":
        """The fixed-point model of a solver with the ``init/step/readout`` protocol (see :mod:`hamgrad.solvers`)."""
        for attr in ("init", "step", "readout"):
            if not callable(getattr(solver, attr, None)):
                raise TypeError(f"solver must have a callable .{attr}(...); got {type(solver).__name__}")
        if isinstance(solver, type):
            raise TypeError(f"solver must be a solver instance, got the class {solver.__name__}: build one first, "
                            f"e.g. {solver.__name__}(rank=8)")
        fp = cls(lambda h, x: solver.step(x, h), readout=lambda h, x: solver.readout(x, h), init=solver.init,
                 name=getattr(solver, "name", type(solver).__name__), batch_dims=lambda x: max(x.dim() - 2, 0))
        fp.solver = solver
        return fp

    def __repr__(self) -> str:
        return f"FixedPoint({self.name})"

    def step(self, h, x) -> State:
        """One application of F; checks that the state keeps its structure and shapes and that F left its inputs
        untouched (see :meth:`call_pure`)."""
        return self.check_output(self.call_pure(self.F, h, x), h)

    @staticmethod
    def check_output(out, h) -> State:
        """``out`` as a state of the same structure and shapes as ``h`` (else a ValueError)."""
        out = as_state(out, name="F(h, x)")
        if len(out) != len(h) or any(a.shape != b.shape for a, b in zip(out, h)):
            raise ValueError("F(h, x) must return a state of the same structure and shapes as h: got "
                             f"{[tuple(t.shape) for t in out]} for h of shapes {[tuple(t.shape) for t in h]}")
        return out

    @staticmethod
    def call_pure(fn: Callable, h, x):
        """``fn(h, x)``, raising if it modified ``h`` or ``x`` in place (compares the tensors' version counters, so
        it costs no pass over the data). An in-place F would make every residual 0 and overwrite the caller's
        ``h0``. Inference tensors (``torch.inference_mode``) have no version counter and are not checked."""
        tensors = [*h, x] if isinstance(x, torch.Tensor) else list(h)
        names = [f"h[{i}]" for i in range(len(h))] + ["x"]

        def versions():
            return [None if t.is_inference() else t._version for t in tensors]

        before = versions()
        out = fn(h, x)
        changed = [name for name, a, b in zip(names, before, versions()) if a != b]
        if changed:
            raise RuntimeError(f"F(h, x) modified {', '.join(changed)} in place (so the caller's tensors are now "
                               "overwritten): F must return new tensors, e.g. h[0] * 0.5 instead of h[0].mul_(0.5)")
        return out

    def sample_dims(self, x) -> int:
        """The number of leading state dimensions that index samples, for input ``x``."""
        return self.batch_dims(x) if callable(self.batch_dims) else self.batch_dims

    def readout(self, h, x):
        """``G(h, x)``; the state itself when the model has no readout."""
        return h if self._readout is None else self._readout(h, x)

    def init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """The model's initial state for ``x`` (needs an ``init`` function)."""
        if self._init is None:
            raise ValueError(f"{self!r} has no init function: pass h0 explicitly")
        return as_state(self._init(x, generator=generator), name="init(x)")

    def unroll(self, x: torch.Tensor, h0, steps: int) -> list:
        """``[h^0, h^1, …, h^K]`` with ``h^{t+1} = F(h^t, x)``; differentiable where grad mode allows."""
        check_steps(steps)
        h = as_state(h0, name="h0")
        traj = [h]
        for _ in range(steps):
            h = self.step(h, x)
            traj.append(h)
        return traj
