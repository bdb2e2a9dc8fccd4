"""The captum adapter (``methods.create("captum:<Class>", model, **params)``): parity with the project's own methods,
the explainer contract for every supported class, the silent-gradient guard, errors, fitting and the cost count."""

from __future__ import annotations

import copy
import importlib.util
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import methods
from bench.core.models import create_model

HAVE_CAPTUM = importlib.util.find_spec("captum") is not None
needs_captum = pytest.mark.skipif(not HAVE_CAPTUM, reason="needs the captum extra")

if HAVE_CAPTUM:
    import captum.attr as ca

    from methods.adapters.captum import (
        FORWARD_ONLY,
        SUPPORTED,
        SilentGradientError,
        draw_inputs,
        feature_mask,
        passes_per_map,
    )
    from methods.adapters.captum import factory as captum_factory
else:  # pragma: no cover - the extra is installed in the project's environment
    SUPPORTED, FORWARD_ONLY = (), frozenset()

SHAPE = (1, 12, 12)
#: cheap parameters per class (a few model evaluations per map)
CHEAP = {
    "IntegratedGradients": {"n_steps": 8},
    "DeepLiftShap": {"n_baselines": 4},
    "GradientShap": {"n_samples": 3, "n_baselines": 4},
    "FeatureAblation": {"feature_mask": "grid4"},
    "ShapleyValueSampling": {"feature_mask": "grid4", "n_samples": 2},
    "Lime": {"feature_mask": "grid4", "n_samples": 12},
    "KernelShap": {"feature_mask": "grid4", "n_samples": 12},
    "NoiseTunnel": {"nt_samples": 3},
}
#: NoiseTunnel around other bases (the base's parameters pass through)
VARIANTS = {
    "NoiseTunnel-GuidedBackprop": ("NoiseTunnel", {"base": "GuidedBackprop", "nt_samples": 2}),
    "NoiseTunnel-GradientShap": ("NoiseTunnel", {"base": "GradientShap", "n_baselines": 3, "n_samples": 2,
                                                 "nt_samples": 2}),
    "NoiseTunnel-IntegratedGradients": ("NoiseTunnel", {"base": "IntegratedGradients", "n_steps": 4,
                                                        "nt_samples": 2}),
}
RANDOM = {"GradientShap", "ShapleyValueSampling", "Lime", "KernelShap", "NoiseTunnel"}


def cases() -> list:
    out = [pytest.param(name, dict(CHEAP.get(name, {})), id=name) for name in SUPPORTED]
    return out + [pytest.param(cls, dict(p), id=label) for label, (cls, p) in VARIANTS.items()]


def small_cnn(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", SHAPE, 3, channels=(4, 6), hidden=12).to(dtype).eval()


def tiny_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                         nn.Linear(12, 3)).to(dtype).eval()


MODELS = {"small_cnn": small_cnn, "mlp": tiny_mlp}


def build(name: str, model: nn.Module, images, shape: tuple[int, ...] = SHAPE, **params):
    """The explainer, fit on 16 seeded inputs where it needs data."""
    explainer = methods.create(f"captum:{name}", model, **params)
    if explainer.needs_fit:
        explainer.fit([images(16, shape, seed=7, dtype=next(model.parameters()).dtype)])
    return explainer


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------------------------ parity


PARITY = [
    pytest.param("Saliency", {"abs": False}, "gradient", {}, id="saliency-gradient"),
    pytest.param("InputXGradient", {}, "gradient_x_input", {}, id="inputxgradient-gradient_x_input"),
    pytest.param("GuidedBackprop", {}, "guided_backprop", {}, id="guidedbackprop-guided_backprop"),
    pytest.param("IntegratedGradients", {"n_steps": 16}, "integrated_gradients", {"steps": 16},
                 id="ig-gausslegendre-zero"),
    pytest.param("IntegratedGradients", {"n_steps": 12, "baselines": "black", "method": "gausslegendre"},
                 "integrated_gradients", {"steps": 12, "baseline": "black", "method": "gausslegendre"},
                 id="ig-gausslegendre-black"),
    pytest.param("IntegratedGradients", {"n_steps": 10, "baselines": "black", "method": "riemann_middle"},
                 "integrated_gradients", {"steps": 10, "baseline": "black", "method": "riemann_middle"},
                 id="ig-riemann_middle-black"),
]


