"""The ablation runner: config round-trip and checks, metrics, summary, interrupted-sweep resume, refusals, CLI."""

import csv
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hamgrad as hg
from hamgrad.cli import main as cli_main
from hamgrad.experiments import (AblationConfig, confusion_matrix, iou_per_class, load_model, load_results,
                                 mean_iou, pixel_accuracy, run_ablation, summarize)
from hamgrad.experiments import runner


class Interrupt(Exception):
    """Stands in for a kill in the middle of a sweep."""


@pytest.fixture
def counted_steps(monkeypatch):
    """Count the runner's training steps; ``counter["raise_at"] = n`` makes the n-th call raise ``Interrupt``."""
    counter = {"calls": 0, "raise_at": None}
    original = runner._train_step

    def step(*args):
        counter["calls"] += 1
        if counter["calls"] == counter["raise_at"]:
            raise Interrupt
        return original(*args)

    monkeypatch.setattr(runner, "_train_step", step)
    return counter


def _tiny(**kw):
    return AblationConfig.quick(**{"solvers": ("nmf",), "grads": ("one-step", "bptt"), "iters": 10, **kw})


# ---------------------------------------------------------------------- config
def test_config_round_trip():
    config = AblationConfig(solvers=("vq", "cd"), grads=("one-step", "truncated:2", "implicit"), seeds=2,
                            eval_steps=9, num_shapes=4, lr=1e-3)
    data = json.loads(config.to_json())
    assert data["solvers"] == ["vq", "cd"] and data["eval_steps"] == 9
    assert AblationConfig.from_json(config.to_json()) == config
    assert AblationConfig.from_dict(config.to_dict()) == config
    assert AblationConfig.from_dict({"seeds": 2}) == AblationConfig(seeds=2)
    assert AblationConfig().resolved_eval_steps == 7
    assert [s.run_id for s in AblationConfig(solvers=("nmf",), grads=("truncated:2",), seeds=2).runs()] == [
        "none_seed0", "none_seed1", "nmf_truncated2_seed0", "nmf_truncated2_seed1"]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(solvers=("nmf", "foo")), ValueError, "unknown solver 'foo' in solvers"),
    (dict(grads=("one-step", "adjoint")), ValueError, "unknown gradient mode grad='adjoint'"),
    (dict(grads=("truncated:9",)), ValueError, "k must satisfy"),
    (dict(rank=64, d=64), ValueError, "rank=64 must be < d=64"),
    (dict(output_stride=2), ValueError, "output_stride must be 4 or 8"),
    (dict(checkpoint_every=30, log_every=20), ValueError, "checkpoint_every=30 must be a multiple of log_every"),
    (dict(seeds=0), ValueError, "seeds must be >= 1"),
    (dict(solvers="nmf"), TypeError, "solvers must be a list of str"),
    (dict(solvers=("nmf", "nmf")), ValueError, "solvers has duplicates"),
    (dict(solvers=(), grads=(), baseline=False), ValueError, "the sweep is empty"),
    (dict(lr=-1.0), ValueError, "lr must be > 0"),
    (dict(num_families=9), ValueError, "num_families must be <= 6"),
])
def test_config_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        AblationConfig(**kwargs)


def test_config_from_dict_unknown_key():
    with pytest.raises(ValueError, match=r"unknown AblationConfig fields \['solver'\]"):
        AblationConfig.from_dict({"solver": "nmf"})


# ---------------------------------------------------------------------- metrics and summary
def test_metrics_on_a_hand_example():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    conf = confusion_matrix(pred, target, 3, ignore_index=255)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    # IoU: class 0: 1 / (2 + 2 - 1), class 1: 2 / (2 + 3 - 2), class 2: 2 / (3 + 2 - 2)
    torch.testing.assert_close(iou_per_class(conf), torch.tensor([1 / 3, 2 / 3, 2 / 3], dtype=torch.float64))
    assert mean_iou(conf) == pytest.approx(5 / 9)
    assert pixel_accuracy(conf) == pytest.approx(5 / 7)
    absent = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), 3)  # class 2 never occurs
    assert math.isnan(iou_per_class(absent)[2]) and mean_iou(absent) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="target labels must lie in"):
        confusion_matrix(torch.tensor([0]), torch.tensor([3]), 3)


