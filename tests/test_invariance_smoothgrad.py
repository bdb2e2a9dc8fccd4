"""SmoothGrad in the input-invariance test (bench.experiments.invariance): the twin of a transform ``x' = s x + m``
draws the reference's noise times ``s``; the method's own ``noise_level`` is used (and hashed) before
``invariance.noise_level``; a pure shift keeps the shared noise. Tiny random models, a few seconds."""

from __future__ import annotations

import pytest
import torch

from bench.core.data import Dataset
from bench.core.explain import MethodSpec
from bench.core.models import create_model
from bench.core.settings import RunSettings, ScoreSettings
from bench.experiments.invariance import InvarianceSettings, input_invariance
from bench.twins.build import Affine
from bench.twins.shifts import checkerboard, mean_shift
from methods.gradients import SmoothGrad

SHAPE = (3, 12, 12)
DOMAIN = (-1.0, 1.0)  # width 2: sigma = noise_level * 2
RUN = RunSettings(n_samples=6, batch_size=6, fit_samples=32, keep_maps=6, progress=False)
SCORES = ScoreSettings(["ssim"])
SCALES = {  # s: a scalar, and one per channel (the contrast a convolution absorbs)
    "scalar": torch.tensor(0.5),
    "per_channel": torch.tensor([0.5, 0.8, 1.7]).view(3, 1, 1),
}


def _data() -> Dataset:
    g = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:
        return torch.rand(n, *SHAPE, generator=g) * 2 - 1

    return Dataset(name="toy3", x_train=images(32), y_train=torch.randint(0, 4, (32,), generator=g),
                   x_test=images(6), y_test=torch.randint(0, 4, (6,), generator=g), num_classes=4, domain=DOMAIN)


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"hidden": 16} if arch == "paper_mlp" else {"channels": (4, 6), "hidden": 16}
    return create_model(arch, SHAPE, 4, **kw).eval()


def _sg(label: str, base: str = "gradient", **params) -> MethodSpec:
    return MethodSpec(label, "smoothgrad", params={"base": base, "n": 4, **params})


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("arch", ["paper_mlp", "small_cnn"])
def test_contrast_twin_gets_the_noise_pushed_through_the_transform(arch, scale):
    """Under ``x' = s x + m`` SmoothGrad of ``(f2, x')`` is SmoothGrad of ``(f1, x)`` pushed through the transform:
    with the input multiplied in and ``m = 0`` the maps agree to float64 rounding (the experiment's
    ``max_rel_diff`` rows), and SmoothGrad of the gradient is ``A1 / s`` for any ``m``.

    Before the fix both networks got the same absolute noise (the twin's noise was ``1/s`` times too large in the
    reference's coordinates). Measured here before / after, over the four cases: the largest ``max_rel_diff`` of
    SmoothGrad(Gradient x Input) 0.94-2.4 / at most 4.3e-16; ``A2 * s`` off ``A1`` by 0.37-0.81 / at most 2.6e-16 of
    its maximum; mean SSIM of SmoothGrad(Gradient) under the scalar contrast 0.77 (mlp), 0.42 (cnn) / 1.0."""
    s = SCALES[scale]
    shifts = {"contrast": Affine(s, torch.zeros(())), "contrast_shift": Affine(s, torch.tensor(0.3))}
    specs = [_sg("sg_gradient"), _sg("sg_gxi", base="gradient_x_input")]
    res = input_invariance(_model(arch), _data(), specs, shifts, run=RUN, scoring=SCORES)
    assert not res.errors, res.errors
    t = res.table
    rows = t[(t.metric == "max_rel_diff") & (t.method == "sg_gxi") & (t.condition == "contrast")]
    assert len(rows) == RUN.n_samples and rows.score.max() < 1e-6, rows.score.max()
    s_full = s.to(torch.float64).expand(SHAPE)
    for shift in shifts:
        a1, a2 = res.maps[shift]["sg_gradient"]
        assert _rel(a2 * s_full, a1) < 1e-6, (shift, _rel(a2 * s_full, a1))
    if scale == "scalar":  # the map keeps its shape: SSIM (min-max scaled maps) is 1
        ssim = t[(t.metric == "ssim") & (t.method == "sg_gradient") & (t.condition == "contrast")].score
        assert ssim.min() > 1 - 1e-6, ssim.min()


def _recording(monkeypatch) -> list[dict]:
    """Record every SmoothGrad call: its model, inputs, targets, noise std and map."""
    calls: list[dict] = []
    real = SmoothGrad.attribute

    def attribute(self, x, target):
        out = real(self, x, target)
        calls.append({"model": self.model, "x": x, "target": target, "sigma": self.sigma(x), "map": out,
                      "explainer": self})
        return out

    monkeypatch.setattr(SmoothGrad, "attribute", attribute)
    return calls


