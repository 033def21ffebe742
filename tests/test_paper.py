"""The paper figures: run all six at the quick size and check what must hold in the JSON they write, by mathematics
or by construction (never pixels, never an outcome that could honestly go either way). The same checks run on the
full-size JSON committed in figures/. Then the registry (a figure of your own, the README's example), the ablation
figure of a sweep folder, and the deprecated ``hamgrad.paper``."""

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import jacrev

import hamgrad as hg
from hamgrad import figures, plots
from hamgrad.experiments import load_results
from hamgrad.figures import _common, _registry
from hamgrad.fixed_point import flatten_state, unflatten_state

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures_quick")
    figures.run_all(out, quick=True, ablation_dir=out / "sweep", progress=False)
    return out


def _load(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def _folders(quick_dir):
    return [quick_dir, REPO / "figures"]


def check_spectrum(r: dict) -> None:
    K, k = r["size"]["K"], r["size"]["k"]
    assert len(r["runs"]) == 5
    for run in r["runs"]:
        assert run["t"] == list(range(K + 1))  # J_t at h^t, t = 0 … K
        assert len(run["eigvals"]) == K + 1 and all(1 <= len(ev) <= k for ev in run["eigvals"])
        for ev, rho, sigma in zip(run["eigvals"], run["rho"], run["sigma"]):
            moduli = [math.hypot(*v) for v in ev]
            assert moduli == sorted(moduli, reverse=True)
            assert rho <= sigma * (1 + 1e-6)  # ρ(J) <= ‖J‖₂ for every matrix


def check_flow(r: dict) -> None:
    K = r["size"]["K"]
    contractive = r["runs"][0]
    assert contractive["label"].startswith("contractive")
    # ‖J_t‖ <= 0.8 by construction, so ‖∂h^t/∂h^0‖ <= 0.8^t and it decays
    assert all(v <= 0.8 ** t * (1 + 1e-6) for t, v in zip(contractive["t"], contractive["dh_dh0"]))
    assert all(b < a for a, b in zip(contractive["dh_dh0"], contractive["dh_dh0"][1:]))
    assert contractive["L_h"] <= 0.8 + 1e-9
    assert contractive["state_bound"] is not None and contractive["state_limit"] is not None
    for run in r["runs"]:
        assert run["t"] == list(range(1, K + 1)) and len(run["dh_dx"]) == K
        assert run["t_J"] == list(range(K + 1)) and len(run["rho_J"]) == K + 1
        for rho, norm in zip(run["rho_J"], run["norm_J"]):
            if math.isfinite(rho) and math.isfinite(norm):
                assert rho <= norm * (1 + 1e-6)  # ρ(J) <= ‖J‖₂
        # Proposition 3: L_x/(1 − L_h) over J_0 … J_{K−1}, B_0 … B_{K−1} bounds every ‖∂h^t/∂x‖, t <= K
        if run["state_bound"] is not None:
            assert all(v <= run["state_bound"] * (1 + 1e-6) for v in run["dh_dx"])
        # a limit only where the Neumann series converges; otherwise the reason is given
        if not run["rho_last"] < 1:
            assert run["state_limit"] is None and run["output_limit"] is None and "ρ(J_K)" in run["limit_reason"]
        if None in (run["state_limit"], run["output_limit"], run["state_bound"], run["output_bound"]):
            assert run["limit_reason"]


def check_agreement(r: dict) -> None:
    ks, modes = r["K"], r["modes"]
    assert set(modes) == {"one-step", "one-step-coef", "truncated:2", "bptt"}
    for name, vals in modes.items():
        assert len(vals["cosine"]) == len(ks)
        assert all(-1 - 1e-9 <= c <= 1 + 1e-9 for c in vals["cosine"] if math.isfinite(c))
    # truncated:2 is undefined at K = 1 and equals BPTT at K = 2
    assert math.isnan(modes["truncated:2"]["cosine"][0])
    i2 = ks.index(2)
    assert modes["truncated:2"]["cosine"][i2] == pytest.approx(modes["bptt"]["cosine"][i2], abs=1e-9)
    # one-step equals BPTT at K = 1
    assert modes["one-step"]["cosine"][0] == pytest.approx(modes["bptt"]["cosine"][0], abs=1e-9)
    if r["memory_kind"] == "saved_for_backward":
        # by construction: one-step saves the same tensors for every K, BPTT saves K steps' worth
        assert len(set(modes["one-step"]["peak_mb"])) == 1
        assert all(b > a for a, b in zip(modes["bptt"]["peak_mb"], modes["bptt"]["peak_mb"][1:]))


def check_ablation(r: dict) -> None:
    config = r["config"]
    # (a figure drawn before the block was an axis has no blocks in its config and no block in its rows: V1)
    cells = {(row["solver"], row["grad"], row.get("block", "v1" if row["grad"] else None)) for row in r["table"]}
    expected = {(s, g, b) for s in config["solvers"] for g in config["grads"] for b in config.get("blocks", ["v1"])}
    if config["baseline"]:
        expected.add(("none", None, None))
    expected |= {(c, None, None) for c in config.get("contexts", [])}  # the other context modules of the sweep
    assert cells == expected
    for row in r["table"]:
        assert row["n"] == config["seeds"]
    assert len(r["curves"]) == len(expected) * config["seeds"]
    for c in r["curves"]:
        assert c["step"][-1] == config["iters"] and len(c["loss"]) == len(c["step"])


def check_accumulative_ratio(r: dict) -> None:
    for key in ("before", "after"):
        ratio = np.asarray(r[key])
        assert len(ratio) == len(r["k"]) and r["k"][0] == 1
        assert np.all(np.diff(ratio) >= -1e-12) and ratio[-1] == pytest.approx(1.0)
        assert np.all((ratio > 0) & (ratio <= 1 + 1e-12))


def check_feature_maps(r: dict) -> None:
    H, W = np.asarray(r["before"][0]).shape
    assert len(set(r["channels"])) == len(r["channels"]) == len(r["before"]) == len(r["after"])
    assert all(np.asarray(m).shape == (H, W) for m in r["before"] + r["after"] + r["codes"])
    img = np.asarray(r["image"])
    assert img.shape[2] == 3 and np.asarray(r["label"]).shape == img.shape[:2]
    assert img.shape[0] % H == 0  # the feature map is the image at the network's output stride


CHECKS = {"spectrum": check_spectrum, "flow": check_flow, "agreement": check_agreement,
          "ablation": check_ablation, "accumulative_ratio": check_accumulative_ratio,
          "feature_maps": check_feature_maps}


@pytest.mark.parametrize("name", figures.FIGURES)
def test_quick_figure_json(quick_dir, name):
    r = _load(quick_dir, name)
    assert r["figure"] == name and r["quick"] is True
    assert (quick_dir / f"{name}.png").stat().st_size > 10_000
    CHECKS[name](r)


def test_quick_spectrum_equals_dense_jacobians(quick_dir):
    # figure 1's numbers at t = K against a dense float64 Jacobian by autograd (jacrev), for every configuration
    r = _load(quick_dir, "spectrum")
    for run, (label, s, x, traj) in zip(r["runs"], _common.trajectories(quick=True)):
        assert run["label"] == label
        h = traj[-1]
        J = jacrev(lambda v: flatten_state(s.step(x, unflatten_state(v, h))))(flatten_state(h))
        moduli = torch.linalg.eigvals(J).abs().sort(descending=True).values
        assert run["rho"][-1] == pytest.approx(float(moduli[0]), rel=1e-6)
        assert run["sigma"][-1] == pytest.approx(float(torch.linalg.matrix_norm(J, ord=2)), rel=1e-6)
        got = [math.hypot(*v) for v in run["eigvals"][-1]]
        np.testing.assert_allclose(got, moduli[:len(got)].numpy(), rtol=1e-6)


def test_quick_ablation_table_from_the_raw_rows(quick_dir):
    # figure 4's best and mean per cell against the sweep's results.jsonl read line by line here, not by the library
    r = _load(quick_dir, "ablation")
    cells = {}
    for line in (quick_dir / "sweep" / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        cells.setdefault((row["solver"], row["grad"], row["block"]), []).append(100 * row["miou"])
    assert {(row["solver"], row["grad"], row["block"]) for row in r["table"]} == set(cells)
    for row in r["table"]:
        values = cells[(row["solver"], row["grad"], row["block"])]
        assert row["n"] == len(values)
        assert row["best"] == pytest.approx(max(values), rel=1e-12)
        assert row["mean"] == pytest.approx(sum(values) / len(values), rel=1e-12)


@pytest.mark.parametrize("name", figures.FIGURES)
def test_committed_full_size_figure_json(name):
    r = _load(REPO / "figures", name)
    assert r["figure"] == name and r["quick"] is False
    assert (REPO / "figures" / f"{name}.png").exists()
    CHECKS[name](r)


def test_run_is_resumable_and_redraws_from_json(quick_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a finished figure was recomputed")

    monkeypatch.setitem(_registry._REGISTRY, "spectrum", dataclasses.replace(figures.get("spectrum"), compute=fail))
    before = _load(quick_dir, "spectrum")
    figures.run("spectrum", quick_dir, quick=True)
    assert _load(quick_dir, "spectrum") == before


def test_bad_figure_name():
    with pytest.raises(ValueError, match="unknown figure"):
        figures.compute("attention", quick=True)


# ---------------------------------------------------------------------- the ablation figure of a sweep of your own
def _bars(fig) -> dict:
    """``{(solver, grad): bar height}`` of the ablation figure's first panel (one block), and the no-ham line's
    height; the paper's mode is labelled ``one-step-coef (paper)``."""
    ax = fig.axes[0]
    solvers = [t.get_text().lower() for t in ax.get_xticklabels()]
    bars = {(s, c.get_label().removesuffix(" (mean)").removesuffix(" (paper)")): p.get_height()
            for c in ax.containers for s, p in zip(solvers, c.patches)}
    assert "one-step-coef (paper) (mean)" in [c.get_label() for c in ax.containers]
    baseline = [line.get_ydata()[0] for line in ax.lines if line.get_label() == "no ham (mean)"]
    return bars, baseline


def test_sweep_figure_from_a_folder_or_its_rows(quick_dir, tmp_path):
    sweep = quick_dir / "sweep"  # the quick sweep behind figures 4–6
    rows = load_results(sweep)
    miou = {}
    for r in rows:
        miou.setdefault((r["solver"], r["grad"]), []).append(100 * r["miou"])
    expected = {key: float(np.mean(v)) for key, v in miou.items() if key[0] != "none"}
    failed = {**rows[1], "status": "failed", "miou": None}  # a failed run is left out
    for source in (sweep, str(sweep), rows, [*rows, failed], _load(quick_dir, "ablation")):
        bars, baseline = _bars(plots.sweep(source))
        assert bars == pytest.approx(expected)
        assert baseline == pytest.approx(miou[("none", None)])
    assert figures.ablation.read(sweep)["table"] == _load(quick_dir, "ablation")["table"]
    with pytest.raises(ValueError, match=f"the sweep folder '{tmp_path}' holds no finished runs"):
        plots.sweep(tmp_path)
    with pytest.raises(ValueError, match=r"rows must be sweep rows .* without \['grad', 'seed', 'miou', 'curve'\]"):
        plots.sweep([{"solver": "nmf"}])
    with pytest.raises(ValueError, match="rows holds no finished runs"):
        plots.sweep([failed])
    with pytest.raises(TypeError, match="source must be a sweep folder, its rows or the figure's plain data"):
        plots.sweep(42)


# ---------------------------------------------------------------------- the gradient probes figure
def test_quick_probes_figure_from_the_raw_rows(quick_dir):
    # the figure's series against the sweep's results.jsonl read line by line here: one run per ham × mode × seed
    r = _load(quick_dir, "probes")
    assert r["figure"] == "probes" and r["quick"] is True and (quick_dir / "probes.png").stat().st_size > 10_000
    rows = [json.loads(line) for line in (quick_dir / "sweep" / "results.jsonl").read_text().splitlines()]
    ham_rows = {row["run_id"]: row for row in rows if row["grad"] is not None}
    assert {run["run_id"] for run in r["runs"]} == set(ham_rows)
    assert r["skipped"] == [{"run_id": row["run_id"], "reason": row["probes"]["skipped"]}
                            for row in rows if row["grad"] is None]
    every, iters = r["config"]["probe_every"], r["config"]["iters"]
    for run in r["runs"]:
        raw = ham_rows[run["run_id"]]["probes"]
        assert run["step"] == list(range(0, iters, every)) == raw["step"]
        for key in ("encoder", "lower_bread", "rho", "rho_mean", "rho_residual"):
            assert run[key] == raw[key]
        assert all(rho >= mean > 0 for rho, mean in zip(run["rho"], run["rho_mean"]))  # the largest >= the mean
        for group in ("encoder", "lower_bread"):
            g = run[group]
            assert all(-1 - 1e-9 <= c <= 1 + 1e-9 for c in g["cosine"])
            assert g["norm_ratio"] == pytest.approx([m / b for m, b in zip(g["mode_norm"], g["bptt_norm"])])


def test_probes_figure_from_a_folder_or_its_rows(quick_dir, tmp_path):
    sweep = quick_dir / "sweep"
    rows = load_results(sweep)
    failed = {**rows[1], "status": "failed", "miou": None}
    drawn = {run["run_id"] for run in _load(quick_dir, "probes")["runs"]}
    for source in (sweep, str(sweep), rows, [*rows, failed], _load(quick_dir, "probes")):
        fig = plots.probes(source)
        # one column per ham, five rows (cosine and norm ratio of the encoder and of the lower bread, ρ)
        assert len(fig.axes) == 5 * len({run_id.split("_")[0] for run_id in drawn})
    replaced = [rows[0], failed, *rows[2:]]  # a failed run is left out
    assert {run["run_id"] for run in figures.probes.from_rows(replaced)["runs"]} == drawn - {failed["run_id"]}
    unprobed = [{**row, "probes": None} for row in rows]
    with pytest.raises(ValueError, match="rows holds no gradient probes"):
        plots.probes(unprobed)
    with pytest.raises(ValueError, match=f"the sweep folder '{tmp_path}' holds no finished runs"):
        plots.probes(tmp_path)
    with pytest.raises(TypeError, match="source must be a sweep folder, its rows or the figure's plain data"):
        plots.probes(42)


# ---------------------------------------------------------------------- the registry: a figure of your own
@pytest.fixture
def registry(monkeypatch):
    """The registry as it is, restored after the test (figures the test registers are dropped)."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


def test_readme_user_figure_is_one_register_call(registry, tmp_path, monkeypatch):
    code = re.search(r"<!-- user-figure -->\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = tmp_path / "my_figures"
    r = _load(out, "vq_radius")
    assert r["figure"] == "vq_radius" and r["quick"] is True and (out / "vq_radius.png").stat().st_size > 1000
    # ρ(J_6) against the dense Jacobian of the step at h⁶ (jacrev, float64)
    x = torch.randn(16, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for inv_t, rho in zip(r["inv_t"], r["rho"]):
        s = hg.SoftVQ(rank=4, inv_t=inv_t)
        h = hg.FixedPoint.from_solver(s).unroll(x, s.init(x, generator=torch.Generator().manual_seed(1)), 6)[-1]
        J = jacrev(lambda v: flatten_state(s.step(x, unflatten_state(v, h))))(flatten_state(h))
        assert rho == pytest.approx(float(torch.linalg.eigvals(J).abs().max()), rel=1e-6)
    # resumable like the paper's figures: not recomputed, only redrawn; the other size is refused
    spec = figures.get("vq_radius")
    figures.register("vq_radius", lambda quick, **kw: pytest.fail("recomputed"), spec.plot, replace=True)
    assert figures.run_all(out, quick=True, names=["vq_radius"], progress=False)["vq_radius"] == r
    with pytest.raises(ValueError, match=r"holds quick figures \(vq_radius.json\)"):
        figures.run("vq_radius", out, quick=False)


def test_register_refuses_bad_figures(registry):
    def compute(quick, **kw):
        return {}

    with pytest.raises(ValueError, match="a figure name='flow' is already registered; pass replace=True"):
        figures.register("flow", compute, plots.flow)
    with pytest.raises(TypeError, match="plot must be callable, got NoneType"):
        figures.register("mine", compute, None)
    with pytest.raises(ValueError, match="name must be a figure name"):
        figures.register("my figure", compute, plots.flow)
    assert "mine" not in figures.available()
    spec = figures.register("mine", compute, plots.flow)
    assert figures.get("mine") is spec and figures.available()[-1] == "mine"


def test_paper_is_a_deprecated_alias(monkeypatch):
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, "hamgrad.paper", raising=False)
    with pytest.warns(DeprecationWarning, match="hamgrad.paper is deprecated; use hamgrad.figures"):
        paper = importlib.import_module("hamgrad.paper")
    assert paper.__all__ and all(getattr(paper, name) is getattr(figures, name) for name in paper.__all__)


def _readme_table(header_start: str) -> list[list[str]]:
    """The cells of the README table whose header row starts with ``header_start`` (separator row dropped)."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _cell(row: dict) -> str:
    return f"{row['best']:.1f} ({row['mean']:.1f})"


def _by_key(folder: str) -> dict:
    return {(r["solver"], r["grad"], r["steps"]): r for r in _load(REPO / "figures" / folder, "ablation")["table"]}


def test_readme_table1_analogue_is_the_committed_sweeps():
    """Every number of the README's Table-1 analogue (both tasks) is the committed figure 4 JSON's, rounded."""
    tasks = [_by_key("."), _by_key("regional")]
    rows = _readme_table("| ham (V2, K = 6) |")
    hams = {"NMF": "nmf", "VQ": "vq", "CD": "cd"}
    others = {"no context": "none", "GAP": "gap", "SA": "sa"}
    checked = 0
    for name, *cells in rows:
        for t, table in enumerate(tasks):
            if name in hams:
                for g, grad in enumerate(("one-step-coef", "one-step", "bptt")):
                    assert cells[3 * t + g] == _cell(table[(hams[name], grad, 6)]), (name, t, grad)
                    checked += 1
            elif name in others:
                assert cells[3 * t] == _cell(table[(others[name], None, None)]), (name, t)
                checked += 1
    assert checked == 2 * (9 + 3)


TRANSPLANTS = {  # the README's columns: figure folder, the run whose encoder the sweep starts from, frozen or not
    "SA encoder, frozen": ("regional-sa-encoder", "table1-regional/sa_seed0", True),
    "SA encoder, trained": ("regional-sa-encoder-trained", "table1-regional/sa_seed0", False),
    "GAP encoder, frozen": ("regional-gap-encoder", "table1-regional/gap_seed0", True),
}


def _transplant(column: str) -> tuple[dict, hg.experiments.AblationConfig]:
    """A transplant sweep's figure-4 table (by solver and mode) and its config, checked against the column's name."""
    folder, source, frozen = TRANSPLANTS[column]
    data = _load(REPO / "figures" / folder, "ablation")
    config = hg.experiments.AblationConfig.from_dict(data["config"])
    assert config.encoder_from.endswith(source) and config.freeze_encoder is frozen and config.task == "regional"
    return {(r["solver"], r["grad"]): r for r in data["table"]}, config


def _ceiling(config) -> float:
    """The closed-form global ceiling (mIoU, %) of a sweep's validation images, recomputed from its config."""
    val = range(config.train_samples, config.train_samples + config.val_samples)
    return 100 * config.dataset().global_ceiling(val)["miou"]


def test_readme_transplant_table_is_the_committed_sweeps():
    header = "| head (V2, K = 6) | mode |"
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(header))
    names = [cell.strip() for cell in line[len(header):].strip("|").split("|")]
    assert names == list(TRANSPLANTS)
    tables = [_transplant(name)[0] for name in names]
    others = {"no context": "none", "GAP": "gap", "SA": "sa"}
    rows = _readme_table(header)
    assert len(rows) == 9 + 3
    for name, mode, *cells in rows:
        key = (others[name], None) if name in others else (name.lower(), mode.split(" ")[0])
        assert cells == [_cell(table[key]) for table in tables], key


def test_regional_property_holds_from_the_sa_encoder_trained_and_not_on_a_frozen_one():
    """Issue 17's property of the regional task, on the committed sweeps: trained from an encoder that separates the
    tints, GAP stays within 5 points of the closed-form global ceiling while SA and at least one ham rise 15 points
    above GAP (means over seeds). Frozen, that encoder lets GAP past the ceiling; on GAP's own encoder nothing rises."""
    table, config = _transplant("SA encoder, trained")
    ceiling = _ceiling(config)  # the same validation images in all three sweeps
    gap = table[("gap", None)]["mean"]
    hams = {key: row["mean"] for key, row in table.items() if key[1] is not None}
    assert gap <= ceiling + 5
    assert table[("sa", None)]["mean"] >= gap + 15
    assert max(hams.values()) >= gap + 15
    assert max(hams, key=hams.get) == ("nmf", "bptt")
    table, other = _transplant("SA encoder, frozen")
    assert _ceiling(other) == ceiling and table[("gap", None)]["mean"] > ceiling + 5
    table, other = _transplant("GAP encoder, frozen")
    assert _ceiling(other) == ceiling
    assert max(row["mean"] for key, row in table.items() if key[0] != "none") < ceiling


def test_readme_transplant_probe_statement_is_the_committed_probes():
    """The README's probe numbers for the sweep trained from the SA encoder, recomputed from its probes JSON: means
    over the probes after initialisation, then over seeds."""
    runs = _load(REPO / "figures" / "regional-sa-encoder-trained", "probes")["runs"]

    def mean(solver, grad, series):
        cells = [series(run)[1:] for run in runs if (run["solver"], run["grad"]) == (solver, grad)]
        assert len(cells) == 3
        return float(np.mean([np.mean(c) for c in cells]))

    def cosine(part):
        return lambda run: run[part]["cosine"]

    rho = [mean(solver, grad, lambda run: run["rho"]) for solver, grad in {(r["solver"], r["grad"]) for r in runs}]
    text = " ".join((REPO / "README.md").read_text().split())
    assert (f"NMF's `one-step` gradient agrees with BPTT's at cosine {mean('nmf', 'one-step', cosine('encoder')):.2f} "
            f"(lower bread {mean('nmf', 'one-step', cosine('lower_bread')):.2f})") in text
    assert f"CD's `one-step` agrees at {mean('cd', 'one-step', cosine('encoder')):.2f}" in text
    assert min(min(run["rho"]) for run in runs) > 1
    assert f"ρ(J_K) > 1 in every probe (means {min(rho):.1f}–{max(rho):.1f})" in text


def test_readme_k_table_is_the_committed_k_sweep():
    table = _by_key("k-sweep")
    rows = _readme_table("| ham (V2) | mode | K = 6 |")
    assert len(rows) == 9
    for name, mode, *cells in rows:
        grad = mode.split(" ")[0]
        for K, cell in zip((6, 12, 24), cells):
            assert cell == _cell(table[(name.lower(), grad, K)]), (name, grad, K)
