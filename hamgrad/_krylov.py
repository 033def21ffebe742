"""Small matrix-free linear solvers in torch, so that backward solves stay on the input's device.

Each solves ``M u = b`` for a square ``M`` given as a :class:`hamgrad.linalg.LinearOperator` (or anything else with
``M @ v``, e.g. a matrix) or as a function ``v -> M v`` on 1-D vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class LinearSolveResult:
    """A matrix-free solve's answer ``x`` and statistics (``residual`` is relative to ‖b‖)."""

    x: torch.Tensor
    residual: float
    iterations: int
    converged: bool
    method: str

    def to_dict(self) -> dict:
        """The statistics as plain data (without ``x``)."""
        return {"residual": self.residual, "iterations": self.iterations, "converged": self.converged,
                "method": self.method}


def as_matvec(M) -> Callable:
    """``v -> M v`` on 1-D vectors: ``M`` itself when it is a function, else ``lambda v: M @ v`` (an operator)."""
    return M if callable(M) else (lambda v: M @ v)


def fixed_point_solve(M, b: torch.Tensor, tol: float, max_iter: int) -> LinearSolveResult:
    """Solve ``M u = b`` by the iteration ``u ← u + (b − M u)``: for ``M = I − A`` the fixed-point iteration
    ``u ← b + A u`` of ``u = b + A u``, which converges when ``ρ(A) < 1``. One product with ``M`` an iteration."""
    apply_M = as_matvec(M)
    b_norm = float(b.norm())
    u = b.clone()
    res = 0.0 if b_norm == 0 else float("inf")
    it = 0
    while it < max_iter and res > tol:
        r = b - apply_M(u)
        it += 1
        res = float(r.norm()) / b_norm
        if not math.isfinite(res):
            break
        u = u + r
    return LinearSolveResult(u, res, it, res <= tol, "fixed-point")


def gmres(M, b: torch.Tensor, tol: float, max_iter: int, restart: int = 30) -> LinearSolveResult:
    """Restarted GMRES for ``M u = b``; ``max_iter`` bounds the products with ``M``.

    Arnoldi with modified Gram–Schmidt; the small least-squares problem (at most ``restart`` columns) is re-solved at
    each inner step for the residual estimate, and the true residual is recomputed at every restart.
    """
    apply_M = as_matvec(M)
    b_norm = float(b.norm())
    u = torch.zeros_like(b)
    r, it = b.clone(), 0
    while True:
        beta = float(r.norm())
        if beta <= tol * b_norm or it >= max_iter:
            break
        V = [r / beta]
        H = torch.zeros(restart + 1, restart, dtype=b.dtype, device=b.device)
        rhs = torch.zeros(restart + 1, 1, dtype=b.dtype, device=b.device)
        rhs[0, 0] = beta
        for j in range(restart):
            w = apply_M(V[j])
            it += 1
            for i in range(j + 1):
                H[i, j] = torch.dot(w, V[i])
                w = w - H[i, j] * V[i]
            H[j + 1, j] = w.norm()
            y = torch.linalg.lstsq(H[: j + 2, : j + 1], rhs[: j + 2]).solution
            estimate = float((rhs[: j + 2] - H[: j + 2, : j + 1] @ y).norm())
            if estimate <= tol * b_norm or it >= max_iter or float(H[j + 1, j]) <= 1e-14 * beta:
                break
            V.append(w / H[j + 1, j])
        u = u + torch.stack(V[: j + 1], dim=1) @ y.squeeze(1)
        r = b - apply_M(u)
        it += 1
    res = beta / b_norm if b_norm > 0 else 0.0
    return LinearSolveResult(u, res, it, res <= tol, "gmres")
