"""Grad-CAM and Guided Grad-CAM (Selvaraju et al. 2017), as tested by Adebayo et al. 2018.

Grad-CAM weights a conv layer's activation maps ``A [B, K, h, w]`` (by default the output of the activation that
follows the last convolution, as the sanity-checks authors' code) by the spatial mean of the
target logit's gradient, ``cam = relu(sum_k mean_hw(d f_c / d A_k) * A_k)``, upsamples the map
(bilinear) to the input's ``H x W`` and repeats it over the input channels, so the result is
shaped like ``x``. Guided Grad-CAM multiplies it with Guided Backprop.

Vision transformers (timm ``VisionTransformer`` and any model whose blocks hold an attention module): the same
mechanism on **token activations** ``[B, N, D]``: the prefix tokens (class and register tokens) are dropped, the
patch tokens reshaped to the patch grid ``[B, D, h, w]`` (:func:`token_grid`; the gradient alike), then weighted,
summed and upsampled as above. By default the layer is the last transformer block executed (when it runs after the
last convolution), and Grad-CAM reads the tokens a block **reads** (its input, the residual stream entering it):
the patch tokens a ViT's last block puts out never reach the logits (only the class token does), so their gradient,
and with it the map, would be zero. A ``layer`` naming any other module (``blocks.3.norm1``, pytorch-grad-cam's
choice for ViTs) reads its output, conv map or tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.propagation import GuidedBackprop
from methods.registry import BaseExplainer, NotApplicable, register, target_logits

__all__ = ["GradCAM", "GuidedGradCAM", "default_layer", "is_attention", "transformer_blocks", "token_grid",
           "patch_grid", "upsample"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
#: the most leading (class, register) tokens :func:`patch_grid` tries when the model does not say how many it has
_MAX_PREFIX = 16


#: modules that count as "the activation" of a conv layer for Grad-CAM, and layers skipped on the way to it
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
                nn.PReLU)
_PASS_THROUGH = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Identity, nn.Dropout)


def is_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a self-attention layer: ``nn.MultiheadAttention``, or timm-style (``num_heads`` and a
    ``qkv`` projection: timm's ``Attention`` of ViT, DeiT, BEiT ...)."""
    return isinstance(module, nn.MultiheadAttention) or (hasattr(module, "num_heads") and hasattr(module, "qkv"))


def transformer_blocks(model: nn.Module) -> list[str]:
    """Qualified names of the modules that hold an attention layer as a direct child (transformer blocks: timm
    ViT ``blocks.0`` ...), in registration order."""
    return [n for n, m in model.named_modules() if not is_attention(m) and any(is_attention(c) for c in m.children())]


def default_layer(model: nn.Module, x: Tensor) -> str:
    """Name of the activation of the last ``nn.Conv2d`` the forward pass of ``x`` executes, as the sanity-checks
    authors' Grad-CAM: the first activation module executed after that conv, past normalization, identity and
    dropout layers; the conv itself when something else comes first (e.g. a pooling layer or nothing). When a
    transformer block (:func:`transformer_blocks`) finishes after that conv (a ViT: the patch embedding is its only
    conv), the last block executed."""
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    blocks = {model.get_submodule(n) for n in transformer_blocks(model)}
    leaves = [m for m in model.modules()
              if not any(True for _ in m.children()) or isinstance(m, _ACTIVATIONS) or m in blocks]
    handles = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod)) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    convs = [i for i, m in enumerate(order) if isinstance(m, nn.Conv2d)]
    ran = [i for i, m in enumerate(order) if m in blocks]
    if ran and (not convs or ran[-1] > convs[-1]):
        return names[order[ran[-1]]]
    if not convs:
        raise NotApplicable(_no_conv_message(model))
    for m in order[convs[-1] + 1:]:
        if isinstance(m, _ACTIVATIONS):
            return names[m]
        if not isinstance(m, _PASS_THROUGH):
            break
    return names[order[convs[-1]]]


def _no_conv_message(model: nn.Module) -> str:
    return (
        f"grad_cam needs a conv layer (or a transformer block) or an explicit `layer`: model {type(model).__name__} "
        "runs no nn.Conv2d module and holds no attention block (pass layer='<module name>' of a layer with a "
        "[B, C, H, W] output, or [B, tokens, D] tokens of an image model)"
    )


