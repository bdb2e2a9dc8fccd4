"""The library adapters ``cam:<Class>`` (pytorch-grad-cam) and ``zennit:<Composite>`` (zennit's composites).

cam: ``cam:GradCAM`` equals our ``grad_cam`` on the same layer (the raw CAM, not the library's min-max scaled one);
with ``normalize=True`` every class equals the library's own ``__call__`` output; every class honours the explainer
contract (shape, dtype, finite, model state and the parameters' ``.grad`` as found); layers by name; errors; costs.
zennit: every composite equals zennit's own ``Gradient`` attributor with the same composite and canonizers (one-hot
output relevance), also on a residual network with BatchNorm; the checks of the project's zennit machinery.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import Tensor, nn
from zennit.attribution import Gradient as ZennitGradient

import methods
from bench.core.models import create_model
from methods.adapters import zennit as zadapter
from methods.canonizers import UnsupportedModelError, canonizers_for

SHAPE = (1, 12, 12)
CLASSES = 3


def _small(seed: int = 0, channels_in: int = 1, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    shape = (channels_in, *SHAPE[1:])
    return create_model("small_cnn", shape, CLASSES, channels=(4, 6), hidden=12).to(dtype).eval()


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture
def cam():
    """The cam adapter module (skips without pytorch-grad-cam)."""
    pytest.importorskip("pytorch_grad_cam")
    from methods.adapters import cam as adapter

    return adapter


def _library_cam(class_name: str, model: nn.Module, layers: list[str], x: Tensor, target: Tensor) -> Tensor:
    """The library's own output (``__call__``: min-max scaled), on a copy of the model (it fills ``.grad``)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = copy.deepcopy(model)
    named = dict(model.named_modules())
    modules = [] if class_name == "FullGrad" else [named[n] for n in layers]
    obj = getattr(pytorch_grad_cam, class_name)(model, modules)
    try:
        out = obj(x, [ClassifierOutputTarget(int(t)) for t in target])
    finally:
        obj.activations_and_grads.release()
    return torch.as_tensor(out)


def _sentinel_grads(model: nn.Module) -> list[Tensor]:
    grads = []
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
        grads.append(p.grad)
    return grads


def _assert_grads(model: nn.Module, grads: list[Tensor]) -> None:
    for p, g in zip(model.parameters(), grads, strict=True):
        assert p.grad is g and bool((g == 7.0).all())


# ------------------------------------------------------------------ cam: parity with our Grad-CAM


@pytest.mark.parametrize("layer", [None, "1", "3", "4"])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_grad_cam_parity_with_ours(layer: str | None, dtype: torch.dtype, tol: float, cam, images) -> None:
    model = _small(dtype=dtype)
    x = images(8, SHAPE, dtype=dtype)
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ours = methods.create("grad_cam", model, layer=layer)(x, target)
    theirs = methods.create("cam:GradCAM", model, target_layers=layer)(x, target)
    assert float(ours.abs().max()) > 0
    assert _rel(theirs, ours) < tol
    # the library's own output is our map min-max scaled per image: the adapter returns the raw CAM
    if layer is None:
        scaled = _library_cam("GradCAM", model, ["4"], x, target)
        assert _rel(scaled, ours[:, 0]) > 1e-2


def test_every_class_equals_the_library_when_normalized(cam, images) -> None:
    """``normalize=True`` runs the library's own scaling: its ``__call__`` output, for every class."""
    model = _small()
    x = images(3, SHAPE)
    target = torch.tensor([2, 0, 1])
    for name in cam.supported():
        layers = [] if name == "FullGrad" else ["4"]
        ours = methods.create(f"cam:{name}", model, normalize=True)(x, target)
        ref = _library_cam(name, model, layers, x, target)
        torch.testing.assert_close(ours[:, 0], ref, rtol=1e-6, atol=1e-6, msg=name)
        raw = methods.create(f"cam:{name}", model)(x, target)
        assert float(raw.amax()) != pytest.approx(1.0), name  # the raw map is not the scaled one


def test_in_place_op_after_the_layer_does_not_alter_the_cam(cam, images) -> None:
    """A conv followed by ReLU(inplace=True): on the CPU the library keeps the very tensor the ReLU overwrites; the
    adapter hands the rest of the forward pass a copy, as our Grad-CAM."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, padding=1),
                          nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 36, 3)).eval()
    x = images(3, SHAPE)
    ours = methods.create("grad_cam", model, layer="2")(x, 1)
    assert _rel(methods.create("cam:GradCAM", model, target_layers="2")(x, 1), ours) < 1e-6


def test_shapley_cam_with_a_linear_head_is_grad_cam(cam, images) -> None:
    """After the layer the model is linear: the Hessian-vector product is zero (with frozen parameters the gradient
    then has no graph at all), so Shapley-CAM's weights are Grad-CAM's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 144, 3)).eval()
    x = images(3, SHAPE)
    shapley = methods.create("cam:ShapleyCAM", model)(x, 2)
    assert _rel(shapley, methods.create("grad_cam", model)(x, 2)) < 1e-6


