"""The test models shared by the whole suite: one copy of each, with the dense quantities tests compare against.

Every builder returns a :class:`Model`: the :class:`hamgrad.FixedPoint`, an input ``x``, an initial state ``h0`` and
the model's own matrices (``params``), all in float64 on ``device`` unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import hamgrad as hg


@dataclass
class Model:
    fp: hg.FixedPoint
    x: torch.Tensor
    h0: tuple
    params: dict = field(default_factory=dict)


def contractive(device="cpu", n=5, m=3, cols=None, norm_W=0.6, scale=1.0, readout="linear", seed=0) -> Model:
    """``F(h, x) = scale · tanh(W h + U x)`` with ``‖W‖₂ = norm_W`` (so ``‖J‖₂ ≤ scale · norm_W``).

    ``cols=None`` makes ``x`` an m-vector and ``h`` an n-vector; an int gives ``(m, cols)`` and ``(n, cols)``.
    Readouts: ``"state"`` (``y = h``), ``"linear"`` (``y = A h``, A 4 × n) or ``"linear+x"`` (``y = V h + 0.1 x[:2]²``,
    V 2 × n: a readout that depends on x directly too). ``params`` holds W, U, A, V.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = (norm_W * W / torch.linalg.matrix_norm(W, ord=2)).to(device)
    U = torch.randn(n, m, generator=g, dtype=torch.float64).to(device)
    A = torch.randn(4, n, generator=g, dtype=torch.float64).to(device)
    V = torch.randn(2, n, generator=g, dtype=torch.float64).to(device)
    shape_x, shape_h = ((m,), (n,)) if cols is None else ((m, cols), (n, cols))
    x = torch.randn(*shape_x, generator=g, dtype=torch.float64).to(device)
    readouts = {"state": None, "linear": lambda h, x: A @ h[0], "linear+x": lambda h, x: V @ h[0] + 0.1 * x[:2] ** 2}
    if readout not in readouts:
        raise ValueError(f"readout must be one of {tuple(readouts)}, got {readout!r}")
    fp = hg.FixedPoint(lambda h, x: (scale * torch.tanh(W @ h[0] + U @ x),), readout=readouts[readout],
                       init=lambda x, generator=None: (torch.zeros(shape_h, dtype=x.dtype, device=x.device),),
                       name="contractive")
    h0 = (torch.zeros(shape_h, dtype=torch.float64, device=device),)
    return Model(fp, x, h0, dict(W=W, U=U, A=A, V=V))