def test_the_methods_own_noise_level_is_used():
    """Two specs with different ``noise_level`` give different maps; a spec without one uses
    ``invariance.noise_level``; the reference std is ``noise_level`` times the domain's width (2 here). Before the
    fix every spec got ``invariance.noise_level`` (the three maps were identical)."""
    data, model = _data(), _model("paper_mlp")
    specs = [_sg("low", noise_level=0.05), _sg("high", noise_level=0.3), _sg("run")]
    res = input_invariance(model, data, specs, {"mean_shift": mean_shift(SHAPE, 0.5)},
                           settings=InvarianceSettings(noise_level=0.3), run=RUN, scoring=SCORES)
    assert not res.errors, res.errors
    maps = res.maps["mean_shift"]
    assert _rel(maps["low"][0], maps["high"][0]) > 1e-3
    assert torch.equal(maps["run"][0], maps["high"][0]) and torch.equal(maps["run"][1], maps["high"][1])
    # the reference map of "low" is SmoothGrad with sigma = 0.05 * 2, computed directly
    f1 = model.to(torch.float64)
    x = data.x_test[: RUN.n_samples].to(torch.float64)
    target = f1(x).argmax(1)
    direct = SmoothGrad(f1, base="gradient", n=4, sigma=0.05 * 2)(x, target)
    torch.testing.assert_close(maps["low"][0], direct, rtol=1e-12, atol=0)


def test_the_config_hash_holds_the_noise_level_that_is_used():
    """``invariance.noise_level`` is part of a SmoothGrad row's config only where the spec sets no noise of its own;
    the spec's ``noise_level`` is part of it through ``method.params``. Before the fix ``invariance.noise_level`` was
    in every invariance row's config."""
    from bench.cli.config import MainConfig
    from bench.cli.job import row_config

    cfg = MainConfig(method={"own": _sg("own", noise_level=0.2), "run": _sg("run")})
    own = row_config(cfg, "input_invariance", "own", "contrast")
    run = row_config(cfg, "input_invariance", "run", "contrast")
    assert "invariance.noise_level" not in own and own["method.params.noise_level"] == 0.2
    assert run["invariance.noise_level"] == cfg.invariance.noise_level
    assert "invariance.float64" in own  # the other invariance settings stay


@pytest.mark.parametrize("own_level", [None, 0.2])
def test_a_pure_shift_keeps_the_shared_noise(monkeypatch, own_level):
    """Under a pure shift (``s = 1``) both networks get the same number ``sigma``, i.e. the same noise as before the
    fix: each twin map is bitwise the map of ``SmoothGrad(f2, sigma=<number>)``. Under a contrast the twin's std is
    ``s`` times the reference's, element by element. The pure-shift checks with ``own_level=None`` guard unchanged
    behaviour (the old code passed them); the old code fails the contrast check (it gave the twin the reference's
    number) and, with ``own_level=0.2``, the pure-shift checks too (it gave both networks ``invariance.noise_level``,
    0.15, instead)."""
    calls = _recording(monkeypatch)
    params = {} if own_level is None else {"noise_level": own_level}
    level = InvarianceSettings().noise_level if own_level is None else own_level
    s = SCALES["per_channel"]
    shifts = {"mean_shift": mean_shift(SHAPE, -1.0), "checkerboard": checkerboard(SHAPE, size=2),
              "contrast": Affine(s, torch.tensor(0.1))}
    res = input_invariance(_model("small_cnn"), _data(), [_sg("sg", **params)], shifts, run=RUN, scoring=SCORES)
    assert not res.errors, res.errors
    ref, *twins = calls  # the reference's map is computed once, then one twin per shift
    assert len(twins) == len(shifts)
    sigma = level * (DOMAIN[1] - DOMAIN[0])
    assert ref["sigma"].ndim == 0 and float(ref["sigma"]) == sigma
    for shift, call in zip(shifts, twins, strict=True):
        if shift == "contrast":
            torch.testing.assert_close(call["sigma"], sigma * s.to(torch.float64).expand(SHAPE), rtol=0, atol=0)
            continue
        assert call["sigma"].ndim == 0 and float(call["sigma"]) == sigma, shift
        again = SmoothGrad(call["model"], base="gradient", n=4, sigma=sigma)(call["x"], call["target"])
        assert torch.equal(call["map"], again), shift


def test_smoothgrad_takes_a_per_element_sigma():
    """``sigma`` as a tensor broadcastable to one input: element ``j`` gets ``sigma[j]`` times the same draw (a
    constant tensor gives bitwise the map of the number); a shape that does not broadcast is refused."""
    model = _model("paper_mlp").to(torch.float64)
    x = _data().x_test.to(torch.float64)
    target = model(x).argmax(1)
    number = SmoothGrad(model, n=3, sigma=0.2)(x, target)
    assert torch.equal(SmoothGrad(model, n=3, sigma=torch.full(SHAPE, 0.2))(x, target), number)
    per_channel = SmoothGrad(model, n=3, sigma=0.2 * SCALES["per_channel"])(x, target)
    assert _rel(per_channel, number) > 1e-3
    with pytest.raises(ValueError, match="does not broadcast"):
        SmoothGrad(model, n=3, sigma=torch.full((2, 1, 1), 0.2))(x, target)
    with pytest.raises(ValueError, match=">= 0"):
        SmoothGrad(model, n=3, sigma=torch.tensor([0.1, -0.1, 0.1]).view(3, 1, 1))
