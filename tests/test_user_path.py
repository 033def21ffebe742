"""A user's own solver end to end: the plots API on result objects, ``hamgrad spectrum --import``, ``--version``,
and what ``import hamgrad`` loads."""

import json
import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import hamgrad as hg
from hamgrad.cli import main

import models
from models import ISTA_SOLVER_SOURCE

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd=ROOT) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout's hamgrad."""
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------------- import hamgrad
def test_import_hamgrad_loads_only_the_core():
    # torch itself imports tqdm (torch.hub), so "not loaded" means: nothing beyond what `import torch` loaded
    code = ("import sys, json, torch\n"
            "before = set(sys.modules)\n"
            "import hamgrad as hg\n"
            "new = sorted(set(sys.modules) - before)\n"
            "lazy = 'hamgrad.experiments' in sys.modules\n"
            "hg.experiments.AblationConfig\n"
            "print(json.dumps([new, lazy, 'hamgrad.experiments' in sys.modules]))\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    new, loaded_before_access, loaded_after_access = json.loads(proc.stdout)
    heavy = ("hamgrad.experiments", "hamgrad.data", "hamgrad.plots", "hamgrad.figures", "hamgrad.paper", "PIL", "tqdm",
             "matplotlib", "seaborn")
    assert [m for m in new if m.split(".")[0] in heavy or m.startswith(heavy)] == []
    assert not loaded_before_access and loaded_after_access


def test_lazy_attributes_and_public_names():
    assert hg.plots.__name__ == "hamgrad.plots" and hg.experiments.__name__ == "hamgrad.experiments"
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        hg.not_a_module
    for name in hg.__all__:
        assert not name.startswith("_") and getattr(hg, name) is not None
    assert {"experiments", "data", "plots", "figures", "paper"} <= set(dir(hg))


def test_every_all_list_holds_public_names_that_exist():
    import importlib
    import pkgutil

    wrong = []
    for info in pkgutil.walk_packages(hg.__path__, "hamgrad."):
        module = importlib.import_module(info.name)
        wrong += [f"{info.name}.{n}" for n in getattr(module, "__all__", []) if n.startswith("_") or
                  not hasattr(module, n)]
    assert wrong == []


def test_version_matches_the_package_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert hg.__version__ == meta["project"]["version"]


# ---------------------------------------------------------------------- the CLI on a user's solver
@pytest.fixture
def registry(monkeypatch):
    """The solver registry and sys.path as they were before the test (the CLI's imports add to both)."""
    from hamgrad.solvers import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(sys, "path", list(sys.path))


def _write_solver(folder: Path, module: str, name: str) -> Path:
    path = folder / f"{module}.py"
    path.write_text(ISTA_SOLVER_SOURCE.replace('"NAME"', repr(name)), encoding="utf-8")
    return path


def _printed_eigenvalues(out: str) -> list:
    eig_part = out.split("singular values of dy/dx")[0]
    return [complex(float(a), float(b)) for a, b in re.findall(r"^\s+\d+\s+([+-][\d.]+) ([+-][\d.]+)j", eig_part,
                                                                 re.M)]


def test_spectrum_on_a_solver_imported_from_a_file(tmp_path, capsys, registry):
    path = _write_solver(tmp_path, "my_lasso", "lasso_file")
    d, n, rank, K, k = 6, 2, 3, 40, 4
    rc = main(["spectrum", "--import", str(path), "--solver", "lasso_file", "--solver-arg", "lam=0.02",
               "--solver-arg", f"rank={rank}", "--d", str(d), "--n", str(n), "--steps", str(K), "-k", str(k),
               "--dtype", "float64", "--seed", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "solver lasso_file: ISTA(rank=3, lam=0.02, step_factor=1.0, seed=0)" in out
    lams = _printed_eigenvalues(out)
    assert len(lams) == k
    # independent reference: ISTA's J = ∂F/∂h is diag(active) (I − t AᵀA) per column of X (numpy, float64)
    solver = hg.get_solver("lasso_file", rank=rank, lam=0.02)
    x = torch.rand(d, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = solver.init(x)
    for _ in range(K):
        h = solver.step(x, h)
    A, t = (np.asarray(v) for v in solver.dictionary(x))
    M = np.eye(rank) - t * A.T @ A
    Z = h[0].numpy() - t * A.T @ (A @ h[0].numpy() - x.numpy())
    ref = []
    for j in range(n):
        active = np.abs(Z[:, j]) > t * 0.02
        ref += list(np.abs(np.linalg.eigvals(M[np.ix_(active, active)]))) + [0.0] * int((~active).sum())
    ref = sorted(ref, reverse=True)[:k]
    assert ref[0] > 0.1  # the test exercises a non-trivial active set
    assert [abs(v) for v in lams] == pytest.approx(ref, abs=1e-6)


def test_spectrum_imports_a_module_by_name_from_the_current_directory(tmp_path, capsys, registry, monkeypatch):
    _write_solver(tmp_path, "lasso_by_name", "lasso_mod")
    monkeypatch.chdir(tmp_path)
    rc = main(["spectrum", "--import", "lasso_by_name", "--solver", "lasso_mod", "--d", "5", "--n", "3", "-k", "2"])
    assert rc == 0, capsys.readouterr().err
    assert "solver lasso_mod: ISTA(rank=4, lam=0.05" in capsys.readouterr().out  # a user's solver gets no --rank


def test_spectrum_finds_a_solver_through_an_entry_point(tmp_path, capsys, registry, monkeypatch):
    _write_solver(tmp_path, "lasso_plugin", "lasso_self_registered")
    info = tmp_path / "lasso_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lasso-plugin\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[hamgrad.solvers]\nlasso_ep = lasso_plugin:ISTA\n"
                                           "lasso_broken = no_such_package_xyz:ISTA\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    rc = main(["spectrum", "--solver", "lasso_ep", "--rank", "2", "--d", "4", "--n", "2", "-k", "1"])
    assert rc == 0, capsys.readouterr().err
    assert "solver lasso_ep: ISTA(rank=2" in capsys.readouterr().out
    assert "lasso_ep" in hg.available_solvers()
    assert main(["spectrum", "--solver", "nope"]) == 2
    assert "available: cd, lasso_broken, lasso_ep, lasso_self_registered, nmf" in capsys.readouterr().err
    assert main(["spectrum", "--solver", "lasso_broken"]) == 2
    assert capsys.readouterr().err == ("hamgrad spectrum: error: solver 'lasso_broken': loading its entry point "
                                       "'no_such_package_xyz:ISTA' (group hamgrad.solvers) raised ModuleNotFoundError: "
                                       "No module named 'no_such_package_xyz'\n")


def test_solver_args_reach_a_builtin_solver(capsys):
    rc = main(["spectrum", "--solver", "vq", "--solver-arg", "inv_t=10", "--solver-arg", "eps=1e-5", "--rank", "2",
               "--d", "4", "--n", "6", "--steps", "2", "-k", "1", "--dtype", "float64"])
    assert rc == 0, capsys.readouterr().err
    assert "SoftVQ(rank=2, eps=1e-05, inv_t=10" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--import", "no_such_module_xyz"], "--import no_such_module_xyz: no module named 'no_such_module_xyz'"),
    (["--import", "missing/solver.py"], "--import missing/solver.py: no such file"),
    (["--solver", "nope"], "unknown --solver 'nope'; available: cd, nmf,"),
    (["--solver-arg", "inv_t"], "--solver-arg 'inv_t': expected KEY=VALUE"),
    (["--solver-arg", "a=1", "--solver-arg", "a=2"], "--solver-arg a given twice"),
    (["--solver-arg", "rank=3", "--rank", "3"], "give the rank once"),
    (["--solver", "vq", "--solver-arg", "temperature=3"], "unexpected keyword argument 'temperature'"),
])
def test_spectrum_errors_are_one_line(argv, message, capsys, registry):
    rc = main(["spectrum", "--d", "4", "--n", "6", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("hamgrad spectrum: error: ") and message in err and err.count("\n") == 1


def test_import_of_a_module_that_raises_is_one_line(tmp_path, capsys, registry):
    bad = tmp_path / "broken_solver.py"
    bad.write_text("raise RuntimeError('the solver module is broken')\n", encoding="utf-8")
    assert main(["spectrum", "--import", str(bad)]) == 2
    assert capsys.readouterr().err == (f"hamgrad spectrum: error: --import {bad}: importing it raised RuntimeError: "
                                       "the solver module is broken\n")


def test_import_of_a_file_named_like_a_loaded_module_is_refused(tmp_path, capsys, registry):
    clash = _write_solver(tmp_path, "json", "lasso_json")  # executing it as 'json' would replace the json module
    assert main(["spectrum", "--import", str(clash), "--solver", "lasso_json"]) == 2
    assert "a module named 'json' is already imported (rename the file)" in capsys.readouterr().err
    assert json.dumps([1]) == "[1]" and "lasso_json" not in hg.available_solvers()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"hamgrad {hg.__version__}\n"


def test_console_script_imports_from_the_current_directory(tmp_path):
    """The installed ``hamgrad`` command (whose sys.path[0] is its bin folder) finds a module in the cwd."""
    _write_solver(tmp_path, "lasso_cli", "lasso_cli")
    script = Path(sys.executable).parent / "hamgrad"
    assert script.exists(), f"the hamgrad console script is not installed beside {sys.executable}"
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(script), "spectrum", "--import", "lasso_cli", "--solver", "lasso_cli", "--d", "5",
                           "--n", "2", "-k", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("solver lasso_cli: ISTA(rank=4, lam=0.05, step_factor=1.0, seed=0)\n")


# ---------------------------------------------------------------------- plots from result objects
def _shown_as_png(fig) -> bool:
    """What Jupyter does with a cell's value: IPython's display formatter, no pyplot and no %matplotlib."""
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(fig)
    return data.get("image/png", b"")[:4] == b"\x89PNG"


def _lines(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def _axis(fig, ylabel: str):
    """The one axes of ``fig`` whose y label contains ``ylabel``."""
    found = [ax for ax in fig.axes if ylabel in ax.get_ylabel()]
    assert len(found) == 1, [ax.get_ylabel() for ax in fig.axes]
    return found[0]


def _data_lines(ax) -> list:
    """The lines with markers (one per run, in order), not the reference lines or legend entries."""
    return [line for line in ax.get_lines() if line.get_marker() not in (None, "None", "")]


def test_flow_figure_from_gradient_flow_objects():
    runs = {"t = 1/L": models.ista(step_factor=1.0), "t = 1.9/L": models.ista(step_factor=1.9)}
    flows = {label: hg.gradient_flow(m.fp, m.x, m.h0, steps=4, generator=torch.Generator().manual_seed(0))
             for label, m in runs.items()}
    fig = hg.plots.flow(flows)
    assert _shown_as_png(fig)
    ax_h0, ax_x = fig.axes[:2]
    assert [ln.get_label() for ln in _data_lines(ax_h0)] == list(flows)
    for f, line_h0, line_x in zip(flows.values(), _data_lines(ax_h0), _data_lines(ax_x)):
        np.testing.assert_allclose(line_h0.get_ydata(), f.dh_dh0)
        np.testing.assert_allclose(line_x.get_xydata(), np.c_[f.t, f.dh_dx])
    assert "J_t = ∂F/∂h(hᵗ, x)" in fig.get_suptitle()
    # plain data (to_dict) and labels given separately draw the same lines; a nan limit (old or new field name)
    # is not drawn as a line at nan
    plain = [{**f.to_dict(), "implicit_limit": math.nan, "state_limit": math.nan} for f in flows.values()]
    fig2 = hg.plots.flow(plain, labels=list(flows))
    for line, line2 in zip(_data_lines(ax_x), _data_lines(fig2.axes[1])):
        np.testing.assert_allclose(line2.get_ydata(), line.get_ydata())
    assert all(np.isfinite(np.asarray(ln.get_ydata(), dtype=float)).all() for ln in fig2.axes[1].get_lines())
    with pytest.raises(ValueError, match="labels has 1 entries for 2 result"):
        hg.plots.flow(list(flows.values()), labels=["one"])
    with pytest.raises(TypeError, match="not a result this figure draws"):
        hg.plots.flow([hg.eigvals(hg.jacobian(runs["t = 1/L"].fp, runs["t = 1/L"].h0, runs["t = 1/L"].x), k=2)])


def test_spectrum_figure_from_per_step_spectra_matches_dense_ista_jacobians():
    m, K = models.ista(step_factor=1.9), 5
    traj = m.fp.unroll(m.x, m.h0, K)
    eigs = [hg.eigvals(hg.jacobian(m.fp, traj[t], m.x), k=6) for t in range(K)]
    norms = [hg.svdvals(hg.jacobian(m.fp, traj[t], m.x), k=1) for t in range(K)]
    fig = hg.plots.spectrum(eigs, norms=norms, labels="ISTA")
    assert _shown_as_png(fig)
    # independent reference: J_t = diag(active_t)(I − t AᵀA) at hᵗ, its spectrum and norm in numpy
    A, step, lam = m.params["A"].numpy(), m.params["t"], m.params["lam"]
    rho, sigma = [], []
    for t in range(K):
        h = traj[t][0].numpy()
        active = np.abs(h - step * A.T @ (A @ h - m.x.numpy())) > step * lam
        J = np.diag(active.astype(float)) @ (np.eye(A.shape[1]) - step * A.T @ A)
        rho.append(np.abs(np.linalg.eigvals(J)).max())
        sigma.append(np.linalg.norm(J, 2))
    ax_circle, ax_rho, ax_sigma = fig.axes[0], _axis(fig, "rho(J_t)"), _axis(fig, "Vert J_t")
    rho_line, = _data_lines(ax_rho)
    sigma_line, = _data_lines(ax_sigma)
    np.testing.assert_allclose(rho_line.get_xydata(), np.c_[range(K), rho], atol=1e-8)
    np.testing.assert_allclose(sigma_line.get_ydata(), sigma, atol=1e-8)
    colour_bar = _axis(fig, "step $t$ of $J_t$")  # the colour of each eigenvalue: its step t, 0 … 4
    np.testing.assert_array_equal(colour_bar.get_yticks(), range(K))
    points = np.concatenate([c.get_offsets() for c in ax_circle.collections])
    assert len(points) == sum(len(e.values) for e in eigs)
    with pytest.raises(ValueError, match="norms"):
        hg.plots.spectrum(eigs, norms=norms[:2])
    # several runs as dicts: norms are matched by label, not by order
    fig2 = hg.plots.spectrum({"a": eigs, "b": eigs[:2]}, norms={"b": [1.5, 2.5], "a": norms})
    sigma_b = [ln for ln in _axis(fig2, "Vert J_t").get_lines() if ln.get_label() == "b"]
    np.testing.assert_array_equal(sigma_b[0].get_ydata(), [1.5, 2.5])


def test_agreement_figure_from_comparisons_one_per_K():
    m = models.contractive(n=5, m=3, readout="linear")
    w = torch.arange(1.0, 5.0, dtype=torch.float64)
    cmps = [hg.compare_gradients(m.fp, m.x, lambda y: (w * y).sum(), steps=K, modes=["one-step", "bptt"],
                                 reference="bptt", reference_steps=60, h0=m.h0) for K in (1, 3)]
    fig = hg.plots.agreement(cmps, label="tanh map")
    assert _shown_as_png(fig) and "bptt (K = 60)" in fig.get_suptitle()
    one_minus_cos = _lines(_axis(fig, "1 − cosine"))  # on a log axis, so that cosines near 1 are told apart
    np.testing.assert_array_equal(one_minus_cos["one-step"].get_xdata(), [1, 3])
    for i, c in enumerate(cmps):
        for row in c.modes:
            assert one_minus_cos[row.mode].get_ydata()[i] == pytest.approx(1 - row.cosine_x, rel=1e-12)
    # at K = 1 one-step and BPTT differentiate the same single step: the same gradient
    assert one_minus_cos["one-step"].get_ydata()[0] == pytest.approx(one_minus_cos["bptt"].get_ydata()[0], abs=1e-12)
    # more steps: closer to the reference
    assert one_minus_cos["bptt"].get_ydata()[1] < one_minus_cos["bptt"].get_ydata()[0]
    other = hg.compare_gradients(m.fp, m.x, lambda y: (w * y).sum(), steps=2, modes=["bptt"], reference="implicit",
                                 h0=m.h0)
    with pytest.raises(ValueError, match="share one reference"):
        hg.plots.agreement([*cmps, other])


def test_ratio_figure_from_accumulative_ratio_tensors():
    Z = torch.randn(3, 6, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fig = hg.plots.ratio(hg.accumulative_ratio(Z), hg.accumulative_ratio(Z @ Z.mT @ Z), p=2,
                         labels=("input", "output"))
    assert _shown_as_png(fig)
    s2 = np.linalg.svd(Z.numpy(), compute_uv=False) ** 2
    reference = (np.cumsum(s2, axis=-1) / s2.sum(-1, keepdims=True)).mean(0)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), reference)
    assert [t.get_text() for t in fig.axes[0].get_legend().texts] == ["input", "output"]
    assert fig.axes[0].get_ylabel() == "accumulative ratio (p = 2)"
    # a tensor does not carry p: without it the axis names none (no silent p = 2); plain data brings its own p
    p1 = hg.accumulative_ratio(Z, p=1)
    assert hg.plots.ratio(p1, p1).axes[0].get_ylabel() == "accumulative ratio"
    plain = {"k": [1, 2], "before": [0.5, 1.0], "after": [0.7, 1.0], "p": 1}
    assert hg.plots.ratio(plain).axes[0].get_ylabel() == "accumulative ratio (p = 1)"
    with pytest.raises(ValueError, match="one shape"):
        hg.plots.ratio(hg.accumulative_ratio(Z), hg.accumulative_ratio(Z[0]))
    with pytest.raises(ValueError, match="labels must be two names"):
        hg.plots.ratio(p1, p1, labels="one")


def test_paper_figures_display_inline_too():
    fig = hg.plots.accumulative_ratio({"k": [1, 2], "before": [0.5, 1.0], "after": [0.7, 1.0]})
    assert _shown_as_png(fig)
