"""The MPRT family beyond the classic cascade: efficient (entropy) and smooth MPRT, on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy

import metrics
from bench.core.explain import MethodSpec
from bench.core.models import create_model
from bench.core.scoring import score_maps
from bench.core.settings import RunSettings, ScoreSettings
from bench.experiments.model_randomization import RandomizationSpec, Smoothed, model_randomization


@pytest.mark.parametrize("shape", [(4, 1, 12, 12), (3, 3, 20, 17), (2, 50)], ids=["B1HW", "B3HW", "BN"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_histogram_entropy_is_scipy_of_numpys_histogram(shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = metrics.histogram_entropy(x.to(dtype))
    want = [entropy(np.histogram(v, bins=100, range=(v.min(), v.max()))[0]) for v in x.flatten(1).numpy()]
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_entropies_known_by_hand():
    four = torch.tensor([[0.0, 1.0, 2.0, 3.0] * 25])  # four values, equally often, in four distinct bins: log 4
    spread = torch.arange(100, dtype=torch.float64)[None]  # one value per bin: log 100
    const = torch.full((1, 100), 0.7)  # one bin: 0
    assert float(metrics.histogram_entropy(four)) == pytest.approx(math.log(4))
    assert float(metrics.histogram_entropy(spread)) == pytest.approx(math.log(100))
    assert float(metrics.histogram_entropy(const)) == 0.0
    assert float(metrics.histogram_entropy(four, bins=2)) == pytest.approx(math.log(2))  # {0, 1} and {2, 3}
    rise = score_maps(four.double().reshape(1, 1, 10, 10), spread.reshape(1, 1, 10, 10), ["entropy_rise"])
    assert float(rise["entropy_rise"]) == pytest.approx((math.log(100) - math.log(4)) / math.log(4))
    undefined = score_maps(const.double().reshape(1, 1, 10, 10), spread.reshape(1, 1, 10, 10), ["entropy_rise"])
    assert math.isnan(float(undefined["entropy_rise"]))  # no entropy to rise from
    with pytest.raises(ValueError, match="bins must be >= 1"):
        metrics.histogram_entropy(four, bins=0)


def test_smoothing_by_hand():
    x = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]], dtype=torch.float64)
    square = Smoothed(lambda v, target=None: v ** 2, n=3, sigma=0.2, seed=5)
    gen = torch.Generator().manual_seed(5)
    noise = [torch.randn(x.shape, generator=gen, dtype=x.dtype) for _ in range(3)]
    want = sum((x + 0.2 * e) ** 2 for e in noise) / 3
    torch.testing.assert_close(square(x), want, rtol=0, atol=1e-15)
    torch.testing.assert_close(square(x), square(x), rtol=0, atol=0)  # the same noise at every call
    same = Smoothed(lambda v, target=None: v, n=4, sigma=0.0)
    torch.testing.assert_close(same(x), x)
    with pytest.raises(ValueError, match="smooth_samples >= 1"):
        Smoothed(lambda v, target=None: v, n=0, sigma=0.1)


def test_smooth_and_efficient_mprt_write_their_rows(toy_data):
    data = toy_data(n_test=8, size=12)
    torch.manual_seed(0)
    model = create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()
    run, scoring = RunSettings(n_samples=8), ScoreSettings(["ssim"])
    smooth = model_randomization(model, data, [MethodSpec("gradient", "gradient")],
                                 RandomizationSpec(mode="bottom_up", smooth_samples=3), run=run, scoring=scoring)
    plain = model_randomization(model, data, [MethodSpec("gradient", "gradient")], "bottom_up", run=run,
                                scoring=scoring)
    assert set(smooth.table.condition) == {"bottom_up+smooth"} and set(plain.table.condition) == {"bottom_up"}
    assert not np.allclose(smooth.table.score, plain.table.score)  # the maps were smoothed before scoring
    eff = model_randomization(model, data, [MethodSpec("gradient", "gradient")],
                              RandomizationSpec(mode="bottom_up", scores=["entropy_rise"]), run=run, scoring=scoring)
    assert set(eff.table.metric) == {"ssim", "entropy_rise"}
    repeat = eff.table[(eff.table.layer == "control:repeat") & (eff.table.metric == "entropy_rise")]
    assert np.allclose(repeat.score, 0.0)  # a deterministic method: the same map, no entropy rise