@needs_captum
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("theirs, their_params, ours, our_params", PARITY)
def test_parity_with_our_methods(theirs, their_params, ours, our_params, arch, dtype, images) -> None:
    model = MODELS[arch](dtype=dtype)
    x = images(8, SHAPE, dtype=dtype)
    domain = {"low": -0.25, "high": 1.0}  # a black baseline that is not the zero baseline
    a = methods.create(f"captum:{theirs}", model, **domain, **their_params)
    b = methods.create(ours, model, **domain, **our_params)
    assert rel(a(x), b(x)) <= 1e-6  # target None: the predicted class, on both sides
    assert rel(a(x, 1), b(x, 1)) <= 1e-6


@needs_captum
def test_captum_trapezoid_weights_sum_to_one_minus_one_over_n(images) -> None:
    """Captum's riemann_trapezoid gives its n points the step 1/n (end points 1/2n): the weights sum to (n - 1) / n,
    so its IG is ours (weights 1/(n - 1), summing to one) times (n - 1) / n and misses completeness by 1/n. Pinned
    here so that a captum release that changes it is noticed; the adapter passes captum's rule through."""
    model, x, n = small_cnn(dtype=torch.float64), images(4, SHAPE, dtype=torch.float64), 10
    theirs = methods.create("captum:IntegratedGradients", model, n_steps=n, method="riemann_trapezoid")(x)
    ours = methods.create("integrated_gradients", model, steps=n, method="riemann_trapezoid")(x)
    assert rel(theirs, ours * (n - 1) / n) <= 1e-6
    assert rel(theirs, ours) > 0.05


@needs_captum
def test_saliency_keeps_captums_absolute_default(images) -> None:
    model, x = small_cnn(), images(4, SHAPE)
    grad = methods.create("gradient", model)(x)
    assert rel(methods.create("captum:Saliency", model)(x), grad.abs()) <= 1e-6


@needs_captum
def test_lrp_equals_gradient_x_input_through_flatten(images) -> None:
    """Captum has no LRP rule for nn.Flatten (a TypeError without the adapter's pass-through rule); with it, LRP-eps
    (1e-9) on a ReLU network is Gradient x Input."""
    model, x = small_cnn(dtype=torch.float64), images(6, SHAPE, dtype=torch.float64)
    with pytest.raises(TypeError, match="Flatten"):  # on a copy: captum's failure leaves `rule` attributes behind
        ca.LRP(copy.deepcopy(model)).attribute(x.clone().requires_grad_(), target=0)
    lrp = methods.create("captum:LRP", model)(x)
    assert rel(lrp, methods.create("gradient_x_input", model)(x)) <= 1e-6


@needs_captum
def test_lrp_takes_a_subclass_of_a_supported_layer_as_its_base(images) -> None:
    """Captum looks its LRP rules up by exact type; the invariance test's tie-stable max pooling subclasses
    nn.MaxPool2d (a TypeError naming it without the adapter's base-class rule). With it, the twin's map is the
    original's (no ties in random inputs)."""
    from bench.core.models import create_model
    from bench.twins.ties import TieStableMaxPool2d, stable_ties

    model = create_model("small_cnn", (1, 28, 28), 10).double().eval()
    twin = copy.deepcopy(model)
    assert stable_ties(twin)  # in place
    assert any(isinstance(m, TieStableMaxPool2d) for m in twin.modules())
    x = images(4, (1, 28, 28), dtype=torch.float64)
    with pytest.raises(TypeError, match="TieStableMaxPool2d"):
        ca.LRP(copy.deepcopy(twin)).attribute(x.clone().requires_grad_(), target=0)
    lrp = methods.create("captum:LRP", twin)(x, 0)
    assert rel(lrp, methods.create("captum:LRP", model)(x, 0)) <= 1e-12 and lrp.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ the contract


