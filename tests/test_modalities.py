"""Beyond images: tables and 1-D signals (bundled or generated data, small reference models), their twins, scores
and verdicts, and the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from bench.core.data import load_dataset
from bench.core.models import create_model
from bench.core.scoring import score_maps
from bench.core.settings import RunSettings, ScoreSettings
from bench.experiments.invariance import input_invariance
from bench.reporting.aggregate import invariance_verdicts
from bench.twins.shifts import checkerboard, mean_shift


@pytest.mark.parametrize("name,shape,classes", [("breast_cancer", (30,), 2), ("signals", (1, 64), 3)])
def test_bundled_tables_and_generated_signals(name, shape, classes):
    d = load_dataset(name)
    assert d.input_shape == shape and d.num_classes == classes
    assert float(d.x_train.min()) >= 0.0 and float(d.x_train.max()) <= 1.0
    assert set(d.y_test.tolist()) == set(range(classes))  # stratified: every class in the test split
    again = load_dataset(name)
    assert torch.equal(d.x_test, again.x_test)  # seeded
    assert not torch.equal(d.x_test, load_dataset(name, seed=1).x_test)


def test_vector_and_signal_maps_get_the_scores_that_apply():
    g = torch.Generator().manual_seed(0)
    for shape, dims in (((6, 30), 0), ((6, 1, 64), 1)):
        a = torch.randn(shape, generator=g, dtype=torch.float64)
        b = torch.randn(shape, generator=g, dtype=torch.float64)
        got = score_maps(a, b, ["ssim", "hog", "spearman", "spearman_abs", "topk", "max_rel_diff"],
                         spatial_dims=dims)
        assert set(got) == {"spearman", "spearman_abs", "topk", "max_rel_diff"}  # SSIM, HOG: not applicable
        def abs_p99(m: np.ndarray) -> np.ndarray:  # the paper's post-processing, channels summed
            s = np.abs(m).reshape(-1) if m.ndim == 1 else np.abs(m).sum(0)
            return np.clip((s - s.min()) / (np.percentile(s, 99) - s.min()), 0, 1)

        want = [spearmanr(abs_p99(x), abs_p99(y)).statistic for x, y in zip(a.numpy(), b.numpy(), strict=True)]
        np.testing.assert_allclose(got["spearman_abs"].numpy(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,model_name", [("breast_cancer", "tabular_mlp"), ("signals", "signal_cnn")])
def test_invariance_verdicts_on_tables_and_signals(name, model_name):
    data = load_dataset(name)
    torch.manual_seed(0)
    model = create_model(model_name, data.input_shape, data.num_classes).eval()
    shifts = {"mean_shift": mean_shift(data.input_shape), "checkerboard": checkerboard(data.input_shape, size=4)}
    res = input_invariance(model, data, ["gradient", "gradient_x_input", "dtd_zbox"], shifts,
                           run=RunSettings(n_samples=16, fit_samples=100), scoring=ScoreSettings(["ssim", "spearman"]))
    assert not res.errors and max(res.premise.values()) < 1e-10
    assert "ssim" not in set(res.table.metric)  # not applicable: no rows, no error
    v = invariance_verdicts(res.table).set_index(["method", "condition"])
    assert set(v["score"]) == {"spearman"}
    for shift in shifts:
        assert v.loc[("gradient", shift), "exact"] and v.loc[("dtd_zbox", shift), "exact"]
        assert not v.loc[("gradient_x_input", shift), "invariant"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tabular", "signals", "tokens"])
def test_presets_run_from_the_command_line(salbench, tmp_path, preset):
    out = tmp_path / "job"
    res = salbench(f"+experiment={preset}", "run.n_samples=16", "run.progress=false", "logger=disabled",
                   f"train.cache_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    record = json.loads((out / "job.json").read_text())
    assert record["status"] == "ok" and not record["errors"]
    assert (out / "figures" / "invariance_checkerboard.png").stat().st_size > 1000
    import re

    assert re.search(r"^ ?\d+ gradient\s", res.stdout, re.M) and "exact" in res.stdout  # the console summary
    assert "| gradient" in (out / "leaderboard.md").read_text()  # the full tables beside the results


def test_models_with_an_embedding_input_are_tested_on_the_embedding_output():
    from bench.core.embedding import embedded, has_embedding
    from bench.twins.build import shifted_twin

    data = load_dataset("tokens")
    torch.manual_seed(0)
    model = create_model("token_mlp", data.input_shape, data.num_classes).eval()
    assert has_embedding(model)
    with pytest.raises(ValueError, match="is a TokenEmbedding: token ids cannot be shifted; test the embedding output"):
        shifted_twin(model, torch.ones(data.input_shape), example=data.x_test[:2])  # ids cannot be shifted
    rest, emb = embedded(model, data)
    assert emb.input_shape == (8, 12) and emb.encoding == "embedding"
    with torch.no_grad():
        torch.testing.assert_close(rest(emb.x_test[:16]), model(data.x_test[:16]), rtol=0, atol=1e-6)
    shifts = {"mean_shift": mean_shift(emb.input_shape), "checkerboard": checkerboard(emb.input_shape, size=2)}
    res = input_invariance(rest, emb, ["gradient", "dtd_zbox", "gradient_x_input"], shifts,
                           run=RunSettings(n_samples=16), scoring=ScoreSettings(["spearman"]))
    assert not res.errors
    v = invariance_verdicts(res.table).set_index(["method", "condition"])
    for shift in shifts:
        assert v.loc[("gradient", shift), "exact"] and v.loc[("dtd_zbox", shift), "exact"]
        assert not v.loc[("gradient_x_input", shift), "invariant"]
    with pytest.raises(ValueError, match="does not start with an nn.Embedding"):
        embedded(rest, emb)
