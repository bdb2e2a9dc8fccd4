"""bench.twins.build and bench.twins.shifts: exact bias-compensated twins and the three shift families."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.core.models import create_model
from bench.twins.build import BiasMapConv2d, TwinPremiseError, check_twin, first_layer, shifted_twin, twin_error
from bench.twins.shifts import ShiftSpec, adversarial_image, checkerboard, custom, make_shift, mean_shift


def _models():
    torch.manual_seed(0)
    return {
        "paper_mlp": create_model("paper_mlp", (1, 12, 12), 10, hidden=32).double(),
        "small_cnn": create_model("small_cnn", (1, 12, 12), 10).double(),
        "conv_nobias_dilated": nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=2, dilation=2, stride=2, bias=False), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5)
        ).double(),
        "conv_reflect": nn.Sequential(
            nn.Conv2d(3, 4, 5, padding=2, padding_mode="reflect"), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5)
        ).double(),
    }


SHAPES = {"paper_mlp": (1, 12, 12), "small_cnn": (1, 12, 12), "conv_nobias_dilated": (3, 12, 12),
          "conv_reflect": (3, 12, 12)}


def _shifts(shape):
    gen = torch.Generator().manual_seed(1)
    return {
        "mean": mean_shift(shape, -1.0),
        "checkerboard": checkerboard(shape, 3, 0.7),
        "random": torch.randn(shape, generator=gen),
    }


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("shift", ["mean", "checkerboard", "random"])
def test_twin_is_exact_everywhere(name, shift):
    model = _models()[name]
    shape = SHAPES[name]
    x = torch.rand(6, *shape, dtype=torch.float64)
    model(x)  # materialize lazy layers
    m = _shifts(shape)[shift].double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = shifted_twin(model, m)
    err, scale = twin_error(model, twin, x, m)
    assert err <= 1e-12 * scale, (err, scale)
    # the original model is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # the twin's first layer is still a layer of the same type (zennit's rules see the same layer)
    _, layer = first_layer(twin, x + m)
    assert isinstance(layer, type(first_layer(model, x)[1]))


def test_conv_twin_beats_the_one_bias_per_channel_construction():
    # the common construction sets one bias per channel (b - sum(W) * c); with zero padding it is wrong at borders
    torch.manual_seed(0)
    model = create_model("small_cnn", (1, 28, 28), 10).double()
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    m = mean_shift((1, 28, 28), -1.0).double()
    naive = shifted_twin(model, torch.zeros_like(m))
    conv = model[0] if isinstance(model, nn.Sequential) else first_layer(model, x)[1]
    layer = first_layer(naive, x)[1]
    with torch.no_grad():
        layer.bias.copy_(conv.bias[:, None, None] + conv.weight.sum((1, 2, 3))[:, None, None])  # b - W m, m = -1
    naive_err, scale = twin_error(model, naive, x, m)
    exact_err, _ = twin_error(model, shifted_twin(model, m), x, m)
    assert exact_err <= 1e-12 * scale
    assert naive_err > 1e-3 * scale  # the borders break it


class Scrambled(nn.Module):
    """Registers its layers in an order that differs from the order they run in."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 3)
        self.body = nn.Linear(16, 16)
        self.stem = nn.Linear(12, 16)

    def forward(self, x):
        return self.head(torch.relu(self.body(torch.relu(self.stem(x.flatten(1))))))


def test_first_layer_follows_execution_order():
    torch.manual_seed(0)
    model = Scrambled().double()
    x = torch.rand(4, 1, 3, 4, dtype=torch.float64)
    assert first_layer(model, x)[0] == "stem"
    m = torch.randn(1, 3, 4, dtype=torch.float64)
    twin = shifted_twin(model, m)
    assert torch.equal(twin.head.bias, model.head.bias) and not torch.equal(twin.stem.bias, model.stem.bias)
    assert check_twin(model, twin, x, m, rtol=1e-12) <= 1e-12