@needs_captum
@pytest.mark.parametrize("name, params", cases())
def test_contract(name: str, params: dict, images, snapshot, assert_unchanged) -> None:
    model = small_cnn()
    x = images(3, SHAPE)
    model.train()  # mixed flags and a gradient already there: all must come back as found
    first, second = list(model.parameters())[:2]
    first.requires_grad_(False)
    second.grad = torch.full_like(second, 0.5)
    before = snapshot(model)
    explainer = build(name, model, images, low=0.0, high=1.0, **params)
    rng_torch, rng_numpy = torch.get_rng_state(), np.random.get_state()

    out = explainer(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all() and not out.requires_grad
    if name != "Lime":  # captum's default Lasso (alpha 0.01) zeroes every weight on this model's tiny logits
        assert float(out.abs().max()) > 0
    assert_unchanged(before, model)
    assert torch.equal(second.grad, torch.full_like(second, 0.5))
    assert all(p.grad is None for p in model.parameters() if p is not second)
    assert torch.equal(torch.get_rng_state(), rng_torch)  # the global generators are left as found
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), rng_numpy, strict=True))

    # target None = the predicted class (in eval mode); an int = that class for every sample
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    model.train()
    torch.testing.assert_close(explainer(x, pred), out, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(explainer(x, 2), explainer(x, torch.full((3,), 2)), rtol=1e-6, atol=1e-7)
    assert_unchanged(before, model)


@needs_captum
@pytest.mark.parametrize("name, params", cases())
def test_float64(name: str, params: dict, images) -> None:
    model = tiny_mlp(dtype=torch.float64)
    x = images(2, SHAPE, dtype=torch.float64)
    out = build(name, model, images, **params)(x)
    assert out.dtype == torch.float64 and out.shape == x.shape and torch.isfinite(out).all()


@needs_captum
@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_classes_depend_on_their_seed_only(name: str, images) -> None:
    """Captum draws from the global generators; the adapter seeds them with ``seed`` at every call."""
    model, x = small_cnn(), images(3, SHAPE)
    params = dict(CHEAP.get(name, {}))
    if name == "Lime":  # least squares, not captum's default Lasso, which zeroes every weight here
        from captum._utils.models.linear_model import SkLearnLinearRegression

        params["interpretable_model"] = SkLearnLinearRegression()
    explainer = build(name, model, images, **params)
    torch.manual_seed(123)
    np.random.seed(123)
    a = explainer(x, 1)
    torch.manual_seed(456)
    np.random.seed(456)
    torch.testing.assert_close(explainer(x, 1), a, rtol=0, atol=0)
    other = build(name, model, images, seed=1, **params)(x, 1)
    assert not torch.allclose(other, a)


@needs_captum
def test_noise_tunnel_default_noise_is_fifteen_percent_of_the_domain(images) -> None:
    model, x = small_cnn(), images(3, SHAPE)
    ours = methods.create("captum:NoiseTunnel", model, low=-0.25, high=1.0, nt_samples=4, abs=False)(x, 1)
    torch.manual_seed(0)
    theirs = ca.NoiseTunnel(ca.Saliency(model)).attribute(x.clone().requires_grad_(), nt_samples=4, stdevs=0.1875,
                                                          abs=False, target=1)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-8)


@needs_captum
def test_baselines_black_and_white_are_the_domain_bounds(images) -> None:
    model, x = small_cnn(), images(3, SHAPE)
    raw = ca.Occlusion(model)
    for alias, value in (("black", -0.25), ("white", 2.0)):
        ours = methods.create("captum:Occlusion", model, low=-0.25, high=2.0, baseline=alias)(x, 1)
        theirs = raw.attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=value, target=1)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-8)


