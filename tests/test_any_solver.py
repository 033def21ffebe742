"""A user's solver everywhere: the registry (entry points, factories, a constructor argument called ``name``),
``hamgrad ablate --import/--solver-arg``, solver arguments in the sweep's config, ``one-step-coef`` through a user's
``coef_readout``, and ``hamgrad spectrum`` on a solver that misbehaves or on sizes that cannot fit (issue 19)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hamgrad as hg
from hamgrad.cli import main
from hamgrad.experiments import AblationConfig, load_model, load_results, read_config
from hamgrad.experiments import runner
from hamgrad.nn import build_context

from models import ISTA_SOLVER_SOURCE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """The solver registry and sys.path as they were before the test, and none of the modules it imported from its
    tmp_path left in sys.modules (imports add to all three)."""
    from hamgrad.solvers import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def _write_solver(folder: Path, module: str, name: str, extra: str = "") -> Path:
    path = folder / f"{module}.py"
    path.write_text(ISTA_SOLVER_SOURCE.replace('"NAME"', repr(name)) + extra, encoding="utf-8")
    return path


def _plugin(folder: Path, module: str, entries: str, extra: str = "") -> None:
    """An installed package's metadata: ``module.py`` (ISTA registered as ``<module>_self``) and ``entries``."""
    _write_solver(folder, module, f"{module}_self", extra)
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[hamgrad.solvers]\n" + entries, encoding="utf-8")


# ---------------------------------------------------------------------- the registry
def test_get_solver_passes_a_constructor_argument_called_name(registry):
    class Named:
        def __init__(self, name, rank=2):
            self.name, self.rank = name, rank

        def init(self, x, generator=None):
            return (x,)

        def step(self, x, h):
            return h

        def readout(self, x, h):
            return h[0]

    hg.register_solver("named", Named)
    solver = hg.get_solver("named", name="sinkhorn", rank=3)  # the registry's own argument is positional
    assert (solver.name, solver.rank) == ("sinkhorn", 3)


def test_entry_points_reach_every_subcommand_and_factories_work(tmp_path, registry, monkeypatch):
    extra = ("\n\ndef make_ista(rank=4, lam=0.05):\n    return ISTA(rank=rank, lam=lam)\n\n\n"
             "def make_nothing(rank=4):\n    return object()\n")
    _plugin(tmp_path, "lasso_pkg", "lasso_cls = lasso_pkg:ISTA\nlasso_fn = lasso_pkg:make_ista\n"
                                   "lasso_bad = lasso_pkg:make_nothing\nlasso_mod = lasso_pkg\n", extra)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"lasso_cls", "lasso_fn", "lasso_bad", "lasso_mod"} <= set(hg.available_solvers())
    # hg.get_solver loads an entry point itself (not only `hamgrad spectrum`): a class, and a factory function
    assert type(hg.get_solver("lasso_cls", rank=3)).__name__ == "ISTA"
    built = hg.get_solver("lasso_fn", rank=3, lam=0.5)
    assert (type(built).__name__, built.rank, built.lam) == ("ISTA", 3, 0.5)
    with pytest.raises(TypeError, match=r"a solver must define init\(...\), what 'make_nothing' returned \(object\)"):
        hg.get_solver("lasso_bad")
    with pytest.raises(ValueError, match=r"solver 'lasso_mod': its entry point 'lasso_pkg' names a module that does "
                                         r"not register a solver of that name"):
        hg.get_solver("lasso_mod")
    # the sweep's config, the context modules (hamgrad cost) and the spectrum command see them
    assert AblationConfig.quick(solvers=("lasso_fn",), grads=("one-step",)).solvers == ("lasso_fn",)
    block = build_context("lasso_fn", 8, d=6, rank=2, steps=(2, 2), grad="one-step")
    assert type(block.solver).__name__ == "ISTA" and block.solver.rank == 2


def test_unknown_solver_is_named_as_a_solver(registry):
    with pytest.raises(ValueError, match=r"unknown solver 'sinkhorn'; available: cd, nmf, softvq, vq \(register yours "
                                         r"with hamgrad.register_solver"):
        hg.get_solver("sinkhorn")
    with pytest.raises(ValueError, match=r"unknown solver or context module name='sinkhorn': the context modules are "
                                         r"\['a2', .*'sa'\], the solvers \['cd', 'nmf', 'softvq', 'vq'\] \(register a "
                                         r"solver with hamgrad.register_solver"):
        build_context("sinkhorn", 8)


