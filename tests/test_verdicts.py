"""Randomization verdicts against controls: the rule on tables with known scores, maps that carry no information
about the model, the control rows every run writes, and the sanity-checks paper's known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bench.core.explain import MethodSpec
from bench.core.models import create_model
from bench.core.results import (
    CONTROL_EDGES,
    CONTROL_GRADIENT,
    CONTROL_INPUT,
    CONTROL_OTHER,
    CONTROL_REPEAT,
    CONTROL_RETRAINED,
    concat,
    read_tables,
    score_rows,
    write_table,
)
from bench.core.settings import RunSettings, ScoreSettings
from bench.experiments.model_randomization import model_randomization
from bench.reporting.aggregate import lower_bound, randomization_verdicts
from bench.reporting.intervals import bootstrap_means
from bench.reporting.leaderboard import build_leaderboard, load_leaderboard
from bench.reporting.render import to_html, to_markdown

RAND = "model_randomization"
N = 32


def _const(value: float, n: int = N) -> np.ndarray:
    return np.full(n, float(value))


def _jitter(mean: float, n: int = N, seed: int = 0, sd: float = 0.03) -> np.ndarray:
    return mean + np.random.default_rng(seed).normal(0.0, sd, n)


def _table(layers: dict[str, np.ndarray], mode: str = "cascading", *, condition: str | None = None,
           reference: dict[str, np.ndarray] | None = None, metric: str = "ssim") -> pd.DataFrame:
    """Rows of one method: ``{layer: per-sample scores}`` in stage order (controls by their layer names), and the
    reference rows (the model's own gradient): by default a model whose gradient changed completely at every stage
    (repeat 1, another sample's map 0, every stage 0), so that the relative change is ``mean(R - s)``."""
    stages = [k for k in layers if not k.startswith("control:")]
    n = len(next(iter(layers.values())))
    ref = {CONTROL_REPEAT: _const(1.0, n), CONTROL_OTHER: _const(0.0, n), **{st: _const(0.0, n) for st in stages}}
    ref.update(reference or {})
    layers = {CONTROL_OTHER: _const(0.0, n), **layers, **{f"{CONTROL_GRADIENT}/{k}": v for k, v in ref.items()}}
    return concat(score_rows({metric: torch.as_tensor(v, dtype=torch.float64)}, experiment=RAND, model="m",
                             dataset="d", method="x", condition=condition or mode, mode=mode, layer=layer)
                  for layer, v in layers.items())


def _verdict(layers: dict[str, np.ndarray], mode: str = "cascading", **kw) -> pd.Series:
    table_kw = {k: kw.pop(k) for k in ("condition", "reference", "metric") if k in kw}
    return randomization_verdicts(_table(layers, mode, **table_kw), table_kw.get("metric", "ssim"), **kw).iloc[0]


NULLS = {CONTROL_INPUT: _jitter(0.05, seed=3), CONTROL_EDGES: _jitter(0.04, seed=4)}


def _gbp_like(top: float = 0.9) -> dict[str, np.ndarray]:
    """Survives the randomization of the top unit, changes once everything is random (Guided Backprop)."""
    return {CONTROL_REPEAT: _const(1.0), **NULLS, "fc2": _jitter(top, seed=1), "conv1": _jitter(0.2, seed=2)}


# -- the rule, pinned: each test fails when the rule is broken the way its name says ------------------------


def test_a_map_that_changes_with_the_model_at_the_top_and_the_bottom_passes():
    v = _verdict({CONTROL_REPEAT: _const(1.0), **NULLS, "fc2": _jitter(0.2, seed=1), "conv1": _jitter(0.1, seed=2)})
    assert v.verdict == "pass", v.reason
    assert v["drop"] == pytest.approx(0.8, abs=0.02) and v["drop_lcb"] <= v["drop"] <= v["drop_ucb"]
    assert v["stage"] == "fc2" and v["n"] == N


def test_a_change_exactly_at_the_bar_passes():
    # constant scores: every bootstrap mean is the same, so the bounds equal the bars exactly (0.5 and 0.5)
    layers = {CONTROL_REPEAT: _const(1.0), **NULLS, "fc2": _const(0.5), "conv1": _const(0.5)}
    assert _verdict(layers, min_drop=0.5).verdict == "pass"  # c = (1 - 0.5) / (1 - 0) = 0.5 >= 0.5
    reference = {"fc2": _const(0.5), "conv1": _const(0.5)}  # the model's change m = 0.5 too: c = 1
    assert _verdict(layers, reference=reference, min_drop=0.5, min_change=0.5).verdict == "pass"
    assert _verdict(layers, reference=reference, min_drop=0.5, min_change=0.51).verdict == "inconclusive"


def test_the_pass_is_decided_on_the_lower_bound_not_on_the_mean():
    # mean relative change 0.6 >= 0.5, but 16 noisy samples: the lower bound lies below the bar
    stage = 1.0 - _jitter(0.6, n=16, seed=7, sd=0.45)
    layers = {CONTROL_REPEAT: _const(1.0, 16), "fc2": stage, "conv1": stage}
    v = _verdict(layers, min_drop=0.5)
    assert v["drop"] >= 0.5 > v["drop_lcb"], (v["drop"], v["drop_lcb"])
    assert v.verdict == "inconclusive", v.reason  # nor a fail: the upper bound lies above the bar
    assert v["drop_ucb"] >= 0.5


def test_the_bounds_are_the_5_and_95_percent_quantiles_of_2000_resamples():
    drop = _jitter(0.6, seed=11, sd=0.3)
    boot = bootstrap_means(drop, resamples=2000, seed=0)[:, 0]
    q = {p: float(np.quantile(boot, p)) for p in (0.025, 0.05, 0.95, 0.975)}
    layers = {CONTROL_REPEAT: _const(1.0), "fc2": 1.0 - drop, "conv1": 1.0 - drop}
    v = _verdict(layers, min_drop=(q[0.025] + q[0.05]) / 2)  # above the 2.5% quantile, below the 5%: a pass
    assert v["drop_lcb"] == pytest.approx(q[0.05]) and v.verdict == "pass", v.reason
    v = _verdict(layers, min_drop=(q[0.95] + q[0.975]) / 2)  # above the 95% quantile: a fail, not inconclusive
    assert v["drop_ucb"] == pytest.approx(q[0.95]) and v.verdict == "fail", v.reason


def test_a_fail_needs_the_upper_bound_below_the_bar():
    assert _verdict(_gbp_like(0.9)).verdict == "fail"  # c about 0.1 at the top unit
    v = _verdict(_gbp_like(0.9), min_drop=0.1)  # 0.1 inside the interval: inconclusive, not fail
    assert v.verdict == "inconclusive" and v["drop_lcb"] < 0.1 <= v["drop_ucb"], v.reason


def test_the_change_is_measured_against_the_models_own_gradient():
    # the map loses 0.5 at every stage: against a model whose gradient lost everything, only half: fail
    layers = {CONTROL_REPEAT: _const(1.0), **NULLS, "fc2": _jitter(0.5, seed=1), "conv1": _jitter(0.5, seed=2)}
    assert _verdict(layers).verdict == "fail"
    # the same map on a model whose own gradient lost 0.6 of the way (to another sample's map, 0): 0.5 / 0.6, pass
    reference = {"fc2": _jitter(0.4, seed=5), "conv1": _jitter(0.4, seed=6)}
    v = _verdict(layers, reference=reference)
    assert v.verdict == "pass" and v["drop"] == pytest.approx(0.5 / 0.6, abs=0.03), v.reason


def test_a_model_that_barely_changed_cannot_decide_a_pass_but_can_decide_a_fail():
    reference = {"fc2": _jitter(0.8, seed=5), "conv1": _const(0.0)}  # the model's gradient keeps 0.8 at the top
    same = {CONTROL_REPEAT: _const(1.0), **NULLS, "fc2": _jitter(0.8, seed=1), "conv1": _jitter(0.3, seed=2)}
    v = _verdict(same, reference=reference)  # changes as much as the model (c = 1), but the model hardly did
    assert v.verdict == "inconclusive" and "changes little at 'fc2'" in v.reason, v.reason
    assert v["model_change_lcb"] < 0.4
    frozen = {**same, "fc2": _jitter(0.99, seed=1)}  # the model's gradient moved 0.2, the map 0.01: fail
    assert _verdict(frozen, reference=reference).verdict == "fail"
    nothing = {"fc2": _const(1.0), "conv1": _const(1.0)}  # the model's gradient did not move at all: no verdict
    assert _verdict(frozen, reference=nothing).verdict == "inconclusive"


def test_input_dominated_needs_the_input_above_the_floor_and_the_survivor_at_the_input():
    layers = {CONTROL_REPEAT: _const(1.0), CONTROL_INPUT: _jitter(0.6, seed=3), CONTROL_EDGES: _jitter(0.2, seed=4),
              CONTROL_OTHER: _jitter(0.1, seed=8), "fc2": _jitter(0.65, seed=1), "conv1": _jitter(0.58, seed=2)}
    v = _verdict(layers)
    assert v.verdict == "input-dominated", v.reason
    assert v.null == pytest.approx(0.6, abs=0.03) and v.other == pytest.approx(0.1, abs=0.03)
    # the input-only map no closer to the trained map than another sample's map: a plain fail
    assert _verdict({**layers, CONTROL_OTHER: _jitter(0.62, seed=8)}).verdict == "fail"
    # what survives (0.8) is more than the input explains (0.6): a plain fail
    assert _verdict({**layers, "conv1": _jitter(0.8, seed=2)}).verdict == "fail"


def test_input_dominated_evidence_never_vetoes_a_pass():
    # a map that changes with the model although an input-only map explains what survives (Gradient masked to the
    # digit): the pass stands and its reason says both
    layers = {CONTROL_REPEAT: _const(1.0), CONTROL_INPUT: _jitter(0.2, seed=3), CONTROL_OTHER: _jitter(0.02, seed=8),
              "fc2": _jitter(0.22, seed=1), "conv1": _jitter(0.2, seed=2)}
    v = _verdict(layers)
    assert v.verdict == "pass" and "input-dominated evidence" in v.reason, v.reason


def test_the_stages_checked_come_from_the_mode_column_never_from_the_name():
    for name in ("cascading", "top_down", "my_test"):
        assert _verdict(_gbp_like(), "cascading", condition=name).verdict == "fail", name  # the top unit checked
    assert _verdict(_gbp_like(), "bottom_up", condition="cascading").verdict == "pass"  # the last stage only
    assert _verdict(_gbp_like(), "cascading+smooth", condition="denoised").verdict == "fail"
    v = _verdict(_gbp_like(), "-", condition="cascading")  # a table that records no mode
    assert v.verdict == "inconclusive" and "no known randomization mode" in v.reason


def test_the_label_test_reads_its_retrained_control():
    # C: the map of a model trained on the true labels, against the reference (the retrained control's map)
    reference = {CONTROL_RETRAINED: _const(0.9), "permuted_labels": _const(0.1)}
    agree = {CONTROL_REPEAT: _const(1.0), **NULLS, CONTROL_RETRAINED: _jitter(0.8, seed=5),
             "permuted_labels": _jitter(0.2, seed=1)}
    v = _verdict(agree, "labels", reference=reference)  # c = (0.8 - 0.2) / (0.9 - 0.1) = 0.75
    assert v.verdict == "pass" and v.retrained == pytest.approx(0.8, abs=0.02), v.reason
    # two true-label models' maps agree no more than the permuted one's: the labels changed nothing (a repeat of 1
    # would call the same stage a pass)
    disagree = {**agree, CONTROL_RETRAINED: _jitter(0.25, seed=5)}
    assert _verdict(disagree, "labels", reference=reference).verdict == "fail"
    without = {k: v for k, v in agree.items() if k != CONTROL_RETRAINED}
    assert _verdict(without, "labels", reference=reference).verdict == "inconclusive"


@pytest.mark.parametrize("case", ["few samples", "not repeatable", "no reference"])
def test_inconclusive(case):
    layers = {CONTROL_REPEAT: _const(1.0), **NULLS, "fc2": _jitter(0.1, seed=1), "conv1": _jitter(0.1, seed=2)}
    if case == "few samples":
        layers = {k: v[:5] for k, v in layers.items()}
    elif case == "not repeatable":  # a map seeded by the model object: a copy of the model gives another map
        layers[CONTROL_REPEAT] = _jitter(0.02)
    table = _table(layers)
    if case == "no reference":
        table = table[~table.layer.str.startswith(CONTROL_GRADIENT)]
    assert randomization_verdicts(table).iloc[0].verdict == "inconclusive"


def test_a_distance_is_judged_by_its_rise_above_the_repeat():
    rise = {CONTROL_REPEAT: _const(0.0), "fc2": _jitter(0.3, seed=1), "conv1": _jitter(0.4, seed=2)}
    v = _verdict(rise, metric="entropy_rise")  # min_drop 0.1 (the registry's)
    assert v.verdict == "pass" and v["drop"] == pytest.approx(0.3, abs=0.02), v.reason
    flat = {CONTROL_REPEAT: _const(0.0), "fc2": _jitter(0.01, seed=1, sd=0.01), "conv1": _jitter(0.3, seed=2)}
    assert _verdict(flat, metric="entropy_rise").verdict == "fail"


def test_undefined_scores_are_not_counted_as_samples():
    stage = _jitter(0.1, seed=1)
    stage[:28] = np.nan  # constant maps have no rank correlation
    v = _verdict({CONTROL_REPEAT: _const(1.0), **NULLS, "fc2": stage, "conv1": _jitter(0.1, seed=2)})
    assert v.verdict == "inconclusive" and v.n == 4


def test_the_same_configuration_in_two_job_folders_counts_once(tmp_path):
    table = _table(_gbp_like(0.6), condition="cascading")
    for job in ("a", "b"):
        write_table(table, tmp_path / "sweep" / job)
    both = read_tables([tmp_path / "sweep"])
    assert len(both) == 2 * len(table)
    one, two = randomization_verdicts(table).iloc[0], randomization_verdicts(both).iloc[0]
    assert two.n == one.n == N and (two.drop_lcb, two.drop_ucb) == (one.drop_lcb, one.drop_ucb)
    board = load_leaderboard([tmp_path / "sweep"], figures=False).board
    assert board.equals(build_leaderboard(table))  # the bounds did not tighten with no new data


def test_lower_bound_is_reproducible_and_matches_the_normal_bound_for_many_samples():
    v = np.random.default_rng(0).normal(0.5, 0.2, 400)
    lcb = lower_bound(v)
    assert lcb == lower_bound(v)  # a fixed resampling seed
    normal = v.mean() - 1.645 * v.std(ddof=1) / np.sqrt(len(v))
    assert lcb == pytest.approx(normal, abs=0.005)
    assert np.isnan(lower_bound(np.array([np.nan])))


def test_leaderboard_legend_states_every_rule():
    board = build_leaderboard(_table({CONTROL_REPEAT: _const(1.0), **NULLS, "fc2": _jitter(0.2, seed=1),
                                      "conv1": _jitter(0.1, seed=2)}))
    assert board.loc[0, "rand/cascading/verdict"] == "pass"
    assert board.loc[0, "rand/cascading/ssim/repeat"] == pytest.approx(1.0, abs=0.02)
    for text in (to_markdown(board), to_html(board)):
        for words in ("95% lower bound", "repeatability control", "top unit alone", "own change",
                      "`input-dominated` instead", "`inconclusive` when", "`fail` when", "recipe on the true labels",
                      "calibration.md"):
            assert words.replace("`", "") in text.replace("`", "").replace("<code>", "").replace("</code>", ""), words


# -- end to end on a tiny untrained model: maps that carry no information about the model cannot pass ---------


def _noise_seeded(model, **_):
    def explain(x, target=None):
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    return explain


def _noise_fresh(model, **_):
    return lambda x, target=None: torch.randn(x.shape, dtype=x.dtype)


def _the_input(model, **_):
    return lambda x, target=None: x.clone()


def _input_times_noise(model, **_):
    def explain(x, target=None):
        return x * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    return explain


UNINFORMATIVE = {"noise_seeded": _noise_seeded, "noise_fresh": _noise_fresh, "input": _the_input,
                 "input_x_noise": _input_times_noise, "model_seeded": "methods.nulls:model_seeded_noise"}


def _sparse_toy(toy_data):
    data = toy_data(n_test=16, size=12)
    g = torch.Generator().manual_seed(1)
    data.x_test = data.x_test * (torch.rand(data.x_test.shape, generator=g) < 0.3)  # a zero background, as MNIST
    return data


@pytest.mark.parametrize("mode", ["cascading", "labels"])
def test_maps_without_information_about_the_model_cannot_pass_and_every_run_holds_its_controls(toy_data, mode):
    data = _sparse_toy(toy_data)
    torch.manual_seed(0)
    model = create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()
    kw = {}
    if mode == "labels":
        torch.manual_seed(1)
        kw["random_label_model"] = create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()
        torch.manual_seed(2)
        kw["retrained_model"] = create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()
    specs = [MethodSpec(k, _target_=f) for k, f in UNINFORMATIVE.items()] + [MethodSpec("gradient", "gradient")]
    res = model_randomization(model, data, specs, mode, run=RunSettings(n_samples=16),
                              scoring=ScoreSettings(["ssim", "spearman_abs", "spearman_abs_support"]), **kw)
    assert not res.errors
    layers = set(res.table.layer)
    assert {CONTROL_REPEAT, CONTROL_INPUT, CONTROL_EDGES} <= layers
    assert (CONTROL_RETRAINED in layers) == (mode == "labels")
    for metric in ("ssim", "spearman_abs", "spearman_abs_support"):
        v = randomization_verdicts(res.table, metric).set_index("method")["verdict"]
        for name in UNINFORMATIVE:
            assert v[name] != "pass", (metric, name, v[name])
        if mode == "cascading":
            # noise from torch's global generator: the harness seeds it alike for every map (the seed policy), so it
            # is the same map at every stage and for the copy: unchanged, a fail. (In this toy label test all three
            # models are untrained: the labels changed nothing in the model either, and nothing can fail there.)
            assert v["noise_fresh"] == "fail", metric
        assert v["model_seeded"] == "inconclusive", metric  # a copy of the model gets other noise: not repeatable


def _ig_uniform_global(model, **_):
    """Integrated Gradients from a uniform baseline drawn from torch's global generator (no ``seed`` parameter)."""
    from methods.gradients import IntegratedGradients

    ig = IntegratedGradients(model, baseline=0.0, steps=8)

    def explain(x, target=None):
        ig.baseline = torch.rand(x.shape, dtype=x.dtype)  # the global generator: the harness's seed policy applies
        return ig(x, target)
    return explain


def test_a_random_baseline_gets_one_verdict_whether_or_not_it_exposes_a_seed(toy_data):
    data = _sparse_toy(toy_data)
    torch.manual_seed(0)
    model = create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()
    specs = [MethodSpec("seeded", "integrated_gradients", params={"baseline": "uniform", "steps": 8, "seed": 3}),
             MethodSpec("global", _target_=_ig_uniform_global)]
    res = model_randomization(model, data, specs, "cascading", run=RunSettings(n_samples=16),
                              scoring=ScoreSettings(["ssim"]))
    v = randomization_verdicts(res.table).set_index("method")
    # both repeat exactly on a copy of the model (the same draws), so both are judged on the weights alone
    assert v.loc["seeded", "repeat"] == pytest.approx(1.0) and v.loc["global", "repeat"] == pytest.approx(1.0)
    assert v.loc["seeded", "verdict"] == v.loc["global", "verdict"], v[["verdict", "reason"]]
    assert abs(v.loc["seeded", "drop"] - v.loc["global", "drop"]) < 0.1  # other draws, the same change


# -- the papers' known answers on the bundled models ---------------------------------------------------------

KNOWN = ["gradient", "smoothgrad", "guided_backprop", "gradient_x_input"]


@pytest.mark.slow
def test_known_answers_small_cnn_cascading(trained_cnn, mnist):
    specs = [MethodSpec(m, m) for m in [*KNOWN, "grad_cam"]]
    res = model_randomization(trained_cnn[0], mnist, specs, "cascading", run=RunSettings(n_samples=32),
                              scoring=ScoreSettings(["ssim"]), model_name="small_cnn")
    board = build_leaderboard(res.table).set_index("method")["rand/cascading/verdict"]
    assert board["gradient"] == board["smoothgrad"] == board["grad_cam"] == "pass", board.to_dict()
    assert board["guided_backprop"] == "fail", board.to_dict()
    assert board["gradient_x_input"] != "pass", board.to_dict()


@pytest.mark.slow
def test_known_answers_paper_mlp_cascading(trained_mlp, mnist):
    res = model_randomization(trained_mlp[0], mnist, [MethodSpec(m, m) for m in KNOWN], "cascading",
                              run=RunSettings(n_samples=32), scoring=ScoreSettings(["ssim"]), model_name="paper_mlp")
    v = randomization_verdicts(res.table).set_index("method")
    assert v.loc["gradient", "verdict"] == "pass"
    # Guided Backprop survives the randomization of the top layer: its verdict fails there
    assert v.loc["guided_backprop", "verdict"] == "fail" and v.loc["guided_backprop", "top"] > 0.7
    assert v.loc["gradient_x_input", "verdict"] != "pass"


def test_several_seeds_each_row_records_its_seed_and_the_verdict_pairs_per_seed(toy_data):
    data = _sparse_toy(toy_data)
    torch.manual_seed(0)
    model = create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()
    res = model_randomization(model, data, [MethodSpec("gradient", "gradient")], "cascading",
                              run=RunSettings(n_samples=16, seeds=3, seed=5), scoring=ScoreSettings(["ssim"]))
    stages = res.table[~res.table.layer.str.startswith("control:")]
    assert set(stages.seed) == {5, 6, 7} and len(stages) == 3 * 16 * len(res.stages)
    assert set(res.table[res.table.layer == CONTROL_REPEAT].seed) == {5}  # controls do not depend on the seed
    one = stages[(stages.seed == 5) & (stages.layer == res.stages[0])].score.to_numpy()
    two = stages[(stages.seed == 6) & (stages.layer == res.stages[0])].score.to_numpy()
    assert not np.allclose(one, two)  # other weights, other maps
    v = randomization_verdicts(res.table).iloc[0]
    assert v.n == 16 and v.verdict in ("pass", "fail", "inconclusive")  # n: distinct samples, paired over 3 seeds
    with pytest.raises(ValueError, match=r"run\.seeds=0 is out of range; accepted: >= 1"):
        model_randomization(model, data, ["gradient"], "cascading", run=RunSettings(n_samples=4, seeds=0))
