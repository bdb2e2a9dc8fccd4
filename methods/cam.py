"""Grad-CAM and Guided Grad-CAM (Selvaraju et al. 2017), as tested by Adebayo et al. 2018.

Grad-CAM weights a conv layer's activation maps ``A [B, K, h, w]`` (by default the output of the activation that
follows the last convolution, as the sanity-checks authors' code) by the spatial mean of the
target logit's gradient, ``cam = relu(sum_k mean_hw(d f_c / d A_k) * A_k)``, upsamples the map
(bilinear) to the input's ``H x W`` and repeats it over the input channels, so the result is
shaped like ``x``. Guided Grad-CAM multiplies it with Guided Backprop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.propagation import GuidedBackprop
from methods.registry import BaseExplainer, register, target_logits

__all__ = ["GradCAM", "GuidedGradCAM", "default_layer"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


#: modules that count as "the activation" of a conv layer for Grad-CAM, and layers skipped on the way to it
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
                nn.PReLU)
_PASS_THROUGH = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Identity, nn.Dropout)


def default_layer(model: nn.Module, x: Tensor) -> str:
    """Name of the activation of the last ``nn.Conv2d`` the forward pass of ``x`` executes, as the sanity-checks
    authors' Grad-CAM: the first activation module executed after that conv, past normalization, identity and
    dropout layers; the conv itself when something else comes first (e.g. a pooling layer or nothing)."""
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    leaves = [m for m in model.modules() if not any(True for _ in m.children()) or isinstance(m, _ACTIVATIONS)]
    handles = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod)) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    convs = [i for i, m in enumerate(order) if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(_no_conv_message(model))
    for m in order[convs[-1] + 1:]:
        if isinstance(m, _ACTIVATIONS):
            return names[m]
        if not isinstance(m, _PASS_THROUGH):
            break
    return names[order[convs[-1]]]


def _no_conv_message(model: nn.Module) -> str:
    return (
        f"grad_cam needs a conv layer or an explicit `layer`: model {type(model).__name__} runs no "
        "nn.Conv2d module (pass layer='<module name>' of a layer with a [B, C, H, W] output)"
    )


@register("grad_cam")
class GradCAM(BaseExplainer):
    """Grad-CAM on the layer named ``layer`` (a dotted name from ``model.named_modules()``).

    Default layer: the activation of the last ``nn.Conv2d`` in execution order (:func:`default_layer`, as the
    sanity-checks authors; traced with forward hooks on the first call; the chosen name is kept in
    ``self.layer``). ``relu=False`` keeps negative
    evidence. A model without conv layers raises ``ValueError`` naming the model class at
    construction, unless ``layer`` is given.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str | None = None,
        relu: bool = True,
        low: float = 0.0,
        high: float = 1.0,
    ) -> None:
        super().__init__(model, low=low, high=high)
        modules = dict(model.named_modules())
        if layer is None and not any(isinstance(m, nn.Conv2d) for m in modules.values()):
            raise ValueError(_no_conv_message(model))
        if layer is not None and layer not in modules:
            convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
            raise ValueError(
                f"grad_cam: model {type(model).__name__} has no module named {layer!r}; "
                f"its conv layers: {convs}"
            )
        self.layer = layer
        self.relu = relu

    def cam(self, x: Tensor, target: Tensor) -> Tensor:
        """The upsampled map ``[B, 1, *x.shape[2:]]``."""
        if self.layer is None:
            self.layer = default_layer(self.model, x)
        module = dict(self.model.named_modules())[self.layer]
        captured: list[Tensor] = []

        def capture(_m: nn.Module, _i: object, out: object) -> object:
            captured.append(out)
            # an in-place op after the layer (ReLU(inplace=True)) must not alter the captured map
            return out.clone() if isinstance(out, Tensor) else None

        handle = module.register_forward_hook(capture)
        xg = x.detach().clone().requires_grad_(True)
        try:
            out = target_logits(self.model, xg, target).sum()
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"grad_cam: layer {self.layer!r} did not run in the forward pass")
        acts = captured[-1]
        if not isinstance(acts, Tensor) or acts.ndim != x.ndim or acts.ndim < 3:
            shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
            raise ValueError(
                f"grad_cam: layer {self.layer!r} outputs {shape}; it needs a [B, C, *spatial] map "
                f"with the input's {x.ndim - 2} spatial dims"
            )
        (grad,) = torch.autograd.grad(out, acts)
        spatial = tuple(range(2, acts.ndim))
        cam = (grad.mean(dim=spatial, keepdim=True) * acts).sum(1, keepdim=True)
        if self.relu:
            cam = cam.clamp_min(0)
        mode = _MODES[acts.ndim - 2]
        return F.interpolate(cam.detach(), size=x.shape[2:], mode=mode, align_corners=False)

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        return self.cam(x, target).expand_as(x).contiguous()


@register("guided_grad_cam")
class GuidedGradCAM(BaseExplainer):
    """Guided Grad-CAM: Guided Backprop times the upsampled Grad-CAM map (same target, same layer)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str | None = None,
        low: float = 0.0,
        high: float = 1.0,
    ) -> None:
        super().__init__(model, low=low, high=high)
        self.grad_cam = GradCAM(model, layer=layer)
        self.guided_backprop = GuidedBackprop(model, low=low, high=high)

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        return self.guided_backprop.attribute(x, target) * self.grad_cam.cam(x, target)
