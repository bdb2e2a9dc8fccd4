"""Canonizers that make zennit's module rules correct on real models.

zennit attaches its rules to modules, so three things escape it: functional activations,
residual ``+`` (autograd copies the relevance to both branches, doubling it) and BatchNorm
(an affine map with no rule of its own). A canonizer rewrites a model for the duration of an
attribution: BatchNorm merged into the preceding linear layer, and each residual block's
forward replaced by one that adds through a :class:`zennit.layer.Sum` module, which gets the
Norm rule (relevance split in proportion to each branch's contribution). Every change is
reverted by ``remove()``; parameters are restored to the very tensors they held.

:func:`canonizers_for` checks a model against what is known and returns the canonizers it
needs, or raises :class:`UnsupportedModelError` naming the model. Known: ``nn.Sequential``
stacks of standard layers (``paper_mlp``, ``small_cnn``), timm ResNets (BasicBlock /
Bottleneck without attention or anti-aliasing) and VGGs, torchvision ResNets and VGGs. Add an
architecture with :func:`register_canonizer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from zennit.canonizers import AttributeCanonizer, Canonizer, SequentialMergeBatchNorm
from zennit.core import collect_leaves
from zennit.layer import Sum
from zennit.types import BatchNorm as BatchNormTypes
from zennit.types import Linear as LinearTypes

__all__ = [
    "CanonizerFactory",
    "ExactMergeBatchNorm",
    "TimmResNetBlockCanonizer",
    "UnsupportedModelError",
    "canonizers_for",
    "register_canonizer",
    "supported_types",
]

CanonizerFactory = Callable[[nn.Module], Sequence[Canonizer]]


class UnsupportedModelError(ValueError):
    """An LRP-family method was asked of an architecture without a canonizer."""


class ExactMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit's ``SequentialMergeBatchNorm`` that leaves the BatchNorm an exact identity.

    zennit resets the statistics to mean 0 / variance 1 but keeps ``eps``, so the merged
    BatchNorm still divides by ``sqrt(1 + eps)`` (a relative error of ~5e-6 per layer, ~1e-4 on a
    VGG-11-BN map). Here ``eps`` is set to 0 while merged and restored by ``remove()``.
    """

    def register(self, linears, batch_norm) -> None:  # noqa: ANN001
        super().register(linears, batch_norm)
        self.batch_norm_eps = batch_norm.eps
        batch_norm.eps = 0.0

    def remove(self) -> None:
        super().remove()
        self.batch_norm.eps = self.batch_norm_eps


# type -> factory(module) -> canonizers; a registered type is trusted: its forward is a plain chain of its
# children's calls (or the factory's canonizers make it one), so only the children remain to be checked.
_REGISTRY: dict[type, CanonizerFactory] = {}


def register_canonizer(*types: type) -> Callable[[CanonizerFactory], CanonizerFactory]:
    """Declare ``types`` as LRP-ready once ``factory(module)`` canonizers are applied.

    ``factory(module) -> list[Canonizer]`` returns canonizer templates (zennit ``Canonizer``
    objects; one template per class is kept for a model) or ``[]`` when the module's forward
    is already a chain of module calls. The children of a registered module are still checked.
    """

    def deco(factory: CanonizerFactory) -> CanonizerFactory:
        for t in types:
            _REGISTRY[t] = factory
        return factory

    return deco


def supported_types() -> list[type]:
    """The module types known to :func:`canonizers_for`."""
    return list(_REGISTRY)


def _none(module: nn.Module) -> list[Canonizer]:
    return []


# leaves with a rule or whose gradient is the right relevance flow (pooling, reshaping, identity in eval)
register_canonizer(
    nn.Sequential, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    Sum,
)(_none)


def _trusted(module: nn.Module) -> CanonizerFactory | None:
    """The factory of the nearest registered base class whose ``forward`` the module does not override."""
    forward = type(module).forward
    for base in type(module).__mro__:
        if base in _REGISTRY and getattr(base, "forward", None) is forward:
            return _REGISTRY[base]
    return None


def canonizers_for(model: nn.Module, method: str = "LRP") -> list[Canonizer]:
    """Canonizer templates that make zennit's rules correct on ``model``.

    Always starts with :class:`ExactMergeBatchNorm`. Raises
    :class:`UnsupportedModelError` (a ``ValueError``) naming the model class and the first
    submodule whose forward is unknown, or a BatchNorm that cannot be merged (not right after a
    Linear/conv layer in module order, not affine, or without running statistics).
    """
    found: dict[type, Canonizer] = {ExactMergeBatchNorm: ExactMergeBatchNorm()}
    for name, module in model.named_modules():
        factory = _trusted(module)
        if factory is None:
            where = f"its submodule {name!r} ({type(module).__qualname__})" if name else "its forward"
            raise UnsupportedModelError(
                f"{method} needs a canonizer for model {type(model).__name__}: {where} is not a known layer "
                "or block, so residual additions, functional activations or normalizations in it would be "
                "invisible to zennit's rules (relevance skipped or double-counted). Known: "
                "nn.Sequential stacks of standard layers, timm ResNet/VGG, torchvision ResNet/VGG. "
                "Register the block with methods.canonizers.register_canonizer, or pass canonizers=[...] "
                "explicitly (an empty list if the model needs none)."
            )
        for canonizer in factory(module):
            found.setdefault(type(canonizer), canonizer)
    _check_batchnorm(model, method)
    return list(found.values())


