"""A model factory as saliency-bench calls it: ``factory(input_shape, num_classes, **model.kwargs) -> nn.Module``."""

from __future__ import annotations

import math

from torch import nn


def factory(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128, depth: int = 2) -> nn.Module:
    """A ReLU MLP ``prod(input_shape) -> depth x hidden -> num_classes``.

    A plain ``nn.Sequential`` of ``Linear`` and ``ReLU`` modules: every method applies to it (PatternNet and
    PatternAttribution need a plain sequential network; the propagation rules need each ReLU as a module).
    ``hidden`` and ``depth`` come from the command line: ``+model.kwargs.hidden=64``.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
