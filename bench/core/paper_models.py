"""The sanity-checks authors' MNIST networks (Adebayo et al. 2018, their public code ``src/train_cnn_models.py`` and
``src/train_mlp_models.py``), so that the harness's curves can be set beside the paper's.

- ``adebayo_cnn``: conv 5x5x32 (same padding) -> ReLU -> max-pool 2 -> conv 5x5x64 -> ReLU -> max-pool 2 -> dense 1024
  -> ReLU -> dense 10; weights drawn from a normal truncated at two standard deviations with std 0.1, biases 0.1;
- ``adebayo_mlp``: 784 -> 2500 -> 1500 -> 500 -> 10 with ReLU; weights truncated normal with std ``2 / sqrt(fan_in)``,
  biases 0.

Their recipe: Adam, learning rate 1e-4, batch 50 (:data:`ADEBAYO_RECIPE`; the presets ``model=adebayo_cnn`` and
``model=adebayo_mlp`` set it). The
initializations are the layers' own ``reset_parameters`` (:class:`TruncNormalLinear`, :class:`TruncNormalConv2d`), so
the harness's seeded initialization reproduces them; the randomization tests re-draw them with PyTorch's default
initializer like every other layer (``init=`` chooses another).
"""

from __future__ import annotations

import math

from torch import nn

from bench.core.models import register_model

__all__ = ["TruncNormalLinear", "TruncNormalConv2d", "adebayo_cnn", "adebayo_mlp", "ADEBAYO_RECIPE", "adebayo_train"]

#: the authors' training recipe (their scripts' defaults: 50 epochs; on the 4,000 bundled digits 10 clear the guard
#: by far, measured in the README); the presets ``conf/model/adebayo_*.yaml`` set the same
ADEBAYO_RECIPE = dict(optimizer="adam", lr=1e-4, batch_size=50, epochs=10)


def adebayo_train(**overrides):  # noqa: ANN003, ANN201
    """:data:`ADEBAYO_RECIPE` as a :class:`bench.core.training.TrainConfig` (``overrides``: its other fields)."""
    from bench.core.training import TrainConfig  # training imports this module's registry: import it late

    return TrainConfig(**{**ADEBAYO_RECIPE, **overrides})


class TruncNormalLinear(nn.Linear):
    """``nn.Linear`` initialized as the authors' MLP: weights truncated normal (two standard deviations), std
    ``scale / sqrt(fan_in)`` (``scale`` 2), or a fixed ``std``; biases ``bias_value``."""

    def __init__(self, in_features: int, out_features: int, *, std: float | None = None, scale: float = 2.0,
                 bias_value: float = 0.0) -> None:
        self._std, self._scale, self._bias_value = std, scale, bias_value
        super().__init__(in_features, out_features)

    def reset_parameters(self) -> None:
        std = self._std if self._std is not None else self._scale / math.sqrt(self.in_features)
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.constant_(self.bias, self._bias_value)


class TruncNormalConv2d(nn.Conv2d):
    """``nn.Conv2d`` initialized as the authors' CNN: weights truncated normal with std ``std`` (0.1), biases
    ``bias_value`` (0.1)."""

    def __init__(self, *args, std: float = 0.1, bias_value: float = 0.1, **kwargs) -> None:  # noqa: ANN002, ANN003
        self._std, self._bias_value = std, bias_value
        super().__init__(*args, **kwargs)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, std=self._std, a=-2 * self._std, b=2 * self._std)
        nn.init.constant_(self.bias, self._bias_value)


@register_model("adebayo_cnn")
def adebayo_cnn(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (32, 64),
                hidden: int = 1024) -> nn.Module:
    """The authors' MNIST CNN (module docstring) for images ``C x H x W`` (H and W divisible by 4)."""
    c, h, w = input_shape
    c1, c2 = channels
    return nn.Sequential(
        TruncNormalConv2d(c, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        TruncNormalConv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        TruncNormalLinear(c2 * (h // 4) * (w // 4), hidden, std=0.1, bias_value=0.1), nn.ReLU(),
        TruncNormalLinear(hidden, num_classes, std=0.1, bias_value=0.1),
    )


@register_model("adebayo_mlp")
def adebayo_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (2500, 1500, 500)
                ) -> nn.Module:
    """The authors' MNIST MLP (module docstring): ``prod(input_shape) -> 2500 -> 1500 -> 500 -> num_classes``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [TruncNormalLinear(width, h), nn.ReLU()]
        width = h
    layers.append(TruncNormalLinear(width, num_classes))
    return nn.Sequential(*layers)
