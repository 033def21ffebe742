"""The context ablation: AblationConfig's ``contexts`` round-trip and checks, run ids, a quick sweep over context
modules through the API and ``hamgrad ablate --contexts``, and its accuracy-per-cost table."""

import json

import pytest
import torch

from hamgrad import cost, figures, plots
from hamgrad.cli import main as cli_main
from hamgrad.experiments import AblationConfig, load_model, load_results, run_ablation
from hamgrad.nn import DoubleAttention, SelfAttention


def test_config_with_contexts_round_trips():
    config = AblationConfig(solvers=("nmf",), grads=("one-step",), contexts=("sa", "a2", "gap"), seeds=2)
    data = json.loads(config.to_json())
    assert data["contexts"] == ["sa", "a2", "gap"]
    assert AblationConfig.from_json(config.to_json()) == config
    assert AblationConfig.from_dict({"contexts": ["gap"]}).contexts == ("gap",)
    assert AblationConfig().contexts == ()  # a sweep without contexts is what it was
    assert [s.run_id for s in config.runs()] == [
        "none_seed0", "none_seed1", "nmf_one-step_v2_K6_seed0", "nmf_one-step_v2_K6_seed1", "sa_seed0", "sa_seed1",
        "a2_seed0", "a2_seed1", "gap_seed0", "gap_seed1"]
    only = AblationConfig(solvers=(), grads=(), baseline=False, contexts=("sa",))
    assert [s.run_id for s in only.runs()] == ["sa_seed0", "sa_seed1", "sa_seed2"]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(contexts=("nmf",)), ValueError, "unknown context module 'nmf' in contexts"),
    (dict(contexts="sa"), TypeError, "contexts must be a list of str"),
    (dict(contexts=("sa", "sa")), ValueError, "contexts has duplicates"),
])
def test_config_bad_contexts(kwargs, error, match):
    with pytest.raises(error, match=match):
        AblationConfig(**kwargs)


def test_context_sweep_trains_every_module(tmp_path):
    config = AblationConfig.quick(solvers=("nmf",), grads=("one-step",), contexts=("sa", "a2", "gap"), iters=4,
                                  log_every=2, checkpoint_every=2)
    summary = run_ablation(config, tmp_path, progress=False)
    rows = load_results(tmp_path)
    assert [(r["run_id"], r["solver"], r["grad"]) for r in rows] == [
        ("none_seed0", "none", None), ("nmf_one-step_v2_K6_seed0", "nmf", "one-step"), ("sa_seed0", "sa", None),
        ("a2_seed0", "a2", None), ("gap_seed0", "gap", None)]
    text = summary.to_markdown()
    assert "| nmf |" in text and "no ham (baseline" in text and "other context modules" in text
    line = next(s for s in text.splitlines() if s.startswith("other context modules"))
    for name in ("sa", "a2", "gap"):
        assert f"{name} " in line
    assert isinstance(load_model(tmp_path, "sa_seed0").block, SelfAttention)
    assert isinstance(load_model(tmp_path, "a2_seed0").block, DoubleAttention)

    table = cost.ablation_costs(tmp_path, repeats=1)
    assert [r["label"] for r in table["rows"]] == ["none", "nmf (one-step, v2)", "sa", "a2", "gap"]
    by_label = {r["label"]: r for r in table["rows"]}
    assert by_label["none"]["params"] == 0 and by_label["none"]["train_seconds"] == 0
    sa = by_label["sa"]
    assert sa["miou_mean"] == rows[2]["miou"] and sa["seeds"] == 1
    assert sa["params"] == sum(p.numel() for p in SelfAttention(16, d=16).parameters())  # quick: width 8 → 16 ch
    assert "| sa |" in cost.ablation_markdown(table)
    fig = plots.context_tradeoff(table)
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]


def test_cli_ablate_contexts(tmp_path, capsys):
    out = str(tmp_path / "sweep")
    assert cli_main(["ablate", "--quick", "--solvers", "", "--grads", "", "--no-baseline", "--contexts", "gap",
                     "--iters", "2", "--out", out]) == 0
    assert "other context modules (HamNet(context=...)): gap" in capsys.readouterr().out
    assert [r["run_id"] for r in load_results(out)] == ["gap_seed0"]
    assert cli_main(["ablate", "--quick", "--contexts", "attention", "--out", str(tmp_path / "x")]) == 2
    assert "unknown context module 'attention'" in capsys.readouterr().err