# ------------------------------------------------------------------ cam: the explainer contract


def test_every_class_honours_the_contract(cam, images, snapshot, assert_unchanged) -> None:
    model = _small(channels_in=2)
    x = images(4, (2, *SHAPE[1:]))
    model.train()
    next(model.parameters()).requires_grad_(False)
    grads = _sentinel_grads(model)
    before = snapshot(model)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    model.train()
    for name in cam.supported():
        explainer = methods.create(f"cam:{name}", model, low=0.0, high=1.0)
        out = explainer(x)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device, name
        assert torch.isfinite(out).all() and not out.requires_grad, name
        assert torch.equal(out[:, 0], out[:, 1]), name  # one map, repeated over the input channels
        assert_unchanged(before, model)
        _assert_grads(model, grads)
        if name not in ("KPCA_CAM",):  # the target does not enter the eigen methods, the rest: default = predicted
            torch.testing.assert_close(explainer(x, pred), out, rtol=1e-6, atol=1e-7, msg=name)
    assert model.training


def test_every_class_on_a_timm_resnet(cam, timm_resnet, images, snapshot, assert_unchanged) -> None:
    """In-place ReLUs, BatchNorm, residual blocks, a linear head after global pooling."""
    model = timm_resnet("resnet18")
    x = images(2, (3, 32, 32))
    before = snapshot(model)
    for name in cam.supported():
        out = methods.create(f"cam:{name}", model)(x, 1)
        assert out.shape == x.shape and torch.isfinite(out).all(), name
        assert_unchanged(before, model)
    assert _rel(methods.create("cam:GradCAM", model)(x, 1), methods.create("grad_cam", model)(x, 1)) < 1e-5


def test_progress_bars_are_silenced(cam, images, capsys) -> None:
    model = _small()
    x = images(2, SHAPE)
    for name in ("ScoreCAM", "AblationCAM"):
        methods.create(f"cam:{name}", model)(x)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    import pytorch_grad_cam.score_cam as score_cam

    assert score_cam.tqdm.__name__ == "tqdm"  # put back


def test_ablation_cam_puts_its_layer_back_on_error(cam, images, monkeypatch, snapshot, assert_unchanged) -> None:
    from pytorch_grad_cam.ablation_layer import AblationLayer

    model = _small()
    before = snapshot(model)

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(AblationLayer, "set_next_batch", fail)
    with pytest.raises(RuntimeError, match="boom"):
        methods.create("cam:AblationCAM", model)(images(2, SHAPE))
    assert isinstance(model[4], nn.ReLU)
    assert_unchanged(before, model)


# ------------------------------------------------------------------ cam: layers


def test_target_layers_by_name_and_default(cam, images) -> None:
    model = _small()
    x = images(4, SHAPE)
    default = methods.create("cam:GradCAMPlusPlus", model)
    out = default(x, 1)
    assert default.layers == ["4"]  # methods.cam.default_layer: the ReLU after the last conv
    assert torch.equal(methods.create("cam:GradCAMPlusPlus", model, target_layers="4")(x, 1), out)
    assert torch.equal(methods.create("cam:GradCAMPlusPlus", model, target_layers=[model[4]])(x, 1), out)
    early = methods.create("cam:GradCAMPlusPlus", model, target_layers="1")(x, 1)
    assert _rel(early, out) > 1e-2
    both = methods.create("cam:GradCAMPlusPlus", model, target_layers=["1", "4"])(x, 1)
    assert _rel(both, (early + out) / 2) < 1e-6  # several layers: the mean of their raw maps


def test_errors(cam, images, monkeypatch) -> None:
    model = _small()
    with pytest.raises(ValueError, match="unknown pytorch-grad-cam class 'Nope'.*GradCAM, GradCAMPlusPlus"):
        methods.create("cam:Nope", model)
    with pytest.raises(ValueError, match=r"no module named 'nope'; its conv layers: \['0', '3'\]"):
        methods.create("cam:ScoreCAM", model, target_layers="nope")
    with pytest.raises(ValueError, match="FullGrad takes no target_layers"):
        methods.create("cam:FullGrad", model, target_layers="4")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus'\]; accepted: .*batch_size"):
        methods.create("cam:ScoreCAM", model, bogus=1)
    with pytest.raises(ValueError, match="needs a conv layer"):
        methods.create("cam:GradCAM", nn.Sequential(nn.Flatten(), nn.Linear(144, 3)))
    with pytest.raises(ValueError, match=r"layer '7' outputs \(2, 12\)"):
        methods.create("cam:GradCAM", model, target_layers="7")(images(2, SHAPE))
    # pytorch-grad-cam missing: an ImportError that names the extra
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    with pytest.raises(ImportError, match=r"pip install 'saliency-bench\[cam\]'"):
        methods.create("cam:GradCAM", model)


