"""The operator algebra of hamgrad.linalg against dense matrices; the Krylov solvers on operators; import layering."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hamgrad.analysis
import hamgrad.analysis.operators
from hamgrad._krylov import fixed_point_solve, gmres
from hamgrad.linalg import IdentityOperator, InverseOperator, LinearOperator

PACKAGE = Path(__file__).resolve().parents[1] / "hamgrad"


def _randn(g, device, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)


def test_operator_algebra_equals_dense_matrices(device):
    g = torch.Generator().manual_seed(4)
    A, B, C = _randn(g, device, 6, 6), _randn(g, device, 6, 6), _randn(g, device, 6, 4)
    opA, opB, opC = (LinearOperator.from_dense(M, name) for M, name in ((A, "A"), (B, "B"), (C, "C")))
    eye = IdentityOperator(6, dtype=torch.float64, device=device)
    I = torch.eye(6, dtype=torch.float64, device=device)
    for op, ref in ((opA + opB, A + B), (opA - opB, A - B), (2.5 * opA, 2.5 * A), (opA * -1, -A), (-opA, -A),
                    (eye - 0.1 * opA, I - 0.1 * A), ((opA + opB) @ opC, (A + B) @ C), (eye, I)):
        torch.testing.assert_close(op.dense(), ref)
        torch.testing.assert_close(op.T.dense(), ref.T)
        V, U = _randn(g, device, 2, op.shape[1]), _randn(g, device, 2, op.shape[0])
        torch.testing.assert_close(op.gram(V), V @ ref.T @ ref)
        torch.testing.assert_close(op.cogram(U), U @ ref @ ref.T)
    # (I − 0.1 A)⁻¹ C by GMRES, against torch.linalg.solve; the transpose shares the solves' record
    inv = InverseOperator(eye - 0.1 * opA, tol=1e-12)
    ref = torch.linalg.solve(I - 0.1 * A, C)
    torch.testing.assert_close((inv @ opC).dense(), ref)
    torch.testing.assert_close((inv @ opC).T.dense(), ref.T)
    assert inv.solves and all(r.converged for r in inv.solves) and inv.T.solves is inv.solves
    with pytest.raises(ValueError, match="shapes differ"):
        opA + opC
    with pytest.raises(ValueError, match="inner sizes 4 and 6 differ"):
        opC @ opA
    with pytest.raises(ValueError, match="square"):
        InverseOperator(opC, tol=1e-8)
    with pytest.raises(TypeError, match="apply and rapply"):
        LinearOperator((2, 2), dtype=torch.float64, device="cpu")
    with pytest.raises(ValueError, match=r"A apply: expected a block of shape \(b, 6\), got \(1, 4\)"):
        opA @ torch.ones(4, dtype=torch.float64, device=device)


def test_composition_transpose_and_dense_orientation(device):
    g = torch.Generator().manual_seed(0)
    A, B = _randn(g, device, 5, 7), _randn(g, device, 7, 3)
    opA, opB = LinearOperator.from_dense(A, "A"), LinearOperator.from_dense(B, "B")
    AB = opA @ opB
    assert AB.shape == (5, 3)
    torch.testing.assert_close(AB.dense(), A @ B)  # tall side: columns by JVPs
    torch.testing.assert_close(AB.T.dense(), (A @ B).T)  # wide side: rows by VJPs
    torch.testing.assert_close(opA.dense(chunk_size=2), A)
    u = _randn(g, device, 5)
    torch.testing.assert_close(AB.T @ u, (A @ B).T @ u)
    assert AB.factors == (opA, opB)
    assert AB.T.factors[0].shape == (3, 7) and AB.T.factors[1].shape == (7, 5)
    # Gram products (default: through apply and rapply), also of the transpose and of the composition
    V, U = _randn(g, device, 2, 3), _randn(g, device, 2, 5)
    torch.testing.assert_close(AB.gram(V), V @ (A @ B).T @ (A @ B))
    torch.testing.assert_close(AB.cogram(U), U @ (A @ B) @ (A @ B).T)
    torch.testing.assert_close(AB.T.gram(U), AB.cogram(U))
    W = _randn(g, device, 2, 7)
    torch.testing.assert_close(opA.T.cogram(W), W @ A.T @ A)


@pytest.mark.parametrize("solver", [fixed_point_solve, gmres], ids=["fixed-point", "gmres"])
def test_krylov_solvers_take_an_operator_or_its_matvec(device, solver):
    """``M = I − A`` with ‖A‖₂ = 0.5 (both methods converge), against torch.linalg.solve."""
    g = torch.Generator().manual_seed(1)
    A = _randn(g, device, 8, 8)
    A = 0.5 * A / torch.linalg.matrix_norm(A, ord=2)
    b = _randn(g, device, 8)
    M = IdentityOperator(8, dtype=torch.float64, device=device) - LinearOperator.from_dense(A, "A")
    want = torch.linalg.solve(torch.eye(8, dtype=torch.float64, device=device) - A, b)
    by_operator = solver(M, b, 1e-12, 200)
    by_function = solver(lambda v: v - A @ v, b, 1e-12, 200)
    for res in (by_operator, by_function):
        assert res.converged and res.residual <= 1e-12
        torch.testing.assert_close(res.x, want, rtol=1e-10, atol=1e-12)
    assert by_operator.iterations == by_function.iterations


def test_the_algebra_is_re_exported_where_it_was():
    for name in ("LinearOperator", "IdentityOperator", "InverseOperator"):
        assert getattr(hamgrad.analysis, name) is getattr(hamgrad.linalg, name)
        assert getattr(hamgrad.analysis.operators, name) is getattr(hamgrad.linalg, name)
    assert issubclass(hamgrad.analysis.JacobianOperator, hamgrad.linalg.LinearOperator)


def test_grad_and_linalg_import_nothing_from_the_layers_above():
    """In a fresh interpreter, with the package's own ``__init__`` (which loads the analysis for ``hg.jacobian``)
    bypassed, importing ``hamgrad.grad`` and ``hamgrad.linalg`` loads no module of the analysis or above."""
    code = (f"import sys, types\npkg = types.ModuleType('hamgrad')\npkg.__path__ = [{str(PACKAGE)!r}]\n"
            "sys.modules['hamgrad'] = pkg\nimport hamgrad.grad, hamgrad.linalg\n"
            "print(sorted(m for m in sys.modules if m.startswith('hamgrad.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out.strip().splitlines()[-1])
    assert {"hamgrad.grad", "hamgrad.linalg", "hamgrad._krylov"} <= set(loaded)
    above = ("analysis", "nn", "experiments", "data", "plots", "paper", "figures", "cli", "cost")
    assert [m for m in loaded if m.split(".")[1] in above] == []