def test_cli_cost_of_a_regional_context_sweep(tmp_path, capsys):
    """``hamgrad cost --ablation-dir``: the sweep's task named, the disagreeing images' mIoU read from its rows, the
    table, JSON and figure written to --out."""
    sweep, out = tmp_path / "sweep", tmp_path / "figs"
    assert cli_main(["ablate", "--quick", "--task", "regional", "--solvers", "nmf", "--grads", "one-step",
                     "--contexts", "gap", "--iters", "2", "--out", str(sweep)]) == 0
    capsys.readouterr()
    assert cli_main(["cost", "--ablation-dir", str(sweep), "--repeats", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "on the task regional (RegionalShapes: R = 2 regions" in text
    assert "mIoU where the regions disagree (mean)" in text
    rows = {r["run_id"]: r for r in load_results(sweep)}
    saved = json.loads((out / "context_ablation.json").read_text())
    by = {r["label"]: r for r in saved["rows"]}
    assert set(by) == {"none", "nmf (one-step, v2)", "gap"}
    assert by["gap"]["miou_disagree_mean"] == rows["gap_seed0"]["miou_disagree"]
    assert f"| gap | {100 * rows['gap_seed0']['miou']:.1f} (" in text
    assert (out / "context_ablation.png").stat().st_size > 0 and (out / "context_ablation.md").read_text() in text
    assert cli_main(["cost", "--ablation-dir", str(tmp_path / "nothing")]) == 2
    assert "holds no sweep" in capsys.readouterr().err


def test_ablation_costs_build_the_hams_with_the_sweeps_solver_args(tmp_path, monkeypatch):
    """A sweep trained with ``solver_args`` is costed with the same solvers: the ham that ``ablation_costs`` measures
    is built with them (here VQ's temperature), the other modules without."""
    config = AblationConfig.quick(solvers=("vq",), grads=("one-step",), contexts=("gap",), iters=2, log_every=1,
                                  checkpoint_every=1, solver_args={"inv_t": 10.0})
    run_ablation(config, tmp_path, progress=False)
    built = {}
    real = cost.build_context

    def spy(name, *args, **kwargs):
        module = real(name, *args, **kwargs)
        built[name] = module
        return module

    monkeypatch.setattr(cost, "build_context", spy)
    cost.ablation_costs(tmp_path, repeats=1)
    assert built["vq"].solver.inv_t == 10.0 and load_model(tmp_path, "vq_one-step_v2_K6_seed0").block.solver.inv_t == 10.0
    assert set(built) == {"vq", "gap"}


def test_figures_5_and_6_for_a_context_module(tmp_path):
    """The accumulative ratio and feature maps of a trained HamNet whose head is self-attention or A², with the
    ratio of the block's input held against a float64 SVD of the encoder's output."""
    config = AblationConfig.quick(solvers=(), grads=(), baseline=False, contexts=("sa", "a2"), iters=2,
                                  log_every=1, checkpoint_every=2)
    run_ablation(config, tmp_path, progress=False)
    ds = config.dataset()
    images = torch.stack([ds[config.train_samples + i][0] for i in range(3)])
    labels = torch.stack([ds[config.train_samples + i][1] for i in range(3)])
    model = load_model(tmp_path, "sa_seed0")
    ratio = figures.block_accumulative_ratio(model, images, "sa_seed0")
    assert ratio["module"] == "SelfAttention" and ratio["images"] == 3
    with torch.no_grad():
        z = model.squeeze(model.encoder(images)).double().flatten(2)
    energy = torch.linalg.svdvals(z) ** 2
    expected = (energy.cumsum(-1) / energy.sum(-1, keepdim=True)).mean(0)
    torch.testing.assert_close(torch.tensor(ratio["before"], dtype=torch.float64), expected)
    assert ratio["after"][-1] == pytest.approx(1.0)
    assert "before SelfAttention" in [t.get_text() for t in plots.accumulative_ratio(ratio).axes[0].get_legend().texts]

    maps = figures.block_feature_maps(model, images, labels, "sa_seed0")
    assert maps["module"] == "SelfAttention" and maps["codes"] == [] and len(maps["after"]) == 4
    plots.feature_maps(maps)
    a2 = figures.block_feature_maps(load_model(tmp_path, "a2_seed0"), images, labels)
    assert len(a2["codes"]) == 4 and len(a2["codes"][0]) == config.image_size // config.output_stride
