"""zennit-based methods: LRP-0 = Gradient x Input, hand-written Guided Backprop / DeconvNet, conservation
through residual blocks with the canonizers, refusals of models the rules cannot see."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from zennit.canonizers import Canonizer

import methods
from methods.canonizers import UnsupportedModelError, canonizers_for

LRP = ["lrp_z", "lrp_epsilon", "lrp_alpha_beta", "lrp_zplus", "dtd_zbox", "lrp_composite"]
MODELS = ["mlp", "cnn", "timm_resnet18", "timm_resnet50", "timm_vgg11_bn"]  # conftest.py: model_zoo


# ------------------------------------------------------------------ LRP-0 == Gradient x Input


@pytest.mark.parametrize("model_name", MODELS)
def test_lrp_z_equals_gradient_x_input(model_name: str, assert_unchanged, images, model_zoo, rel, snapshot) -> None:
    """With biases, BatchNorm (merged), max-pooling and residual adds (canonized): LRP-0 == x * grad."""
    builder, shape = model_zoo[model_name]
    model = builder()
    x = images(3, shape)
    gxi = methods.create("gradient_x_input", model)(x)
    before = snapshot(model)
    lrp = methods.create("lrp_z", model)(x)
    assert_unchanged(before, model)
    assert rel(lrp, gxi) < 1e-5, rel(lrp, gxi)


def test_lrp_z_float64_and_zero_denominators(images, mlp, rel, zero_biases) -> None:
    model = mlp(dtype=torch.float64)
    x = images(3, (1, 6, 6), dtype=torch.float64)
    gxi = methods.create("gradient_x_input", model)(x)
    assert rel(methods.create("lrp_z", model)(x), gxi) < 1e-9  # the 1e-12 stabilizer
    # every pre-activation exactly 0: plain eps=0 would divide 0 by 0
    zero_biases(model)
    out = methods.create("lrp_z", model)(torch.zeros_like(x), 0)
    assert torch.isfinite(out).all() and not out.any()


# ------------------------------------------------------------------ Guided Backprop / DeconvNet by hand


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


class _DeconvReLU(_GuidedReLU):
    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


def _by_hand(model: nn.Sequential, x: Tensor, target: Tensor, relu: type[torch.autograd.Function]) -> Tensor:
    h = x.clone().requires_grad_(True)
    out = h
    for module in model:
        out = relu.apply(out) if isinstance(module, nn.ReLU) else module(out)
    (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), h)
    return grad


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("name, relu", [("guided_backprop", _GuidedReLU), ("deconvnet", _DeconvReLU)])
def test_modified_relu_backward_matches_hand_written(model_name: str, name: str, relu, images, model_zoo, rel) -> None:
    builder, shape = model_zoo[model_name]
    model = builder()
    x = images(4, shape)
    target = torch.tensor([0, 3, 5, 9])
    expected = _by_hand(model, x, target, relu)
    out = methods.create(name, model)(x, target)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-8)
    assert rel(out, methods.create("gradient", model)(x, target)) > 1e-2  # not the plain gradient


@pytest.mark.parametrize("how", ["F.relu", "torch.relu", "Tensor.relu"])
@pytest.mark.parametrize("name", ["guided_backprop", "deconvnet"])
def test_functional_relus_are_refused(name: str, how: str, assert_unchanged, functional_relu_net, images,
                                      snapshot) -> None:
    model = functional_relu_net(how)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"FunctionalReLUNet applies relu outside an nn\.ReLU module"):
        methods.create(name, model)(images(2, (1, 6, 6)))
    assert_unchanged(before, model)


# ------------------------------------------------------------------ conservation through residual blocks


def _residual_net(randomize_batchnorm, seed: int = 0) -> nn.Sequential:
    """Bias-free: conv, ReLU, one timm BasicBlock (BatchNorm without offsets), average pool, linear."""
    from timm.models.resnet import BasicBlock

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        BasicBlock(4, 4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10, bias=False),
    )
    return randomize_batchnorm(net, seed, centered=True).eval()


def test_relevance_is_conserved_through_a_residual_block(images, randomize_batchnorm) -> None:
    model = _residual_net(randomize_batchnorm)
    x = images(4, (1, 8, 8))
    with torch.no_grad():
        logit = model(x)[:, 2]
    total = methods.create("lrp_z", model)(x, 2).flatten(1).sum(1)
    torch.testing.assert_close(total, logit, rtol=1e-4, atol=1e-6)
    # without the canonizer autograd copies the relevance into both branches of the residual add
    doubled = methods.create("lrp_z", model, canonizers=[])(x, 2).flatten(1).sum(1)
    torch.testing.assert_close(doubled, 2 * logit, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_relevance_is_conserved_through_a_timm_resnet(name: str, assert_unchanged, images, snapshot, timm_resnet,
                                                      zero_biases) -> None:
    model = zero_biases(timm_resnet(name, centered=True))
    x = images(2, (3, 32, 32))
    with torch.no_grad():
        logit = model(x)[:, 1]
    before = snapshot(model)
    total = methods.create("lrp_z", model)(x, 1).flatten(1).sum(1)
    assert_unchanged(before, model)  # forward restored, Sum removed, BatchNorm eps and statistics back
    torch.testing.assert_close(total, logit, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["lrp_zplus", "dtd_zbox", "lrp_alpha_beta"])
def test_other_rules_conserve_on_a_bias_free_net(name: str, images, mlp, zero_biases) -> None:
    model = zero_biases(mlp())
    x = images(4, (1, 6, 6))
    with torch.no_grad():
        logit = model(x)[:, 5]
    total = methods.create(name, model)(x, 5).flatten(1).sum(1)
    torch.testing.assert_close(total, logit, rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("name", LRP)
def test_lrp_refuses_unknown_architectures(name: str, functional_relu_net) -> None:
    with pytest.raises(UnsupportedModelError, match="needs a canonizer for model FunctionalReLUNet"):
        methods.create(name, functional_relu_net())


def test_lrp_refuses_unmergeable_batchnorm_and_attention_blocks() -> None:
    bn_first = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(UnsupportedModelError, match="BatchNorm '0' cannot be merged"):
        canonizers_for(bn_first, "lrp_z")
    from bench.core.models import create_model

    se = create_model("timm:seresnet18", (3, 32, 32), 5, channels=(4, 8, 8, 8), stem_width=4)
    with pytest.raises(UnsupportedModelError, match="model ResNet: its submodule 'layer1.0.se'"):
        methods.create("lrp_epsilon", se)


def test_explicit_canonizers_override_the_lookup(functional_relu_net, images, rel) -> None:
    model = functional_relu_net()
    x = images(2, (1, 6, 6))
    out = methods.create("lrp_z", model, canonizers=[])(x)  # the caller vouches for the model
    assert rel(out, methods.create("gradient_x_input", model)(x)) < 1e-5


def test_a_layer_called_twice_is_refused() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(torch.relu(self.fc(x)))

    with pytest.raises(ValueError, match=r"calls the layer\(s\) \['fc'\] more than once"):
        methods.create("lrp_z", Twice(), canonizers=[])(torch.rand(2, 4))


class _Doubling(Canonizer):
    """A wrong canonizer: doubles the last Linear's output while registered."""

    def apply(self, root_module: nn.Module) -> list:
        instance = _Doubling()
        instance.register([m for m in root_module.modules() if isinstance(m, nn.Linear)][-1])
        return [instance]

    def register(self, module: nn.Module) -> None:
        self.module = module
        module.forward = lambda x: 2 * nn.Linear.forward(module, x)

    def remove(self) -> None:
        del self.module.forward


