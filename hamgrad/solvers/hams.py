"""The three hams of the paper, exactly as docs/theory.md §2 writes them.

Matrix products are ordered so that no ``d × n`` intermediate is formed inside a step: ``DᵀDC`` is ``(DᵀD)C`` and
``DCCᵀ`` is ``D(CCᵀ)``. Codes ``C (..., r, n)`` are contiguous and ``DᵀX`` is one GEMM of that shape: measured in
``benchmarks/bench_core.py`` (one thread and two), this layout is faster than computing ``(XᵀD)ᵀ`` with codes stored
as ``(n, r)`` like the official code, whose backward also returns ``∂/∂X`` transposed (one more d × n copy).
"""

from __future__ import annotations

import torch

from .._checks import check_positive
from .base import Solver, register_solver


def _unit_columns(D: torch.Tensor, eps: float) -> torch.Tensor:
    """Columns scaled to unit ℓ2 norm (norms below ``eps`` are clamped)."""
    return D / D.norm(dim=-2, keepdim=True).clamp_min(eps)


def _project(D: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Dᵀ x`` of shape ``(..., r, n)``."""
    return D.mT @ x


def _weighted_means(x: torch.Tensor, C: torch.Tensor, eps: float) -> torch.Tensor:
    """``X Cᵀ diag(C 1_n + eps)⁻¹``: each basis is the assignment-weighted mean of the columns of x."""
    return (x @ C.mT) / (C.sum(dim=-1).unsqueeze(-2) + eps)


class NMF(Solver):
    """Non-negative matrix factorisation by Lee–Seung multiplicative updates.

    Input must be non-negative (the lower bread ends in a ReLU). Init: ``D ~ U(0, 1)`` with unit columns,
    ``C = softmax_r(Dᵀ X)``. Step: ``C ← C ⊙ DᵀX ⊘ (DᵀD C + eps)``, then ``D ← D ⊙ XCᵀ ⊘ (D CCᵀ + eps)``.
    Objective ``‖X − DC‖_F²`` (non-increasing under each step).
    """

    name = "nmf"
    nonnegative = True

    def _random_bases(self, shape, x, generator):
        D = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
        return _unit_columns(D, self.eps)

    def _init_codes(self, x, D):
        return torch.softmax(_project(D, x), dim=-2)

    def _mu_codes(self, x, D, C):
        return C * _project(D, x) / ((D.mT @ D) @ C + self.eps)

    def _update(self, x, D, C):
        """The step, and the products ``X Cᵀ`` and ``C Cᵀ`` of the new codes it formed."""
        C = self._mu_codes(x, D, C)
        XCt, CCt = x @ C.mT, C @ C.mT
        return D * XCt / (D @ CCt + self.eps), C, XCt, CCt

    def _step(self, x, D, C):
        return self._update(x, D, C)[:2]

    _coef_codes = _mu_codes

    def _monitor_constants(self, x):
        return torch.linalg.vector_norm(x, dim=(-2, -1)).square()

    def _step_and_objective(self, x, D, C, x_sq):
        """The step and ``‖X − DC‖² = ‖X‖² − 2⟨XCᵀ, D⟩ + ⟨DᵀD, CCᵀ⟩`` at the new state, from the step's ``XCᵀ`` and
        ``CCᵀ``: no d × n product (in float32 the difference loses digits only when the fit is nearly exact)."""
        D, C, XCt, CCt = self._update(x, D, C)
        with torch.no_grad():
            Dd = D.detach()
            obj = x_sq - 2 * (XCt.detach() * Dd).sum(dim=(-2, -1)) + ((Dd.mT @ Dd) * CCt.detach()).sum(dim=(-2, -1))
        return (D, C), obj.clamp_min(0)


class SoftVQ(Solver):
    """Soft vector quantisation (a differentiable soft k-means) at temperature ``T = 1 / inv_t``.

    Init: ``D ~ N(0, 1)`` with unit columns, ``C = softmax_r(inv_t · DᵀX)``. Step:
    ``C ← softmax_r(inv_t · cos(D, X))``, then ``D ← X Cᵀ diag(C 1_n + eps)⁻¹``. ``inv_t → ∞`` is hard k-means.
    """

    name = "vq"

    def __init__(self, rank: int, inv_t: float = 100.0, eps: float = 1e-6):
        super().__init__(rank, eps)
        self.inv_t = check_positive(inv_t, "inv_t")

    def hparams(self) -> dict:
        return {**super().hparams(), "inv_t": self.inv_t}

    def _magnitudes(self, amax, d, n):
        # the scores inv_t · Dᵀx of unit bases against columns of norm <= sqrt(d) max|x|
        return {**super()._magnitudes(amax, d, n), "inv_t": self.inv_t, "inv_t * sqrt(d) * max|x|":
                self.inv_t * d ** 0.5 * amax}

    def _random_bases(self, shape, x, generator):
        D = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        return _unit_columns(D, self.eps)

    def _init_codes(self, x, D):
        return torch.softmax(self.inv_t * _project(D, x), dim=-2)

    def _cos_codes(self, D, x_unit):
        return torch.softmax(self.inv_t * _project(_unit_columns(D, self.eps), x_unit), dim=-2)

    def _step(self, x, D, C):
        C = self._cos_codes(D, _unit_columns(x, self.eps))
        return _weighted_means(x, C, self.eps), C

    def _coef_codes(self, x, D, C):
        # As the official VQ2D.compute_coef: x over (eps + its column norm), the norm computed without graph.
        return self._cos_codes(D, x / (x.detach().norm(dim=-2, keepdim=True) + self.eps))


class CD(Solver):
    """Concept decomposition: D by spherical soft k-means, codes by ridge regression at readout.

    Init: ``D ~ N(0, 1)`` with unit columns, ``C = softmax_r(inv_t · Dᵀ normalize(X))``. Step:
    ``C ← softmax_r(inv_t · Dᵀ normalize(X))``, then ``D ← normalize(X Cᵀ diag(C 1_n + eps)⁻¹)``.
    Readout codes ``(DᵀD + beta·I)⁻¹ DᵀX``; objective ``‖X − DC‖_F² + beta‖C‖_F²`` with those codes.
    """

    name = "cd"

    def __init__(self, rank: int, inv_t: float = 100.0, beta: float = 0.1, eps: float = 1e-6):
        super().__init__(rank, eps)
        self.inv_t = check_positive(inv_t, "inv_t")
        self.beta = check_positive(beta, "beta")

    def hparams(self) -> dict:
        return {**super().hparams(), "inv_t": self.inv_t, "beta": self.beta}

    def _magnitudes(self, amax, d, n):
        return {**super()._magnitudes(amax, d, n), "inv_t": self.inv_t, "beta": self.beta}

    _random_bases = SoftVQ._random_bases

    def _init_codes(self, x, D):
        return torch.softmax(self.inv_t * _project(D, _unit_columns(x, self.eps)), dim=-2)

    def _step(self, x, D, C):
        C = self._init_codes(x, D)
        return _unit_columns(_weighted_means(x, C, self.eps), self.eps), C

    def _readout_codes(self, x, D, C):
        eye = torch.eye(self.rank, dtype=D.dtype, device=D.device)
        return torch.linalg.solve(D.mT @ D + self.beta * eye, _project(D, x))

    _coef_codes = _readout_codes

    def _objective(self, x, D, C):
        codes = self._readout_codes(x, D, C)
        return ((x - D @ codes) ** 2).sum(dim=(-2, -1)) + self.beta * (codes ** 2).sum(dim=(-2, -1))


register_solver("nmf", NMF)
register_solver("vq", SoftVQ)
register_solver("softvq", SoftVQ)
register_solver("cd", CD)
