"""The tie-stable max-pool: the same forward as nn.MaxPool2d, the same gradient where the maximum is unique,
and the same choice among ties whether or not rounding noise has broken them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.twins.build import shifted_twin
from bench.twins.ties import TieStableMaxPool2d, default_rtol, stable_ties

GEOMETRIES = [  # kernel, stride, padding, dilation
    (2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (2, 1, 0, 2), ((2, 3), (1, 2), (1, 1), 1), (2, None, 0, 1),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_forward_and_gradient_as_maxpool_without_ties(geometry, dtype):
    torch.manual_seed(0)
    ref, ours = nn.MaxPool2d(*geometry), TieStableMaxPool2d(*geometry, rtol=default_rtol(dtype))
    x = torch.randn(2, 3, 9, 10, dtype=dtype, requires_grad=True)
    y_ref, y = ref(x), ours(x)
    assert torch.equal(y_ref, y)
    g = torch.randn_like(y)
    (a,) = torch.autograd.grad(y_ref, x, g)
    (b,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(b, a, rtol=0, atol=10 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_exact_ties_go_to_the_first_position_as_in_torch(geometry):
    x = torch.zeros(2, 2, 8, 8, dtype=torch.float64)
    x[:, :, 2:5, 3:6] = 1.0  # plateaus of equal values: every window is a tie
    x.requires_grad_(True)
    (a,) = torch.autograd.grad(nn.MaxPool2d(*geometry)(x).sum(), x)
    (b,) = torch.autograd.grad(TieStableMaxPool2d(*geometry)(x).sum(), x)
    assert torch.equal(a, b)


def test_rounding_noise_does_not_move_the_gradient():
    x = torch.full((1, 4, 8, 8), 0.3, dtype=torch.float64)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noisy = x + 0.3 * torch.finfo(torch.float64).eps * noise
    assert not torch.equal(x, noisy)  # the ties are broken in the last bits
    grads = {}
    for label, pool in {"torch": nn.MaxPool2d(2), "stable": TieStableMaxPool2d(2, rtol=1e-12)}.items():
        for name, v in {"exact": x, "noisy": noisy}.items():
            v = v.clone().requires_grad_(True)
            (grads[label, name],) = torch.autograd.grad(pool(v).sum(), v)
    assert torch.equal(grads["stable", "noisy"], grads["torch", "exact"])
    assert torch.equal(grads["stable", "exact"], grads["torch", "exact"])


def test_stable_ties_replaces_only_plain_maxpools():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Sequential(nn.MaxPool2d(3, 1, 1)),
                          nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(2))
    replaced = stable_ties(model.double())
    assert replaced == ["1", "2.0"]
    assert type(model[1]) is TieStableMaxPool2d and model[1].rtol == default_rtol(torch.float64)
    assert model[2][0].kernel_size == 3 and model[2][0].padding == 1
    assert type(model[3]) is nn.MaxPool2d and type(model[4]) is nn.AvgPool2d


def test_rejects_what_it_does_not_support():
    with pytest.raises(ValueError, match="ceil_mode"):
        TieStableMaxPool2d(2, ceil_mode=True)
    with pytest.raises(ValueError, match=r"N x C x H x W.*\(3, 4, 4\)"):
        TieStableMaxPool2d(2)(torch.zeros(3, 4, 4))


def test_gradient_of_a_conv_twin_is_exact_with_stable_ties():
    """A digit-like input (flat zero background): the twin's tied background values differ in the last
    bits, yet with the stable max-pool its gradient equals the original's exactly."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 7 * 7, 3)).double()
    with torch.no_grad():
        net[0].bias.fill_(0.1)  # every background position holds the same positive value: ties
    stable_ties(net)
    x = torch.zeros(3, 1, 14, 14, dtype=torch.float64)
    x[:, :, 4:10, 5:9] = torch.rand(3, 1, 6, 4, dtype=torch.float64)
    m = 0.3 * torch.randn(1, 14, 14, dtype=torch.float64)
    twin = shifted_twin(net, m)
    grads = []
    for f, v in ((net, x), (twin, x + m)):
        v = v.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(v)[:, 0].sum(), v)
        grads.append(g)
    assert (grads[0] != 0).float().mean() > 0.2  # the gradient reaches the background
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-12)
