"""What ``hamgrad figures`` says and refuses (issue 19): empty or mistyped arguments, quick figures marked as smoke
tests, "redrawn" on a rerun, the sweep's summary printed once, figure JSON of an older schema recomputed, and
notebooks that never write into the committed figures/."""

import json
import re
from pathlib import Path

import pytest

import hamgrad as hg
from hamgrad import figures
from hamgrad.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, message", [
    (["--only", ","], "--only names no figure (got ','); give comma-separated names from spectrum, flow,"),
    (["--only", ""], "--only names no figure (got ''); give comma-separated names from"),
    (["--only", "flow,nope"], "unknown figure(s) ['nope']; choose from"),
    (["--out", ""], "--out must name a folder, got an empty string"),
    (["--only", "ablation", "--ablation-dir", "runs/typo"], "--ablation-dir runs/typo holds no sweep (no config.json): "
                                                           "give the folder of a sweep (hamgrad ablate --out), or "
                                                           "leave --ablation-dir out to run the built-in sweep in "
                                                           "runs/paper-ablation-quick"),
])
def test_figures_refuses_what_names_nothing(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["figures", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hamgrad figures: error: ") and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing computed, trained or written


@pytest.fixture
def tiny_figure(monkeypatch):
    """A registered figure that computes in no time (``line``: y = a·x with a = 2 at the quick size, 3 at the full
    size), the registry restored after the test."""
    from matplotlib.figure import Figure

    from hamgrad.figures import _registry

    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    def compute(quick, **_):
        return {"x": [0, 1, 2], "y": [0, 2, 4] if quick else [0, 3, 6]}

    def plot(result):
        fig = Figure()
        fig.subplots().plot(result["x"], result["y"])
        fig.suptitle("a line")
        return fig

    figures.register("line", compute, plot)


def test_quick_figures_are_marked_and_a_rerun_says_redrawn(tmp_path, capsys, tiny_figure):
    out = tmp_path / "quick"
    assert main(["figures", "--quick", "--only", "line", "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert re.search(r"line: .*line.json \(computed in [\d.]+ s\)", first)
    assert "quick size: smoke-test figures, marked as such" in first
    result = figures.load("line", out)
    assert (result["y"], result["schema"], result["hamgrad"]) == ([0, 2, 4], 1, hg.__version__)
    assert figures.plot("line", result).get_suptitle() == ("a line\n[quick size: a smoke test of the code, not the "
                                                           "paper's measurement]")
    assert figures.plot("line", {**result, "quick": False}).get_suptitle() == "a line"
    assert main(["figures", "--quick", "--only", "line", "--out", str(out)]) == 0
    assert "line.json (redrawn from its JSON)" in capsys.readouterr().out


def test_figure_json_of_an_older_schema_is_recomputed(tmp_path, tiny_figure):
    figures.run("line", tmp_path, quick=True)
    saved = json.loads((tmp_path / "line.json").read_text())
    old = {k: v for k, v in saved.items() if k not in ("schema", "hamgrad")}  # as hamgrad 0.1 wrote it
    old["y"] = [0, -1, -2]  # and numbers of other conventions than this figure draws now
    (tmp_path / "line.json").write_text(json.dumps(old))
    with pytest.warns(UserWarning, match=r"line.json was written by hamgrad < 0.2 under figure schema 0 \(now 1\): "
                                         r"recomputing it"):
        result = figures.run("line", tmp_path, quick=True)
    assert result["y"] == [0, 2, 4]
    assert json.loads((tmp_path / "line.json").read_text())["schema"] == 1
    # a figure's own schema: raised when its compute changes, it makes the saved results stale
    figures.register("line", figures.get("line").compute, figures.get("line").plot, schema=2, replace=True)
    with pytest.warns(UserWarning, match=r"under figure schema 1 \(now 2\)"):
        assert figures.run("line", tmp_path, quick=True)["schema"] == 2


def test_the_sweep_summary_is_printed_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the built-in quick sweep goes to runs/paper-ablation-quick here
    assert main(["figures", "--quick", "--only", "ablation,accumulative_ratio,feature_maps", "--out", "q"]) == 0
    out = capsys.readouterr().out
    assert out.count("mIoU (%)") == 1, out
    assert "results in runs/paper-ablation-quick: results.jsonl" in out


def test_notebooks_never_write_into_the_committed_figures():
    for path in sorted((REPO / "notebooks").glob("0[1-7]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        lines = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()
                 if line.startswith("OUT =")]
        assert len(lines) == 1, path.name
        for quick in (True, False):
            scope = {"QUICK": quick, "Path": Path}
            exec(lines[0], scope)
            folder = Path(scope["OUT"]).name
            assert folder == ("figures_quick" if quick else "figures_notebooks"), (path.name, folder)