@needs_captum
def test_feature_masks() -> None:
    grid = feature_mask("grid4", (2, 8, 6))
    assert grid.shape == (1, 2, 8, 6) and grid.dtype == torch.long
    assert torch.equal(grid[0, 0], grid[0, 1])  # channels share the features
    assert torch.equal(grid[0, 0, ::4, ::4], torch.tensor([[0, 1], [2, 3]]))
    assert grid.unique().tolist() == [0, 1, 2, 3]
    assert torch.equal(grid[0, 0, :4, :4], torch.zeros(4, 4, dtype=torch.long))
    pixel = feature_mask("pixel", (3, 2, 2))
    assert torch.equal(pixel[0, 2], torch.tensor([[0, 1], [2, 3]]))
    assert feature_mask("element", (3, 2, 2)).unique().numel() == 12
    assert feature_mask("grid2", (5,)).tolist() == [[0, 0, 1, 1, 2]]
    with pytest.raises(ValueError, match="gridK"):
        feature_mask("grid0", (1, 4, 4))


@needs_captum
def test_a_grid_mask_gives_maps_constant_on_its_patches(images) -> None:
    model, x = small_cnn(), images(2, SHAPE)
    out = methods.create("captum:FeatureAblation", model, feature_mask="grid4")(x, 0)
    patches = out.unflatten(2, (3, 4)).unflatten(4, (3, 4))  # B, C, 3, 4, 3, 4
    assert torch.equal(patches, patches[:, :, :, :1, :, :1].expand_as(patches))
    pixel = methods.create("captum:FeatureAblation", model)(x, 0).unflatten(2, (3, 4)).unflatten(4, (3, 4))
    assert not torch.equal(pixel, pixel[:, :, :, :1, :, :1].expand_as(pixel))


@needs_captum
@pytest.mark.parametrize("name", ["FeatureAblation", "ShapleyValueSampling", "Lime", "KernelShap"])
def test_the_default_mask_is_per_pixel_not_per_element(name: str, images) -> None:
    """``"pixel"``: the channels of a position are one feature, so they share its attribution."""
    torch.manual_seed(0)
    model = create_model("small_cnn", (3, 4, 4), 3, channels=(2, 2), hidden=4).eval()
    x = images(2, (3, 4, 4))
    params = {"n_samples": 2} if name == "ShapleyValueSampling" else {}
    if name == "Lime":  # least squares: captum's default Lasso zeroes every weight on these tiny logits
        from captum._utils.models.linear_model import SkLearnLinearRegression

        params["interpretable_model"] = SkLearnLinearRegression()
    out = methods.create(f"captum:{name}", model, **params)(x, 0)
    assert torch.equal(out, out[:, :1].expand_as(out))
    element = methods.create(f"captum:{name}", model, feature_mask="element", **params)(x, 0)
    assert not torch.equal(element, element[:, :1].expand_as(element))


@needs_captum
def test_occlusion_default_window_and_strides(images) -> None:
    model, x = small_cnn(), images(2, SHAPE)
    ours = methods.create("captum:Occlusion", model)(x, 2)
    theirs = ca.Occlusion(model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), target=2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@needs_captum
def test_convergence_delta_is_kept(images) -> None:
    model, x = small_cnn(), images(3, SHAPE)
    explainer = methods.create("captum:IntegratedGradients", model, n_steps=8, return_convergence_delta=True)
    out = explainer(x)
    assert out.shape == x.shape and explainer.last_convergence_delta.shape == (3,)


# ------------------------------------------------------------------------------------------------ the guard