def test_linear_without_bias_gets_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4, bias=False), nn.ReLU(), nn.Linear(4, 2)).double()
    m = torch.randn(1, 2, 3, dtype=torch.float64)
    twin = shifted_twin(model, m)
    x = torch.rand(5, 1, 2, 3, dtype=torch.float64)
    assert twin[1].bias is not None and check_twin(model, twin, x, m, rtol=1e-12) <= 1e-12


def test_unsupported_first_layer_is_named():
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(9, 2))
    expected = r"'0' is a BatchNorm2d; supported first layers: Linear, Conv1d, Conv2d, Conv3d"
    with pytest.raises(ValueError, match=expected):
        shifted_twin(model, torch.ones(1, 3, 3))


def test_prefix_that_changes_the_shift_is_an_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(9, 2))  # ReLU(x + m) - ReLU(x) depends on x
    with pytest.raises(ValueError, match="do not pass the input on element-wise affinely"):
        shifted_twin(model, torch.full((1, 3, 3), -0.5), example=torch.rand(4, 1, 3, 3))


def test_premise_check_fails_with_numbers_for_a_wrong_twin():
    torch.manual_seed(0)
    model = create_model("paper_mlp", (1, 6, 6), 4, hidden=16)
    x = torch.rand(8, 1, 6, 6)
    m = mean_shift((1, 6, 6), -1.0)
    assert check_twin(model, shifted_twin(model, m), x, m) < 1e-4
    wrong = shifted_twin(model, m * 0.5)
    with pytest.raises(TwinPremiseError, match=r"max \|f1\(x\) - f2\(s x \+ m\)\| = [0-9.e+-]+ .*tolerance"):
        check_twin(model, wrong, x, m)
    # a float32 twin carries float32 rounding in its compensated bias; built in float64 it is exact to 1e-10
    assert check_twin(model, shifted_twin(model, m), x, m, rtol=1e-6, float64=True) < 1e-6
    model64 = model.double()
    assert check_twin(model64, shifted_twin(model64, m.double()), x, m, rtol=1e-10, float64=True) < 1e-10


def test_bias_map_conv_refuses_other_sizes():
    model = create_model("small_cnn", (1, 12, 12), 10)
    twin = shifted_twin(model, mean_shift((1, 12, 12)))
    assert isinstance(first_layer(twin, torch.zeros(1, 1, 12, 12))[1], BiasMapConv2d)
    with pytest.raises(ValueError, match="built for outputs of shape"):
        twin(torch.zeros(1, 1, 14, 14))


def test_shift_shapes_and_values():
    assert torch.equal(mean_shift((1, 2, 2), -1.0), -torch.ones(1, 2, 2))
    board = checkerboard((2, 4, 4), size=2, amplitude=0.5)
    assert board.shape == (2, 4, 4) and board[0, 0, 0] == 0 and board[0, 0, 2] == 0.5 and board[0, 2, 2] == 0
    assert torch.equal(board[0], board[1])
    with pytest.raises(ValueError, match="unknown shift kind 'sideways'"):
        make_shift(ShiftSpec("sideways"), (1, 4, 4))


def test_custom_shift_file(tmp_path):
    torch.save(torch.arange(4.0).reshape(1, 2, 2), tmp_path / "m.pt")
    assert torch.equal(custom(tmp_path / "m.pt", (1, 2, 2)), torch.arange(4.0).reshape(1, 2, 2))
    with pytest.raises(ValueError, match=r"shape \(1, 2, 2\); expected one input's shape \(1, 3, 3\)"):
        custom(tmp_path / "m.pt", (1, 3, 3))
    with pytest.raises(FileNotFoundError, match="torch.save"):
        custom(tmp_path / "missing.pt", (1, 2, 2))


