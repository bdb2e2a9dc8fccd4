"""The ViT preset ``vit_tiny_digits``: a timm :class:`~timm.models.vision_transformer.VisionTransformer` sized for
the bundled digits (``1 x 28 x 28``, ten classes).

Patches of 7 x 7 pixels (a 4 x 4 grid, 16 patch tokens and a class token), width 64, 4 blocks of 4 heads, MLP ratio
2, learned position embeddings, the class token's final state to the head (timm's ``global_pool="token"``), no
dropout: about 139,000 parameters. Its recipe, :data:`VIT_RECIPE` (Adam, lr 1e-3, batch 32, 10 epochs), is what
``model=vit_tiny_digits`` sets (``conf/model/vit_tiny_digits.yaml``); from Python:
``load_or_train("vit_tiny_digits", data, TrainConfig(**VIT_RECIPE))``. The harness's default recipe (plain SGD,
lr 0.2) trains it too in 10 epochs, but one epoch (the smoke preset's) lands around the quality bar, where Adam's
one epoch clears it by far (README "Data and models" has the measured accuracies and times).

The label test (``randomization=labels``) trains with its own recipe (plain SGD, lr 0.2, 50 epochs on 1,000
digits), in which this ViT does not memorize the permuted labels (train accuracy about 0.28 < 0.5); 100 epochs do
(1.0): ``randomization.labels.epochs=100``.

What the harness's tests see:

* **input invariance**: the first parametrized layer the input meets is the patch embedding ``patch_embed.proj``, a
  ``Conv2d`` with stride = kernel = patch size; the twin (:func:`bench.twins.build.affine_twin`) replaces it by a
  bias-map convolution that absorbs the shift or contrast exactly; the class token and the position embeddings are
  added after it and stay untouched;
* **randomization** (:mod:`bench.randomization.units`): module granularity gives ``patch_embed.proj``,
  ``cls_token+pos_embed`` (the root's own parameters), then per block ``norm1``, ``attn.qkv``, ``attn.proj``,
  ``norm2``, ``mlp.fc1``, ``mlp.fc2``, then ``norm``, ``head``, in execution order; block granularity
  ``patch_embed+cls_token+pos_embed``, ``blocks.0`` ... ``blocks.3``, ``norm+head``;
* **methods**: Gradient, SmoothGrad, Gradient x Input and Integrated Gradients apply as to any network; Grad-CAM
  reads the token activations of a block (:mod:`methods.cam`), attention rollout the blocks' attention
  (:mod:`methods.rollout`); Guided Backprop, DeconvNet, the LRP/DTD rules and PatternNet/PatternAttribution refuse
  the model by name (GELU activations, attention and residual additions they have no rule or canonizer for).

The model is a :class:`DigitsViT`, a ``VisionTransformer`` whose own ``reset_parameters`` re-draws the class token
and the position embeddings (as timm initializes them), so that the harness's seeded initialization
(:func:`bench.core.training.train`) determines every weight: without it those two tensors would keep whatever the
global random generator gave them when the model was created.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.core.models import register_model

__all__ = ["DigitsViT", "vit_tiny_digits", "VIT_TINY_DIGITS", "VIT_RECIPE"]

#: the preset's architecture (``model.kwargs`` overrides any of them)
VIT_TINY_DIGITS = dict(patch_size=7, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
#: its training recipe (the fields of :class:`~bench.core.training.TrainConfig`; the preset's config sets the same)
VIT_RECIPE = dict(optimizer="adam", lr=1e-3, batch_size=32, epochs=10)


class DigitsViT(VisionTransformer):
    """timm's ``VisionTransformer`` with a ``reset_parameters`` for its own (root) parameters: the class token
    ``N(0, 1e-6)`` and the position embeddings truncated ``N(0, 0.02)``, timm's initialization of them. Every other
    layer keeps its own ``reset_parameters``."""

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.pos_embed is not None:
                nn.init.trunc_normal_(self.pos_embed, std=0.02)
            if self.cls_token is not None:
                nn.init.normal_(self.cls_token, std=1e-6)
            if self.reg_token is not None:
                nn.init.normal_(self.reg_token, std=1e-6)


@register_model("vit_tiny_digits")
def vit_tiny_digits(input_shape: tuple[int, ...], num_classes: int, **kw) -> nn.Module:
    """A :class:`DigitsViT` for images ``C x H x W`` (``H``, ``W`` multiples of the patch size): the architecture of
    :data:`VIT_TINY_DIGITS`, any field replaced by ``kw`` (and any other ``VisionTransformer`` argument, e.g.
    ``depth=2``). Raises ``ValueError`` for an input that is not an image or not a whole number of patches."""
    arch = {**VIT_TINY_DIGITS, **kw}
    if len(input_shape) != 3:
        raise ValueError(f"vit_tiny_digits takes images C x H x W, got inputs of shape {tuple(input_shape)}")
    c, h, w = (int(v) for v in input_shape)
    patch = arch["patch_size"]
    if h % patch or w % patch:
        raise ValueError(f"vit_tiny_digits: the input's {h} x {w} pixels are not a whole number of {patch} x {patch} "
                         "patches; choose model.kwargs.patch_size dividing both")
    arch.setdefault("drop_rate", 0.0)
    return DigitsViT(img_size=(h, w), in_chans=c, num_classes=num_classes, **arch)
