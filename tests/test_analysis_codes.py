"""hamgrad.analysis.code_information: the share of a label's entropy that hard codes explain, against SciPy's
entropies of the contingency table, its invariances, its chance level and its argument errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy
from scipy.stats.contingency import crosstab

import hamgrad as hg
from hamgrad.analysis import code_information
from hamgrad.experiments import AblationConfig


def _scipy_share(code: np.ndarray, label: np.ndarray) -> float:
    """I(code; label) / H(label) = (H(code) + H(label) − H(code, label)) / H(label), from SciPy."""
    table = crosstab(code, label).count
    h_label, h_code, h_joint = entropy(table.sum(axis=0)), entropy(table.sum(axis=1)), entropy(table.ravel())
    return (h_code + h_label - h_joint) / h_label


def test_matches_scipy_on_random_codes_and_labels():
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(4, 6, 300, generator=g, dtype=torch.float64)
    labels = torch.randint(-1, 4, (4, 300), generator=g)
    labels[:, :5] = torch.arange(5) - 1  # every class present in every sample
    bias = torch.arange(300) % 6  # codes that lean on the label, so the shares are not all near zero
    codes[torch.arange(4)[:, None], (labels.clamp_min(0) + bias * (torch.arange(300) % 2)) % 6,
          torch.arange(300)] += 1.0
    hard = codes.argmax(dim=1)
    r = code_information(codes, labels, permutations=0)
    for b in range(4):
        keep = (labels[b] >= 0).numpy()
        want = _scipy_share(hard[b].numpy()[keep], labels[b].numpy()[keep])
        assert r.explained[b] == pytest.approx(want, abs=1e-12)
        assert r.codes_used[b] == len(np.unique(hard[b].numpy()[keep]))
    assert max(r.explained) > 0.2 and math.isnan(r.chance[0])


def test_exact_split_explains_all_constant_codes_nothing_and_one_label_is_nan():
    labels = torch.tensor([[0, 0, 1, 1, 2, 2], [3, 3, 3, 3, -1, -1]])
    onehot = torch.nn.functional.one_hot(torch.tensor([[4, 4, 0, 0, 2, 2], [1, 2, 1, 2, 0, 0]]), 5).mT.float()
    r = code_information(onehot, labels, permutations=0)
    assert r.explained[0] == pytest.approx(1.0) and math.isnan(r.explained[1])
    assert r.codes_used == [3, 2]
    assert code_information(torch.ones(2, 3, 6), labels, permutations=0).explained[0] == 0.0


def test_invariant_to_renaming_codes_and_labels_and_blind_to_unlabelled_positions():
    g = torch.Generator().manual_seed(1)
    codes, labels = torch.randn(1, 5, 200, generator=g), torch.randint(0, 3, (1, 200), generator=g)
    base = code_information(codes, labels, permutations=0).explained[0]
    renamed = code_information(codes[:, torch.tensor([3, 0, 4, 1, 2])], (labels * 2 + 7), permutations=0)
    assert renamed.explained[0] == pytest.approx(base, abs=1e-12)
    extra = torch.cat([codes, torch.randn(1, 5, 50, generator=g)], dim=2)
    ignored = torch.cat([labels, torch.full((1, 50), -3)], dim=1)
    assert code_information(extra, ignored, permutations=0).explained[0] == pytest.approx(base, abs=1e-12)


def test_chance_is_what_codes_that_know_nothing_reach_and_is_reproducible():
    """Codes drawn independently of the labels score about their chance level (both > 0 on finite samples); codes
    that follow the labels stay far above it."""
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 2, (30, 60), generator=g)
    blind = code_information(torch.rand(30, 8, 60, generator=g), labels, generator=torch.Generator().manual_seed(0))
    mean = np.mean(blind.explained)
    assert mean > 0.02 and abs(mean - np.mean(blind.chance)) < 0.25 * np.mean(blind.chance)
    again = code_information(torch.rand(30, 8, 60, generator=torch.Generator().manual_seed(9)), labels,
                             generator=torch.Generator().manual_seed(0))
    assert again.chance == code_information(torch.rand(30, 8, 60, generator=torch.Generator().manual_seed(9)),
                                            labels, generator=torch.Generator().manual_seed(0)).chance
    knowing = torch.nn.functional.one_hot(labels, 8).mT.float()
    r = code_information(knowing, labels, generator=torch.Generator().manual_seed(0))
    assert min(r.explained) == pytest.approx(1.0) and max(r.chance) < 0.5
    assert r.to_dict()["explained"] == r.explained


@pytest.mark.parametrize("codes, labels, kwargs, error, match", [
    (torch.rand(2, 3), torch.zeros(2, 3, dtype=torch.long), {}, ValueError, r"codes must be \(B, r, n\)"),
    (torch.rand(1, 2, 3, 4), torch.zeros(1, 4, dtype=torch.long), {}, ValueError, r"codes must be \(B, r, n\)"),
    (torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), {}, TypeError, "codes"),
    (torch.full((1, 2, 3), math.nan), torch.zeros(1, 3, dtype=torch.long), {}, ValueError, "codes"),
    (torch.rand(1, 2, 3), torch.zeros(1, 3), {}, TypeError, "labels must be an integer tensor"),
    (torch.rand(1, 2, 3), [0, 1, 2], {}, TypeError, "labels must be an integer tensor"),
    (torch.rand(1, 2, 3), torch.zeros(1, 4, dtype=torch.long), {}, ValueError, r"labels must have shape \(B, n\)"),
    (torch.rand(1, 2, 3), torch.full((1, 3), -1), {}, ValueError, r"labels\[0\] has no labelled position"),
    (torch.rand(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), {"permutations": -1}, ValueError, "permutations"),
    (torch.rand(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), {"generator": 3}, TypeError, "generator"),
])
def test_argument_errors(codes, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        code_information(codes, labels, **kwargs)


def test_reachable_from_the_package():
    assert hg.analysis.code_information is code_information


def test_solvers_on_the_regional_tasks_colours_follow_the_regions_as_the_readme_states():
    """The README's control, recomputed: on the regional Table-1 sweep's 200 validation images, NMF (r = 3) on the
    colours average-pooled to the head's 12×12 grid, and VQ (r = 8) on a random ReLU lift of them to d = 32, give
    codes that carry the region well above chance: the measure can see regions where codes follow them."""
    repo = Path(__file__).resolve().parents[1]
    config = AblationConfig.from_dict(json.loads((repo / "figures/regional/ablation.json").read_text())["config"])
    data = config.dataset()
    val = range(config.train_samples, config.train_samples + config.val_samples)
    x = F.avg_pool2d(torch.stack([data[i][0] for i in val]), 4).flatten(2)
    regions = torch.stack([data.region_map(i) for i in val])
    grid = F.interpolate(regions[:, None].float(), size=(12, 12), mode="nearest-exact").long().flatten(1)
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(32, 3, generator=g) * 4, torch.rand(32, 1, generator=g) * -2
    measured = []
    for solver, features in ((hg.NMF(3), x), (hg.SoftVQ(8), torch.relu(W @ x + b))):
        _, info = hg.solve(solver, features, steps=6, generator=torch.Generator().manual_seed(0))
        r = code_information(info.state[1], grid, generator=torch.Generator().manual_seed(0))
        explained, chance = np.mean(r.explained), np.mean(r.chance)
        assert explained > 3 * chance
        measured.append((explained, chance, np.mean(r.codes_used)))
    row = next(line for line in (repo / "README.md").read_text().splitlines() if line.startswith("| control:"))
    numbers = [float(v) for v in re.findall(r"\d+\.\d+", row)]
    assert numbers == [round(v, n) for v, n in zip(
        [measured[0][0], measured[1][0], measured[0][1], measured[1][1], measured[0][2], measured[1][2]],
        [3, 3, 3, 3, 1, 1])]