class ClampNet(nn.Module):
    """A ReLU MLP whose ReLUs are ``clamp(min=0)``: no activation function the first check knows."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(36, 16), nn.Linear(16, 12), nn.Linear(12, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(self.fc2(self.fc1(x.flatten(1)).clamp(min=0)).clamp(min=0))


class Block(nn.Module):
    def __init__(self, act) -> None:  # noqa: ANN001
        super().__init__()
        self.fc, self.act = nn.Linear(36, 10), act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.fc(x))


GUARDED = ["GuidedBackprop", "Deconvolution", "DeepLift", "DeepLiftShap"]


@needs_captum
@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
def test_captum_alone_returns_the_plain_gradient_on_functional_relus(functional_relu_net, images) -> None:
    """The premise of the guard: captum's GuidedBackprop on F.relu is Saliency, silently."""
    model, x = functional_relu_net("F.relu"), images(4, (1, 6, 6)).requires_grad_()
    gbp = ca.GuidedBackprop(model).attribute(x, target=1)
    assert torch.equal(gbp, ca.Saliency(model).attribute(x, target=1, abs=False))


@needs_captum
@pytest.mark.parametrize("how", ["F.relu", "torch.relu", "Tensor.relu"])
@pytest.mark.parametrize("name", GUARDED + ["NoiseTunnel"])
def test_functional_relus_are_refused(name: str, how: str, functional_relu_net, images, snapshot,
                                      assert_unchanged) -> None:
    model = functional_relu_net(how)
    before = snapshot(model)
    params = {"base": "GuidedBackprop"} if name == "NoiseTunnel" else {}
    explainer = build(name, model, images, (1, 6, 6), **params)
    label = "captum:NoiseTunnel \\(base GuidedBackprop\\)" if name == "NoiseTunnel" else f"captum:{name}"
    with pytest.raises(SilentGradientError, match=rf"{label} rewrites the backward pass of .* but model "
                                                  r"FunctionalReLUNet applies activation functions outside them "
                                                  r"\(relu in FunctionalReLUNet \(the model's own forward\)\)"):
        explainer(images(4, (1, 6, 6)))
    assert_unchanged(before, model)


@needs_captum
def test_the_refusal_names_the_module_that_applies_the_function(images) -> None:
    model = nn.Sequential(nn.Flatten(), Block(F.gelu)).eval()
    with pytest.raises(SilentGradientError, match=r"torch\.nn\.ReLU modules only, but model Sequential applies "
                                                  r"activation functions outside them \(gelu in 1 \(Block\)\)"):
        methods.create("captum:GuidedBackprop", model)(images(2, (1, 6, 6)))
    # DeepLift hooks nn.Sigmoid modules: a sigmoid module is fine, a functional one is not
    ok = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Sigmoid(), nn.Linear(8, 3)).eval()
    assert methods.create("captum:DeepLift", ok)(images(2, (1, 6, 6))).shape == (2, 1, 6, 6)
    with pytest.raises(SilentGradientError, match=r"sigmoid in 1 \(Block\)"):
        methods.create("captum:DeepLift", nn.Sequential(nn.Flatten(), Block(torch.sigmoid)).eval())(
            images(2, (1, 6, 6)))


@needs_captum
@pytest.mark.parametrize("name, params, label, what", [
    ("GuidedBackprop", {}, "GuidedBackprop", "the input gradient"),
    ("Deconvolution", {}, "Deconvolution", "the input gradient"),
    ("DeepLift", {"baselines": "black"}, "DeepLift", r"\(x - baseline\) x the input gradient"),
    ("DeepLiftShap", {"n_baselines": 3}, "DeepLiftShap", r"\(x - baseline\) x the input gradient"),
    ("NoiseTunnel", {"base": "GuidedBackprop", "nt_samples": 2}, r"NoiseTunnel \(base GuidedBackprop\)",
     "the input gradient"),
])
def test_a_map_equal_to_the_plain_one_is_refused(name: str, params: dict, label: str, what: str, images) -> None:
    """Second line: non-linearities the first check cannot see (clamp) leave captum's map the plain one."""
    model = ClampNet().eval()
    explainer = build(name, model, images, (1, 6, 6), low=-0.5, **params)
    with pytest.raises(SilentGradientError, match=rf"captum:{label} returned the plain gradient on this batch: on "
                                                  rf"every sample its map equals {what} of model ClampNet"):
        explainer(images(4, (1, 6, 6)))