def _check_batchnorm(model: nn.Module, method: str) -> None:
    """Every BatchNorm must directly follow a Linear/conv leaf, as ExactMergeBatchNorm merges it."""
    names = {m: n for n, m in model.named_modules()}
    last = None
    for leaf in collect_leaves(model):
        if isinstance(leaf, BatchNormTypes):
            why = None
            if not isinstance(last, LinearTypes):
                prev = type(last).__name__ if last is not None else "nothing"
                why = f"it follows {prev}, not a Linear/conv layer"
            elif leaf.weight is None or leaf.running_mean is None:
                why = "it is not affine or keeps no running statistics"
            if why is not None:
                raise UnsupportedModelError(
                    f"{method} needs a canonizer for model {type(model).__name__}: BatchNorm "
                    f"{names[leaf]!r} cannot be merged into a preceding layer ({why}), and zennit has no "
                    "rule for a standalone BatchNorm. Pass canonizers=[...] explicitly to override."
                )
        last = leaf


# --- timm ------------------------------------------------------------------------------------------


#: the layers of timm's ``BasicBlock.forward`` / ``Bottleneck.forward`` before the residual ``+``, in order
_TIMM_BASIC_BODY = ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2")
_TIMM_BOTTLENECK_BODY = ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3")


def _timm_residual_forward(self: nn.Module, x: torch.Tensor, body: tuple[str, ...], last_act: str) -> torch.Tensor:
    """timm's ``BasicBlock``/``Bottleneck`` forward (``body`` layers, SE, drop path, shortcut) with the residual
    ``+`` through ``self.canonizer_sum``."""
    shortcut = x
    for name in body:
        x = getattr(self, name)(x)
    if self.se is not None:
        x = self.se(x)
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    x = self.canonizer_sum(torch.stack([shortcut, x], dim=-1))
    return getattr(self, last_act)(x)


try:  # timm is a dependency, but keep this module importable without it
    from timm.layers import ClassifierHead, DropBlock2d, DropPath, SelectAdaptivePool2d
    from timm.models.resnet import BasicBlock as TimmBasicBlock
    from timm.models.resnet import Bottleneck as TimmBottleneck
    from timm.models.resnet import ResNet as TimmResNet
    from timm.models.vgg import VGG as TimmVGG
    from timm.models.vgg import ConvMlp as TimmConvMlp
except ImportError:  # pragma: no cover
    TimmBasicBlock = TimmBottleneck = None  # type: ignore[assignment,misc]
else:

    class TimmResNetBlockCanonizer(AttributeCanonizer):
        """Route the residual ``+`` of timm ``BasicBlock``/``Bottleneck`` through a ``Sum`` module."""

        def __init__(self) -> None:
            super().__init__(self._attribute_map)

        @staticmethod
        def _attribute_map(name: str, module: nn.Module) -> dict | None:
            if isinstance(module, TimmBasicBlock):
                body, last_act = _TIMM_BASIC_BODY, "act2"
            elif isinstance(module, TimmBottleneck):
                body, last_act = _TIMM_BOTTLENECK_BODY, "act3"
            else:
                return None

            def forward(x: torch.Tensor) -> torch.Tensor:
                return _timm_residual_forward(module, x, body, last_act)

            return {"forward": forward, "canonizer_sum": Sum()}

        def copy(self) -> TimmResNetBlockCanonizer:
            return TimmResNetBlockCanonizer()

    @register_canonizer(TimmBasicBlock, TimmBottleneck)
    def _timm_block(module: nn.Module) -> list[Canonizer]:
        return [TimmResNetBlockCanonizer()]

    # ResNet: conv stem, stages, global pool, (dropout, identity in eval), fc. VGG: features, ConvMlp
    # (its adaptive average pooling only upsamples inputs below 7x7, and the gradient of an average
    # passes relevance on conserved), head. Their children are checked, so attention layers,
    # anti-aliasing or 'fast' pooling variants are refused.
    register_canonizer(
        TimmResNet, TimmVGG, TimmConvMlp, ClassifierHead, SelectAdaptivePool2d, DropPath, DropBlock2d
    )(_none)


try:
    from torchvision.models.resnet import BasicBlock as TvBasicBlock
    from torchvision.models.resnet import Bottleneck as TvBottleneck
    from torchvision.models.resnet import ResNet as TvResNet
    from torchvision.models.vgg import VGG as TvVGG
    from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
except ImportError:  # pragma: no cover
    pass
else:
    register_canonizer(TvResNet, TvVGG)(_none)
    register_canonizer(TvBasicBlock)(lambda module: [ResNetBasicBlockCanonizer()])
    register_canonizer(TvBottleneck)(lambda module: [ResNetBottleneckCanonizer()])
