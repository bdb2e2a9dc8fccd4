"""Gradient, Gradient x Input, Integrated Gradients and SmoothGrad against closed forms and properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import methods
from methods.gradients import IntegratedGradients, SmoothGrad, quadrature

SHAPE = (1, 4, 4)


def _weights(model: torch.nn.Sequential, target: torch.Tensor) -> torch.Tensor:
    """``w_c`` of the affine model, per sample, shaped like the input."""
    return model[1].weight[target].view(-1, *SHAPE)


# ------------------------------------------------------------------ closed forms on an affine model


@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("gradient", {}, lambda w, x, x0: w),
        ("gradient_x_input", {}, lambda w, x, x0: w * x),
        ("integrated_gradients", {"baseline": "zero"}, lambda w, x, x0: w * x),
        ("integrated_gradients", {"baseline": "black", "low": -1.0}, lambda w, x, x0: w * (x + 1)),
        ("integrated_gradients", {"baseline": 0.25, "steps": 3}, lambda w, x, x0: w * (x - 0.25)),
        ("smoothgrad", {"n": 5}, lambda w, x, x0: w),
        ("smoothgrad", {"n": 5, "squared": True}, lambda w, x, x0: w * w),
        ("smoothgrad", {"n": 5, "base": "gradient_x_input", "noise_level": 0.0}, lambda w, x, x0: w * x),
        ("guided_backprop", {}, lambda w, x, x0: w),
        ("lrp_z", {}, lambda w, x, x0: w * x),
    ],
)
def test_closed_forms_on_affine_model(name: str, params: dict, expected, images, linear) -> None:
    model = linear(shape=SHAPE)
    x = images(4, SHAPE)
    target = torch.tensor([0, 1, 2, 0])
    out = methods.create(name, model, **params)(x, target)
    w = _weights(model, target).detach()
    torch.testing.assert_close(out, expected(w, x, None).expand_as(x), rtol=1e-5, atol=1e-6)


def test_ig_uniform_baseline_is_seeded_and_in_domain(images, linear) -> None:
    model = linear(shape=SHAPE)
    x = images(4, SHAPE)
    ig = methods.create("integrated_gradients", model, baseline="uniform", low=-2.0, high=3.0, seed=5)
    x0 = ig.reference(x)
    assert x0.min() >= -2.0 and x0.max() <= 3.0 and x0.std() > 0.5
    torch.testing.assert_close(ig.reference(x), x0)
    other = methods.create("integrated_gradients", model, baseline="uniform", seed=6)
    assert not torch.equal(other.reference(x), x0)
    w = _weights(model, torch.zeros(4, dtype=torch.long)).detach()
    torch.testing.assert_close(ig(x, 0), w * (x - x0), rtol=1e-5, atol=1e-6)
    assert float(ig.last_completeness_error.max()) < 1e-5


def test_ig_tensor_baseline(images, linear) -> None:
    model = linear(shape=SHAPE)
    x = images(2, SHAPE)
    x0 = images(1, SHAPE, seed=9)[0]
    out = methods.create("integrated_gradients", model, baseline=x0)(x, 1)
    torch.testing.assert_close(out, _weights(model, torch.tensor([1, 1])).detach() * (x - x0))


# ------------------------------------------------------------------ Integrated Gradients


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("baseline", ["zero", "black", "uniform"])
def test_ig_reports_its_completeness_error(model_name: str, baseline: str, images, model_zoo) -> None:
    builder, shape = model_zoo[model_name]
    model = builder()
    x = images(8, shape)
    ig = methods.create("integrated_gradients", model, baseline=baseline, low=-0.5, high=1.0)
    attr = ig(x, 3)
    with torch.no_grad():
        delta = model(x)[:, 3] - model(ig.reference(x))[:, 3]
    gap = attr.flatten(1).sum(1) - delta
    torch.testing.assert_close(ig.last_completeness_gap, gap, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ig.last_completeness_error, gap.abs() / delta.abs(), rtol=1e-4, atol=1e-6)
    # the error shrinks with the steps (ReLU nets: a piecewise constant integrand)
    fine = methods.create("integrated_gradients", model, baseline=baseline, low=-0.5, high=1.0, steps=400)
    fine(x, 3)
    assert fine.last_completeness_gap.abs().mean() < ig.last_completeness_gap.abs().mean()


@pytest.fixture(scope="module")
def briefly_trained(mnist):
    """``paper_mlp`` (64 wide) and ``small_cnn`` (4/8 channels) after one epoch on the bundled digits."""
    from bench.core.models import create_model
    from bench.core.training import TrainConfig, train

    models = {}
    for name, kw in [("paper_mlp", {"hidden": 64}), ("small_cnn", {"channels": (4, 8), "hidden": 32})]:
        model = create_model(name, mnist.input_shape, 10, **kw)
        train(model, mnist, TrainConfig(epochs=1, lr=0.1, seed=0), progress=False)
        models[name] = model
    return models, mnist.x_test[:64]


@pytest.mark.slow  # trains two models for an epoch on the bundled digits
@pytest.mark.parametrize("model_name", ["paper_mlp", "small_cnn"])
def test_ig_completeness_below_one_percent_at_default_steps(briefly_trained, model_name: str) -> None:
    """Completeness within 1% at the default 50 steps, on MNIST models after one epoch, for the predicted class
    (zero = black baseline)."""
    models, x = briefly_trained
    ig = methods.create("integrated_gradients", models[model_name])
    assert ig.steps == 50
    ig(x)
    assert float(ig.last_completeness_error.max()) < 0.01, ig.last_completeness_error


def test_ig_chunking_does_not_change_the_map(images, mlp) -> None:
    model = mlp()
    x = images(5, (1, 6, 6))
    full = methods.create("integrated_gradients", model, steps=20, chunk=1000)(x)
    chunked = methods.create("integrated_gradients", model, steps=20, chunk=7)(x)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left"])
def test_quadrature_rules(method: str) -> None:
    alphas, weights = quadrature(method, 16)
    assert np.isclose(weights.sum(), 1.0) and alphas.min() >= 0 and alphas.max() <= 1
    # integrates x**2 on [0, 1]
    tol = 1e-12 if method == "gausslegendre" else 4e-2
    assert abs((weights * alphas**2).sum() - 1 / 3) < tol


def test_ig_argument_errors(mlp) -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        IntegratedGradients(mlp(), baseline="white")
    with pytest.raises(ValueError, match="steps must be"):
        IntegratedGradients(mlp(), steps=0)
    with pytest.raises(ValueError, match="unknown integration method"):
        IntegratedGradients(mlp(), method="simpson")


# ------------------------------------------------------------------ SmoothGrad


@pytest.mark.parametrize(
    "base, params",
    [
        ("gradient", {}),
        ("gradient_x_input", {}),
        ("integrated_gradients", {"baseline": "black", "steps": 8}),
        ("guided_backprop", {}),
        ("lrp_epsilon", {"epsilon": 0.1}),
        ("dtd_zbox", {}),
    ],
)
def test_smoothgrad_without_noise_is_its_base(base: str, params: dict, images, mlp) -> None:
    model = mlp()
    x = images(3, (1, 6, 6))
    domain = {"low": -0.5, "high": 1.5}
    sg = methods.create("smoothgrad", model, base=base, n=1, noise_level=0.0, **domain, **params)
    reference = methods.create(base, model, **domain, **params)(x, 4)
    torch.testing.assert_close(sg(x, 4), reference, rtol=0, atol=0)


def test_smoothgrad_inherits_base_parameters(mlp) -> None:
    model = mlp()
    sg = methods.create(
        "smoothgrad", model, base="integrated_gradients", steps=7, baseline="black", low=-1.0, high=2.0
    )
    assert (sg.base.steps, sg.base.baseline, sg.base.low, sg.base.high) == (7, "black", -1.0, 2.0)
    sg = methods.create("smoothgrad", model, base="lrp_epsilon", base_params={"epsilon": 0.5})
    assert sg.base.rule_params == {"epsilon": 0.5}
    with pytest.raises(TypeError):
        methods.create("smoothgrad", model, base="gradient", epsilon=0.5)
    with pytest.raises(ValueError, match="explainer object"):
        SmoothGrad(model, base=methods.create("gradient", model), epsilon=0.5)


def test_smoothgrad_of_an_explainer_object(images, mlp) -> None:
    model = mlp()
    x = images(2, (1, 6, 6))
    base = methods.create("gradient_x_input", model)
    torch.testing.assert_close(SmoothGrad(model, base=base, n=1, noise_level=0.0)(x, 1), base(x, 1))


def test_smoothgrad_is_reproducible_under_a_seed_on_any_chunk(images, mlp, rel) -> None:
    model = mlp()
    x = images(3, (1, 6, 6))
    a = methods.create("smoothgrad", model, n=6, seed=3)(x)
    b = methods.create("smoothgrad", model, n=6, seed=3, chunk=4)(x)  # one draw (3 rows) per base call
    c = methods.create("smoothgrad", model, n=6, seed=4)(x)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    assert rel(a, c) > 1e-3


def test_smoothgrad_noise_scale(images, mlp) -> None:
    x = images(2, (1, 6, 6)) * torch.tensor([1.0, 0.5]).view(2, 1, 1, 1)
    data = SmoothGrad(mlp(), noise_level=0.2)
    spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    torch.testing.assert_close(data.sigma(x).flatten(), 0.2 * spread)
    domain = SmoothGrad(mlp(), noise_level=0.2, noise_scale="domain", low=-1.0, high=3.0)
    assert float(domain.sigma(x)) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="noise_scale"):
        SmoothGrad(mlp(), noise_scale="image")


def test_smoothgrad_averages_the_noisy_maps(images, mlp) -> None:
    model = mlp()
    x = images(2, (1, 6, 6))
    sg = SmoothGrad(model, base="gradient_x_input", n=3, noise_level=0.1, seed=1)
    gen = torch.Generator().manual_seed(1)
    sigma = sg.sigma(x)
    base = methods.create("gradient_x_input", model)
    noisy = [x + sigma * torch.randn(x.shape, generator=gen) for _ in range(3)]
    expected = sum(base(xi, torch.tensor([2, 2])) for xi in noisy) / 3
    torch.testing.assert_close(sg(x, 2), expected, rtol=1e-5, atol=1e-7)


def test_smoothgrad_forwards_fit_to_pattern_attribution(images, mlp) -> None:
    model = mlp()
    x = images(3, (1, 6, 6))
    loader = [images(64, (1, 6, 6), seed=2)]
    sg = methods.create("smoothgrad", model, base="pattern_attribution", n=1, noise_level=0.0)
    assert sg.needs_fit and not methods.create("smoothgrad", model).needs_fit
    with pytest.raises(RuntimeError):  # not fitted yet
        sg(x)
    assert sg.fit(loader) is sg
    reference = methods.create("pattern_attribution", model).fit(loader)(x, 1)
    torch.testing.assert_close(sg(x, 1), reference, rtol=1e-6, atol=1e-8)
    with pytest.raises(AttributeError, match="no fit"):
        methods.create("smoothgrad", model).fit(loader)


# ------------------------------------------------------------------ input invariance (the premise)


@pytest.mark.parametrize(
    "name, params, invariant",
    [
        ("gradient", {}, True),
        ("gradient_x_input", {}, False),
        ("integrated_gradients", {"baseline": "zero"}, False),
        ("integrated_gradients", {"baseline": "black"}, True),
        ("smoothgrad", {"n": 4}, True),
        ("smoothgrad", {"n": 4, "noise_scale": "domain"}, True),
    ],
)
def test_constant_shift_with_bias_compensated_twin(name: str, params: dict, invariant: bool, images, mlp, rel,
                                                   twin) -> None:
    """``f2(x + m) == f1(x)``: a method that follows the model gives the same map (the domain moves too)."""
    m = -1.0
    f1 = mlp()
    f2 = twin(f1, m)
    x = images(4, (1, 6, 6))
    a = methods.create(name, f1, low=0.0, high=1.0, **params)(x, 3)
    b = methods.create(name, f2, low=m, high=1.0 + m, **params)(x + m, 3)
    assert (rel(b, a) < 1e-4) == invariant, rel(b, a)