def test_a_canonizer_that_changes_the_function_is_caught(images, mlp) -> None:
    model = mlp()
    with pytest.raises(RuntimeError, match="canonizers changed the function of model Sequential"):
        methods.create("lrp_z", model, canonizers=[_Doubling()])(images(2, (1, 6, 6)))
    assert "forward" not in vars(model[-1])


def test_alpha_beta_arguments(mlp) -> None:
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        methods.create("lrp_alpha_beta", mlp(), alpha=2.0, beta=0.0)


# ------------------------------------------------------------------ domain bounds and composites


def test_dtd_zbox_bounds_move_with_a_shifted_encoding(images, mlp, rel, twin) -> None:
    """zB with bounds that shift with the data is invariant to a bias-compensated shift; LRP-0 is not."""
    f1 = mlp()
    m = -1.0
    f2 = twin(f1, m)
    x = images(4, (1, 6, 6))
    a = methods.create("dtd_zbox", f1, low=0.0, high=1.0)(x, 3)
    b = methods.create("dtd_zbox", f2, low=m, high=1.0 + m)(x + m, 3)
    assert rel(b, a) < 1e-4
    assert rel(methods.create("dtd_zbox", f2)(x + m, 3), a) > 1e-2  # the bounds matter
    assert rel(methods.create("lrp_z", f2)(x + m, 3), methods.create("lrp_z", f1)(x, 3)) > 1e-2


@pytest.mark.parametrize(
    "composite",
    ["epsilon_plus_flat", "EpsilonPlusFlat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_plus"],
)
def test_named_composites_on_timm_models(composite: str, assert_unchanged, images, snapshot, timm_resnet,
                                         timm_vgg) -> None:
    for builder in (lambda: timm_resnet("resnet18"), timm_vgg):
        model = builder()
        before = snapshot(model)
        explainer = methods.create("lrp_composite", model, composite=composite, low=0.0, high=1.0)
        out = explainer(images(2, (3, 32, 32)))
        assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all() and out.abs().sum() > 0
        assert_unchanged(before, model)


def test_composite_errors(mlp) -> None:
    with pytest.raises(ValueError, match="unknown LRP composite 'guided_backprop'"):
        methods.create("lrp_composite", mlp(), composite="guided_backprop")


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", ["cnn", "timm_resnet18", "timm_vgg11_bn"])
def test_lrp_z_equals_gradient_x_input_on_cuda(model_name: str, images, model_zoo, rel) -> None:
    builder, shape = model_zoo[model_name]
    model = builder().cuda()
    x = images(3, shape).cuda()
    gxi = methods.create("gradient_x_input", model)(x)
    lrp = methods.create("lrp_z", model)(x)
    assert lrp.device.type == "cuda"
    assert rel(lrp, gxi) < 1e-5, rel(lrp, gxi)
