"""A user's own saliency method, living outside saliency-bench: a factory ``factory(model, **params)``
that returns ``explain(x, target=None) -> Tensor`` shaped like ``x``."""

from __future__ import annotations

import torch


def _gradient(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """d f_c / d x for the batch ``x`` (``target``: class indices; default the predicted class)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        target = out.argmax(1) if target is None else target
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
    return g


def abs_gradient(model: torch.nn.Module, **params):
    """|d f_c / d x|: the magnitude of the gradient (a signal method: invariant, and randomization-sensitive)."""

    def explain(x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return _gradient(model, x, target).abs()

    return explain


def input_times_gradient(model: torch.nn.Module, **params):
    """x * gradient: expected NOT to survive the input shifts."""

    def explain(x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return x.detach() * _gradient(model, x, target)

    return explain
