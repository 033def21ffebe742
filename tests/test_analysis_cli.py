"""``hamgrad spectrum``: the printed values against dense references computed here; ``hamgrad figures``: its refusals
and messages."""

import json
import re
import shutil

import pytest
import torch
from torch.func import jacrev

import hamgrad as hg
from hamgrad.cli import main
from hamgrad import figures
from hamgrad.experiments import AblationConfig, load_results, run_ablation
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


@pytest.mark.parametrize("command", [["spectrum", "--d", "6", "--n", "8", "--rank", "2", "-k", "2"],
                                     ["cost", "--quick", "--contexts", "gap"]])
@pytest.mark.parametrize("device, match", [("nonsense", "device='nonsense' is not a torch device"),
                                           ("cuda:99", "device='cuda:99': ")])
def test_a_device_this_machine_lacks_is_one_line_naming_it(capsys, command, device, match):
    assert main([*command, "--device", device]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err


# ---------------------------------------------------------------------- hamgrad figures: sizes, sources, damaged files
def _sweep(folder, solvers):
    config = AblationConfig.quick(solvers=solvers, grads=("one-step",), iters=2, log_every=1, checkpoint_every=1)
    run_ablation(config, folder, progress=False)
    return str(folder)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    return _sweep(root / "A", ("vq",)), _sweep(root / "B", ("cd",))


def test_figures_out_that_cannot_be_made_fails_before_computing(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise AssertionError("a figure was computed before --out was checked")

    monkeypatch.setattr(figures._registry, "compute", fail)
    (tmp_path / "a_file").write_text("not a folder")
    assert main(["figures", "--quick", "--only", "spectrum", "--out", str(tmp_path / "a_file" / "figs")]) == 2
    err = capsys.readouterr().err
    assert "a_file" in err and len(err.strip().splitlines()) == 1


def _figures(out, *args):
    return main(["figures", "--only", "ablation", "--out", str(out), *args])


def test_figures_refuse_to_mix_sizes_and_follow_the_sweep(tmp_path, sweeps, capsys):
    a, b = sweeps
    out = tmp_path / "figs"
    assert _figures(out, "--ablation-dir", a) == 0  # full size, drawn from sweep A
    full = (out / "ablation.json").read_text()
    assert {r["solver"] for r in json.loads(full)["table"]} == {"none", "vq"}
    capsys.readouterr()
    assert _figures(out, "--quick", "--ablation-dir", a) == 2
    assert capsys.readouterr().err == (f"hamgrad figures: error: out='{out}' holds full-size figures (ablation.json); "
                                       f"one folder holds one size: choose another folder, or pass force=True "
                                       f"(hamgrad figures --force) to replace them\n")
    assert (out / "ablation.json").read_text() == full
    # another sweep behind the same figure is recomputed from it
    assert _figures(out, "--ablation-dir", b) == 0
    result = json.loads((out / "ablation.json").read_text())
    assert {r["solver"] for r in result["table"]} == {"none", "cd"} and result["source"]["sweep"] == b
    # --force replaces the full-size figure with a quick one
    assert _figures(out, "--quick", "--force", "--ablation-dir", b) == 0
    assert json.loads((out / "ablation.json").read_text())["quick"] is True
    capsys.readouterr()
    assert _figures(out / "ablation.json" / "sub", "--ablation-dir", b) == 2  # --out under a file
    assert capsys.readouterr().err.splitlines()[-1] == (f"hamgrad figures: error: [Errno 20] Not a directory: "
                                                        f"'{out}/ablation.json/sub'")


@pytest.mark.parametrize("damage, match", [
    ("figure", r"figs/ablation.json is not a figure JSON \(Unterminated string"),
    ("rows", r"results.jsonl line 1 is not a sweep row \(a JSON object with a run_id\)"),
    ("truncated", r"results.jsonl line 2 is not a JSON row \(truncated or damaged file"),
    ("config", r"config.json is not a valid sweep config \(unknown AblationConfig fields \['colour'\]"),
    ("checkpoint", r"checkpoint .*vq_one-step_v2_K6_seed0/checkpoint.pt cannot be read \(truncated"),
    ("foreign checkpoint", r"checkpoint .*vq_one-step_v2_K6_seed0/checkpoint.pt was not written by run "
                           r"vq_one-step_v2_K6_seed0"),
])
def test_figures_damaged_files_are_named(tmp_path, sweeps, capsys, damage, match):
    sweep = tmp_path / "sweep"
    shutil.copytree(sweeps[0], sweep)
    out = tmp_path / "figs"
    assert _figures(out, "--ablation-dir", str(sweep)) == 0
    results, ckpt = sweep / "results.jsonl", sweep / "runs" / "vq_one-step_v2_K6_seed0" / "checkpoint.pt"
    if damage == "figure":
        (out / "ablation.json").write_text('{"figure": "abl')
    elif damage == "rows":
        results.write_text('{"solver": "vq"}\n' + results.read_text())
    elif damage == "truncated":
        results.write_text(results.read_text()[:-30])
    elif damage == "config":
        config = json.loads((sweep / "config.json").read_text())
        (sweep / "config.json").write_text(json.dumps({**config, "colour": "red"}))
    elif damage == "checkpoint":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    else:
        ckpt.write_bytes((sweep / "runs" / "none_seed0" / "checkpoint.pt").read_bytes())
    only = "feature_maps" if "checkpoint" in damage else "ablation"
    capsys.readouterr()
    assert main(["figures", "--only", only, "--out", str(out), "--ablation-dir", str(sweep)]) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after the progress bar
    assert last.startswith("hamgrad figures: error: ") and re.search(match, last) and "Traceback" not in err, err


def test_figures_ablation_against_steps(tmp_path, capsys):
    config = AblationConfig.quick(solvers=("nmf", "vq"), grads=("one-step", "bptt"), steps=(1, 2), iters=2,
                                  log_every=1, checkpoint_every=1)
    run_ablation(config, tmp_path / "k", progress=False)
    rows = load_results(tmp_path / "k")
    assert _figures(tmp_path / "figs", "--ablation-dir", str(tmp_path / "k")) == 0
    result = json.loads((tmp_path / "figs" / "ablation.json").read_text())
    table = {(r["solver"], r["grad"], r["steps"]): r["mean"] for r in result["table"]}
    assert table == {(r["solver"], r["grad"], r["steps"]): 100 * r["miou"] for r in rows}
    fig = figures.plot("ablation", result)  # one panel per ham, K on the x axis
    assert [ax.get_title() for ax in fig.axes] == ["NMF", "VQ"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["solver steps K in training"] * 2
    assert sorted(len(line.get_xdata()) for line in fig.axes[0].lines if line.get_label().endswith("(mean)")
                  and "no ham" not in line.get_label()) == [2, 2]