def test_summary_best_and_mean():
    rows = [dict(solver="nmf", grad="one-step", seed=s, miou=m, pixel_acc=0.9, diverged=False)
            for s, m in enumerate([0.5, 0.7, 0.6])]
    rows += [dict(solver="none", grad=None, seed=0, miou=0.4, pixel_acc=0.8, diverged=False),
             dict(solver="nmf", grad="bptt", seed=0, miou=0.3, pixel_acc=0.7, diverged=True)]
    summary = summarize(rows, ["one-step", "bptt"])
    cell = summary.cells[0]
    assert (cell.solver, cell.grad, cell.seeds) == ("nmf", "one-step", [0, 1, 2])
    assert cell.miou["best"] == 0.7 and cell.miou["mean"] == pytest.approx(0.6)
    md = summary.to_markdown()
    assert "| nmf | 70.0 (60.0) | 30.0 (30.0) |" in md
    assert "no ham (baseline, HamNet(ham=None)): 40.0 (40.0)" in md
    assert "nmf/bptt: 1" in md
    assert json.loads(json.dumps(summary.to_dict()))["cells"][1]["grad"] is None


# ---------------------------------------------------------------------- the runner
def test_interrupted_sweep_resumes_without_rerunning(tmp_path, counted_steps):
    config = _tiny()  # 3 runs (baseline, nmf one-step, nmf bptt) × 10 iterations, checkpoints every 5
    counted_steps["raise_at"] = 17  # in the second run, after its checkpoint at iteration 5
    with pytest.raises(Interrupt):
        run_ablation(config, tmp_path, progress=False)
    first = load_results(tmp_path)
    assert [r["run_id"] for r in first] == ["none_seed0"]
    assert torch.load(tmp_path / "runs" / "nmf_one-step_seed0" / "checkpoint.pt", weights_only=True)["step"] == 5

    counted_steps.update(calls=0, raise_at=None)
    summary = run_ablation(config, tmp_path, progress=False)
    assert counted_steps["calls"] == 5 + 10  # the rest of run 2 from its checkpoint, then run 3; run 1 not retrained
    rows = load_results(tmp_path)
    assert [r["run_id"] for r in rows] == ["none_seed0", "nmf_one-step_seed0", "nmf_bptt_seed0"]
    assert rows[0] == first[0]  # the finished run's row (and its timestamp) is untouched
    with open(tmp_path / "results.csv", newline="") as f:
        assert [r["run_id"] for r in csv.DictReader(f)] == [r["run_id"] for r in rows]
    assert len(summary.cells) == 3
    assert (tmp_path / "summary.md").read_text().startswith("mIoU (%)")
    assert json.loads((tmp_path / "summary.json").read_text())["grads"] == ["one-step", "bptt"]
    assert AblationConfig.from_json((tmp_path / "config.json").read_text()) == config
    for r in rows:
        assert r["curve"]["step"] == [5, 10] and 0 <= r["miou"] <= 1 and not r["diverged"]

    # a finished sweep called again trains nothing and writes no duplicate row; a stale CSV is rewritten
    (tmp_path / "results.csv").write_text("run_id\n")
    counted_steps["calls"] = 0
    run_ablation(config, tmp_path, progress=False)
    assert counted_steps["calls"] == 0
    assert load_results(tmp_path) == rows
    assert (tmp_path / "results.csv").read_text().count("\n") == 4


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, counted_steps):
    config = _tiny(grads=("bptt",), baseline=False)
    run_ablation(config, tmp_path / "whole", progress=False)
    counted_steps.update(calls=0, raise_at=8)
    with pytest.raises(Interrupt):
        run_ablation(config, tmp_path / "cut", progress=False)
    run_ablation(config, tmp_path / "cut", progress=False)
    whole, cut = load_results(tmp_path / "whole")[0], load_results(tmp_path / "cut")[0]
    for key in ("miou", "pixel_acc", "iou", "curve", "final_loss"):
        assert whole[key] == cut[key], key
    a, b = (load_model(tmp_path / d, "nmf_bptt_seed0") for d in ("whole", "cut"))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert isinstance(a, hg.nn.HamNet) and not a.training


