"""The score registry: one place for every score's computation, direction and thresholds, read by all views."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
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
    assert not ssim.is_invariant(float("nan"))
    assert ssim.drop(1.0, 0.3) == pytest.approx(0.7) and ssim.min_drop == 0.7  # a share of the model's change
    assert not dist.higher_is_similar and dist.is_invariant(1e-4) and not dist.is_invariant(1e-2)
    assert dist.drop(0.0, 0.3) == pytest.approx(0.3)  # a distance grows when the map changes


def test_errors_name_the_accepted_scores():
    with pytest.raises(ValueError, match=r"unknown score 'iou'; accepted: ssim, ssim_abs_max"):
        get_score("iou")
    with pytest.raises(ValueError, match="'ssim' is already registered"):
        register_score(Score("ssim", lambda a, b: a.maps))


def test_a_registered_score_is_computed_by_the_harness_and_judged_by_its_direction():
    # a distance: mean absolute difference of the abs-normalized maps (0 = same map)
    def mad(a, b):
        return (a.normalized("abs_p99") - b.normalized("abs_p99")).abs().flatten(1).mean(1)

    name = "test_mean_abs_diff"
    if name not in score_names():
        register_score(Score(name, mad, higher_is_similar=False, invariant_at=0.01, min_drop=0.05))
    a = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = score_maps(a, b, [name, "ssim"])
    assert got[name].shape == (10,) and float(got[name].min()) > 0.05
    assert torch.equal(score_maps(a, a, [name])[name], torch.zeros(10, dtype=torch.float64))

    # the verdict reads the direction: a distance that grows above the repeat control by min_drop is "changed"
    def table(stage_scores):
        rows = [score_rows({name: v}, experiment="model_randomization", model="m", dataset="d", method="x",
                           condition="bottom_up", mode="bottom_up", layer=layer)
                for layer, v in (("control:repeat", torch.zeros(10)), ("conv", stage_scores))]
        return pd.concat(rows, ignore_index=True)

    assert build_leaderboard(table(got[name]), randomization_metric=name).loc[0, "rand/bottom_up/verdict"] == "pass"
    same = build_leaderboard(table(torch.zeros(10)), randomization_metric=name)
    assert same.loc[0, "rand/bottom_up/verdict"] == "fail"


def test_the_reporting_commands_import_no_torch():
    code = ("import importlib.metadata as m; n = len([e.load() for e in m.entry_points(group='console_scripts') "
            "if e.name in ('salbench-leaderboard', 'salbench-check')]); import bench.core.scores, bench.reporting; "
            "import sys; print(n, sorted(k for k in ('torch', 'zennit', 'timm', 'hydra') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "2 []", out.stdout + out.stderr
