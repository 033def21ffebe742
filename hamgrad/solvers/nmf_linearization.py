"""The hand-derived linearisation of the built-in NMF's multiplicative-update steps (docs/theory.md §2), beside the
solver it linearises. :mod:`hamgrad.analysis.linearize` registers it for :class:`~hamgrad.solvers.NMF`, so the
analysis (Jacobian operators, their Gram products, spectra) uses it instead of autograd; a user's solver can bring its
own the same way (:func:`hamgrad.analysis.linearize.register_linearization`).
"""

from __future__ import annotations

from functools import cached_property

import torch

from ..fixed_point import as_state
from .hams import NMF, _project

__all__ = ["NMFLinearization"]


def _codes_layout(C: torch.Tensor) -> torch.Tensor:
    """``C`` of shape ``(..., r, n)`` stored with ``n`` outermost and ``r`` innermost (physically ``(n, ..., r)``;
    for a 2-D ``C`` that is its transpose, the layout of the solvers' ``Dᵀ X = (Xᵀ D)ᵀ`` products, ``_project``).
    Every code-shaped tensor here, cached or tangent, has this layout: elementwise operations between mixed layouts
    are about ten times slower on CPU, and a block of code tangents is then one ``n × (b r)`` matrix for the
    products below."""
    return C.movedim(-1, 0).contiguous().movedim(0, -1)


def _codes_from(S: torch.Tensor, B: torch.Tensor, out: torch.Tensor | None = None,
                accumulate: bool = False) -> torch.Tensor:
    """``(S B)ᵀ`` of shape ``(..., r, n)`` for a shared ``S (n, k)`` and a block ``B (..., k, r)``: one GEMM
    ``S [B_1 … B_b]`` whose result is already in :func:`_codes_layout` (broadcast ``matmul`` when ``S`` is batched).
    With ``out`` (in that layout) the result is written there, or added to it if ``accumulate``."""
    if S.dim() != 2:
        return _into((S @ B).mT, out, accumulate)
    lead, (k, r) = B.shape[:-2], B.shape[-2:]
    if out is None:
        out = torch.empty((S.shape[0], *lead, r), dtype=B.dtype, device=B.device).movedim(0, -1)
    out.movedim(-1, 0).view(S.shape[0], -1).addmm_(S, B.movedim(-2, 0).reshape(k, -1), beta=float(accumulate))
    return out


def _codes_mix(F: torch.Tensor, S: torch.Tensor, out: torch.Tensor | None = None,
               accumulate: bool = False) -> torch.Tensor:
    """``Sᵀ F`` of shape ``(..., k, n)`` for a block of codes ``F (..., r, n)`` and a shared ``S (r, k)``, as one GEMM
    on the ``(n ⋯, r)`` rows of ``F`` (broadcast ``matmul`` when ``S`` is batched). With ``out`` (in
    :func:`_codes_layout`) the result is written there, or added to it if ``accumulate``."""
    if S.dim() != 2:
        return _into(_project(S, F), out, accumulate)
    lead, (r, n) = F.shape[:-2], F.shape[-2:]
    if out is None:
        out = torch.empty((n, *lead, S.shape[-1]), dtype=F.dtype, device=F.device).movedim(0, -1)
    out.movedim(-1, 0).view(-1, S.shape[-1]).addmm_(F.movedim(-1, 0).reshape(-1, r), S, beta=float(accumulate))
    return out


def _into(result: torch.Tensor, out: torch.Tensor | None, accumulate: bool) -> torch.Tensor:
    """``result`` written to ``out`` (added if ``accumulate``), or ``result`` itself without ``out``."""
    if out is None:
        return result
    return out.add_(result) if accumulate else out.copy_(result)


