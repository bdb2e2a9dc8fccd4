"""Randomization verdicts against controls: the rule on tables with known scores, maps that carry no information
about the model, the control rows every run writes, and the sanity-checks paper's known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bench.core.explain import MethodSpec
from bench.core.models import create_model
from bench.core.results import CONTROL_EDGES, CONTROL_INPUT, CONTROL_REPEAT, CONTROL_RETRAINED, concat, score_rows
from bench.core.settings import RunSettings, ScoreSettings
from bench.experiments.model_randomization import model_randomization
from bench.reporting.aggregate import lower_bound, randomization_verdicts
from bench.reporting.leaderboard import build_leaderboard
from bench.reporting.render import to_html, to_markdown

RAND = "model_randomization"


def _table(layers: dict[str, np.ndarray], condition: str = "cascading", metric: str = "ssim") -> pd.DataFrame:
    """Rows of one method: ``{layer: per-sample scores}`` in stage order (controls by their layer names)."""
    return concat(score_rows({metric: torch.as_tensor(v, dtype=torch.float64)}, experiment=RAND, model="m",
                             dataset="d", method="x", condition=condition, layer=layer)
                  for layer, v in layers.items())


def _jitter(mean: float, n: int = 32, seed: int = 0, sd: float = 0.03) -> np.ndarray:
    return mean + np.random.default_rng(seed).normal(0.0, sd, n)


def _verdict(layers: dict[str, np.ndarray], condition: str = "cascading") -> pd.Series:
    return randomization_verdicts(_table(layers, condition)).iloc[0]


NULLS = {CONTROL_INPUT: _jitter(0.05, seed=3), CONTROL_EDGES: _jitter(0.04, seed=4)}


def test_a_map_that_changes_at_the_top_and_at_the_bottom_passes():
    v = _verdict({CONTROL_REPEAT: _jitter(0.99), **NULLS, "fc2": _jitter(0.3, seed=1), "conv1": _jitter(0.1, seed=2)})
    assert v.verdict == "pass", v.reason
    assert v["drop"] == pytest.approx(0.69, abs=0.03) and v["drop_lcb"] <= v["drop"]


def test_cascading_looks_at_the_top_unit_bottom_up_at_the_last_stage():
    # the map survives the randomization of the top unit (Guided Backprop) and changes once everything is random
    layers = {CONTROL_REPEAT: _jitter(1.0), **NULLS, "fc2": _jitter(0.85, seed=1), "conv1": _jitter(0.1, seed=2)}
    assert _verdict(layers, "cascading").verdict == "fail"
    assert _verdict(layers, "bottom_up").verdict == "pass"


def test_the_drop_is_measured_against_the_methods_own_repeatability():
    # a stochastic method whose repeat scores 0.6 cannot drop by 0.4 to a stage that scores 0.3: fail
    layers = {CONTROL_REPEAT: _jitter(0.6), **NULLS, "fc2": _jitter(0.3, seed=1), "conv1": _jitter(0.3, seed=2)}
    assert _verdict(layers).verdict == "fail"
    # the same stage scores against a perfect repeat: pass
    layers[CONTROL_REPEAT] = _jitter(1.0)
    assert _verdict(layers).verdict == "pass"


def test_input_dominated_when_an_input_only_map_explains_what_survives():
    layers = {CONTROL_REPEAT: _jitter(1.0), CONTROL_INPUT: _jitter(0.6, seed=3), CONTROL_EDGES: _jitter(0.2, seed=4),
              "fc2": _jitter(0.65, seed=1), "conv1": _jitter(0.58, seed=2)}
    v = _verdict(layers)
    assert v.verdict == "input-dominated", v.reason
    assert v.null == pytest.approx(0.6, abs=0.03)
    # the trained map far from any input-only map: the same stage scores are a plain fail
    layers[CONTROL_INPUT] = _jitter(0.1, seed=3)
    assert _verdict(layers).verdict == "fail"


@pytest.mark.parametrize("case", ["few samples", "not repeatable", "no label control"])
def test_inconclusive(case):
    layers = {CONTROL_REPEAT: _jitter(1.0), **NULLS, "fc2": _jitter(0.1, seed=1), "conv1": _jitter(0.1, seed=2)}
    condition = "cascading"
    if case == "few samples":
        layers = {k: v[:5] for k, v in layers.items()}
    elif case == "not repeatable":  # noise: a second call of the method gives another map
        layers[CONTROL_REPEAT] = _jitter(0.02)
    else:
        layers = {CONTROL_REPEAT: _jitter(1.0), **NULLS, "permuted_labels": _jitter(0.1, seed=1)}
        condition = "labels"
    assert _verdict(layers, condition).verdict == "inconclusive"


def test_the_label_test_needs_its_retrained_control_and_then_decides():
    layers = {CONTROL_REPEAT: _jitter(1.0), **NULLS, CONTROL_RETRAINED: _jitter(0.4, seed=5),
              "permuted_labels": _jitter(0.2, seed=1)}
    assert _verdict(layers, "labels").verdict == "pass"


def test_undefined_scores_are_not_counted_as_samples():
    stage = _jitter(0.1, seed=1)
    stage[:28] = np.nan  # constant maps have no rank correlation
    v = _verdict({CONTROL_REPEAT: _jitter(1.0), **NULLS, "fc2": stage, "conv1": _jitter(0.1, seed=2)})
    assert v.verdict == "inconclusive" and v.n == 4


def test_lower_bound_is_reproducible_and_matches_the_normal_bound_for_many_samples():
    v = np.random.default_rng(0).normal(0.5, 0.2, 400)
    lcb = lower_bound(v)
    assert lcb == lower_bound(v)  # a fixed resampling seed
    normal = v.mean() - 1.645 * v.std(ddof=1) / np.sqrt(len(v))
    assert lcb == pytest.approx(normal, abs=0.005)
    assert np.isnan(lower_bound(np.array([np.nan])))


def test_leaderboard_legend_states_every_rule():
    board = build_leaderboard(_table({CONTROL_REPEAT: _jitter(1.0), **NULLS, "fc2": _jitter(0.2, seed=1),
                                      "conv1": _jitter(0.1, seed=2)}))
    assert board.loc[0, "rand/cascading/verdict"] == "pass"
    assert board.loc[0, "rand/cascading/ssim/repeat"] == pytest.approx(1.0, abs=0.02)
    for text in (to_markdown(board), to_html(board)):
        for words in ("95% lower bound", "repeatability control", "top unit alone", "`input-dominated` when",
                      "`inconclusive` when", "`fail` otherwise", "recipe on the true labels"):
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
                 "input_x_noise": _input_times_noise}


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
        assert v["noise_fresh"] == "inconclusive"  # its own repeat differs as much as any stage


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
    assert v.n == 3 * 16 and v.verdict in ("pass", "fail")
    with pytest.raises(ValueError, match=r"run\.seeds=0 is out of range; accepted: >= 1"):
        model_randomization(model, data, ["gradient"], "cascading", run=RunSettings(n_samples=4, seeds=0))