def ista(device="cpu", d=8, p=6, lam=0.1, step_factor=1.0, seed=0) -> Model:
    """ISTA for the Lasso ``min_h ½‖A h − x‖² + lam‖h‖₁``: ``F(h, x) = soft(h − t Aᵀ(A h − x), t·lam)`` with
    ``t = step_factor / L``, ``L = ‖A‖₂²``. ``step_factor < 2`` converges; above 2 the map diverges (``ρ(J) > 1`` on
    the active set). The state is ``(h,)``, h of length p; ``x`` has length d; ``y = h``."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, p, generator=g, dtype=torch.float64).to(device)
    t = step_factor / float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    x = torch.randn(d, generator=g, dtype=torch.float64).to(device)

    def F(h, x):
        z = h[0] - t * A.mT @ (A @ h[0] - x)
        return (torch.sign(z) * torch.clamp(z.abs() - t * lam, min=0.0),)

    fp = hg.FixedPoint(F, init=lambda x, generator=None: (torch.zeros(p, dtype=x.dtype, device=x.device),),
                       name="ISTA")
    return Model(fp, x, (torch.zeros(p, dtype=torch.float64, device=device),), dict(A=A, t=t, lam=lam))


def bump(device="cpu", x_value=1.0) -> Model:
    """The scalar map ``F(h, x) = 0.5 h + x·exp(−h²)`` from ``h⁰ = 0``: ``B_0 = ∂F/∂x(h⁰) = 1`` while later ``B_t``
    are smaller, so a bound on ``∂hᵗ/∂x`` must take ``‖B‖`` over ``B_0 … B_{t−1}``."""
    x = torch.tensor([x_value], dtype=torch.float64, device=device)
    fp = hg.FixedPoint(lambda h, x: (0.5 * h[0] + x * torch.exp(-h[0] ** 2),),
                       init=lambda x, generator=None: (torch.zeros_like(x),), name="bump")
    return Model(fp, x, (torch.zeros(1, dtype=torch.float64, device=device),))



def sinkhorn(device="cpu", n=5, m=4, eps=0.5, seed=0) -> Model:
    """Balanced entropic optimal transport by Sinkhorn's scalings, a solver the project has no code for.

    ``x`` is an ``n × m`` cost matrix, ``K = exp(−x / eps)``, the marginals ``a`` (length n) and ``b`` (length m) are
    random and sum to 1. The state is ``(u, v)`` and ``F(u, v) = (a / (K v), b / (Kᵀ u'))`` with ``u' = a / (K v)``;
    the readout is the plan ``P = diag(u) K diag(v)``. F commutes with ``(u, v) → (λu, v/λ)``, which leaves P
    unchanged: at a fixed point ``J (u, −v) = (u, −v)`` exactly, an eigenvalue 1 that the readout does not see
    (``∂P/∂h (u, −v) = 0``). ``h0`` is the fixed point after 2000 steps (float64). ``params`` holds a and b.
    """
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.5
    a, b = (a / a.sum()).to(device), (b / b.sum()).to(device)
    x = torch.rand(n, m, generator=g, dtype=torch.float64).to(device)

    def F(h, x):
        K = torch.exp(-x / eps)
        u = a / (K @ h[1])
        return u, b / (K.mT @ u)

    fp = hg.FixedPoint(F, readout=lambda h, x: h[0][:, None] * torch.exp(-x / eps) * h[1][None, :],
                       init=lambda x, generator=None: (torch.ones(n, dtype=x.dtype, device=x.device),
                                                       torch.ones(m, dtype=x.dtype, device=x.device)),
                       name="sinkhorn")
    h = fp.init(x)
    for _ in range(2000):
        h = fp.step(h, x)
    return Model(fp, x, h, dict(a=a, b=b))

#: A user's solver module, as a user would write it: ISTA for the Lasso ``min_H ½‖A H − X‖² + lam‖H‖₁`` (column by
#: column) as a registered solver class. ``A`` (d × rank, unit-norm columns) is drawn from ``seed`` on first use for
#: each d and cached (so the step stays free of random calls under ``vmap``); step size ``t = step_factor / ‖A‖₂²``;
#: readout ``y = A H``. Tests write it to a file with ``NAME`` replaced by the name it registers.
ISTA_SOLVER_SOURCE = '''
import torch
import hamgrad as hg


class ISTA:
    def __init__(self, rank=4, lam=0.05, step_factor=1.0, seed=0):
        self.rank, self.lam, self.step_factor, self.seed = rank, lam, step_factor, seed
        self._cache = {}

    def hparams(self):
        return {"rank": self.rank, "lam": self.lam, "step_factor": self.step_factor, "seed": self.seed}

    def dictionary(self, x):
        """(A, t) for inputs with x.shape[-2] rows, in x's dtype and device."""
        d = x.shape[-2]
        if d not in self._cache:
            A = torch.randn(d, self.rank, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
            A = A / A.norm(dim=0)
            self._cache[d] = (A, self.step_factor / float(torch.linalg.matrix_norm(A, ord=2)) ** 2)
        A, t = self._cache[d]
        return A.to(dtype=x.dtype, device=x.device), t

    def init(self, x, generator=None):
        return (torch.zeros(*x.shape[:-2], self.rank, x.shape[-1], dtype=x.dtype, device=x.device),)

    def step(self, x, h):
        A, t = self.dictionary(x)
        z = h[0] - t * A.mT @ (A @ h[0] - x)
        return (torch.sign(z) * torch.clamp(z.abs() - t * self.lam, min=0.0),)

    def readout(self, x, h):
        return self.dictionary(x)[0] @ h[0]


hg.register_solver("NAME", ISTA, overwrite=True)
'''