def patch_grid(model: nn.Module, n_tokens: int, size: tuple[int, ...]) -> tuple[int, tuple[int, int]]:
    """``(prefix, (h, w))``: how ``n_tokens`` tokens of an image model for inputs of spatial ``size`` ``(H, W)``
    split into ``prefix`` leading tokens (class, register tokens) and an ``h x w`` patch grid.

    timm's ``model.patch_embed.grid_size`` and ``model.num_prefix_tokens`` when the model has them; otherwise the
    fewest prefix tokens that leave a grid of the input's aspect ratio. Raises ``ValueError`` when none fits."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if grid is not None and len(tuple(grid)) == 2:
        h, w = (int(v) for v in grid)
        p = n_tokens - h * w
        if p >= 0 and (prefix is None or p == int(prefix)):
            return p, (h, w)
    big_h, big_w = (int(v) for v in size)
    for p in range(min(n_tokens, _MAX_PREFIX + 1)):
        n = n_tokens - p
        h = round(math.sqrt(n * big_h / big_w))
        if h >= 1 and n % h == 0 and (n // h) * big_h == h * big_w:
            return p, (h, n // h)
    raise ValueError(f"{type(model).__name__}: {n_tokens} tokens do not form a patch grid of the input's "
                     f"{big_h} x {big_w} aspect ratio (after any prefix of class/register tokens)")


def token_grid(tokens: Tensor, prefix: int, grid: tuple[int, int]) -> Tensor:
    """Tokens ``[B, N, D]`` -> the patch tokens as maps ``[B, D, h, w]`` (the first ``prefix`` tokens dropped)."""
    b, _, d = tokens.shape
    return tokens[:, prefix:].reshape(b, *grid, d).permute(0, 3, 1, 2)


def upsample(cam: Tensor, x: Tensor) -> Tensor:
    """A map ``[B, 1, *spatial]`` interpolated (linear, bilinear, trilinear) to ``x``'s spatial size."""
    return F.interpolate(cam, size=x.shape[2:], mode=_MODES[cam.ndim - 2], align_corners=False)


@register("grad_cam")
class GradCAM(BaseExplainer):
    """Grad-CAM on the layer named ``layer`` (a dotted name from ``model.named_modules()``).

    Default layer: the activation of the last ``nn.Conv2d`` in execution order (:func:`default_layer`, as the
    sanity-checks authors; traced with forward hooks on the first call; the chosen name is kept in
    ``self.layer``), or the last transformer block of a ViT. A transformer block's map is computed on the tokens it
    reads, any other layer's on its output; tokens ``[B, N, D]`` of an image model are put on the patch grid first
    (module docstring). ``relu=False`` keeps negative
    evidence. A model without conv layers or transformer blocks raises ``ValueError`` naming the model class at
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
        blocks = transformer_blocks(model)
        if layer is None and not blocks and not any(isinstance(m, nn.Conv2d) for m in modules.values()):
            raise NotApplicable(_no_conv_message(model))
        if layer is not None and layer not in modules:
            convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
            raise ValueError(
                f"grad_cam: model {type(model).__name__} has no module named {layer!r}; "
                f"its conv layers: {convs}" + (f"; its transformer blocks: {blocks}" if blocks else "")
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

        def capture_input(_m: nn.Module, args: tuple) -> tuple | None:
            if not args or not isinstance(args[0], Tensor):
                return None
            tokens = args[0].clone()  # its own node: the gradient reaching the block, nothing else
            captured.append(tokens)
            return (tokens, *args[1:])

        if self.layer in transformer_blocks(self.model):  # the tokens the block reads (module docstring)
            handle = module.register_forward_pre_hook(capture_input)
        else:
            handle = module.register_forward_hook(capture)
        xg = x.detach().clone().requires_grad_(True)
        try:
            out = target_logits(self.model, xg, target).sum()
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"grad_cam: layer {self.layer!r} did not run in the forward pass")
        acts = captured[-1]
        tokens = isinstance(acts, Tensor) and acts.ndim == 3 and x.ndim == 4  # [B, N, D] of an image model
        if not isinstance(acts, Tensor) or (acts.ndim != x.ndim and not tokens) or acts.ndim < 3:
            shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
            raise ValueError(
                f"grad_cam: layer {self.layer!r} outputs {shape}; it needs a [B, C, *spatial] map "
                f"with the input's {x.ndim - 2} spatial dims (or [B, tokens, D] tokens of an image model)"
            )
        (grad,) = torch.autograd.grad(out, acts)
        if tokens:  # the patch tokens as maps on the patch grid; the same weighting as a conv layer's
            prefix, grid = patch_grid(self.model, acts.shape[1], tuple(x.shape[2:]))
            acts, grad = token_grid(acts, prefix, grid), token_grid(grad, prefix, grid)
        spatial = tuple(range(2, acts.ndim))
        cam = (grad.mean(dim=spatial, keepdim=True) * acts).sum(1, keepdim=True)
        if self.relu:
            cam = cam.clamp_min(0)
        return upsample(cam.detach(), x)

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
        try:
            guided = self.guided_backprop.attribute(x, target)
        except ValueError as err:  # its refusal, named as this method's (GELU in a ViT, functional ReLUs)
            raise ValueError(f"guided_grad_cam: {err}") from err
        return guided * self.grad_cam.cam(x, target)
