"""Reference models by name: ``create_model("paper_mlp" | "small_cnn" | "timm:<name>", input_shape, num_classes)``.

Adding a model is one function decorated with :func:`register_model` (training: :mod:`bench.core.training`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

__all__ = ["register_model", "create_model", "model_names"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Register ``fn(input_shape, num_classes, **kw) -> nn.Module`` under ``name``."""

    def deco(fn):
        _MODELS[name] = fn
        return fn

    return deco


def model_names() -> list[str]:
    """Registered names; any ``timm:<name>`` is accepted too."""
    return sorted(_MODELS) + ["timm:<name>"]


@register_model("paper_mlp")
def paper_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 1024, depth: int = 3) -> nn.Module:
    """Kindermans et al.'s network 1: ``prod(input_shape) -> 3 x 1024 (ReLU) -> num_classes``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("small_cnn")
def small_cnn(
    input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (16, 32), hidden: int = 128
) -> nn.Module:
    """Two 3x3 convolutions with zero padding, each followed by ReLU and 2x2 max-pooling, then two dense layers."""
    c, h, w = input_shape
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (h // 4) * (w // 4), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@register_model("tabular_mlp")
def tabular_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, depth: int = 2) -> nn.Module:
    """A small MLP for tables: ``prod(input_shape) -> depth x hidden (ReLU) -> num_classes``."""
    return paper_mlp(input_shape, num_classes, hidden=hidden, depth=depth)


@register_model("signal_cnn")
def signal_cnn(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (8, 16),
               hidden: int = 32) -> nn.Module:
    """For signals ``C x L``: two 5-tap ``Conv1d`` layers (zero padding), each followed by ReLU and 2x max-pooling,
    then two dense layers."""
    c, length = input_shape
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv1d(c, c1, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(c2 * (length // 4), hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` that takes token ids stored as floats (the harness keeps every input a float tensor)."""

    def forward(self, input):  # noqa: A002, ANN001, ANN201
        return super().forward(input.long())


@register_model("token_mlp")
def token_mlp(input_shape: tuple[int, ...], num_classes: int, vocab: int = 20, dim: int = 8,
              hidden: int = 32) -> nn.Module:
    """For token sequences ``L`` (ids): an embedding ``vocab x dim``, then ``L * dim -> hidden (ReLU) ->
    num_classes``. The saliency tests run on the embedding output (:func:`bench.core.embedding.embedded`)."""
    (length,) = input_shape
    return nn.Sequential(TokenEmbedding(vocab, dim), nn.Flatten(), nn.Linear(length * dim, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def _timm_model(name: str, input_shape: tuple[int, ...], num_classes: int, pretrained: bool = False, **kw) -> nn.Module:
    import timm

    if name not in timm.list_models(pretrained=False):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=input_shape[0], **kw)
    except Exception as err:  # network errors surface as many exception types
        if not pretrained:
            raise
        raise RuntimeError(
            f"timm could not load pretrained weights for {name!r} ({type(err).__name__}: {err}). Pretrained weights "
            "need a network connection to the Hugging Face hub or a filled HF cache; use pretrained=false to start "
            "from random weights and train on the configured data instead."
        ) from err


def create_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, pretrained: bool = False, **kw
) -> nn.Module:
    """Build a model by name. ``input_shape``: ``(C, H, W)`` of one image."""
    if name.startswith("timm:"):
        return _timm_model(name[len("timm:"):], tuple(input_shape), num_classes, pretrained=pretrained, **kw)
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(model_names())}")
    if pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights; train it (pretrained=false)")
    return _MODELS[name](tuple(input_shape), num_classes, **kw)
