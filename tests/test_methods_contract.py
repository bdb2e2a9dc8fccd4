"""The explainer contract, for every registered method: shape, dtype, device, batch of 1, targets,
the model's parameters, flags and modes left as found; the registry itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import methods

# the methods that need data (fit(loader)) before they explain
FIT_METHODS = {"pattern_net", "pattern_attribution"}
# the methods that need a conv layer
CONV_METHODS = {"grad_cam", "guided_grad_cam"}
# the methods that need attention blocks (a transformer: tests/test_vit.py), or an optional package not installed here
TRANSFORMER_METHODS = {"attention_rollout", "attn_lrp"}

# methods whose map depends on the batch it was computed in (seeded draws shaped like the batch)
BATCH_DEPENDENT = {"smoothgrad", "smoothgrad_squared", "vargrad"}  # noise drawn shaped like the batch


@pytest.fixture
def build(images):
    """``build(name, model, shape, **params)``: the explainer, fit on 32 seeded inputs where it needs data."""

    def make(name: str, model: nn.Module, shape: tuple[int, ...], **params):
        explainer = methods.create(name, model, low=0.0, high=1.0, **params)
        if getattr(explainer, "needs_fit", False):
            explainer.fit([images(32, shape, seed=7, dtype=next(model.parameters()).dtype)])
        return explainer

    return make


def cases():
    for name in methods.names():
        for model in ("mlp", "cnn"):
            if (model == "mlp" and name in CONV_METHODS) or name in TRANSFORMER_METHODS:
                continue
            yield pytest.param(name, model, id=f"{name}-{model}")


def test_registry_lists_every_benchmarked_method() -> None:
    expected = {
        "gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "guided_backprop", "deconvnet",
        "lrp_z", "lrp_epsilon", "lrp_alpha_beta", "lrp_zplus", "dtd_zbox", "lrp_composite",
        "pattern_net", "pattern_attribution", "grad_cam", "guided_grad_cam",
    }
    assert expected <= set(methods.names())


@pytest.mark.parametrize("name, model_name", list(cases()))
def test_contract(name: str, model_name: str, model_zoo, images, build, snapshot, assert_unchanged) -> None:
    builder, shape = model_zoo[model_name]
    model = builder()
    x = images(3, shape)
    # mixed flags and train mode: all must come back as found
    model.train()
    first = next(model.parameters())
    first.requires_grad_(False)
    before = snapshot(model)
    explainer = build(name, model, shape, **({"n": 4} if name in BATCH_DEPENDENT else {}))

    out = explainer(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert not out.requires_grad
    assert_unchanged(before, model)

    # default target = the predicted class (explainers run the model in eval mode)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    model.train()
    torch.testing.assert_close(explainer(x, pred), out, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(explainer(x, pred.tolist()), out, rtol=1e-6, atol=1e-7)
    # an int target means that class for every sample
    torch.testing.assert_close(explainer(x, 2), explainer(x, torch.full((3,), 2)), rtol=1e-6, atol=1e-7)

    # batch of 1
    one = explainer(x[:1], pred[:1])
    assert one.shape == x[:1].shape
    if name not in BATCH_DEPENDENT:
        torch.testing.assert_close(one, out[:1], rtol=1e-5, atol=1e-6)
    assert_unchanged(before, model)


@pytest.mark.parametrize("name", [n for n in methods.names() if n not in CONV_METHODS | TRANSFORMER_METHODS])
def test_float64(name: str, model_zoo, images, build) -> None:
    builder, shape = model_zoo["mlp"]
    model = builder(dtype=torch.float64)
    x = images(2, shape, dtype=torch.float64)
    out = build(name, model, shape, **({"n": 2} if name in BATCH_DEPENDENT else {}))(x)
    assert out.dtype == torch.float64 and out.shape == x.shape


def test_target_errors(model_zoo, images) -> None:
    builder, shape = model_zoo["mlp"]
    explainer = methods.create("gradient", builder())
    x = images(3, shape)
    with pytest.raises(ValueError, match="entries for a batch of 3"):
        explainer(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="out of range"):
        explainer(x, 10)
    with pytest.raises(TypeError, match="integers"):
        explainer(x, torch.tensor([0.0, 1.0, 2.0]))


def test_registry_errors_and_user_factories() -> None:
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.create("nope", nn.Linear(2, 2))
    # a user's own factory by import path
    explainer = methods.create("methods.gradients:Gradient", nn.Linear(2, 2), low=-1.0, high=1.0)
    assert isinstance(explainer, methods.gradients.Gradient) and explainer.low == -1.0
    with pytest.raises(ValueError, match="cannot import"):
        methods.get_factory("no_such_module.thing")

    @methods.register("_test_identity")
    def identity(model: nn.Module, scale: float = 1.0):
        return lambda x, target=None: scale * x

    try:  # the domain keywords are dropped for a factory that does not take them
        explainer = methods.create("_test_identity", nn.Linear(2, 2), scale=2.0, low=-1.0, high=1.0)
        assert torch.equal(explainer(torch.ones(1, 2)), torch.full((1, 2), 2.0))
        with pytest.raises(ValueError, match="already registered"):
            methods.register("_test_identity")(lambda model: None)
    finally:
        methods.registry._REGISTRY.pop("_test_identity")


def test_domain_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="low < high"):
        methods.create("gradient", nn.Linear(2, 2), low=1.0, high=0.0)


@pytest.mark.parametrize("name", ["gradient", "integrated_gradients", "smoothgrad", "lrp_z", "grad_cam"])
@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_explainers_work_under_no_grad_and_inference_mode(name: str, context: str, model_zoo, images) -> None:
    builder, shape = model_zoo["cnn"]
    model = builder()
    explainer = methods.create(name, model, **({"n": 2} if name in BATCH_DEPENDENT else {}))
    x = images(2, shape)
    reference = explainer(x, 1)
    with getattr(torch, context)():
        out = explainer(images(2, shape), 1)
    torch.testing.assert_close(out.clone(), reference)


def test_dropout_model_is_explained_in_eval_mode(images) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    x = images(4, (1, 6, 6))
    for name in ("gradient", "lrp_epsilon", "guided_backprop", "integrated_gradients"):
        explainer = methods.create(name, model)
        model.eval()
        reference = explainer(x, 1)
        model.train()
        torch.testing.assert_close(explainer(x, 1), reference)
        assert model.training and model[3].training


@pytest.mark.gpu
@pytest.mark.parametrize("name, model_name", list(cases()))
def test_cuda_matches_cpu(name: str, model_name: str, model_zoo, images, build, snapshot, assert_unchanged) -> None:
    builder, shape = model_zoo[model_name]
    model = builder()
    x = images(3, shape)
    params = {"n": 4} if name in BATCH_DEPENDENT else {}
    cpu = build(name, model, shape, **params)(x, 1)
    model.cuda()
    before = snapshot(model)
    gpu = build(name, model, shape, **params)(x.cuda(), 1)
    assert gpu.device.type == "cuda" and gpu.dtype == x.dtype and gpu.shape == x.shape
    assert_unchanged(before, model)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4 * float(cpu.abs().max()) + 1e-6)


@pytest.mark.parametrize("model_name", ["resnet18", "vgg11_bn"])
def test_every_method_on_timm_models(model_name: str, timm_resnet, timm_vgg, images, snapshot,
                                     assert_unchanged) -> None:
    """Real architectures (residual adds, BatchNorm, in-place ReLUs, ConvMlp head): shape, model state."""
    model = timm_resnet("resnet18") if model_name == "resnet18" else timm_vgg()
    x = images(2, (3, 32, 32))
    before = snapshot(model)
    for name in methods.names():
        if name in FIT_METHODS or name in TRANSFORMER_METHODS:  # Sequential stacks only; transformers only
            continue
        params = {"n": 2} if name in BATCH_DEPENDENT else {"steps": 8} if name == "integrated_gradients" else {}
        out = methods.create(name, model, **params)(x)
        assert out.shape == x.shape and torch.isfinite(out).all(), name
        assert_unchanged(before, model)
