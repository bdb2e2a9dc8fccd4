"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers") and AttnLRP's refusal.

Attention rollout follows the class token's attention through the layers: for each attention layer ``l`` (in
execution order) the attention weights ``A_l [B, heads, N, N]`` are averaged over the heads, the identity is added
(the residual connection) and the rows are normalized to sum to 1,
``Â_l = (mean_h A_l + I) / rowsum(mean_h A_l + I)``; the rollout is the product ``R = Â_L ... Â_2 Â_1``. The map is
the class token's row of ``R`` over the patch tokens (``R[0, prefix:]``), reshaped to the patch grid and upsampled
(bilinear) to the input, repeated over the input channels, as Grad-CAM's maps (:mod:`methods.cam`). It reads the
attention only: it is the same map for every target class, and it needs no gradient.

The weights are read from the model's own forward pass: timm's ``Attention`` (ViT, DeiT, ...) is run on its explicit
path (``fused_attn`` off for the pass) and its softmax output recorded where it enters ``attn_drop``;
``nn.MultiheadAttention`` (torchvision's ViT) is asked for its per-head weights. A model without such layers, or
without a class token, is refused by name.

AttnLRP (Achtibat et al. 2024) lives in the optional package ``lxt``; ``attn_lrp`` refuses with what to install
(module :class:`AttnLRP`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from methods.cam import is_attention, patch_grid, upsample
from methods.registry import BaseExplainer, register

__all__ = ["AttentionRollout", "AttnLRP", "attention_weights", "rollout"]


def _no_attention_message(model: nn.Module) -> str:
    return (f"attention_rollout needs a model with attention blocks: model {type(model).__name__} holds no attention "
            "layer (timm's Attention of ViT/DeiT, or nn.MultiheadAttention); use a transformer, or grad_cam for conv "
            "networks")


def _force_weights(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``nn.MultiheadAttention`` forward pre-hook: return the per-head weights (``need_weights``, not averaged)."""
    args = tuple(args)
    if len(args) > 4:  # need_weights given positionally (query, key, value, key_padding_mask, need_weights, ...)
        args = (*args[:4], True, *args[5:])
    else:
        kwargs = {**kwargs, "need_weights": True}
    if len(args) > 6:
        args = (*args[:6], False, *args[7:])
    else:
        kwargs = {**kwargs, "average_attn_weights": False}
    return args, kwargs


@contextmanager
def _recording(model: nn.Module) -> Iterator[list[tuple[str, Tensor]]]:
    """Record ``(layer name, attention weights [B, heads, N, N])`` of every attention layer during the forward
    passes of the body, in execution order; every hook and flag is restored after."""
    layers = [(n, m) for n, m in model.named_modules() if is_attention(m)]
    if not layers:
        raise ValueError(_no_attention_message(model))
    weights: list[tuple[str, Tensor]] = []
    handles, flags = [], []
    try:
        for name, m in layers:
            if isinstance(m, nn.MultiheadAttention):
                handles.append(m.register_forward_pre_hook(_force_weights, with_kwargs=True))
                handles.append(m.register_forward_hook(
                    lambda _m, _i, out, name=name: weights.append((name, out[1].detach()))))
            elif hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module):
                flags.append((m, m.fused_attn))
                m.fused_attn = False  # the explicit path: softmax(q k^T * scale) -> attn_drop
                handles.append(m.attn_drop.register_forward_hook(
                    lambda _m, args, _o, name=name: weights.append((name, args[0].detach()))))
            else:
                raise ValueError(f"attention_rollout cannot read the attention weights of layer {name!r} "
                                 f"({type(m).__name__}) of model {type(model).__name__}: supported are timm's "
                                 "Attention (an explicit path with attn_drop) and nn.MultiheadAttention")
        yield weights
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.fused_attn = flag


@torch.no_grad()
def attention_weights(model: nn.Module, x: Tensor) -> list[tuple[str, Tensor]]:
    """``[(layer name, weights [B, heads, N, N])]`` of one forward pass of ``x``, in execution order (the model's
    train/eval mode as it is). Raises ``ValueError`` naming the model when it holds no attention layer, or one whose
    weights cannot be read."""
    with _recording(model) as weights:
        model(x)
    if not weights:
        raise ValueError(f"attention_rollout: no attention layer of model {type(model).__name__} ran in the forward "
                         "pass")
    return weights


def rollout(weights: list[Tensor]) -> Tensor:
    """``R = Â_L ... Â_1`` ``[B, N, N]`` with ``Â_l = (mean_h A_l + I)`` row-normalized (module docstring)."""
    result = None
    for a in weights:
        if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"attention_rollout: attention weights of shape {tuple(a.shape)}; expected "
                             "[B, heads, N, N]")
        a = a.mean(1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        if result is not None and result.shape != a.shape:
            raise ValueError(f"attention_rollout: the layers attend over different token counts "
                             f"({result.shape[-1]} then {a.shape[-1]}); rollout needs one token sequence")
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("attention_rollout: no attention weights")
    return result


@register("attention_rollout")
class AttentionRollout(BaseExplainer):
    """Attention rollout (module docstring): the class token's row of the attention rollout over the patch tokens,
    on the patch grid, upsampled to the input. The target is ignored (the map is class-agnostic).

    Raises ``ValueError`` naming the model at construction when it holds no attention layer, and on the first call
    when it has no class token (no prefix token before the patch grid) or its tokens form no patch grid."""

    def __init__(self, model: nn.Module, *, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__(model, low=low, high=high)
        if not any(is_attention(m) for m in model.modules()):
            raise ValueError(_no_attention_message(model))

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"attention_rollout explains images [B, C, H, W]; got inputs of shape {tuple(x.shape)}")
        r = rollout([w for _, w in attention_weights(self.model, x)])
        prefix, grid = patch_grid(self.model, r.shape[-1], tuple(x.shape[2:]))
        if prefix < 1 or getattr(self.model, "cls_token", True) is None:
            raise ValueError(f"attention_rollout reads the class token's row of the rollout: model "
                             f"{type(self.model).__name__} has no class token (its {r.shape[-1]} tokens are the "
                             f"{grid[0]} x {grid[1]} patches); use grad_cam on its blocks")
        row = r[:, 0, prefix:].reshape(len(x), 1, *grid).to(x.dtype)
        return upsample(row, x).expand_as(x).contiguous()


#: the package AttnLRP needs and how to get it (it brings transformers, accelerate, bitsandbytes, open_clip_torch)
LXT_INSTALL = "pip install lxt"


@register("attn_lrp")
class AttnLRP(BaseExplainer):
    """AttnLRP (Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-wise Relevance Propagation for Transformers")
    through the optional package ``lxt``. Not available here: the constructor raises ``ImportError`` naming the
    package and the command that installs it when ``lxt`` is missing, and ``NotImplementedError`` when it is
    installed (no adapter from lxt's patches, written for Hugging Face transformers and torchvision's ViT, to timm's
    VisionTransformer exists in this harness yet)."""

    def __init__(self, model: nn.Module, *, low: float = 0.0, high: float = 1.0, **params: object) -> None:
        super().__init__(model, low=low, high=high)
        if importlib.util.find_spec("lxt") is None:
            raise ImportError(f"attn_lrp (AttnLRP, Achtibat et al. 2024) needs the optional package lxt, which is not "
                              f"installed: {LXT_INSTALL} (it also installs transformers, accelerate, bitsandbytes and "
                              "open_clip_torch); then run attn_lrp again")
        raise NotImplementedError(f"attn_lrp: lxt is installed, but this harness has no adapter from lxt's patches "
                                  f"(Hugging Face transformers, torchvision ViT) to model {type(model).__name__} yet")

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - the constructor refuses
        raise NotImplementedError
