"""The cost API and ``hamgrad cost`` under hostile input (issue 19): an int ``steps``, empty and repeated arguments,
a sweep over K or with a failed run, tables of the other size, and figures that no longer match their table."""

import json

import pytest

from hamgrad import cost
from hamgrad.cli import main
from hamgrad.experiments import AblationConfig, load_results, run_ablation
from hamgrad.experiments import runner

SMALL = ["cost", "--contexts", "gap", "--channels", "8", "--d", "8", "--rank", "2", "--repeats", "1"]


def test_context_cost_takes_an_int_steps_as_both():
    row = cost.context_cost("nmf", 4, channels=8, d=8, rank=2, steps=2, repeats=1)
    assert row.steps == (2, 2) and row.to_dict()["steps"] == [2, 2]
    with pytest.raises(ValueError, match=r"steps must be an int or a \(train, eval\) pair of ints, got 'six'"):
        cost.context_cost("nmf", 4, channels=8, d=8, rank=2, steps="six", repeats=1)


def test_repeated_names_or_sides_and_empty_results_are_refused():
    with pytest.raises(ValueError, match=r"sides has duplicates: \[8, 8\]"):
        cost.compare_contexts(("gap",), sides=(8, 8), channels=8, d=8, repeats=1)
    with pytest.raises(ValueError, match=r"names has duplicates: \['sa', 'sa'\]"):
        cost.compare_contexts(("sa", "sa"), sides=(8,), channels=8, d=8, repeats=1)
    with pytest.raises(ValueError, match="result has no rows: nothing to tabulate"):
        cost.to_markdown({"rows": []})
    with pytest.raises(ValueError, match="fit_from must be a number of positions >= 0, got -4"):
        cost.fit_slopes([], fit_from=-4)


def test_ablation_costs_of_a_sweep_over_k_with_a_failed_run(tmp_path, monkeypatch):
    config = AblationConfig.quick(solvers=("nmf",), grads=("one-step",), steps=(1, 2), iters=2, log_every=1,
                                  checkpoint_every=1)
    original = runner._run

    def fail_k2(config, spec, *args, **kwargs):
        if spec.steps == 2:
            raise RuntimeError("no luck")
        return original(config, spec, *args, **kwargs)

    monkeypatch.setattr(runner, "_run", fail_k2)
    with pytest.warns(UserWarning, match="recorded as failed"):
        run_ablation(config, tmp_path, progress=False, retries=0)
    rows = {r["run_id"]: r for r in load_results(tmp_path)}
    result = cost.ablation_costs(tmp_path, repeats=1)
    assert result["failed"] == ["nmf_one-step_v2_K2_seed0"]
    by_label = {r["label"]: r for r in result["rows"]}
    assert set(by_label) == {"none", "nmf (one-step, v2, K = 1)"}
    ham = by_label["nmf (one-step, v2, K = 1)"]
    assert (ham["steps"], ham["miou_best"]) == (1, rows["nmf_one-step_v2_K1_seed0"]["miou"])
    assert by_label["none"]["miou_best"] == rows["none_seed0"]["miou"]
    assert "| nmf (one-step, v2, K = 1) |" in cost.ablation_markdown(result)


def test_cost_command_refuses_bad_arguments_before_measuring(tmp_path, capsys):
    for argv, message in [(["--fit-from", "-4"], "--fit-from must be a map side >= 1, got -4"),
                          (["--contexts", "gap,gap", "--sizes", "8"], "names has duplicates: ['gap', 'gap']"),
                          (["--out", ""], "--out must name a folder, got an empty string")]:
        assert main([*SMALL, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hamgrad cost: error: ") and message in err and err.count("\n") == 1, err


def test_cost_command_one_size_tables_and_the_other_size(tmp_path, capsys):
    assert main([*SMALL, "--sizes", "8,16", "--fit-from", "8", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "context_cost.png").exists()
    capsys.readouterr()
    # one size: no slope can be fitted, and the old scaling figure (of two sizes) must not stay beside the new table
    assert main([*SMALL, "--sizes", "8", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "no log-log slopes: no module has two or more sizes with n >= 1024" in printed
    assert not (tmp_path / "context_cost.png").exists()
    assert json.loads((tmp_path / "context_cost.json").read_text())["quick"] is False
    # a quick table over a full-size one is refused (as hamgrad figures refuses), unless --force
    before = (tmp_path / "context_cost.json").read_text()
    assert main(["cost", "--quick", "--contexts", "gap", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"hamgrad cost: error: --out {tmp_path} holds a full-size cost table "
                                       f"({tmp_path}/context_cost.json) that this quick run would replace: choose "
                                       f"another --out, or pass --force\n")
    assert (tmp_path / "context_cost.json").read_text() == before
    assert main(["cost", "--quick", "--contexts", "gap", "--out", str(tmp_path), "--force"]) == 0
    assert json.loads((tmp_path / "context_cost.json").read_text())["quick"] is True
