"""The score registry: one place for every score's computation, direction and thresholds, read by all views."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.core.results import score_rows
from bench.core.scores import DEFAULT_SCORES, Score, get_score, register_score, score_names
from bench.core.scoring import score_maps
from bench.reporting.leaderboard import build_leaderboard


def test_builtins_carry_direction_and_thresholds():
    assert set(DEFAULT_SCORES) <= set(score_names())
    assert {"ssim", "spearman", "spearman_abs", "pearson", "hog", "topk", "max_rel_diff"} <= set(score_names())
    ssim, dist = get_score("ssim"), get_score("max_rel_diff")
    assert ssim.higher_is_similar and ssim.is_invariant(0.995) and not ssim.is_invariant(0.98)
    assert ssim.is_randomized(0.2) and not ssim.is_randomized(0.7) and not ssim.is_randomized(float("nan"))
    assert not dist.higher_is_similar and dist.is_invariant(1e-4) and not dist.is_invariant(1e-2)
    assert dist.is_randomized(0.9) and not dist.is_randomized(0.1)


def test_errors_name_the_accepted_scores():
    with pytest.raises(ValueError, match=r"unknown score 'iou'; accepted: ssim, spearman"):
        get_score("iou")
    with pytest.raises(ValueError, match="'ssim' is already registered"):
        register_score(Score("ssim", lambda a, b, normalization: a.maps))


def test_a_registered_score_is_computed_by_the_harness_and_judged_by_its_direction():
    # a distance: mean absolute difference of the abs-normalized maps (0 = same map)
    def mad(a, b, *, normalization):
        return (a.normalized("abs") - b.normalized("abs")).abs().flatten(1).mean(1)

    name = "test_mean_abs_diff"
    if name not in score_names():
        register_score(Score(name, mad, higher_is_similar=False, invariant_at=0.01, randomized_at=0.05))
    a = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = score_maps(a, b, [name, "ssim"])
    assert got[name].shape == (3,) and float(got[name].min()) > 0.05
    assert torch.equal(score_maps(a, a, [name])[name], torch.zeros(3, dtype=torch.float64))

    # the leaderboard reads the direction: a distance above randomized_at means "changed" (pass)
    table = score_rows({name: got[name]}, experiment="model_randomization", model="m", dataset="d",
                       method="x", condition="cascading", layer="fc")
    board = build_leaderboard(table, randomization_metric=name)
    assert board.loc[0, "rand/cascading/verdict"] == "pass"
    same = score_rows({name: torch.zeros(3)}, experiment="model_randomization", model="m", dataset="d",
                      method="x", condition="cascading", layer="fc")
    assert build_leaderboard(same, randomization_metric=name).loc[0, "rand/cascading/verdict"] == "fail"


def test_the_reporting_commands_import_no_torch():
    code = ("import importlib.metadata as m; n = len([e.load() for e in m.entry_points(group='console_scripts') "
            "if e.name in ('salbench-leaderboard', 'salbench-check')]); import bench.core.scores, bench.reporting; "
            "import sys; print(n, sorted(k for k in ('torch', 'zennit', 'timm', 'hydra') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "2 []", out.stdout + out.stderr
