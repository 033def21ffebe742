"""The ablation runner: config round-trip and checks, metrics, summary, interrupted-sweep resume, refusals, CLI."""

import csv
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import hamgrad as hg
from hamgrad.cli import main as cli_main
from hamgrad import plots
from hamgrad.grad import ConvergenceWarning
from hamgrad.experiments import (AblationConfig, confusion_matrix, iou_per_class, load_model, load_results,
                                 mean_iou, pixel_accuracy, read_config, run_ablation, summarize)
from hamgrad.experiments import runner

from models import ISTA_SOLVER_SOURCE
from sweep_helpers import Interrupt, count_steps

LEGACY = Path(__file__).parent / "data" / "legacy_v1_sweep"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def counted_steps(monkeypatch):
    """The runner's training steps, counted (``sweep_helpers.count_steps``)."""
    return count_steps(monkeypatch)


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
    # a stored config without blocks was written before the block was an axis: a V1 sweep
    assert AblationConfig.from_dict({"seeds": 2}) == AblationConfig(seeds=2, blocks=("v1",))
    # evaluation steps: K for V2 (settings.py's EVAL_STEPS = TRAIN_STEPS), K + 1 for V1
    assert (AblationConfig().eval_steps_for(6, "v2"), AblationConfig().eval_steps_for(6, "v1")) == (6, 7)
    assert AblationConfig().grads == ("one-step-coef", "one-step", "bptt") and AblationConfig().blocks == ("v2",)
    assert [s.run_id for s in AblationConfig(solvers=("nmf",), grads=("truncated:2",), seeds=2).runs()] == [
        "none_seed0", "none_seed1", "nmf_truncated2_v2_K6_seed0", "nmf_truncated2_v2_K6_seed1"]


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
    (dict(blocks=("v2", "v3")), ValueError, "unknown block 'v3' in blocks"),
    (dict(blocks=()), ValueError, "blocks must name at least one of"),
    (dict(blocks="v1"), TypeError, "blocks must be a list of str"),
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
    assert "| ham | block | one-step | bptt |" in md
    assert "| nmf | v1 | 70.0 (60.0) | 30.0 (30.0) |" in md  # rows without a block are V1's
    assert "no ham (baseline, HamNet(ham=None)): 40.0 (40.0)" in md
    assert "nmf/bptt/v1: 1" in md
    # each row by its mode, the paper's one-step marked; the blocks on rows of their own
    rows += [dict(solver="nmf", grad="one-step-coef", block="v2", seed=0, miou=0.8, pixel_acc=0.9, diverged=False)]
    md = summarize(rows, ["one-step-coef", "one-step"]).to_markdown()
    assert "| ham | block | one-step-coef (paper) | one-step |" in md
    assert "| nmf | v1 | – | 70.0 (60.0) |" in md and "| nmf | v2 | 80.0 (80.0) | – |" in md
    assert "one-step-coef (paper): the paper's one-step gradient as the official Hamburger code computes it" in md
    assert json.loads(json.dumps(summary.to_dict()))["cells"][1]["grad"] is None


def test_summary_of_context_modules_only_has_no_empty_ham_table():
    rows = [dict(solver=name, grad=None, seed=0, miou=m, pixel_acc=0.9, diverged=False)
            for name, m in (("sa", 0.7), ("gap", 0.6))]
    md = summarize(rows, []).to_markdown()
    assert "| ham |" not in md and "|---" not in md
    assert "mIoU (%), best (mean) over seeds\n\nother context modules (HamNet(context=...)): sa 70.0 (70.0), gap " in md


