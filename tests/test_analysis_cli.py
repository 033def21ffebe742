"""``hamgrad spectrum``: the printed values against dense references computed here."""

import re

import pytest
import torch
from torch.func import jacrev

import hamgrad as hg
from hamgrad.cli import main
from hamgrad.fixed_point import flatten_state, unflatten_state


def test_spectrum_prints_top_k_eigenvalues_and_singular_values(capsys):
    d, n, r, K, k, seed = 8, 12, 2, 3, 3, 4
    rc = main(["spectrum", "--solver", "nmf", "--d", str(d), "--n", str(n), "--rank", str(r), "--steps", str(K),
               "-k", str(k), "--seed", str(seed), "--dtype", "float64"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "eigenvalues of dF/dh" in out and "singular values of dy/dx" in out and "matvecs" in out
    eig_part, sv_part = out.split("singular values of dy/dx")
    lams = [complex(float(a), float(b)) for a, b in re.findall(r"^\s+\d+\s+([+-][\d.]+) ([+-][\d.]+)j", eig_part,
                                                              re.M)]
    sigmas = [float(v) for v in re.findall(r"^\s+\d+\s+([\d.]+)\s+residual", sv_part, re.M)]
    assert len(lams) == k and len(sigmas) == k
    # the same configuration, by hand
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(d, n, generator=g, dtype=torch.float64)
    s = hg.NMF(rank=r)
    h0 = s.init(x, generator=g)

    def unrolled(v):
        x_, h = v.reshape(d, n), h0
        for _ in range(K):
            h = s.step(x_, h)
        return s.readout(x_, h).reshape(-1)

    h = h0
    for _ in range(K):
        h = s.step(x, h)
    Jh = jacrev(lambda v: flatten_state(s.step(x, unflatten_state(v, h))))(flatten_state(h))
    ref_eig = torch.linalg.eigvals(Jh)
    ref_eig = ref_eig[ref_eig.abs().argsort(descending=True)][:k]
    ref_sv = torch.linalg.svdvals(jacrev(unrolled)(x.reshape(-1)).reshape(d * n, d * n))[:k]
    for lam, ref in zip(lams, ref_eig.tolist()):
        assert abs(abs(lam) - abs(ref)) < 2e-6
    for sigma, ref in zip(sigmas, ref_sv.tolist()):
        assert sigma == pytest.approx(ref, abs=2e-6)


def test_spectrum_reports_bad_arguments(capsys):
    rc = main(["spectrum", "--d", "4", "--n", "8", "--rank", "6", "-k", "2"])
    assert rc == 2
    assert "rank=6 must be <= min(d, n)" in capsys.readouterr().err
    rc = main(["spectrum", "--d", "6", "--n", "8", "--rank", "2", "-k", "200"])
    assert rc == 2
    assert "k must satisfy" in capsys.readouterr().err