# ---------------------------------------------------------------------- hamgrad ablate --import/--solver-arg
def test_ablate_imports_a_solver_file_and_passes_solver_args(tmp_path, capsys, registry):
    path = _write_solver(tmp_path, "my_ista", "ista_file")
    out = tmp_path / "sweep"
    args = ["ablate", "--quick", "--import", str(path), "--solvers", "ista_file", "--solver-arg", "lam=0.02",
            "--solver-arg", "step_factor=1.5", "--grads", "one-step", "--no-baseline", "--iters", "2",
            "--out", str(out)]
    rc, captured = main(args), capsys.readouterr()
    assert rc == 0, captured.err
    assert f"results in {out}: results.jsonl, results.csv, summary.md (1 finished of 1 runs)" in captured.out
    config = read_config(out)
    assert config.solver_args == (("lam", 0.02), ("step_factor", 1.5))
    assert json.loads((out / "config.json").read_text())["solver_args"] == {"lam": 0.02, "step_factor": 1.5}
    rows = load_results(out)
    assert [(r["run_id"], r["status"]) for r in rows] == [("ista_file_one-step_v2_K6_seed0", "ok")]
    solver = load_model(out, rows[0]["run_id"]).hamburger.solver
    assert (type(solver).__name__, solver.rank, solver.lam, solver.step_factor) == ("ISTA", config.rank, 0.02, 1.5)
    # figure 4 of that sweep, and the solver's cost as a context module: the other commands import it too
    figs = tmp_path / "figs"
    assert main(["figures", "--quick", "--import", str(path), "--only", "ablation", "--ablation-dir", str(out),
                 "--out", str(figs)]) == 0, capsys.readouterr().err
    assert [r["solver"] for r in json.loads((figs / "ablation.json").read_text())["table"]] == ["ista_file"]
    assert main(["cost", "--import", str(path), "--contexts", "ista_file", "--grad", "one-step", "--sizes", "8",
                 "--channels", "8", "--d", "8", "--rank", "2", "--repeats", "1"]) == 0, capsys.readouterr().err
    assert "| ista_file | 8×8 |" in capsys.readouterr().out
    # an argument the solver does not take is refused when the config is built, naming the solver
    assert main([*args[:-2], "--solver-arg", "temperature=3", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hamgrad ablate: error: solver 'ista_file' with rank=4 and solver_args=") and \
        "unexpected keyword argument 'temperature'" in err and err.count("\n") == 1


def test_default_grads_with_a_solver_without_coef_readout_is_refused_up_front(tmp_path, capsys, registry):
    path = _write_solver(tmp_path, "plain_ista", "plain_ista")
    out = tmp_path / "sweep"
    assert main(["ablate", "--quick", "--import", str(path), "--solvers", "plain_ista", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "hamgrad ablate: error: grads has 'one-step-coef', which needs a solver with coef_readout(x, h) (the official "
        "code's last code update, read out); solver 'plain_ista' has none: leave the mode out (e.g. grads=('one-step', "
        "'bptt')) or give the solver one\n")
    assert not out.exists()


def test_config_solver_args_round_trip_and_checks():
    config = AblationConfig.quick(solvers=("vq",), solver_args={"inv_t": 10.0})
    assert AblationConfig.from_json(config.to_json()) == config and hash(config) == hash(
        AblationConfig.from_dict(config.to_dict()))
    assert runner.build_model(config, config.runs()[1]).hamburger.solver.inv_t == 10.0
    assert AblationConfig.from_dict({k: v for k, v in AblationConfig().to_dict().items()
                                     if k != "solver_args"}) == AblationConfig()  # configs written before the field
    for args, error, match in [({"rank": 3}, ValueError, "must not hold rank"),
                               ({"inv_t": [1, 2]}, TypeError, r"solver_args\['inv_t'\] must be a str, int"),
                               ({"inv_t": float("nan")}, TypeError, "finite float"),
                               ("inv_t=3", TypeError, "must be a dict")]:
        with pytest.raises(error, match=match):
            AblationConfig.quick(solvers=("vq",), solver_args=args)


def test_a_sweep_too_large_is_refused_before_its_runs_are_built(tmp_path, capsys):
    assert main(["ablate", "--seeds", "100000000", "--out", str(tmp_path / "never")]) == 2
    assert capsys.readouterr().err == ("hamgrad ablate: error: the sweep would have 1000000000 runs "
                                       "(seeds=100000000); at most 100000\n")
    assert not (tmp_path / "never").exists()


def test_solver_sources_travel_to_a_process_that_never_imported_them(tmp_path, registry):
    """What a Ray worker does with the driver's solvers: a module imported from a file it cannot import by name."""
    path = _write_solver(tmp_path, "far_ista", "far_ista")
    from hamgrad._modules import module_from_source

    module_from_source("far_ista", path.read_text(), str(path))
    sources = runner._solver_sources(AblationConfig.quick(solvers=("far_ista", "nmf"), grads=("one-step",)))
    assert [(s["name"], s["module"], s["qualname"]) for s in sources] == [("far_ista", "far_ista", "ISTA")]
    path.unlink()  # the worker has no copy of the file: only the source it was sent
    code = ("import json, sys; from hamgrad.experiments import runner; import hamgrad as hg; "
            "runner._load_solver_sources(json.loads(sys.stdin.read())); "
            "s = hg.get_solver('far_ista', rank=2, lam=0.3); print(type(s).__name__, s.lam, type(s).__module__)")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(sources), capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ISTA", "0.3", "far_ista"]


# ---------------------------------------------------------------------- one-step-coef through coef_readout
COEF_READOUT = '''

def _coef_readout(self, x, h):
    """The official code's last update, as one-step-coef reads it: one more ISTA step from h held constant."""
    return self.readout(x, self.step(x, tuple(t.detach() for t in h)))


ISTA.coef_readout = _coef_readout
'''


def test_one_step_coef_works_for_a_user_solver_with_coef_readout(tmp_path, registry):
    from hamgrad._modules import module_from_source

    path = _write_solver(tmp_path, "coef_ista", "coef_ista", COEF_READOUT)
    module_from_source("coef_ista", path.read_text(), str(path))
    d, n, rank, lam, K = 7, 3, 4, 0.6, 5
    solver = hg.get_solver("coef_ista", rank=rank, lam=lam)
    x = torch.randn(d, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    w = torch.randn(d, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, _ = hg.solve(solver, x, steps=K, grad="one-step-coef")
    (y * w).sum().backward()
    # independent reference (numpy): H^K from K plain steps; y = A soft(H^K − t Aᵀ(A H^K − X), t λ) with H^K held
    # constant (dZ/dX = t Aᵀ, active = |Z| > tλ), so dL/dX = t A (active ⊙ (Aᵀ W)) for L = ⟨W, y⟩
    A, t = (np.asarray(v) for v in solver.dictionary(x))
    X, H = x.detach().numpy(), np.zeros((rank, n))
    for _ in range(K):
        Z = H - t * A.T @ (A @ H - X)
        H = np.sign(Z) * np.maximum(np.abs(Z) - t * lam, 0)
    Z = H - t * A.T @ (A @ H - X)
    active = np.abs(Z) > t * lam
    expected = t * A @ (active * (A.T @ w.numpy()))
    assert active.any() and not active.all()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-14)
    # and the Hamburger takes the mode for it (a solver without coef_readout is refused by name)
    assert hg.nn.Hamburger(8, d=6, solver="coef_ista", rank=2, grad="one-step-coef").solver.lam == 0.05
    _write_solver(tmp_path, "plain_ista", "plain_ista")
    module_from_source("plain_ista", (tmp_path / "plain_ista.py").read_text(), str(tmp_path / "plain_ista.py"))
    with pytest.raises(ValueError, match="needs a solver with coef_readout; solver='plain_ista' has none"):
        hg.nn.Hamburger(8, d=6, solver="plain_ista", rank=2, grad="one-step-coef")


# ---------------------------------------------------------------------- hamgrad spectrum on a hostile solver
def test_spectrum_one_line_for_any_exception_of_a_users_solver(tmp_path, capsys, registry):
    broken = ("\n\ndef _step(self, x, h):\n    raise KeyError('lam_missing')\n\n\nISTA.step = _step\n")
    path = _write_solver(tmp_path, "key_ista", "key_ista", broken)
    assert main(["spectrum", "--import", str(path), "--solver", "key_ista", "--d", "5", "--n", "2", "-k", "1"]) == 2
    assert capsys.readouterr().err == ("hamgrad spectrum: error: KeyError while computing with solver 'key_ista': "
                                       "'lam_missing'\n")


def test_spectrum_hparams_that_is_not_a_dict_warns_and_prints(tmp_path, capsys, registry):
    odd = "\n\nISTA.hparams = lambda self: [self.rank, self.lam]\n"
    path = _write_solver(tmp_path, "list_ista", "list_ista", odd)
    rc = main(["spectrum", "--import", str(path), "--solver", "list_ista", "--solver-arg", "lam=0.1", "--d", "5",
               "--n", "2", "-k", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err == ("hamgrad spectrum: warning: ISTA.hparams() returned a list, not a dict: printing the "
                            "constructor arguments instead\n")
    assert "solver list_ista: ISTA(lam=0.1)" in captured.out and "singular values" in captured.out


@pytest.mark.parametrize("argv, message", [
    (["--rank", "600", "--d", "512", "--n", "4096"], "rank=600 must be <= min(--d, --n) = min(512, 4096)"),
    (["--d", "1000000", "--n", "1000000"], "the input X (1000000 x 1000000, float32) need at least 3.73e+03 GiB"),
])
def test_spectrum_checks_sizes_before_allocating(argv, message, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("X was allocated before the sizes were checked")

    monkeypatch.setattr(torch, "rand", refuse)
    assert main(["spectrum", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hamgrad spectrum: error: ") and message in err and err.count("\n") == 1, err


def test_spectrum_refuses_a_trajectory_that_cannot_fit(capsys):
    assert main(["spectrum", "--d", "64", "--n", "256", "--rank", "8", "--steps", "2000000000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hamgrad spectrum: error: --steps 2000000000: the K + 1 states of the trajectory need at "
                          "least ") and "GiB available on cpu" in err and err.count("\n") == 1, err
