"""Grad-CAM and Guided Grad-CAM: closed forms on a global-average-pool net, layer choice, refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import methods
from methods.cam import GradCAM


def _gap_net(seed: int = 0) -> nn.Sequential:
    """conv (size-preserving) -> ReLU -> global average pool -> linear: Grad-CAM has a closed form."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4)
    )


def test_grad_cam_closed_forms(images) -> None:
    model = _gap_net()
    x = images(3, (2, 6, 6))
    target = torch.tensor([0, 2, 3])
    w = model[4].weight[target].detach()  # [B, K]
    with torch.no_grad():
        a = model[0](x)  # the conv's maps [B, K, 6, 6]
    hw = 36
    # post-ReLU layer: d f_c / d A_k = w_ck / hw everywhere -> CAM of Zhou et al. up to 1 / hw
    expected = (w[:, :, None, None] / hw * a.relu()).sum(1, keepdim=True).relu()
    # the default layer is that activation (the last conv's ReLU), as the sanity-checks authors' Grad-CAM
    explainer = methods.create("grad_cam", model)
    torch.testing.assert_close(explainer(x, target), expected.expand_as(x), rtol=1e-5, atol=1e-7)
    assert explainer.layer == "1"
    # the conv itself (pre-ReLU maps); alpha_k = w_ck * (fraction of positive positions) / hw
    alpha = w * (a > 0).float().mean((2, 3)) / hw
    expected = (alpha[:, :, None, None] * a).sum(1, keepdim=True).relu()
    out = methods.create("grad_cam", model, layer="0")(x, target)
    torch.testing.assert_close(out, expected.expand_as(x), rtol=1e-5, atol=1e-7)


def test_grad_cam_upsamples_and_broadcasts(cnn, images) -> None:
    model = cnn()  # last conv at 4 x 4 for 8 x 8 inputs
    x = images(2, (1, 8, 8))
    out = methods.create("grad_cam", model)(x)
    assert out.shape == x.shape and (out >= 0).all()
    rgb = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    rgb(torch.zeros(1, 3, 9, 9))
    out = methods.create("grad_cam", rgb.eval())(images(2, (3, 9, 9)))
    assert out.shape == (2, 3, 9, 9)
    torch.testing.assert_close(out[:, 0], out[:, 2])


def test_default_layer_is_the_last_conv_executed(images) -> None:
    class Reordered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Conv2d(3, 3, 3, padding=1)  # registered first, runs last
            self.early = nn.Conv2d(1, 3, 3, padding=1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 36, 4))

        def forward(self, x: Tensor) -> Tensor:
            return self.head(torch.relu(self.late(torch.relu(self.early(x)))))

    explainer = methods.create("grad_cam", Reordered())
    explainer(images(2, (1, 6, 6)))
    assert explainer.layer == "late"


def test_default_layer_is_the_activation_of_the_last_conv(images) -> None:
    from methods.cam import default_layer

    x = images(1, (1, 8, 8))
    with_bn = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Dropout(), nn.ReLU(),
                            nn.Flatten(), nn.Linear(3 * 64, 2)).eval()
    assert default_layer(with_bn, x) == "3"  # past normalization and dropout
    pooled = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                           nn.Linear(3 * 16, 2)).eval()
    assert default_layer(pooled, x) == "0"  # something else first: the conv itself
    import timm

    resnet = timm.create_model("resnet18", num_classes=3).eval()
    assert default_layer(resnet, images(1, (3, 32, 32))) == "layer4.1.act2"  # the last block's output


def test_in_place_relu_after_the_layer_does_not_alter_the_map(cnn, images) -> None:
    model = cnn()
    inplace = copy.deepcopy(model)
    for m in inplace.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True
    x = images(3, (1, 8, 8))
    torch.testing.assert_close(methods.create("grad_cam", inplace)(x), methods.create("grad_cam", model)(x))


def test_grad_cam_refusals(mlp, cnn, images) -> None:
    with pytest.raises(ValueError, match="grad_cam needs a conv layer .* model Sequential runs no nn.Conv2d"):
        methods.create("grad_cam", mlp())
    with pytest.raises(ValueError, match="needs a conv layer"):
        methods.create("guided_grad_cam", mlp())
    with pytest.raises(ValueError, match=r"no module named 'conv9'; its conv layers: \['0', '3'\]"):
        methods.create("grad_cam", cnn(), layer="conv9")
    with pytest.raises(ValueError, match=r"layer '7' outputs \(2, 16\)"):
        methods.create("grad_cam", cnn(), layer="7")(images(2, (1, 8, 8)))


def test_guided_grad_cam_is_guided_backprop_times_grad_cam(cnn, images, rel) -> None:
    model = cnn()
    x = images(3, (1, 8, 8))
    target = torch.tensor([1, 2, 3])
    expected = methods.create("guided_backprop", model)(x, target) * GradCAM(model).cam(x, target)
    out = methods.create("guided_grad_cam", model)(x, target)
    torch.testing.assert_close(out, expected)
    assert rel(out, methods.create("grad_cam", model)(x, target)) > 0.1


def test_guided_grad_cam_refuses_functional_relus(functional_relu_net, images) -> None:
    class Functional(functional_relu_net):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: Tensor) -> Tensor:
            return super().forward(torch.relu(self.conv(x)))

    with pytest.raises(ValueError, match="applies relu outside an nn.ReLU module"):
        methods.create("guided_grad_cam", Functional())(images(2, (1, 6, 6)))