# ---------------------------------------------------------------------- the runner
def test_interrupted_sweep_resumes_without_rerunning(tmp_path, counted_steps):
    config = _tiny()  # 3 runs (baseline, nmf one-step, nmf bptt) × 10 iterations, checkpoints every 5
    counted_steps["raise_at"] = 17  # in the second run, after its checkpoint at iteration 5
    with pytest.raises(Interrupt):
        run_ablation(config, tmp_path, progress=False)
    first = load_results(tmp_path)
    assert [r["run_id"] for r in first] == ["none_seed0"]
    assert torch.load(tmp_path / "runs" / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt", weights_only=True)["step"] == 5

    counted_steps.update(calls=0, raise_at=None)
    summary = run_ablation(config, tmp_path, progress=False)
    assert counted_steps["calls"] == 5 + 10  # the rest of run 2 from its checkpoint, then run 3; run 1 not retrained
    rows = load_results(tmp_path)
    assert [r["run_id"] for r in rows] == ["none_seed0", "nmf_one-step_v2_K6_seed0", "nmf_bptt_v2_K6_seed0"]
    assert rows[0] == first[0]  # the finished run's row (and its timestamp) is untouched
    with open(tmp_path / "results.csv", newline="") as f:
        assert [r["run_id"] for r in csv.DictReader(f)] == [r["run_id"] for r in rows]
    assert len(summary.cells) == 3
    assert (tmp_path / "summary.md").read_text().startswith("task: global (GlobalContextShapes: 5–9 shapes")
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
    a, b = (load_model(tmp_path / d, "nmf_bptt_v2_K6_seed0") for d in ("whole", "cut"))
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
    with pytest.raises(ValueError, match="run_id='vq_bptt_v2_K6_seed0' is not a run"):
        load_model(tmp_path, "vq_bptt_v2_K6_seed0")


def test_cli_ablate(tmp_path, capsys):
    out = str(tmp_path / "sweep")
    args = ["ablate", "--quick", "--solvers", "vq", "--grads", "one-step", "--iters", "2", "--out", out]
    assert cli_main(args) == 0
    assert "| vq |" in capsys.readouterr().out
    assert [r["run_id"] for r in load_results(out)] == ["none_seed0", "vq_one-step_v2_K6_seed0"]
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
    foreign.update(run_id="cd_one-step_v2_K6_seed0", solver="cd")  # a run this config does not have
    mismatched = json.loads(lines[1])
    mismatched.update(run_id="nmf_one-step_v2_K6_seed0", seed=1)  # run id and seed disagree
    (tmp_path / "results.jsonl").write_text("\n".join([lines[1], lines[0], lines[1], json.dumps(foreign)]) + "\n")
    with pytest.warns(UserWarning, match=r"ignored 2 row\(s\): line 3: a repeated row of run nmf_one-step_v2_K6_seed0; "
                                         r"line 4 \(run cd_one-step_v2_K6_seed0\): its run is not in the sweep's config"):
        rows = load_results(tmp_path)
    assert [r["run_id"] for r in rows] == ["nmf_one-step_v2_K6_seed0", "none_seed0"]
    (tmp_path / "results.jsonl").write_text(json.dumps(mismatched) + "\n")
    with pytest.warns(UserWarning, match=r"does not match its run: seed=1 \(expected 0\)"):
        assert load_results(tmp_path) == []
    legacy = {**json.loads(lines[0]), "steps": 6, "eval_steps": 7}  # a baseline row from before K was an axis
    (tmp_path / "results.jsonl").write_text(json.dumps(legacy) + "\n")
    assert [r["run_id"] for r in load_results(tmp_path)] == ["none_seed0"]
    # the runner trains the run whose row was not valid, then keeps one row per run; the summary shows only these
    (tmp_path / "results.jsonl").write_text("\n".join([lines[0], lines[0], json.dumps(foreign)]) + "\n")
    with pytest.warns(UserWarning, match="ignored 2 row"):
        summary = run_ablation(config, tmp_path, progress=False)
    assert [r["run_id"] for r in load_results(tmp_path)] == ["none_seed0", "nmf_one-step_v2_K6_seed0"]
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
    counted_steps["raise_at"] = 17  # nmf_one-step_v2_K6_seed0 stops after its checkpoint at step 5
    with pytest.raises(Interrupt):
        run_ablation(config, tmp_path, progress=False)
    runs = tmp_path / "runs"
    good = (runs / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt").read_bytes()
    counted_steps.update(calls=0, raise_at=None)
    # another run's checkpoint copied in its place
    (runs / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt").write_bytes(
        (runs / "none_seed0" / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match=r"checkpoint .*nmf_one-step_v2_K6_seed0.checkpoint.pt was not written by run "
                                         r"nmf_one-step_v2_K6_seed0 of this sweep's config \(it names run 'none_seed0'\)"):
        run_ablation(config, tmp_path, progress=False)
    # the same run of another config (lr differs)
    other = tmp_path / "other"
    run_ablation(_tiny(lr=1e-3, baseline=False), other, progress=False)
    counted_steps["calls"] = 0
    (runs / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt").write_bytes(
        (other / "runs" / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match="it names run 'nmf_one-step_v2_K6_seed0' of another config"):
        run_ablation(config, tmp_path, progress=False)
    # a truncated checkpoint
    (runs / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt").write_bytes(good[:len(good) // 2])
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint.pt cannot be read \(truncated"):
        run_ablation(config, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"checkpoint.pt cannot be read"):
        load_model(tmp_path, "nmf_one-step_v2_K6_seed0")
    assert counted_steps["calls"] == 0 and [r["run_id"] for r in load_results(tmp_path)] == ["none_seed0"]
    (runs / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt").write_bytes(good)
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
        _wait_for(out / "runs" / "nmf_bptt_v2_K6_seed0" / "checkpoint.pt", first)
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
    step = torch.load(out / "runs" / "nmf_bptt_v2_K6_seed0" / "checkpoint.pt", weights_only=True)["step"]
    assert 5 <= step < 60
    assert cli_main(args) == 0  # the lock was released; the run resumes from its checkpoint
    rows = load_results(out)
    assert [r["run_id"] for r in rows] == ["nmf_bptt_v2_K6_seed0"] and rows[0]["curve"]["step"][-1] == 60


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
    with pytest.warns(UserWarning, match=rf"taking over the lock of a driver that is no longer running \(pid "
                                         rf"{dead.pid} on"):
        with runner._SweepLock(out):
            assert f'"pid": {os.getpid()}' in (out / "ablate.lock").read_text()
    assert not (out / "ablate.lock").exists()  # released and removed


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


# ---------------------------------------------------------------------- gradient probes during training
def test_probe_every_config():
    assert AblationConfig().probe_every == 50 and AblationConfig(probe_every=0).probe_every is None
    assert AblationConfig(probe_every=0) == AblationConfig(probe_every=None)
    config = AblationConfig(probe_every=7)
    assert AblationConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match=r"probe_every \(0 or None: no probes\) must be >= 0, got -1"):
        AblationConfig(probe_every=-1)
    with pytest.raises(TypeError, match=r"probe_every \(0 or None: no probes\) must be an int >= 0, got 2.5"):
        AblationConfig(probe_every=2.5)


def _weights(out, run_id):
    return load_model(out, run_id).state_dict()  # parameters and BatchNorm running statistics


def test_probes_do_not_change_the_training_run(tmp_path):
    # a probe before every update against none: the same losses, mIoU and final weights and buffers, bit for bit
    kw = dict(solvers=("nmf", "vq", "cd"), grads=("one-step-coef", "one-step", "bptt"), blocks=("v1", "v2"),
              contexts=("gap",), iters=4, log_every=1, checkpoint_every=2)
    run_ablation(AblationConfig.quick(**kw, probe_every=1), tmp_path / "probed", progress=False)
    run_ablation(AblationConfig.quick(**kw, probe_every=None), tmp_path / "plain", progress=False)
    probed, plain = load_results(tmp_path / "probed"), load_results(tmp_path / "plain")
    assert [r["run_id"] for r in probed] == [r["run_id"] for r in plain]
    for a, b in zip(probed, plain):
        for key in ("curve", "miou", "pixel_acc", "iou", "final_loss"):
            assert a[key] == b[key], (a["run_id"], key)
        wa, wb = _weights(tmp_path / "probed", a["run_id"]), _weights(tmp_path / "plain", b["run_id"])
        for name in wa:
            torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=0, msg=f"{a['run_id']}: {name}")
        assert b["probes"] is None
        p = a["probes"]
        if a["grad"] is None:  # the baseline and the context module: skipped, and the row says why
            assert p == {"every": 1, "skipped": "the no-ham baseline has no ham to probe" if a["solver"] == "none"
                         else "the context module 'gap' has no ham to probe"}
            continue
        assert p["every"] == 1 and p["step"] == [0, 1, 2, 3] and len(p["rho"]) == 4 and p["seconds"] > 0
        for group in ("encoder", "lower_bread"):
            assert all(-1 - 1e-9 <= c <= 1 + 1e-9 for c in p[group]["cosine"])
            if a["grad"] == "bptt":  # the two passes start from the same initial state: the same gradient
                assert p[group]["mode_norm"] == p[group]["bptt_norm"]
            else:
                assert p[group]["mode_norm"] != p[group]["bptt_norm"]
    # the CSV stays scalar
    with open(tmp_path / "probed" / "results.csv", newline="") as f:
        assert next(csv.reader(f)) == list(runner.CSV_COLUMNS) and "probes" not in runner.CSV_COLUMNS


def test_resumed_run_keeps_its_probes(tmp_path, counted_steps):
    config = _tiny(grads=("one-step",), baseline=False, probe_every=2)
    run_ablation(config, tmp_path / "whole", progress=False)
    counted_steps.update(calls=0, raise_at=8)  # killed after the checkpoint at step 5 (probes at 0, 2, 4 taken)
    with pytest.raises(Interrupt):
        run_ablation(config, tmp_path / "cut", progress=False)
    ckpt = torch.load(tmp_path / "cut" / "runs" / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 5 and ckpt["probes"]["step"] == [0, 2, 4]
    run_ablation(config, tmp_path / "cut", progress=False)
    whole, cut = load_results(tmp_path / "whole")[0], load_results(tmp_path / "cut")[0]
    assert cut["resumed_from"] == 5 and cut["probes"]["step"] == [0, 2, 4, 6, 8]
    without_time = lambda p: {k: v for k, v in p.items() if k != "seconds"}
    assert without_time(cut["probes"]) == without_time(whole["probes"])


def test_checkpoint_from_before_probes_is_resumed(tmp_path, counted_steps):
    # a checkpoint written before AblationConfig had probe_every (its config JSON lacks the field, it holds no
    # probes) is this config's with the default, as config.json is read: resumed, probes from there on
    config = _tiny(grads=("one-step",), baseline=False)
    counted_steps["raise_at"] = 8
    with pytest.raises(Interrupt):
        run_ablation(config, tmp_path, progress=False)
    path = tmp_path / "runs" / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    old["config"] = json.dumps({k: v for k, v in json.loads(old["config"]).items() if k != "probe_every"})
    del old["probes"]
    torch.save(old, path)
    (tmp_path / "config.json").write_text(old["config"])
    counted_steps.update(calls=0, raise_at=None)
    run_ablation(config, tmp_path, progress=False)
    assert counted_steps["calls"] == 5
    row = load_results(tmp_path)[0]
    assert row["resumed_from"] == 5 and row["probes"]["step"] == []  # probe_every 50: none after step 5 of 10
    assert isinstance(load_model(tmp_path, row["run_id"]), hg.nn.HamNet)


def test_cli_probe_every(tmp_path):
    for flag, expected in (("3", 3), ("0", None)):
        out = tmp_path / flag
        assert cli_main(["ablate", "--quick", "--solvers", "nmf", "--grads", "one-step", "--no-baseline", "--iters",
                         "4", "--probe-every", flag, "--out", str(out)]) == 0
        assert json.loads((out / "config.json").read_text())["probe_every"] == expected
        probes = load_results(out)[0]["probes"]
        assert (probes is None) if expected is None else probes["step"] == [0, 3]


# ---------------------------------------------------------------------- K as a sweep axis
def test_steps_axis_config():
    config = AblationConfig(solvers=("nmf",), grads=("one-step", "truncated:2"), seeds=1, steps=[2, 6])
    assert config.steps == (2, 6) and AblationConfig.from_json(config.to_json()) == config
    assert [s.run_id for s in config.runs()] == ["none_seed0", "nmf_one-step_v2_K2_seed0", "nmf_truncated2_v2_K2_seed0",
                                                 "nmf_one-step_v2_K6_seed0", "nmf_truncated2_v2_K6_seed0"]
    assert (config.eval_steps_for(2, "v2"), config.eval_steps_for(2, "v1"),
            AblationConfig(steps=(2, 6), eval_steps=9).eval_steps_for(2, "v2")) == (2, 3, 9)
    for kwargs, error, match in [(dict(steps=(1, 6), grads=("truncated:2",)), ValueError, "k must satisfy"),
                                 (dict(steps=(6, 6)), ValueError, "steps has duplicates"),
                                 (dict(steps=()), ValueError, "non-empty tuple"),
                                 (dict(steps=(6, 0)), ValueError, "steps must be >= 1"),
                                 (dict(steps=(6, 2.5)), TypeError, "steps must be an int")]:
        with pytest.raises(error, match=match):
            AblationConfig(**kwargs)


def test_steps_and_blocks_axes_rows_models_and_summary(tmp_path, capsys):
    out = tmp_path / "k"
    assert cli_main(["ablate", "--quick", "--solvers", "nmf", "--grads", "one-step,bptt", "--steps", "1,3",
                     "--blocks", "v1,v2", "--iters", "5", "--out", str(out)]) == 0
    rows = load_results(out)
    assert [(r["run_id"], r["block"], r["steps"], r["eval_steps"]) for r in rows] == [
        ("none_seed0", None, None, None),
        ("nmf_one-step_K1_seed0", "v1", 1, 2), ("nmf_bptt_K1_seed0", "v1", 1, 2),
        ("nmf_one-step_v2_K1_seed0", "v2", 1, 1), ("nmf_bptt_v2_K1_seed0", "v2", 1, 1),
        ("nmf_one-step_K3_seed0", "v1", 3, 4), ("nmf_bptt_K3_seed0", "v1", 3, 4),
        ("nmf_one-step_v2_K3_seed0", "v2", 3, 3), ("nmf_bptt_v2_K3_seed0", "v2", 3, 3)]
    for r in rows[1:]:  # each run's network was built with its block, K (training) and evaluation steps
        block = load_model(out, r["run_id"]).hamburger
        assert (block.version, block.steps) == (r["block"], (r["steps"], r["eval_steps"]))
    with open(out / "results.csv", newline="") as f:
        assert [(r["run_id"], r["block"]) for r in csv.DictReader(f)] == [
            (r["run_id"], r["block"] or "") for r in rows]
    printed = capsys.readouterr().out
    assert "| ham | block | mode | K = 1 | K = 3 |" in printed
    entry = lambda r: f"{100 * r['miou']:.1f} ({100 * r['miou']:.1f})"  # one seed: best = mean
    by_id = {r["run_id"]: r for r in rows}
    assert (f"| nmf | v2 | bptt | {entry(by_id['nmf_bptt_v2_K1_seed0'])} | {entry(by_id['nmf_bptt_v2_K3_seed0'])} |"
            in printed)
    assert (f"| nmf | v1 | bptt | {entry(by_id['nmf_bptt_K1_seed0'])} | {entry(by_id['nmf_bptt_K3_seed0'])} |"
            in printed)
    assert cli_main(["ablate", "--steps", "6,x", "--out", str(out)]) == 2
    assert "--steps must be an int or comma-separated ints" in capsys.readouterr().err


# ---------------------------------------------------------------------- failures: retried, then a failed row
def test_raising_run_is_retried_then_recorded_as_failed(tmp_path, monkeypatch, capsys):
    config = _tiny(grads=("one-step",))
    calls = []
    original = runner._run

    def flaky(config, spec, *args):
        calls.append(spec.run_id)
        if spec.run_id == "none_seed0" and calls.count("none_seed0") == 1:
            raise RuntimeError("transient")
        if spec.run_id == "nmf_one-step_v2_K6_seed0":
            raise MemoryError("out of memory")
        return original(config, spec, *args)

    monkeypatch.setattr(runner, "_run", flaky)
    with pytest.warns(UserWarning) as caught:
        summary = run_ablation(config, tmp_path, progress=False, retries=2)
    assert calls == ["none_seed0"] * 2 + ["nmf_one-step_v2_K6_seed0"] * 3
    assert [str(w.message) for w in caught] == [
        "run none_seed0 failed (attempt 1 of 3): RuntimeError: transient; trying again",
        "run nmf_one-step_v2_K6_seed0 failed (attempt 1 of 3): MemoryError: out of memory; trying again",
        "run nmf_one-step_v2_K6_seed0 failed (attempt 2 of 3): MemoryError: out of memory; trying again",
        "run nmf_one-step_v2_K6_seed0 failed (attempt 3 of 3): MemoryError: out of memory; recorded as failed"]
    rows = load_results(tmp_path)
    assert [(r["run_id"], r["status"]) for r in rows] == [("none_seed0", "ok"), ("nmf_one-step_v2_K6_seed0", "failed")]
    assert rows[1]["error"] == "MemoryError: out of memory" and rows[1]["attempts"] == 3 and rows[1]["miou"] is None
    assert [c.solver for c in summary.cells] == ["none"]
    assert "failed runs (1, not in the tables" in summary.to_markdown()
    assert "- nmf_one-step_v2_K6_seed0: MemoryError: out of memory" in (tmp_path / "summary.md").read_text()
    # the next call tries the failed run again (only it) and its row replaces the failed one
    monkeypatch.setattr(runner, "_run", original)
    run_ablation(config, tmp_path, progress=False)
    again = load_results(tmp_path)
    assert [(r["run_id"], r["status"]) for r in again] == [("none_seed0", "ok"), ("nmf_one-step_v2_K6_seed0", "ok")]
    assert again[0] == rows[0]


def test_one_worker_runs_in_process_without_ray(tmp_path):
    code = ("import sys; from hamgrad.experiments import AblationConfig, run_ablation; "
            "run_ablation(AblationConfig.quick(solvers=(), grads=(), iters=2), sys.argv[1], progress=False, "
            "workers=1); print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    assert [r["run_id"] for r in load_results(tmp_path)] == ["none_seed0"]


def test_ray_address_that_does_not_answer(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on: bound here, never listened to
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
        with pytest.raises(ValueError, match=rf"address='{address}': no Ray cluster answers there \(.*refused"):
            run_ablation(_tiny(), tmp_path, progress=False, address=address)
    with pytest.raises(ValueError, match="address must be 'auto' or 'HOST:PORT', got 'nowhere'"):
        run_ablation(_tiny(), tmp_path, progress=False, address="nowhere")
    # on a cluster the driver need not have the workers' device, but Ray hides GPUs from runs that reserve none
    with pytest.raises(ValueError, match=r"device='cuda' on Ray needs gpus_per_run > 0 \(hamgrad ablate --gpus"):
        run_ablation(_tiny(), tmp_path, progress=False, address="auto", device="cuda")


# ---------------------------------------------------------------------- Ray beside another cluster on the machine
_SMALL = ["ablate", "--quick", "--solvers", "nmf", "--grads", "one-step", "--no-baseline", "--iters", "2"]


def _cli(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "hamgrad.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _own_processes(marker: str) -> list:
    """The pids whose command line names ``marker`` (the second cluster's temporary folder)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace") and int(cmdline.parent.name) != os.getpid():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.fixture
def second_cluster():
    """A Ray cluster started by `ray start --head`, as a user's may run on the host: its own temporary folder (where
    it leaves its address file, as `ray start` does in /tmp/ray) and ports. ``env`` makes a process see it as the
    machine's current cluster. Stopped by killing its own processes (never `ray stop`, which stops every Ray instance
    on the machine). Token authentication is off on both sides (it would otherwise share ~/.ray/auth_token with the
    other Ray instances of this machine)."""
    base = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_TMPDIR": str(base), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ports = _free_ports(7)
    flags = ["--port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
             "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port"]
    start = subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--num-cpus=1",
                            "--include-dashboard=false", "--disable-usage-stats",
                            *(f"{f}={p}" for f, p in zip(flags, ports))],
                           env=env, capture_output=True, text=True, timeout=300)

    def stop():
        for _ in range(50):
            pids = _own_processes(str(base))
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)

    try:
        assert start.returncode == 0, start.stderr
        yield env, base, stop
    finally:
        stop()
        shutil.rmtree(base, ignore_errors=True)


def test_workers_start_their_own_ray_instance_beside_a_running_cluster(tmp_path, second_cluster):
    env, base, stop = second_cluster
    address = (base / "ray" / "ray_current_cluster").read_text().strip()
    local_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}  # Ray's defaults: it warns about its tokens
    own = _cli(local_env, *_SMALL, "--workers", "2", "--out", str(tmp_path / "own"))
    assert own.returncode == 0, own.stderr  # it did not attach (Ray refuses num_cpus when attaching)
    assert [r["status"] for r in load_results(tmp_path / "own")] == ["ok"]
    for banner in ("Started a local Ray instance", "Token authentication", "Connecting to existing", "INFO"):
        assert banner not in own.stderr  # Ray's own lines are hidden unless --verbose
    # only --address attaches: 'auto' finds the cluster through its address file, checked to answer first
    attached = _cli(env, *_SMALL, "--address", "auto", "--out", str(tmp_path / "attached"))
    assert attached.returncode == 0, attached.stderr
    _same(load_results(tmp_path / "attached"), load_results(tmp_path / "own"))
    stop()  # its address file stays behind, naming a cluster that is gone
    start = time.monotonic()
    stale = _cli(env, *_SMALL, "--address", "auto", "--out", str(tmp_path / "stale"))
    assert stale.returncode == 2 and time.monotonic() - start < 120, stale.stderr
    assert stale.stderr.strip().splitlines()[-1] == (
        f"hamgrad ablate: error: address='auto' (found {address} in {base}/ray/ray_current_cluster, which a stopped "
        f"cluster may have left behind): no Ray cluster answers there (Connection refused); start one with `ray "
        f"start --head --port={address.rpartition(':')[2]}` or check the address")


def test_address_where_another_server_listens_is_refused_quickly(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer():  # an HTTP/1.1 server: it answers, but not as Ray's gRPC does
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        proc = _cli(os.environ, *_SMALL, "--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "s"), timeout=120)
    finally:
        server.close()
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"hamgrad ablate: error: address='127.0.0.1:{port}': no Ray cluster answers there (what listens there does "
        f"not speak Ray's gRPC protocol); start one with `ray start --head --port={port}` or check the address")


# ---------------------------------------------------------------------- Ray: a real local instance, 2 workers
@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance (2 CPUs) for the module's Ray tests; run_ablation uses it as it finds it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


_DETERMINISTIC = ("run_id", "status", "steps", "miou", "pixel_acc", "iou", "final_loss", "diverged", "curve")


def _same(rows_a, rows_b):
    a = {r["run_id"]: {k: r[k] for k in _DETERMINISTIC} for r in rows_a}
    b = {r["run_id"]: {k: r[k] for k in _DETERMINISTIC} for r in rows_b}
    assert len(a) == len(rows_a) and len(b) == len(rows_b)
    assert a == b


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The Ray tests' sweep, run in this process: the reference every Ray run must reproduce bitwise."""
    config = AblationConfig.quick(solvers=("nmf", "vq"), grads=("one-step", "bptt"), iters=20)
    out = tmp_path_factory.mktemp("sequential")
    run_ablation(config, out, progress=False)
    return config, load_results(out)


def test_ray_sweep_matches_the_sequential_one(tmp_path, ray_address, sequential):
    config, reference = sequential
    run_ablation(config, tmp_path, progress=False, workers=2)
    rows = load_results(tmp_path)
    assert sorted(r["run_id"] for r in rows) == sorted(s.run_id for s in config.runs())
    _same(rows, reference)  # bitwise: same data, seeds and torch threads (1) in the workers
    assert not list(tmp_path.glob("**/*.tmp"))


def test_ray_raising_run_is_retried_then_failed_then_rerun(tmp_path, ray_address, sequential):
    config, reference = sequential
    (tmp_path / "config.json").write_text(config.to_json())  # a sweep that has not started
    blocked = tmp_path / "runs" / "vq_bptt_v2_K6_seed0"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the run's folder goes: the run raises in its worker")
    with pytest.warns(UserWarning) as caught:
        summary = run_ablation(config, tmp_path, progress=False, workers=2, retries=1)
    failures = [str(w.message) for w in caught if "vq_bptt_v2_K6_seed0 failed" in str(w.message)]
    assert [m.split(": ")[0] for m in failures] == ["run vq_bptt_v2_K6_seed0 failed (attempt 1 of 2)",
                                                    "run vq_bptt_v2_K6_seed0 failed (attempt 2 of 2)"]
    assert "FileExistsError" in failures[-1] and failures[-1].endswith("recorded as failed")
    rows = load_results(tmp_path)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["run_id"] for r in failed] == ["vq_bptt_v2_K6_seed0"] and str(blocked) in failed[0]["error"]
    assert "- vq_bptt_v2_K6_seed0: FileExistsError" in summary.to_markdown()
    blocked.unlink()
    run_ablation(config, tmp_path, progress=False, workers=2)
    again = load_results(tmp_path)
    _same(again, reference)
    finished = {r["run_id"]: r["finished_at"] for r in rows if r["status"] == "ok"}
    assert {r["run_id"]: r["finished_at"] for r in again if r["run_id"] in finished} == finished  # not retrained


def test_ray_workers_get_a_users_solver_defined_in_a_file(tmp_path, ray_address, monkeypatch):
    from hamgrad.solvers import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    path = tmp_path / "ray_ista.py"  # on no worker's path: the workers get it from the driver
    path.write_text(ISTA_SOLVER_SOURCE.replace('"NAME"', "'ray_ista'"), encoding="utf-8")
    args = ["ablate", "--quick", "--import", str(path), "--solvers", "ray_ista", "--solver-arg", "lam=0.02",
            "--grads", "one-step,bptt", "--no-baseline", "--iters", "6"]
    try:
        assert cli_main([*args, "--out", str(tmp_path / "here")]) == 0
        assert cli_main([*args, "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    finally:
        sys.modules.pop("ray_ista", None)
    here, there = load_results(tmp_path / "here"), load_results(tmp_path / "ray")
    assert [r["status"] for r in there] == ["ok", "ok"]
    _same(there, here)  # bitwise the same runs


def test_ray_driver_killed_then_rerun(tmp_path, ray_address, sequential):
    config, reference = sequential
    out = tmp_path / "sweep"
    driver = _hamgrad("ablate", "--quick", "--solvers", "nmf,vq", "--grads", "one-step,bptt", "--iters", "20",
                      "--workers", "2", "--address", ray_address, "--out", str(out))
    try:
        start = time.monotonic()
        def mid_sweep():  # a run has finished and another has a checkpoint but no row yet
            done = {r["run_id"] for r in load_results(out)} if (out / "results.jsonl").exists() else set()
            return done and any(p.parent.name not in done for p in out.glob("runs/*/checkpoint.pt"))

        while not mid_sweep():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() - start < 240
            time.sleep(0.05)
        with pytest.raises(ValueError, match=rf"being written by another hamgrad ablate \(pid {driver.pid} on"):
            run_ablation(config, out, progress=False, workers=2)
    finally:
        driver.kill()  # SIGKILL mid-sweep
        driver.communicate()
    before = load_results(out)
    assert 1 <= len(before) < len(config.runs())
    left = [out / ".results.jsonl.4242.deadbeef.tmp"] + [p.parent / ".checkpoint.pt.4242.deadbeef.tmp"
                                                           for p in out.glob("runs/*/checkpoint.pt")]
    for tmp in left:  # what writers killed mid-write leave
        tmp.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match=rf"taking over the lock of a driver that is no longer running \(pid "
                                         rf"{driver.pid}"):
        run_ablation(config, out, progress=False, workers=2)
    assert not list(out.rglob("*.tmp")) and not (out / "ablate.lock").exists()
    rows = load_results(out)
    _same(rows, reference)  # nothing lost, nothing duplicated, and resumed runs end where an unbroken run does
    assert rows[:len(before)] == before
    assert any(r["resumed_from"] > 0 for r in rows[len(before):]), "no unfinished run resumed from its checkpoint"


# ---------------------------------------------------------------------- sweeps written before the block was an axis
def test_sweep_from_before_the_block_axis_loads_summarises_and_resumes(tmp_path, counted_steps, capsys):
    """tests/data/legacy_v1_sweep was written by hamgrad at commit 635807a, before blocks existed (config.json
    without ``blocks``, rows without ``block``, evaluation at K + 1, checkpoints naming that config):
    ``AblationConfig.quick(solvers=("nmf",), grads=("one-step", "bptt"), iters=10)`` killed after the bptt run's
    checkpoint at step 5 (the baseline's checkpoint removed). legacy_v1_sweep_expected.json holds the bptt row of the
    same sweep run without interruption by that commit (one torch thread)."""
    out = tmp_path / "sweep"
    shutil.copytree(LEGACY, out)
    config_text = (out / "config.json").read_text()
    raw = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    config = read_config(out)
    assert config.blocks == ("v1",) and config.grads == ("one-step", "bptt") and config.eval_steps is None
    assert [s.run_id for s in config.runs()] == ["none_seed0", "nmf_one-step_K6_seed0", "nmf_bptt_K6_seed0"]
    rows = load_results(out)
    assert [(r["run_id"], r["block"], r["eval_steps"]) for r in rows] == [("none_seed0", None, None),
                                                                         ("nmf_one-step_K6_seed0", "v1", 7)]
    entry = f"{100 * raw[1]['miou']:.1f} ({100 * raw[1]['miou']:.1f})"
    assert f"| nmf | v1 | {entry} | – |" in summarize(rows, config.grads).to_markdown()
    assert [t.get_text() for t in plots.sweep(out).axes[0].get_xticklabels()] == ["NMF"]
    ham = load_model(out, "nmf_one-step_K6_seed0").hamburger
    assert (ham.version, ham.steps, ham.grad, ham.cheese) == ("v1", (6, 7), "one-step", None)

    # resumed with the command it was started with, plus --blocks v1 (the default block is now v2)
    args = ["ablate", "--quick", "--solvers", "nmf", "--grads", "one-step,bptt", "--iters", "10", "--out", str(out)]
    assert cli_main(args) == 2
    assert "blocks: ['v1'] -> ['v2']" in capsys.readouterr().err
    assert cli_main(args + ["--blocks", "v1"]) == 0
    assert counted_steps["calls"] == 5  # the rest of the bptt run, from its checkpoint; nothing else retrained
    rows = load_results(out)
    assert [{k: v for k, v in r.items() if k != "block"} for r in rows[:2]] == raw  # the finished rows, untouched
    resumed = rows[2]
    assert (resumed["run_id"], resumed["block"], resumed["eval_steps"], resumed["resumed_from"]) == (
        "nmf_bptt_K6_seed0", "v1", 7, 5)
    expected = json.loads((LEGACY.parent / "legacy_v1_sweep_expected.json").read_text())["nmf_bptt_K6_seed0"]
    for key in ("miou", "pixel_acc", "iou", "curve", "final_loss"):
        assert resumed[key] == expected[key], key  # what an uninterrupted run of the old code gave, bit for bit
    assert (out / "config.json").read_text() == config_text  # still the old file: it keeps meaning V1


# ---------------------------------------------------------------------- an implicit backward that does not converge
def test_a_training_step_whose_implicit_backward_did_not_converge_is_skipped():
    # NMF after K = 6 steps is far from a fixed point: the adjoint iteration diverges, the backward's gradient is NaN,
    # and the step is skipped (weights and optimizer state unchanged) instead of training on it
    torch.manual_seed(0)
    model = hg.nn.HamNet(num_classes=3, width=8, ham="nmf", d=16, rank=4, grad="implicit")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(3, (2, 32, 32), generator=torch.Generator().manual_seed(2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # counted, not warned at every step
        loss, unconverged = runner._train_step(model, optimizer, images, labels)
    assert unconverged == 1 and math.isfinite(float(loss))
    assert torch.isnan(model.hamburger.lower_bread.weight.grad).all()  # what the step would have trained on
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith(("running_mean", "running_var",
                                                                                   "num_batches_tracked")))
    assert not optimizer.state  # AdamW never stepped
    model.hamburger.grad = "one-step"  # a mode without an adjoint solve trains
    loss, unconverged = runner._train_step(model, optimizer, images, labels)
    assert unconverged == 0 and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_ablation_counts_and_records_unconverged_implicit_backward_solves(tmp_path):
    # `hamgrad ablate --quick --solvers nmf,vq --grads implicit` trained every run on diverged adjoint solves while
    # its rows said status ok
    config = _tiny(solvers=("nmf",), grads=("implicit", "one-step"), iters=5, log_every=5, checkpoint_every=5,
                   baseline=False)
    with pytest.warns(ConvergenceWarning, match="implicit backward"):  # each skipped step says why
        summary = run_ablation(config, tmp_path, progress=False)
    rows = {r["grad"]: r for r in load_results(tmp_path)}
    implicit, one_step = rows["implicit"], rows["one-step"]
    assert implicit["status"] == "ok" and implicit["unconverged_backward"] == implicit["skipped_steps"] > 0
    assert one_step["unconverged_backward"] == one_step["skipped_steps"] == 0
    with open(tmp_path / "results.csv", newline="") as f:
        csv_rows = {r["grad"]: r for r in csv.DictReader(f)}
    assert csv_rows["implicit"]["skipped_steps"] == str(implicit["skipped_steps"])
    model = load_model(tmp_path, implicit["run_id"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    cell = next(c for c in summary.cells if c.grad == "implicit")
    assert (cell.skipped_steps, cell.trained_steps) == (implicit["skipped_steps"], 5)
    assert f"nmf/implicit/{implicit['block']}: {implicit['skipped_steps']} of 5" in summary.to_markdown()
