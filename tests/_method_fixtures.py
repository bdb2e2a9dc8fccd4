"""Small models and helpers shared by the tests/test_methods_*.py files (random init, no training)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.models import create_model

# the methods that need data (fit(loader)) before they explain
FIT_METHODS = {"pattern_net", "pattern_attribution"}
# the methods that need a conv layer
CONV_METHODS = {"grad_cam", "guided_grad_cam"}


def mlp(seed: int = 0, side: int = 6, hidden: int = 16, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``paper_mlp`` on ``1 x side x side`` inputs, 10 classes, in eval mode."""
    torch.manual_seed(seed)
    return create_model("paper_mlp", (1, side, side), 10, hidden=hidden).to(dtype).eval()


def cnn(seed: int = 0, side: int = 8, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``small_cnn`` on ``1 x side x side`` inputs, 10 classes, in eval mode."""
    torch.manual_seed(seed)
    return create_model("small_cnn", (1, side, side), 10, channels=(4, 6), hidden=16).to(dtype).eval()


# name -> (builder, per-sample input shape)
MODELS = {"mlp": (mlp, (1, 6, 6)), "cnn": (cnn, (1, 8, 8))}


def linear(seed: int = 0, shape: tuple[int, ...] = (1, 4, 4), classes: int = 3) -> nn.Sequential:
    """An affine model ``f(x) = W flat(x) + b``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), classes)).eval()


def randomize_batchnorm(model: nn.Module, seed: int = 0, centered: bool = False) -> nn.Module:
    """Non-trivial BatchNorm statistics; ``centered``: zero mean and bias (a BN without offset)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=g)
            m.running_var.data = 0.5 + torch.rand(c, generator=g)
            m.bias.data = torch.zeros(c) if centered else 0.1 * torch.randn(c, generator=g)
            m.running_mean.data = torch.zeros(c) if centered else 0.1 * torch.randn(c, generator=g)
    return model


def zero_biases(model: nn.Module) -> nn.Module:
    """Zero every Linear/conv bias (BatchNorm offsets: see ``randomize_batchnorm(centered=True)``)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
            m.bias.data.zero_()
    return model


def timm_resnet(name: str = "resnet18", seed: int = 0, centered: bool = False) -> nn.Module:
    """A narrow timm ResNet (BasicBlock for resnet18, Bottleneck for resnet50) on 3 x 32 x 32."""
    torch.manual_seed(seed)
    model = create_model(f"timm:{name}", (3, 32, 32), 5, channels=(4, 8, 8, 8), stem_width=4)
    return randomize_batchnorm(model, seed, centered).eval()


def timm_vgg(seed: int = 0) -> nn.Module:
    """A narrow timm VGG-11 with BatchNorm on 3 x 32 x 32 (the 4096-wide ConvMlp scaled down to 16)."""
    torch.manual_seed(seed)
    model = create_model("timm:vgg11_bn", (3, 32, 32), 5, mlp_ratio=1 / 256)
    return randomize_batchnorm(model, seed).eval()


class FunctionalReLUNet(nn.Module):
    """A ReLU MLP whose ReLUs are function calls (``how``: ``F.relu``, ``torch.relu`` or ``Tensor.relu``)."""

    def __init__(self, how: str = "F.relu", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.how = how
        self.fc1, self.fc2 = nn.Linear(36, 16), nn.Linear(16, 10)

    def act(self, h: Tensor) -> Tensor:
        if self.how == "F.relu":
            return F.relu(h)
        if self.how == "torch.relu":
            return torch.relu(h)
        return h.relu()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def images(n: int, shape: tuple[int, ...], seed: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform ``[0, 1]`` inputs ``[n, *shape]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shape), generator=g).to(dtype)


def snapshot(model: nn.Module) -> dict:
    """Everything an explainer must leave as found: values, tensor identity, flags, modes, hooks."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ptr": {k: v.data_ptr() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "attrs": {k: sorted(vars(m)) for k, m in model.named_modules()},
        "eps": {k: m.eps for k, m in model.named_modules() if hasattr(m, "eps")},
    }


def assert_unchanged(before: dict, model: nn.Module) -> None:
    after = snapshot(model)
    for key in ("ptr", "requires_grad", "training", "hooks", "attrs", "eps"):
        assert after[key] == before[key], key
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


def twin(model: nn.Module, m: float) -> nn.Module:
    """``f2`` with ``f2(x + m) == f(x)``: the first layer (a Linear) absorbs the constant shift ``m``."""
    f2 = copy.deepcopy(model)
    first = next(mod for mod in f2.modules() if isinstance(mod, (nn.Linear, nn.Conv2d)))
    assert isinstance(first, nn.Linear), "a zero-padded conv cannot absorb a shift at the borders"
    with torch.no_grad():
        first.bias -= m * first.weight.sum(1)
    return f2


def rel(a: Tensor, b: Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def one_thread():
    """Fixture body: run a test module on one intra-op thread (tiny models; shared CPUs oversubscribe).

    Use as ``_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