def test_refuses_a_folder_with_another_sweep(tmp_path, counted_steps):
    config = AblationConfig.quick(solvers=(), grads=(), iters=2, log_every=1, checkpoint_every=1)
    run_ablation(config, tmp_path, progress=False)
    other = AblationConfig.quick(solvers=(), grads=(), iters=3, log_every=1, checkpoint_every=1)
    with pytest.raises(ValueError, match=r"different config \(iters: 2 -> 3\).*overwrite=True"):
        run_ablation(other, tmp_path, progress=False)
    assert len(load_results(tmp_path)) == 1
    counted_steps["calls"] = 0
    run_ablation(other, tmp_path, overwrite=True, progress=False)
    assert counted_steps["calls"] == 3
    assert [r["iters"] for r in load_results(tmp_path)] == [3]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no sweep"):
        run_ablation(config, foreign, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not a folder"):
        run_ablation(config, tmp_path / "file", progress=False)
    with pytest.raises(ValueError, match="run_id='vq_bptt_seed0' is not a run"):
        load_model(tmp_path, "vq_bptt_seed0")


def test_cli_ablate(tmp_path, capsys):
    out = str(tmp_path / "sweep")
    args = ["ablate", "--quick", "--solvers", "vq", "--grads", "one-step", "--iters", "2", "--out", out]
    assert cli_main(args) == 0
    assert "| vq |" in capsys.readouterr().out
    assert [r["run_id"] for r in load_results(out)] == ["none_seed0", "vq_one-step_seed0"]
    assert cli_main(args[:-4] + ["--iters", "3", "--out", out]) == 2
    assert "different config" in capsys.readouterr().err
    assert cli_main(["ablate", "--solvers", "nmf", "--grads", "sideways", "--out", out]) == 2
    assert "unknown gradient mode" in capsys.readouterr().err


# ---------------------------------------------------------------------- sweep files checked against the config
def _row_lines(path):
    return path.read_text().splitlines()


def test_repeated_and_foreign_rows_are_dropped_with_a_warning(tmp_path):
    config = _tiny(grads=("one-step",))
    run_ablation(config, tmp_path, progress=False)
    lines = _row_lines(tmp_path / "results.jsonl")
    foreign = json.loads(lines[1])
    foreign.update(run_id="cd_one-step_seed0", solver="cd")  # a run this config does not have
    mismatched = json.loads(lines[1])
    mismatched.update(run_id="nmf_one-step_seed0", seed=1)  # run id and seed disagree
    (tmp_path / "results.jsonl").write_text("\n".join([lines[1], lines[0], lines[1], json.dumps(foreign)]) + "\n")
    with pytest.warns(UserWarning, match=r"ignored 2 row\(s\): line 3: a repeated row of run nmf_one-step_seed0; "
                                         r"line 4 \(run cd_one-step_seed0\): its run is not in the sweep's config"):
        rows = load_results(tmp_path)
    assert [r["run_id"] for r in rows] == ["nmf_one-step_seed0", "none_seed0"]
    (tmp_path / "results.jsonl").write_text(json.dumps(mismatched) + "\n")
    with pytest.warns(UserWarning, match=r"does not match its run: seed=1 \(expected 0\)"):
        assert load_results(tmp_path) == []
    # the runner trains the run whose row was not valid, then keeps one row per run; the summary shows only these
    (tmp_path / "results.jsonl").write_text("\n".join([lines[0], lines[0], json.dumps(foreign)]) + "\n")
    with pytest.warns(UserWarning, match="ignored 2 row"):
        summary = run_ablation(config, tmp_path, progress=False)
    assert [r["run_id"] for r in load_results(tmp_path)] == ["none_seed0", "nmf_one-step_seed0"]
    assert [(c.solver, c.seeds) for c in summary.cells] == [("none", [0]), ("nmf", [0])]
    assert "cd" not in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize("damage, match", [
    (lambda p: p.write_text(p.read_text()[:-20]), r"results.jsonl line 2 is not a JSON row \(truncated"),
    (lambda p: p.write_text('{"solver": "nmf"}\n'), r"results.jsonl line 1 is not a sweep row .*run_id"),
    (lambda p: (p.parent / "config.json").write_text('{"solver": "nmf"}'),
     r"config.json is not a valid sweep config \(unknown AblationConfig fields \['solver'\]"),
    (lambda p: (p.parent / "config.json").write_text('{"seeds": '), r"config.json is not a valid sweep config"),
])
def test_damaged_sweep_files_are_named(tmp_path, damage, match):
    config = _tiny(grads=("one-step",))
    run_ablation(config, tmp_path, progress=False)
    damage(tmp_path / "results.jsonl")
    with pytest.raises(ValueError, match=match):
        load_results(tmp_path)


def test_checkpoint_of_another_run_or_config_is_never_resumed(tmp_path, counted_steps):
    config = _tiny()
    counted_steps["raise_at"] = 17  # nmf_one-step_seed0 stops after its checkpoint at step 5
    with pytest.raises(Interrupt):
        run_ablation(config, tmp_path, progress=False)
    runs = tmp_path / "runs"
    good = (runs / "nmf_one-step_seed0" / "checkpoint.pt").read_bytes()
    counted_steps.update(calls=0, raise_at=None)
    # another run's checkpoint copied in its place
    (runs / "nmf_one-step_seed0" / "checkpoint.pt").write_bytes(
        (runs / "none_seed0" / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match=r"checkpoint .*nmf_one-step_seed0.checkpoint.pt was not written by run "
                                         r"nmf_one-step_seed0 of this sweep's config \(it names run 'none_seed0'\)"):
        run_ablation(config, tmp_path, progress=False)
    # the same run of another config (lr differs)
    other = tmp_path / "other"
    run_ablation(_tiny(lr=1e-3, baseline=False), other, progress=False)
    counted_steps["calls"] = 0
    (runs / "nmf_one-step_seed0" / "checkpoint.pt").write_bytes(
        (other / "runs" / "nmf_one-step_seed0" / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match="it names run 'nmf_one-step_seed0' of another config"):
        run_ablation(config, tmp_path, progress=False)
    # a truncated checkpoint
    (runs / "nmf_one-step_seed0" / "checkpoint.pt").write_bytes(good[:len(good) // 2])
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint.pt cannot be read \(truncated"):
        run_ablation(config, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"checkpoint.pt cannot be read"):
        load_model(tmp_path, "nmf_one-step_seed0")
    assert counted_steps["calls"] == 0 and [r["run_id"] for r in load_results(tmp_path)] == ["none_seed0"]
    (runs / "nmf_one-step_seed0" / "checkpoint.pt").write_bytes(good)
    run_ablation(config, tmp_path, progress=False)
    assert counted_steps["calls"] == 5 + 10


def test_device_is_checked(tmp_path):
    with pytest.raises(ValueError, match="device='nonsense' is not a torch device"):
        run_ablation(_tiny(), tmp_path, device="nonsense", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda': no cuda device is available"):
            run_ablation(_tiny(), tmp_path, device="cuda", progress=False)
    assert not tmp_path.joinpath("config.json").exists()


# ---------------------------------------------------------------------- the lock, Ctrl-C, the CLI's messages
def _hamgrad(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "hamgrad.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


def _wait_for(path, proc, timeout=120.0):
    start = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < timeout, f"{path} did not appear"
        time.sleep(0.05)


def test_second_driver_refused_then_ctrl_c_then_resume(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["ablate", "--quick", "--solvers", "nmf", "--grads", "bptt", "--no-baseline", "--iters", "60",
            "--out", str(out)]
    first = _hamgrad(*args)
    try:
        _wait_for(out / "runs" / "nmf_bptt_seed0" / "checkpoint.pt", first)
        assert cli_main(args) == 2
        err = capsys.readouterr().err.strip()
        assert re.fullmatch(rf"hamgrad ablate: error: out_dir='{out}' is being written by another hamgrad ablate "
                            rf"\(pid {first.pid} on {re.escape(socket.gethostname())}, started [^,]+, lock "
                            rf"{out}/ablate.lock\); wait for it to finish or stop it", err), err
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "hamgrad ablate: interrupted: resume with the same command"
    assert "Traceback" not in stderr
    assert load_results(out) == []
    step = torch.load(out / "runs" / "nmf_bptt_seed0" / "checkpoint.pt", weights_only=True)["step"]
    assert 5 <= step < 60
    assert cli_main(args) == 0  # the lock was released; the run resumes from its checkpoint
    rows = load_results(out)
    assert [r["run_id"] for r in rows] == ["nmf_bptt_seed0"] and rows[0]["curve"]["step"][-1] == 60


def test_lock_of_a_dead_driver_is_taken_over(tmp_path):
    out = tmp_path / "sweep"
    dead = _hamgrad("ablate", "--quick", "--solvers", "vq", "--grads", "one-step", "--iters", "400", "--out",
                    str(out))
    try:
        _wait_for(out / "runs" / "none_seed0" / "checkpoint.pt", dead)
    finally:
        dead.kill()  # SIGKILL: no clean-up runs, the lock file keeps naming it
        dead.communicate()
    assert f'"pid": {dead.pid}' in (out / "ablate.lock").read_text()
    config = AblationConfig.quick(solvers=("vq",), grads=("one-step",), iters=400)
    with pytest.warns(UserWarning, match=rf"taking over the lock of a driver that is no longer running \(pid "
                                         rf"{dead.pid} on"):
        with runner._SweepLock(out):
            assert f'"pid": {os.getpid()}' in (out / "ablate.lock").read_text()
    assert (out / "ablate.lock").read_text() == ""  # released


def test_cli_failures_are_one_line_messages(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    cases = [
        (["ablate", "--quick", "--device", "nonsense", "--out", str(tmp_path / "a")], "device='nonsense'"),
        (["ablate", "--quick", "--out", str(tmp_path / "file" / "sub")], f"Not a directory: '{tmp_path}/file/sub'"),
        (["ablate", "--quick", "--out", str(tmp_path / "file")], f"out_dir='{tmp_path}/file' exists and is not"),
    ]
    if not torch.cuda.is_available():
        cases.append((["ablate", "--quick", "--device", "cuda", "--out", str(tmp_path / "a")],
                      "device='cuda': no cuda device is available"))
    proc = subprocess.run([sys.executable, "-m", "hamgrad.cli", *cases[0][0]], capture_output=True, text=True)
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr.startswith("hamgrad ablate: error: ") and cases[0][1] in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    for args, match in cases[1:]:  # the same path in this process: a traceback would fail the test
        assert cli_main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("hamgrad ablate: error: ") and match in err and err.count("\n") == 1, err


def test_cli_out_without_permission(tmp_path, monkeypatch, capsys):
    # as root a read-only folder is still writable, so the operating system's refusal is simulated
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert cli_main(["ablate", "--quick", "--out", str(tmp_path / "ro" / "sweep")]) == 2
    assert capsys.readouterr().err == f"hamgrad ablate: error: [Errno 13] Permission denied: '{tmp_path}/ro/sweep'\n"
