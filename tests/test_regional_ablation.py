"""The regional task in the ablation: AblationConfig.task and its data arguments, old configs, the runner's rows on
the disagreeing images, the summary's task line and global ceiling, and the CLI flags."""

import json
import re
from pathlib import Path

import pytest
import torch

from hamgrad import plots
from hamgrad.cli import main as cli_main
from hamgrad.data import GlobalContextShapes, RegionalShapes
from hamgrad.experiments import (AblationConfig, confusion_matrix, load_model, load_results, mean_iou,
                                 pixel_accuracy, read_config, run_ablation, summarize)
from hamgrad.nn import HamNet

from sweep_helpers import Interrupt, count_steps

REPO = Path(__file__).resolve().parents[1]


def test_task_selects_the_dataset_and_old_configs_keep_their_meaning():
    old = AblationConfig().to_dict()
    for key in ("task", "regions", "shapes_per_region", "separation"):
        del old[key]  # a config.json written before the regional task
    config = AblationConfig.from_dict(old)
    assert config == AblationConfig() and config.task == "global"
    assert type(config.dataset()) is GlobalContextShapes

    regional = AblationConfig(task="regional", regions=2, shapes_per_region=(3, 5), separation=0.2, image_size=48,
                              train_samples=10, val_samples=5, data_seed=3)
    assert AblationConfig.from_json(regional.to_json()) == regional
    ds = regional.dataset()
    assert isinstance(ds, RegionalShapes) and len(ds) == 15
    assert (ds.regions, ds.shapes_per_region, ds.separation, ds.size, ds.seed) == (2, (3, 5), 0.2, 48, 3)
    reference = RegionalShapes(15, size=48, regions=2, shapes_per_region=(3, 5), separation=0.2, seed=3)
    assert torch.equal(ds[7][0], reference[7][0])
    assert regional.task_name.startswith("regional (RegionalShapes: R = 2 regions of 3–5 shapes")
    assert regional.num_classes == ds.num_classes


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(task="local"), ValueError, "task must be one of"),
    (dict(task="regional", regions=0), ValueError, "regions"),
    (dict(task="regional", shapes_per_region=(5, 3)), ValueError, "shapes_per_region"),
    (dict(task="regional", regions=5, shapes_per_region=(3, 20)), ValueError, "too small"),
    (dict(task="regional", separation=-1.0), ValueError, "separation"),
])
def test_config_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        AblationConfig(**kwargs)