def _codes_times(F: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """``F Sᵀ`` of shape ``(..., r, k)`` for a block of codes ``F (..., r, n)`` and a shared ``S (k, n)``, as one GEMM
    ``S [F_1ᵀ … F_bᵀ]`` on the ``(n, ⋯ r)`` layout of ``F`` (broadcast ``matmul`` when ``S`` is batched)."""
    if S.dim() != 2:
        return F @ S.mT
    lead, (r, n) = F.shape[:-2], F.shape[-2:]
    return (S @ F.movedim(-1, 0).reshape(n, -1)).reshape(S.shape[0], *lead, r).movedim(0, -1)


def _fma(out: torch.Tensor | None, *pairs) -> torch.Tensor:
    """``Σ a ⊙ b`` over the pairs ``(a, b)`` whose ``a`` is not ``None`` (at least one), one pass per term, written
    to ``out`` (a new tensor if ``None``)."""
    present = [(a, b) for a, b in pairs if a is not None]
    total = torch.mul(*present[0], out=out)
    for a, b in present[1:]:
        total.addcmul_(a, b)
    return total


def _sum(*terms):
    """The sum of the terms that are not ``None`` (``None`` if all are)."""
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for t in present[1:]:
        total = total + t
    return total


class NMFLinearization:
    """The hand-derived linearisation of ``steps`` NMF steps from ``h = (D, C)`` (then ``y = DC`` if ``readout``).

    One step, with ``N = DᵀX``, ``G = DᵀD``, ``M = GC + eps``, ``C' = C ⊙ N ⊘ M``, ``P = XC'ᵀ``, ``S = C'C'ᵀ``,
    ``Q = DS + eps``, ``D' = D ⊙ P ⊘ Q``:

    - JVP: ``dN = dDᵀX + DᵀdX``, ``dM = (dDᵀD + DᵀdD)C + G dC``, ``dC' = (dC⊙N + C⊙dN − C'⊙dM) ⊘ M``;
      ``dP = dX C'ᵀ + X dC'ᵀ``, ``dS = dC'C'ᵀ``, ``dQ = dD S + D (dS + dSᵀ)``, ``dD' = (dD⊙P + D⊙dP − D'⊙dQ) ⊘ Q``;
      readout ``dy = dD C + D dC``.
    - VJP: the transposes of the same products in reverse order; ``X̄ = Σ_t P̄_t C_{t+1} + D_t N̄_t``.

    ``steps = 0`` with ``readout=True`` is the readout alone. A block of code tangents is stored ``n``-outermost
    (:func:`_codes_layout`), so that its products with ``X`` and with the cached codes are single GEMMs and its
    elementwise updates (cached ratios ``N/M``, ``C/M``, ``C'/M``; in place where possible) never mix layouts.
    The large temporaries of a product are kept and reused by the next product of the same block size
    (:meth:`_codes_scratch`); what a product returns never shares their memory. One linearisation must therefore not
    run products from several threads at once.
    """

    def __init__(self, solver: NMF, h, x: torch.Tensor, steps: int = 1, readout: bool = False):
        if steps < 0 or (steps == 0 and not readout):
            raise ValueError(f"steps must be >= 1 (or 0 with readout=True), got steps={steps}")
        D, C = (t.detach() for t in as_state(h, "h"))
        C = _codes_layout(C)
        X = x.detach()
        eps = solver.eps
        self.x, self.h, self.readout = X, (D, C), readout
        self.xt = X.mT.contiguous() if X.dim() == 2 else X.mT  # Xᵀ (n, d), the fast operand for code products
        self.cache = []  # per step: D, C, G, C', P, S, Q, D', N/M, C/M, C'/M
        self._scratch: dict[str, torch.Tensor] = {}  # reused temporaries (:meth:`_codes_scratch`)
        for _ in range(steps):
            N = _project(D, X)
            G = D.mT @ D
            M = _project(G, C) + eps
            C1 = C * N / M
            P = X @ C1.mT
            S = C1 @ C1.mT
            Q = D @ S + eps
            D1 = D * P / Q
            self.cache.append((D, C, G, C1, P, S, Q, D1, N / M, C / M, C1 / M))
            D, C = D1, C1
        self.final = (D, C)
        self.out = (D @ C,) if readout else (D, C)
        if steps:
            # the K inputs D_t and outputs C_{t+1} side by side: one product with dX for all steps
            self.D_all = torch.cat([c[0] for c in self.cache], dim=-1)  # (..., d, K r)
            self.C_all = torch.cat([c[3] for c in self.cache], dim=-2)  # (..., K r, n)

    def jvp(self, dh=None, dx=None) -> tuple:
        """The tangent of the output for tangents ``dh = (dD, dC)`` and ``dx`` (leading batch dim; ``None`` = 0)."""
        if dh is None and dx is None:
            raise ValueError("jvp needs a tangent for h or for x (both are None)")
        if dh is None and not self.cache:  # the readout alone does not depend on x
            return (torch.zeros((dx.shape[0], *self.out[0].shape), dtype=dx.dtype, device=dx.device),)
        dD, dC = dh if dh is not None else (None, None)
        dC = None if dC is None else _codes_layout(dC)
        if self.cache and dx is not None:  # D_tᵀ dX and dX C_{t+1}ᵀ for all t, one product each
            return self._jvp(dD, dC, _project(self.D_all, dx), dx @ self.C_all.mT)
        return self._jvp(dD, dC, None, None)

    def _jvp(self, dD, dC, DX_all, XC_all) -> tuple:
        """The JVP given the input tangent's products with every step's ``D_t`` and ``C_{t+1}``, side by side
        (``(b, K r, n)`` and ``(b, d, K r)``; ``None``: no input tangent)."""
        X, r, steps = self.x, self.final[0].shape[-1], len(self.cache)
        if steps:
            lead = next(t for t in (dD, dC, DX_all) if t is not None).shape[:-2]
            dN_buf, dM_buf, *dC_bufs = (self._codes_scratch(name, lead, r) for name in ("dN", "dM", "dC0", "dC1"))
        if DX_all is not None:
            DX_all, XC_all = torch.split(DX_all, r, dim=-2), torch.split(XC_all, r, dim=-1)
        for t, (D, C, G, C1, P, S, Q, D1, NM, CM, C1M) in enumerate(self.cache):
            if dD is not None:
                dN = _codes_from(self.xt, dD, out=dN_buf)
                if DX_all is not None:
                    dN += DX_all[t]
                dG = dD.mT @ D
                dM = _codes_from(C.mT, dG + dG.mT, out=dM_buf)
                if dC is not None:
                    _codes_mix(dC, G, out=dM, accumulate=True)
            else:
                dN = None if DX_all is None else DX_all[t]
                dM = None if dC is None else _codes_mix(dC, G, out=dM_buf)
            # dC' = dC ⊙ N/M + dN ⊙ C/M − dM ⊙ C'/M, accumulated in place (these r × n passes are memory-bound);
            # between steps in alternating buffers, the last one new (it is returned)
            dC1 = _fma(self._new_codes(lead, r) if t == steps - 1 else dC_bufs[t % 2], (dC, NM), (dN, CM))
            if dM is not None:
                dC1.addcmul_(dM, C1M, value=-1)
            dP = _sum(None if XC_all is None else XC_all[t], _codes_times(dC1, X).mT)
            dS = _codes_times(dC1, C1)
            dQ = _sum(None if dD is None else dD @ S, D @ (dS + dS.mT))
            dD = _sum(None if dD is None else dD * P, D * dP, -D1 * dQ) / Q
            dC = dC1
        if not self.readout:
            return dD, dC
        D, C = self.final
        return (_sum(None if dD is None else dD @ C, None if dC is None else D @ dC),)

    def vjp(self, g, wrt_x: bool = False) -> tuple:
        """``((D̄, C̄), X̄)`` for a block of output cotangents; ``X̄`` only if ``wrt_x``."""
        (gD, gC), bar_P, bar_N = self._vjp(g, need_h=True)
        if not wrt_x:
            return (gD, gC), None
        if not self.cache:  # the readout alone does not depend on x
            return (gD, gC), torch.zeros((gD.shape[0], *self.x.shape), dtype=gD.dtype, device=gD.device)
        # X̄ = Σ_t P̄_t C_{t+1} + D_t N̄_t, as two products over all steps
        bar_x = bar_P @ self.C_all
        bar_x += self.D_all @ bar_N
        return (gD, gC), bar_x

    def _vjp(self, g, need_h: bool) -> tuple:
        """``((D̄, C̄), P̄, N̄)``: the state's cotangent (``(None, None)`` unless ``need_h``) and the cotangents of
        every step's ``P_t = X C_{t+1}ᵀ`` and ``N_t = D_tᵀ X``, side by side (``(b, d, K r)`` and ``(b, K r, n)``;
        ``None`` without steps), from which ``X̄ = P̄ [C_1 … C_K] + [D_0 … D_{K−1}] N̄``."""
        X = self.x
        if self.readout:
            (gy,), (D, C) = g, self.final
            gD, gC = gy @ C.mT, _project(D, gy)
        else:
            gD, gC = g
        steps, r, lead = len(self.cache), gD.shape[-1], gC.shape[:-2]
        if not steps:
            return (gD, _codes_layout(gC)), None, None
        # C̄ between steps in two alternating buffers (the given cotangent is copied, not modified), the last one new
        gC_bufs = [self._codes_scratch(name, lead, r) for name in ("gC0", "gC1")]
        gC = gC_bufs[0].copy_(gC)
        bar_P = []
        # N̄, filled step by step (rows t r … (t + 1) r of N̄ belong to step t)
        bar_N = self._codes_scratch("bar_N", lead, steps * r)
        for t in reversed(range(steps)):
            D, C, G, C1, P, S, Q, D1, NM, CM, C1M = self.cache[t]
            # D' = D ⊙ P ⊘ Q,  Q = D S + eps,  S = C'C'ᵀ,  P = X C'ᵀ
            gq = gD / Q
            bQ = -gq * D1
            bP = gq * D
            bS = D.mT @ bQ
            gm = _codes_from(self.xt, bP, out=gC, accumulate=True)
            _codes_from(C1.mT, bS + bS.mT, out=gm, accumulate=True)  # C̄', in C̄'s buffer
            gD = gq * P + bQ @ S
            # C' = C ⊙ N ⊘ M,  M = G C + eps,  G = DᵀD,  N = DᵀX
            bN = torch.mul(gm, CM, out=self._codes_scratch("bN", lead, r))  # contiguous, for the products below
            bar_N[..., t * r:(t + 1) * r, :] = bN
            bar_P.append(bP)
            if t == 0 and not need_h:  # the initial state's cotangent is not wanted
                break
            bM = torch.mul(gm, C1M, out=self._codes_scratch("bM", lead, r))  # −M̄
            gC = torch.mul(gm, NM, out=self._new_codes(lead, r) if t == 0 else gC_bufs[(steps - t) % 2])
            _codes_mix(bM, -G, out=gC, accumulate=True)
            bG = _codes_times(bM, C)  # −Ḡ
            gD = gD - D @ (bG + bG.mT) + _codes_times(bN, X).mT
        return ((gD, gC) if need_h else (None, None)), torch.cat(bar_P[::-1], dim=-1), bar_N

    def x_cogram(self, g) -> tuple:
        """``(∂out/∂x)(∂out/∂x)ᵀ g`` for a block of output cotangents, without forming the ``d × n`` input tangent:
        with ``X̄ = P̄ C_all + D_all N̄`` (:meth:`_vjp`), the JVP needs only ``D_allᵀ X̄ = (D_allᵀ P̄) C_all + (D_allᵀ
        D_all) N̄`` and ``X̄ C_allᵀ = P̄ (C_all C_allᵀ) + D_all (N̄ C_allᵀ)``: three ``K r × K r × n`` products in place
        of four ``d × n × K r`` ones."""
        if not self.cache:
            raise ValueError("x_cogram needs at least one step: the readout alone does not depend on x")
        _, bar_P, bar_N = self._vjp(g, need_h=False)
        gram_D, gram_C = self._grams
        DX_all = _codes_from(self.C_all.mT, _project(bar_P, self.D_all),  # (D_allᵀ P̄) C_all
                             out=self._codes_scratch("DX_all", bar_N.shape[:-2], bar_N.shape[-2]))
        _codes_mix(bar_N, gram_D, out=DX_all, accumulate=True)
        XC_all = bar_P @ gram_C + self.D_all @ _codes_times(bar_N, self.C_all)
        return self._jvp(None, None, DX_all, XC_all)

    def h_gram(self, dh) -> tuple:
        """``(∂y/∂h)ᵀ(∂y/∂h) dh`` of the readout alone (``steps=0, readout=True``), without the ``d × n`` tangent:
        ``(dD CCᵀ + D dC Cᵀ, DᵀdD C + DᵀD dC)``. The code tangent is used in the layout it comes in (every product
        here has ``r`` as its inner dimension), and ``C̄`` is returned ``r``-major (the layout of a flat state), so a
        flat vector goes in and out without a transposing copy."""
        if self.cache or not self.readout:
            raise ValueError("h_gram is the readout's Gram product: it needs steps=0 and readout=True")
        (dD, dC), (D, C) = dh, self.final
        DD, CC = self._grams
        return dD @ CC + D @ (dC @ C.mT), (D.mT @ dD) @ C + DD @ dC

    def gram_products(self, wrt: str) -> tuple:
        """``(gram, cogram)`` of the Jacobian w.r.t. ``wrt`` on structured tangents, ``None`` where there is no
        hand-derived one: :meth:`x_cogram` for ``∂out/∂x`` of at least one step, :meth:`h_gram` for the readout's
        ``∂y/∂h``."""
        if wrt == "x" and self.cache:
            return None, self.x_cogram
        if wrt == "h" and not self.cache:
            return self.h_gram, None
        return None, None

    def _new_codes(self, lead: tuple, r: int) -> torch.Tensor:
        """An uninitialised block of codes ``(*lead, r, n)`` in :func:`_codes_layout`."""
        X = self.x
        return torch.empty((X.shape[-1], *lead, r), dtype=X.dtype, device=X.device).movedim(0, -1)

    def _codes_scratch(self, name: str, lead: tuple, r: int) -> torch.Tensor:
        """A block of codes like :meth:`_new_codes`, kept under ``name`` and reused by every later product of the same
        block size (its contents are undefined, and it is never returned). On CPU, fresh memory for these
        temporaries is page-faulted and zeroed by the system on every product: reusing it made a product at the paper
        size about a quarter faster."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape[:-1] != (*lead, r):
            buf = self._scratch[name] = self._new_codes(lead, r)
        return buf

    @cached_property
    def _grams(self) -> tuple:
        """``(AᵀA, BBᵀ)`` for the steps' ``A = D_all``, ``B = C_all`` (:meth:`x_cogram`), or for the readout alone
        ``A = D``, ``B = C`` (:meth:`h_gram`); computed on first use."""
        A, B = (self.D_all, self.C_all) if self.cache else self.final
        return A.mT @ A, B @ B.mT