def test_score_cam_takes_batch_size(cam, images) -> None:
    model = _small()
    x = images(2, SHAPE)
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        a = methods.create("cam:ScoreCAM", model, batch_size=4)(x, 1)
        n_small = len(calls)
        calls.clear()
        b = methods.create("cam:ScoreCAM", model)(x, 1)  # the library's default: 16 rows per forward pass
    finally:
        handle.remove()
    # forward calls: the default layer's trace, the explained batch, then 6 channels in chunks of 4 (16) per image
    assert n_small == 1 + 1 + 2 * 2
    assert len(calls) == 1 + 1 + 2 * 1
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ cam: costs


@pytest.mark.parametrize("name, expected", [("GradCAM", 1), ("EigenCAM", 1), ("FullGrad", 1), ("ShapleyCAM", 2),
                                            ("ScoreCAM", 1 + 6), ("AblationCAM", 2 + 6)])
def test_passes_per_map_counts_the_forward_rows(name: str, expected: int, cam, images) -> None:
    model = _small()
    assert cam.passes_per_map(name, {}, model, SHAPE) == expected
    if name == "ShapleyCAM":  # one forward pass; its backward pass keeps the graph for a Hessian-vector product
        return
    x = images(3, SHAPE)
    explainer = methods.create(f"cam:{name}", model)
    explainer(x, 0)  # traces the default layer
    rows: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        explainer(x, 0)
    finally:
        handle.remove()
    assert sum(rows) == expected * len(x)


def test_passes_per_map_of_layers_and_ratio(cam) -> None:
    model = _small()
    assert cam.passes_per_map("ScoreCAM", {"target_layers": ["1", "4"]}, model, SHAPE) == 1 + 4 + 6
    assert cam.passes_per_map("AblationCAM", {"ratio_channels_to_ablate": 0.5}, model, SHAPE) == 2 + 2 * 3
    with pytest.raises(ValueError, match="pass the model and the input shape"):
        cam.passes_per_map("ScoreCAM")
    with pytest.raises(ValueError, match="unknown pytorch-grad-cam class"):
        cam.passes_per_map("Nope")


# ------------------------------------------------------------------ zennit: parity with zennit's attributor


def _zennit_reference(name: str, model: nn.Module, x: Tensor, target: Tensor, canonizers: list, **params) -> Tensor:
    key, cls = zadapter.composite_class(name)
    composite = cls(canonizers=canonizers, **params)
    onehot = torch.zeros(len(x), model(x).shape[1], dtype=x.dtype).scatter_(1, target[:, None], 1.0)
    with ZennitGradient(model, composite) as attributor:
        _, relevance = attributor(x, onehot)
    return relevance.detach()


def _canonizers(name: str, model: nn.Module) -> list:
    key, _ = zadapter.composite_class(name)
    return [] if key in zadapter.RELU_COMPOSITES else canonizers_for(model)


def test_every_composite_equals_zennits_attributor(images, snapshot, assert_unchanged) -> None:
    model = _small()
    x = images(8, SHAPE)
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    assert set(zadapter.supported()) >= {"EpsilonPlus", "EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1",
                                         "ExcitationBackprop", "GuidedBackprop", "DeconvNet", "BetaSmooth"}
    grads = _sentinel_grads(model)
    before = snapshot(model)
    for name in zadapter.supported():
        box = {"low": 0.0, "high": 1.0} if "Box" in name else {}
        out = methods.create(f"zennit:{name}", model, low=0.0, high=1.0)(x, target)
        assert out.shape == x.shape and torch.isfinite(out).all() and float(out.abs().max()) > 0, name
        assert_unchanged(before, model)
        _assert_grads(model, grads)
        ref = _zennit_reference(name, model, x, target, _canonizers(name, model), **box)
        assert _rel(out, ref) < 1e-6, name


@pytest.mark.parametrize("name", ["EpsilonPlusFlat", "EpsilonGammaBox", "ExcitationBackprop", "epsilon_alpha2_beta1"])
def test_composites_on_a_residual_network_with_batchnorm(name: str, timm_resnet, images) -> None:
    model = timm_resnet("resnet18")
    x = images(2, (3, 32, 32))
    target = torch.tensor([1, 3])
    box = {"low": 0.0, "high": 1.0} if "Box" in name else {}
    out = methods.create(f"zennit:{name}", model)(x, target)
    assert _rel(out, _zennit_reference(name, model, x, target, canonizers_for(model), **box)) < 1e-6
    # the canonizers matter here (BatchNorm merged, residual sums): without them zennit's map is another one
    assert _rel(out, _zennit_reference(name, model, x, target, [], **box)) > 1e-3