@needs_captum
def test_lrp_accepts_functional_relus_and_refuses_other_functional_activations(functional_relu_net, images) -> None:
    """Captum's LRP passes relevance through ReLU modules; a functional relu's gradient mask only zeroes units whose
    relevance is zero already, so the maps are the module version's. Functional tanh is not (LRP passes it, the
    gradient scales by tanh')."""
    functional = functional_relu_net("F.relu")
    modular = nn.Sequential(nn.Flatten(), functional.fc1, nn.ReLU(), functional.fc2).eval()
    x = images(5, (1, 6, 6))
    out = methods.create("captum:LRP", functional)(x)
    assert rel(out, methods.create("captum:LRP", modular)(x)) <= 1e-6
    with pytest.raises(SilentGradientError, match=r"captum:LRP .*Tanh modules only.*tanh in 1 \(Block\)"):
        methods.create("captum:LRP", nn.Sequential(nn.Flatten(), Block(torch.tanh)).eval())(x)


@needs_captum
def test_the_refusal_reaches_the_harness_as_an_exception(functional_relu_net, images) -> None:
    from bench.core.explain import explain_all

    explainer = methods.create("captum:GuidedBackprop", functional_relu_net())
    with pytest.raises(ValueError, match="captum:GuidedBackprop rewrites the backward pass"):
        explain_all(explainer, images(4, (1, 6, 6)), torch.zeros(4, dtype=torch.long))


# ------------------------------------------------------------------------------------------------ errors


@needs_captum
def test_unknown_class_and_parameters() -> None:
    model = small_cnn()
    with pytest.raises(ValueError, match=r"unknown captum class 'Nope'; supported: Saliency, IntegratedGradients"):
        methods.create("captum:Nope", model)
    with pytest.raises(ValueError, match=r"captum:Saliency: unknown parameter\(s\) \['n_steps'\]; Saliency accepts: "
                                         r"abs, high, low"):
        methods.create("captum:Saliency", model, n_steps=3)
    with pytest.raises(ValueError, match=r"captum:Occlusion: unknown parameter\(s\) \['window'\]; Occlusion accepts: "
                                         r"baseline, baselines, high, low, perturbations_per_eval, show_progress, "
                                         r"sliding_window_shapes, strides"):
        methods.create("captum:Occlusion", model, window=3)
    with pytest.raises(ValueError, match=r"captum:NoiseTunnel \(base IntegratedGradients\): "
                                         r"captum:IntegratedGradients: unknown parameter\(s\) \['steps'\]"):
        methods.create("captum:NoiseTunnel", model, base="IntegratedGradients", steps=3)
    with pytest.raises(ValueError, match="base DeepLiftShap is not supported"):
        methods.create("captum:NoiseTunnel", model, base="DeepLiftShap")
    with pytest.raises(ValueError, match="base must be the name of another supported class"):
        methods.create("captum:NoiseTunnel", model, base="NoiseTunnel")
    with pytest.raises(ValueError, match="unknown captum class 'Gradient'"):
        methods.create("captum:NoiseTunnel", model, base="Gradient")
    with pytest.raises(ValueError, match="return_input_shape must stay True"):
        methods.create("captum:Lime", model, return_input_shape=False)
    with pytest.raises(ValueError, match="baselines 'grey'"):
        methods.create("captum:IntegratedGradients", model, baselines="grey")
    with pytest.raises(ValueError, match="baseline or baselines, not both"):
        methods.create("captum:IntegratedGradients", model, baselines=0.0, baseline="black")
    with pytest.raises(ValueError, match="feature_mask 'patches'"):
        methods.create("captum:Lime", model, feature_mask="patches")
    with pytest.raises(ValueError, match="needs at least 2 baselines"):
        methods.create("captum:DeepLiftShap", model, baselines=torch.zeros(1, *SHAPE))
    with pytest.raises(ValueError, match="sliding_window_shapes"):
        methods.create("captum:Occlusion", model, sliding_window_shapes=(4, 4))(torch.rand(1, *SHAPE))