def test_adversarial_shift_draws_the_picture_in_gradient_x_input():
    from scipy.stats import spearmanr

    from bench.twins.shifts import target_picture

    torch.manual_seed(0)
    model = create_model("paper_mlp", (1, 28, 28), 10, hidden=64).double()
    x_hat = torch.zeros(1, 28, 28, dtype=torch.float64)  # digit-like: a stroke on a black background
    x_hat[0, 6:22, 12:16] = 1.0
    m = adversarial_image(model, x_hat, image="cat", clip=0.3).double()
    assert m.abs().max() <= 0.3 + 1e-12
    twin = shifted_twin(model, m)
    x2 = (x_hat + m)[None].requires_grad_(True)
    out = twin(x2)
    (g,) = torch.autograd.grad(out[0, out.argmax()], x2)
    gxi = (g * x2).detach()[0]
    rho = spearmanr(gxi.flatten(), target_picture("cat", (1, 28, 28)).flatten())[0]
    rho_orig = spearmanr((g[0] * x_hat).flatten(), target_picture("cat", (1, 28, 28)).flatten())[0]
    assert rho > 0.5 and rho > rho_orig + 0.3, (rho, rho_orig)


# -- affine transforms and convolutions of any dimension -----------------------------------------------------------


def _conv1d_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.ReLU(), nn.Conv1d(4, 3, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3 * 15, 3)).double().eval()


def test_conv1d_twin_is_exact_under_a_non_constant_shift():
    from bench.twins.build import BiasMapConv1d, affine_twin, check_twin

    net = _conv1d_net()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 2, 32, generator=g, dtype=torch.float64)
    m = torch.randn(2, 32, generator=g, dtype=torch.float64)
    twin = affine_twin(net, m, example=x[:2])
    assert isinstance(twin[0], BiasMapConv1d) and twin[0].bias.shape == (4, 32)
    assert check_twin(net, twin, x, m, rtol=1e-12) < 1e-13


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_affine_twin_absorbs_a_positive_scale(kind):
    from bench.twins.build import Affine, affine_twin, check_twin

    g = torch.Generator().manual_seed(2)
    if kind == "linear":
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
        shape = (3, 4)
        scale = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5  # per element
    else:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).double()
        net.eval()
        shape = (3, 6, 6)
        scale = (torch.rand(3, 1, 1, generator=g, dtype=torch.float64) + 0.5).expand(shape)  # per channel
    shift = torch.randn(shape, generator=g, dtype=torch.float64)
    x = torch.rand(5, *shape, generator=g, dtype=torch.float64)
    t = Affine(scale, shift)
    twin = affine_twin(net, t, example=x[:2])
    assert check_twin(net, twin, x, t, rtol=1e-12) < 1e-13
    # the gradient of the twin at s x + m is the model's gradient divided by s: Gradient is not scale invariant
    x1 = x.clone().requires_grad_(True)
    x2 = t.apply(x).detach().requires_grad_(True)
    (g1,) = torch.autograd.grad(net(x1)[:, 0].sum(), x1)
    (g2,) = torch.autograd.grad(twin(x2)[:, 0].sum(), x2)
    torch.testing.assert_close(g2, g1 / scale, rtol=1e-10, atol=1e-12)


def test_affine_errors_name_what_is_wrong():
    from bench.twins.build import Affine, affine_twin

    net = _conv1d_net()
    x = torch.rand(2, 2, 32, dtype=torch.float64)
    per_element = Affine(torch.rand(2, 32, dtype=torch.float64) + 0.5, torch.zeros(2, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="constant within each input channel"):
        affine_twin(net, per_element, example=x)
    with pytest.raises(ValueError, match="scale must be > 0 everywhere"):
        affine_twin(net, Affine(torch.tensor(-1.0), torch.tensor(0.0)), example=x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        affine_twin(net, torch.full((2, 32), float("nan")), example=x)


def test_conv3d_twin_is_exact_under_a_shift_and_a_channel_scale():
    from bench.twins.build import Affine, BiasMapConv3d, affine_twin, check_twin

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 5 * 5, 2)).double()
    net.eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 2, 4, 5, 5, generator=g, dtype=torch.float64)
    t = Affine(torch.tensor([0.5, 2.0], dtype=torch.float64)[:, None, None, None].expand(2, 4, 5, 5),
               torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64))
    twin = affine_twin(net, t, example=x[:2])
    assert isinstance(twin[0], BiasMapConv3d)
    assert check_twin(net, twin, x, t, rtol=1e-12) < 1e-13