def test_names_and_parameters(images) -> None:
    model = _small()
    x = images(4, SHAPE)
    a = methods.create("zennit:EpsilonPlus", model, epsilon=0.1)(x, 1)
    assert torch.equal(methods.create("zennit:epsilon_plus", model, epsilon=0.1)(x, 1), a)
    assert _rel(a, methods.create("zennit:EpsilonPlus", model)(x, 1)) > 1e-4  # epsilon reaches the composite
    assert _rel(a, _zennit_reference("EpsilonPlus", model, x, torch.full((4,), 1), [], epsilon=0.1)) < 1e-6
    with pytest.raises(ValueError, match="unknown zennit composite 'Nope'.*EpsilonPlusFlat"):
        methods.create("zennit:Nope", model)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['gama'\]; accepted: .*gamma"):
        methods.create("zennit:EpsilonGammaBox", model, gama=0.5)


def test_relevance_true_is_the_convention_of_our_lrp_methods(images) -> None:
    model = _small()
    x = images(4, SHAPE)
    target = torch.tensor([0, 2, 1, 1])
    onehot = methods.create("zennit:EpsilonPlusFlat", model)(x, target)
    scaled = methods.create("zennit:EpsilonPlusFlat", model, relevance=True)(x, target)
    ours = methods.create("lrp_composite", model, composite="epsilon_plus_flat")(x, target)
    torch.testing.assert_close(scaled, ours, rtol=1e-6, atol=1e-8)
    logit = model(x).gather(1, target[:, None]).view(-1, 1, 1, 1).detach()
    assert _rel(scaled, onehot * logit) < 1e-5


def test_box_bounds_come_from_the_domain(images) -> None:
    model = _small()
    x = images(3, SHAPE) * 3 - 1
    target = torch.tensor([0, 1, 2])
    out = methods.create("zennit:EpsilonGammaBox", model, low=-1.0, high=2.0)(x, target)
    assert _rel(out, _zennit_reference("EpsilonGammaBox", model, x, target, [], low=-1.0, high=2.0)) < 1e-6
    assert _rel(out, methods.create("zennit:EpsilonGammaBox", model)(x, target)) > 1e-3
    # per-element bounds (the harness's pixel domain), as dtd_zbox
    low, high = torch.full(SHAPE, -1.0), torch.full(SHAPE, 2.0)
    assert methods.get_factory("zennit:EpsilonGammaBox").accepts_pixel_bounds
    assert not methods.get_factory("zennit:EpsilonPlus").accepts_pixel_bounds
    pixel = methods.create("zennit:EpsilonGammaBox", model, low=low, high=high)(x, target)
    assert _rel(pixel, out) < 1e-6
    with pytest.raises(ValueError, match="two numbers"):
        methods.create("zennit:EpsilonPlus", model, low=low, high=high)


def test_machinery_checks(functional_relu_net, images) -> None:
    net = functional_relu_net()
    x = images(2, (1, 6, 6))
    with pytest.raises(ValueError, match="applies relu outside an nn.ReLU module"):
        methods.create("zennit:GuidedBackprop", net)(x)
    with pytest.raises(UnsupportedModelError, match="FunctionalReLUNet"):
        methods.create("zennit:EpsilonPlus", net)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(torch.relu(self.fc(x)))

    # the reused-layer check holds with the one-hot output relevance too
    with pytest.raises(ValueError, match=r"calls the layer\(s\) \['fc'\] more than once"):
        methods.create("zennit:EpsilonPlus", Twice(), canonizers=[])(torch.rand(2, 4))
    assert zadapter.passes_per_map("EpsilonPlus") == 1


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cam:GradCAM", "cam:ScoreCAM", "cam:FullGrad", "cam:ShapleyCAM",
                                  "zennit:EpsilonPlusFlat", "zennit:GuidedBackprop"])
def test_cuda_matches_cpu(name: str, images) -> None:
    if name.startswith("cam:"):
        pytest.importorskip("pytorch_grad_cam")
    model = _small()
    x = images(3, SHAPE)
    cpu = methods.create(name, model)(x, 1)
    model.cuda()
    gpu = methods.create(name, model)(x.cuda(), 1)
    assert gpu.device.type == "cuda" and gpu.shape == x.shape
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4 * float(cpu.abs().max()) + 1e-6)
