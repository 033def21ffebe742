"""Sweeps under hostile conditions (issue 19): what a rerun says, a sweep that grows, rows that do not belong to the
config, a damaged config.json repaired without losing runs, a full disk, read-only storage, folders where files go,
and a stale worker of a dead driver (the Ray cases with a real cluster are in test_experiments.py)."""

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from hamgrad.cli import main as cli_main
from hamgrad.experiments import AblationConfig, load_results, run_ablation, summarize
from hamgrad.experiments import runner

from sweep_helpers import Interrupt, count_steps


@pytest.fixture
def counted_steps(monkeypatch):
    """The runner's training steps, counted (``sweep_helpers.count_steps``)."""
    return count_steps(monkeypatch)


def _tiny(**kw):
    return AblationConfig.quick(**{"solvers": ("nmf",), "grads": ("one-step", "bptt"), "iters": 10, **kw})


ARGS = ["ablate", "--quick", "--solvers", "nmf", "--grads", "one-step", "--iters", "4"]


def _finished_at(out):
    return {r["run_id"]: r["finished_at"] for r in load_results(out)}


def _files(out):
    return {p: p.stat().st_mtime_ns for p in Path(out).rglob("*") if p.is_file()}


# ---------------------------------------------------------------------- what a rerun says and writes
def test_rerun_says_all_runs_finished_writes_nothing_and_leaves_no_lock(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli_main([*ARGS, "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert f"results in {out}: results.jsonl, results.csv, summary.md (2 finished of 2 runs)" in first
    assert not (out / "ablate.lock").exists()  # removed on a clean finish
    before = _files(out)
    assert cli_main([*ARGS, "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert again.startswith(f"all 2 runs of the sweep in {out} already finished\n")
    assert "| nmf | " in again and again.count("mIoU (%)") == 1
    assert _files(out) == before  # nothing rewritten, no lock left behind


def test_more_seeds_and_k_values_grow_the_sweep_keeping_its_runs(tmp_path, counted_steps):
    config = _tiny(grads=("one-step",))  # 2 runs × 10 iterations, checkpoints every 5
    counted_steps["raise_at"] = 17  # in the second run, after its checkpoint at iteration 5
    with pytest.raises(Interrupt):
        run_ablation(config, tmp_path, progress=False)
    kept = _finished_at(tmp_path)
    assert list(kept) == ["none_seed0"]
    counted_steps.update(calls=0, raise_at=None)
    grown = _tiny(grads=("one-step",), seeds=2, steps=(6, 3))
    with pytest.warns(UserWarning, match=r"config.json: the sweep grows by 4 run\(s\) \(seeds: 1 -> 2; steps: 6 -> "
                                         r"\[6, 3\]\); its finished runs are kept"):
        run_ablation(grown, tmp_path, progress=False)
    # the unfinished run resumed from its checkpoint (5 left), the 4 new runs trained (40), the finished one kept
    assert counted_steps["calls"] == 5 + 4 * 10
    rows = load_results(tmp_path)
    assert sorted(r["run_id"] for r in rows) == sorted(s.run_id for s in grown.runs())
    assert {k: v for k, v in _finished_at(tmp_path).items() if k in kept} == kept
    assert next(r for r in rows if r["run_id"] == "nmf_one-step_v2_K6_seed0")["resumed_from"] == 5
    # a change of anything but the axes (or fewer runs) is still refused, naming the way out
    for other, diff in [(_tiny(grads=("one-step",), seeds=2, steps=(6, 3), lr=1e-3), "lr: 0.003 -> 0.001"),
                        (_tiny(grads=("one-step",)), "seeds: 2 -> 1")]:
        with pytest.raises(ValueError, match=rf"different config \({diff}.*a config may only add runs"):
            run_ablation(other, tmp_path, progress=False)


# ---------------------------------------------------------------------- rows checked against the whole config
def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("edit, reason", [
    (lambda r: r.update(iters=40), r"it was trained for iters=40, the config says 10"),
    (lambda r: r.update(status="maybe"), r"its status 'maybe' is neither 'ok' nor 'failed'"),
    (lambda r: r.update(miou="0.9"), r"metrics are not numbers in \[0, 1\].*miou='0.9'"),
    (lambda r: r.update(miou=float("nan")), r"metrics are not numbers in \[0, 1\].*miou=nan"),
    (lambda r: r.update(pixel_acc=7.0), r"pixel_acc=7.0"),
    (lambda r: r.update(diverged="no"), r"diverged='no'"),
    (lambda r: r.update(curve=[1, 2]), r"curve \(not"),
])
def test_a_row_that_does_not_fit_the_config_is_ignored_and_retrained(tmp_path, counted_steps, edit, reason):
    config = _tiny(grads=("one-step",))
    run_ablation(config, tmp_path, progress=False)
    rows = _rows(tmp_path / "results.jsonl")
    edit(rows[1])
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=rf"results.jsonl: ignored 1 row\(s\): line 2 \(run nmf_one-step_v2_K6_seed0\): .*"
                                         rf"{reason}"):
        assert [r["run_id"] for r in load_results(tmp_path)] == ["none_seed0"]
    counted_steps["calls"] = 0
    with pytest.warns(UserWarning, match="ignored 1 row"):
        run_ablation(config, tmp_path, progress=False)  # no "Out of range float values" on a NaN row
    assert counted_steps["calls"] == 0  # its checkpoint was at the last iteration: evaluated again, not retrained
    again = load_results(tmp_path)
    assert [r["run_id"] for r in again] == ["none_seed0", "nmf_one-step_v2_K6_seed0"]
    assert all(0 <= r["miou"] <= 1 for r in again)


@pytest.mark.parametrize("name", ["results.jsonl", "ablate.lock", "summary.md"])
def test_a_folder_where_a_sweep_file_goes_is_one_line(tmp_path, capsys, name):
    out = tmp_path / "sweep"
    assert cli_main([*ARGS, "--out", str(out)]) == 0
    (out / name).unlink(missing_ok=True)
    (out / name).mkdir()
    capsys.readouterr()
    assert cli_main([*ARGS, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"hamgrad ablate: error: {out / name} is not a file (the sweep writes its "
                                       f"{name} there): move it away\n")


# ---------------------------------------------------------------------- a damaged config.json: repair, not wipe
def test_damaged_config_is_repaired_keeping_finished_runs(tmp_path, counted_steps, capsys):
    out = tmp_path / "sweep"
    args = [*ARGS[:-1], "10", "--grads", "one-step,bptt", "--out", str(out)]
    counted_steps["raise_at"] = 17  # the second run stops after its checkpoint at iteration 5
    with pytest.raises(Interrupt):
        cli_main(args)
    kept = _finished_at(out)
    good = (out / "config.json").read_text()
    (out / "config.json").write_text(good[:40])
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hamgrad ablate: error: {out}/config.json is not a valid sweep config (") and err.endswith(
        "; pass repair=True (hamgrad ablate --repair, with the sweep's settings) to rebuild it and keep the finished "
        "runs\n") and "--overwrite" not in err
    # --repair with settings the checkpoints contradict is refused, naming the checkpoint
    assert cli_main([*args, "--repair", "--solver-arg", "eps=1e-5"]) == 2
    assert "cannot repair config.json with this config: the checkpoint of run nmf_one-step_v2_K6_seed0 (and 1 more) was " \
           "written " \
           "by another one (solver_args: {} -> {'eps': 1e-05})" in capsys.readouterr().err
    counted_steps.update(calls=0, raise_at=None)
    assert cli_main([*args, "--repair"]) == 0
    assert "config.json: rebuilt (it was damaged" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text()) == json.loads(good)
    assert counted_steps["calls"] == 5 + 10  # the unfinished run resumed, the finished one was kept as it was
    assert {k: v for k, v in _finished_at(out).items() if k in kept} == kept
    # a deleted config.json: the refusal names --repair, which rebuilds it
    (out / "config.json").unlink()
    assert cli_main(args) == 2
    assert "holds no sweep (no config.json) (it has a results.jsonl or runs/: pass repair=True, hamgrad ablate " \
           "--repair" in capsys.readouterr().err
    assert cli_main([*args, "--repair"]) == 0 and len(load_results(out)) == 3


# ---------------------------------------------------------------------- a full disk
def test_a_full_disk_stops_the_sweep_and_it_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    args = [*ARGS[:-1], "10", "--out", str(out)]  # none_seed0 and nmf one-step, checkpoints at 5 and 10
    original, writes = runner.atomic_write, []

    def full(path, write):
        writes.append(Path(path).name)
        if Path(path).name == "checkpoint.pt" and writes.count("checkpoint.pt") == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, write)

    monkeypatch.setattr(runner, "atomic_write", full)
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"hamgrad ablate: error: no space left on device writing {out}/runs/nmf_one-step_v2_K6_seed0/"
                   f"checkpoint.pt: the sweep stopped (nothing was recorded as failed); free some space and rerun "
                   f"the same command to resume")
    assert [r["run_id"] for r in load_results(out)] == ["none_seed0"]  # no failed row
    assert torch.load(out / "runs" / "nmf_one-step_v2_K6_seed0" / "checkpoint.pt", weights_only=True)["step"] == 5
    assert not list(out.rglob("*.tmp")) and not (out / "ablate.lock").exists()
    # the driver's own files too
    monkeypatch.setattr("hamgrad._files.os.replace", _failing_replace("results.jsonl"))
    assert cli_main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"hamgrad ablate: error: no space left on device writing {out}/results.jsonl: the sweep stopped")
    monkeypatch.undo()
    assert cli_main(args) == 0
    rows = load_results(out)
    assert [(r["run_id"], r["status"]) for r in rows] == [("none_seed0", "ok"), ("nmf_one-step_v2_K6_seed0", "ok")]
    assert rows[1]["resumed_from"] == 10  # the second attempt had finished training; its row's write failed


def _failing_replace(name):
    original = os.replace

    def replace(src, dst, *a, **kw):
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(src, dst, *a, **kw)

    return replace


# ---------------------------------------------------------------------- read-only storage
def test_a_finished_sweep_on_read_only_storage_is_summarised(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    assert cli_main([*ARGS, "--out", str(out)]) == 0
    rows = load_results(out)
    capsys.readouterr()
    original = os.open

    def read_only(path, flags, *args, **kwargs):  # as a read-only mount answers any write (root ignores chmod)
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return original(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    before = _files(out)
    assert cli_main([*ARGS, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (f"hamgrad ablate: warning: out_dir='{out}' cannot be written (Read-only file system): "
                            f"every run has finished, so its summary is printed from results.jsonl and nothing is "
                            f"written\n")
    assert summarize(rows, ["one-step"]).to_markdown() in captured.out
    assert _files(out) == before
    # an unfinished sweep there cannot run: the storage's own error, one line
    assert cli_main([*ARGS[:-1], "5", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"hamgrad ablate: error: [Errno 30] Read-only file system: "
                                       f"'{out}/ablate.lock'\n")


# ---------------------------------------------------------------------- a stale worker of a dead driver
def test_a_stale_run_of_a_dead_driver_stops_without_writing(tmp_path, monkeypatch):
    """A driver dies while its (Ray) run still trains; a new driver takes the sweep over and trains the run again.
    The stale run must stop at its next checkpoint without writing it, and the new one must wait for it."""
    config = _tiny(grads=("one-step",), baseline=False)  # one run, 10 iterations, checkpoints at 5 and 10
    spec, out = config.runs()[0], tmp_path / "sweep"
    run_dir = out / "runs" / spec.run_id
    run_ablation(config, tmp_path / "reference", progress=False)
    reference = load_results(tmp_path / "reference")[0]
    out.mkdir()
    (out / "config.json").write_text(config.to_json())
    run_dir.mkdir(parents=True)
    leftover = run_dir / ".checkpoint.pt.4242.deadbeef.tmp"  # a writer killed mid-write
    leftover.write_bytes(b"half a checkpoint")
    paused, resume = threading.Event(), threading.Event()
    original, calls = runner._train_step, []

    def step(*args):
        calls.append(threading.current_thread().name)
        if calls.count("stale") == 3:
            paused.set()
            resume.wait(60)
        return original(*args)

    monkeypatch.setattr(runner, "_train_step", step)
    outcome = {}

    def train(name, token):
        try:
            with runner.tqdm(disable=True) as bar:
                outcome[name] = runner._run(config, spec, run_dir, torch.device("cpu"), bar, fence=token)
        except Exception as err:
            outcome[name] = err

    old = runner._SweepLock(out).acquire()
    stale = threading.Thread(target=train, args=("stale", old.token), name="stale")
    stale.start()
    assert paused.wait(60)
    assert not leftover.exists()  # the run's writer removed what a killed writer left
    os.close(old.fd)  # the old driver dies (as by SIGKILL: its lock file stays, naming it)
    with pytest.warns(UserWarning, match="taking over the lock of a driver that is no longer running"):
        new = runner._SweepLock(out).acquire()
    fresh = threading.Thread(target=train, args=("fresh", new.token), name="fresh")
    fresh.start()
    time.sleep(1.0)
    assert fresh.is_alive() and "fresh" not in calls  # waits for the stale run to stop
    resume.set()
    stale.join(60)
    fresh.join(120)
    new.release()
    assert isinstance(outcome["stale"], runner._Superseded), outcome["stale"]
    assert "the run stops without writing its checkpoint" in str(outcome["stale"])
    assert calls.count("stale") == 5 and calls.count("fresh") == 10  # the fresh run found no checkpoint of it
    row = outcome["fresh"]
    assert row["resumed_from"] == 0
    for key in ("miou", "pixel_acc", "iou", "curve", "final_loss"):
        assert row[key] == reference[key], key