def test_regional_sweep_rows_summary_and_ceiling(tmp_path, capsys):
    config = AblationConfig.quick(task="regional", solvers=("nmf",), grads=("one-step",), contexts=("gap",),
                                  iters=4, val_samples=12)
    summary = run_ablation(config, tmp_path, progress=False)
    rows = load_results(tmp_path)
    ds = config.dataset()
    val = range(config.train_samples, config.train_samples + config.val_samples)
    flags = ds.disagreeing(val)
    assert 0 < int(flags.sum()) < len(flags)
    images = torch.stack([ds[i][0] for i in val])
    labels = torch.stack([ds[i][1] for i in val])
    for row in rows:  # the disagreeing images' scores, recomputed from the trained model
        model = load_model(tmp_path, row["run_id"])
        with torch.no_grad():
            pred = model(images, generator=torch.Generator().manual_seed(row["seed"])).argmax(1)
        conf = confusion_matrix(pred[flags], labels[flags], config.num_classes)
        assert row["miou_disagree"] == pytest.approx(mean_iou(conf))
        assert row["pixel_acc_disagree"] == pytest.approx(pixel_accuracy(conf))
    ceiling = ds.global_ceiling(val)
    assert summary.task == config.task_name and summary.ceiling == ceiling
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith(f"task: {config.task_name}\n")
    assert f"what one pooled vector can carry): {100 * ceiling['miou']:.1f}" in md
    assert f"that disagree): {100 * ceiling['miou_disagree']:.1f}" in md
    assert "mIoU (%) on the validation images whose regional majorities disagree" in md
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["task"] == config.task_name and saved["ceiling"] == ceiling
    assert saved["cells"][0]["miou_disagree"]["best"] == pytest.approx(rows[0]["miou_disagree"])
    # figure 4 of the sweep names its task (it said "global-context shapes" for every sweep)
    assert plots.sweep(tmp_path).get_suptitle().endswith("on the regional task (R = 2)")
    # the README's code-information example on this sweep: one line for the ham run, none for GAP or the baseline
    code = re.search(r"<!-- code-information -->\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    capsys.readouterr()
    exec(compile(code.replace('"runs/table1-regional"', repr(str(tmp_path))), "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    ham = next(row["run_id"] for row in rows if row["solver"] == "nmf")
    assert len(lines) == 1 and re.fullmatch(rf"{ham}: [01]\.\d{{3}} \(chance [01]\.\d{{3}}\)", lines[0])


def test_global_sweep_has_no_disagreeing_rows_nor_ceiling(tmp_path):
    run_ablation(AblationConfig.quick(solvers=(), grads=(), iters=2), tmp_path, progress=False)
    row = load_results(tmp_path)[0]
    assert row["miou_disagree"] is None and row["pixel_acc_disagree"] is None
    md = (tmp_path / "summary.md").read_text()
    assert "global ceiling" not in md and "disagree" not in md


def test_summary_without_disagreeing_rows_prints_no_third_table():
    rows = [dict(solver="gap", grad=None, seed=0, miou=0.5, pixel_acc=0.9, diverged=False)]
    md = summarize(rows, ["one-step"], task="t", ceiling={"miou": 0.7, "miou_disagree": None}).to_markdown()
    assert md.startswith("task: t\n") and "global ceiling" in md and "disagree" not in md


def test_cli_task_and_regional_flags(tmp_path, capsys):
    out = str(tmp_path / "sweep")
    assert cli_main(["ablate", "--quick", "--task", "regional", "--regions", "2", "--shapes-per-region", "3,5",
                     "--separation", "0.2", "--image-size", "48", "--train-samples", "12", "--solvers", "", "--grads", "",
                     "--iters", "2", "--rank", "2", "--out", out]) == 0
    assert "task: regional (RegionalShapes: R = 2 regions of 3–5 shapes" in capsys.readouterr().out
    config = read_config(out)
    assert (config.task, config.regions, config.shapes_per_region, config.separation) == ("regional", 2, (3, 5), 0.2)
    assert (config.image_size, config.train_samples, config.rank) == (48, 12, 2)
    assert cli_main(["ablate", "--quick", "--rank", "16", "--out", str(tmp_path / "r")]) == 2
    assert "rank=16 must be < d=16" in capsys.readouterr().err
    assert cli_main(["ablate", "--quick", "--regions", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--regions: only for the regional task (add --task regional)" in capsys.readouterr().err
    assert cli_main(["ablate", "--quick", "--task", "regional", "--shapes-per-region", "3,4,5",
                     "--out", str(tmp_path / "y")]) == 2
    assert "--shapes-per-region must be N or LOW,HIGH" in capsys.readouterr().err
    assert cli_main(["ablate", "--quick", "--task", "regional", "--regions", "9", "--out", str(tmp_path / "z")]) == 2
    assert "too small for up to 36 tiles" in capsys.readouterr().err


def _encoder_state(model) -> dict:
    return {k: v for k, v in model.state_dict().items() if k.split(".")[0] in HamNet.ENCODER_PARTS}


def test_a_sweep_from_another_sweeps_frozen_encoder(tmp_path, capsys, monkeypatch):
    """--encoder-from SWEEP/RUN_ID --freeze-encoder: every run (hams, probes, context modules, the baseline; a run
    interrupted and resumed too) ends with the source run's encoder exactly, the heads trained; the summary and the
    config name the source."""
    source = tmp_path / "source"
    run_ablation(AblationConfig.quick(task="regional", solvers=(), grads=(), contexts=("sa",), baseline=False),
                 source, progress=False)
    src = _encoder_state(load_model(source, "sa_seed0"))
    out = str(tmp_path / "from-sa")
    counter = count_steps(monkeypatch)
    counter["raise_at"] = 17  # in the second run, after its checkpoint at iteration 5: it resumes from there
    args = ["ablate", "--quick", "--task", "regional", "--solvers", "nmf", "--grads", "one-step-coef,bptt",
            "--contexts", "gap", "--encoder-from", str(source / "sa_seed0"), "--freeze-encoder", "--out", out]
    with pytest.raises(Interrupt):
        cli_main(args)
    counter["raise_at"] = None
    assert cli_main(args) == 0
    assert f"every run starts from the encoder of {source / 'sa_seed0'} (frozen)" in capsys.readouterr().out
    config = read_config(out)
    assert (config.encoder_from, config.freeze_encoder) == (str(source / "sa_seed0"), True)
    rows = load_results(out)
    assert {r["run_id"] for r in rows} == {"none_seed0", "nmf_one-step-coef_v2_K6_seed0", "nmf_bptt_v2_K6_seed0",
                                           "gap_seed0"}
    assert any(r["resumed_from"] == 5 for r in rows)
    for row in rows:
        model = load_model(out, row["run_id"])
        assert all(torch.equal(v, src[k]) for k, v in _encoder_state(model).items()), row["run_id"]
    probes = next(r for r in rows if r["run_id"] == "nmf_bptt_v2_K6_seed0")["probes"]
    assert probes["encoder"]["bptt_norm"][0] > 0  # the frozen encoder is probed all the same
    title = plots.sweep(out).get_suptitle()
    assert title.endswith("on the regional task (R = 2), encoder of source/sa_seed0 (frozen)"), title


def test_encoder_from_errors(tmp_path):
    source = tmp_path / "source"
    run_ablation(AblationConfig.quick(solvers=(), grads=(), contexts=("gap",), baseline=False), source,
                 progress=False)
    with pytest.raises(ValueError, match="freeze_encoder=True needs encoder_from"):
        AblationConfig.quick(freeze_encoder=True)
    with pytest.raises(TypeError, match="encoder_from must be 'SWEEP/RUN_ID'"):
        AblationConfig.quick(encoder_from=3)
    assert AblationConfig.quick(encoder_from="a/b").encoder_from == str(Path("a/b").resolve())
    for where, match in ((source / "sa_seed0", r"'sa_seed0' is not a finished run of a sweep in"),
                         (tmp_path / "nowhere" / "gap_seed0", r"'gap_seed0' is not a finished run of a sweep in")):
        out = tmp_path / "out"
        with pytest.raises(ValueError, match=f"encoder_from='{where}': {match}"):
            run_ablation(AblationConfig.quick(encoder_from=str(where)), out, progress=False)
        assert not out.exists()  # refused before anything is written
    with pytest.raises(ValueError, match=r"encoder_from=.*source's encoder\.0\.0\.weight is of shape \(8, 3, 3, 3\), "
                                         r"where this model's is of shape \(16, 3, 3, 3\)"):
        run_ablation(AblationConfig.quick(width=16, encoder_from=str(source / "gap_seed0")), tmp_path / "w",
                     progress=False)