def test_missing_captum_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ImportError, match=r"pip install 'saliency-bench\[captum\]'"):
        methods.create("captum:Saliency", nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------------ fit


@needs_captum
def test_fit_draws_seeded_training_inputs(images) -> None:
    data = images(30, SHAPE, seed=3)
    loader = [(data[:12], torch.zeros(12)), (data[12:], torch.zeros(18))]
    drawn = draw_inputs(loader, 5, seed=0)
    assert drawn.shape == (5, *SHAPE)
    assert all(any(torch.equal(d, t) for t in data) for d in drawn)  # training inputs, none made up
    assert len({int((d == data).flatten(1).all(1).nonzero()) for d in drawn}) == 5  # without replacement
    assert torch.equal(draw_inputs(loader, 5, seed=0), drawn)
    assert not torch.equal(draw_inputs(loader, 5, seed=1), drawn)
    assert torch.equal(draw_inputs([data[:12], data[12:]], 5, seed=0), drawn)  # bare batches
    assert draw_inputs(loader, 100, seed=0).shape[0] == 30


@needs_captum
def test_shap_classes_need_fit_and_the_harness_fits_them(images) -> None:
    from bench.core.explain import MethodSpec, fit_loader, make_explainer
    from methods.pattern import NotFittedError

    model, x = small_cnn(), images(3, SHAPE)
    explainer = methods.create("captum:DeepLiftShap", model, n_baselines=4)
    assert explainer.needs_fit
    with pytest.raises(NotFittedError, match=r"captum:DeepLiftShap: no baselines yet; call \.fit"):
        explainer(x)
    spec = MethodSpec("dls", "captum:DeepLiftShap", params={"n_baselines": 4})
    fitted = make_explainer(spec, model, domain=(0.0, 1.0), fit_data=fit_loader(images(20, SHAPE, seed=5)))
    assert fitted.plan.fitted.shape == (4, *SHAPE)
    explained = methods.create("captum:DeepLiftShap", model, baselines=fitted.plan.fitted)
    assert not explained.needs_fit
    torch.testing.assert_close(fitted(x), explained(x))
    assert methods.create("captum:NoiseTunnel", model, base="GradientShap").needs_fit
    assert not methods.create("captum:NoiseTunnel", model).needs_fit


# ------------------------------------------------------------------------------------------------ costs


@needs_captum
@pytest.mark.parametrize("name, params", cases() + [pytest.param("Occlusion", {"strides": 3}, id="Occlusion-s3")])
def test_passes_per_map_counts_the_model_evaluations(name: str, params: dict, images) -> None:
    model = small_cnn()
    explainer = build(name, model, images, **params)
    rows = []
    handle = model[0].register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        explainer(images(4, SHAPE), 1)
    finally:
        handle.remove()
    expected = passes_per_map(name, params, model, SHAPE)
    assert sum(rows) == 4 * expected
    assert explainer.passes_per_map(SHAPE) == expected == captum_factory(name).passes_per_map(params, input_shape=SHAPE)


@needs_captum
def test_passes_per_map_defaults() -> None:
    mnist, rgb = (1, 28, 28), (3, 32, 32)
    assert passes_per_map("Occlusion", {}, input_shape=mnist) == 13 * 13 + 1  # window (1, 4, 4), strides (1, 2, 2)
    assert passes_per_map("Occlusion", {}, input_shape=rgb) == 15 * 15 + 1
    assert passes_per_map("FeatureAblation", {}, input_shape=(3, 8, 8)) == 64 + 1  # "pixel": channels share one
    assert passes_per_map("FeatureAblation", {"feature_mask": "element"}, input_shape=(3, 8, 8)) == 192 + 1
    assert passes_per_map("ShapleyValueSampling", {"feature_mask": "grid4"}, input_shape=mnist) == 25 * 49 + 1
    assert passes_per_map("Lime") == 26 and passes_per_map("KernelShap", {"n_samples": 200}) == 201
    assert passes_per_map("IntegratedGradients") == 50 and passes_per_map("GradientShap") == 5
    assert passes_per_map("GuidedBackprop") == 3  # the map, the activation check, the plain gradient
    assert passes_per_map("DeepLiftShap") == 2 * 16 + 2
    assert passes_per_map("NoiseTunnel", {"base": "IntegratedGradients", "n_steps": 10}) == 50
    with pytest.raises(ValueError, match="pass input_shape"):
        passes_per_map("Occlusion", {})
    assert FORWARD_ONLY == {"Occlusion", "FeatureAblation", "ShapleyValueSampling", "Lime", "KernelShap"}


# ------------------------------------------------------------------------------------------------ CUDA


@needs_captum
@pytest.mark.gpu
@pytest.mark.parametrize("name, params", cases())
def test_cuda(name: str, params: dict, images, snapshot, assert_unchanged) -> None:
    model = small_cnn()
    x = images(3, SHAPE)
    cpu = build(name, model, images, **params)(x, 1)
    model.cuda()
    before = snapshot(model)
    gpu = build(name, model, images, **params)(x.cuda(), 1)
    assert gpu.device.type == "cuda" and gpu.dtype == x.dtype and gpu.shape == x.shape
    assert_unchanged(before, model)
    if name not in RANDOM:  # random draws are made on the input's device
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4 * float(cpu.abs().max()) + 1e-6)


