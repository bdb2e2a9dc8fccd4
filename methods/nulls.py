"""Maps that carry no information about the model: the negative controls of the verdicts.

A verdict that a method "explains the model" must never be given to these (``benchmarks/calibration.md``,
``tests/test_verdict_rule.py``). They follow the explainer contract (a map shaped like ``x``, batched, on ``x``'s
device) and are named by import path (``methods.nulls:noise_map``), not registered: ``method=all`` never runs them.

- :func:`noise_map`: standard normal noise, drawn from a CPU generator seeded with ``seed`` at every call
  (the same map for every model, and on every device);
- :func:`input_map`: the input itself;
- :func:`input_times_noise`: the input times that seeded noise;
- :func:`model_seeded_noise`: noise seeded by the model object's identity (``id(model)``): the same for the same
  object, other noise for a copy with the same weights. It reads no weight, so it must never pass a randomization
  test (the repeatability control, run on a copy, exposes it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["noise_map", "input_map", "input_times_noise", "model_seeded_noise"]

Map = Callable[..., Tensor]


def _noise(x: Tensor, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(int(seed) % 2**63)
    return torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)


def noise_map(model: nn.Module, seed: int = 0) -> Map:
    """``explain(x, target=None)``: seeded standard normal noise shaped like ``x`` (``model`` is ignored)."""
    return lambda x, target=None: _noise(x, seed)


def input_map(model: nn.Module) -> Map:
    """``explain(x, target=None)``: a copy of ``x`` (``model`` is ignored)."""
    return lambda x, target=None: x.detach().clone()


def input_times_noise(model: nn.Module, seed: int = 0) -> Map:
    """``explain(x, target=None)``: ``x`` times seeded standard normal noise (``model`` is ignored)."""
    return lambda x, target=None: x.detach() * _noise(x, seed)


def model_seeded_noise(model: nn.Module) -> Map:
    """``explain(x, target=None)``: noise seeded by ``id(model)`` (reads no weight; see the module docstring)."""
    seed = id(model)
    return lambda x, target=None: _noise(x, seed)