@needs_captum
def test_noise_tunnel_is_input_invariant_under_a_checkerboard_twin() -> None:
    """The invariance test gives captum's NoiseTunnel the harness's absolute noise std (``sigma``) alike for the
    network and its twin; before, each took 15 % of its own domain, wider on the checkerboard twin: SSIM 0.906 on
    small_cnn (benchmarks/zoo.md's first run). The same seeded draws make the two maps equal to float64 rounding."""
    from bench.core.data import Dataset
    from bench.core.explain import MethodSpec
    from bench.core.models import create_model
    from bench.core.settings import RunSettings, ScoreSettings
    from bench.experiments.invariance import input_invariance
    from bench.twins.shifts import checkerboard

    shape = (1, 12, 12)
    g = torch.Generator().manual_seed(0)
    data = Dataset(name="toy", x_train=torch.rand(16, *shape, generator=g), y_train=torch.randint(0, 4, (16,)),
                   x_test=torch.rand(6, *shape, generator=g), y_test=torch.randint(0, 4, (6,)), num_classes=4,
                   domain=(0.0, 1.0))
    torch.manual_seed(0)
    model = create_model("small_cnn", shape, 4, channels=(4, 6), hidden=16).eval()
    spec = MethodSpec("nt", "captum:NoiseTunnel", params={"nt_samples": 3, "abs": False})
    run = RunSettings(n_samples=6, batch_size=6, fit_samples=16, keep_maps=6, progress=False)
    res = input_invariance(model, data, [spec], {"checkerboard": checkerboard(shape, 4, 1.0)}, run=run,
                           scoring=ScoreSettings(["ssim"]))
    assert not res.errors, res.errors
    rel_diff = res.table[(res.table.metric == "max_rel_diff")]["score"]
    assert len(rel_diff) == 6 and float(rel_diff.max()) < 1e-9
    with pytest.raises(ValueError, match="one noise std per input"):
        methods.create("captum:NoiseTunnel", model, sigma=torch.tensor([[[0.1]], [[0.2]]]))
