"""The method registry: ``create(name, model, **params)`` returns an explainer.

An explainer is a callable ``explain(x, target=None) -> Tensor`` shaped like ``x``
(``B x ...``), computed for the whole batch at once. ``target`` is a ``LongTensor[B]``
of class indices, an ``int`` for every sample, or ``None`` for the predicted class.
Methods that need data expose ``needs_fit = True`` and ``fit(loader)``.

Adding a method is one module with a factory decorated by :func:`register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = ["Explainer", "register", "create", "names", "resolve_target", "get_factory"]


@runtime_checkable
class Explainer(Protocol):
    def __call__(self, x: Tensor, target: Tensor | int | None = None) -> Tensor: ...


Factory = Callable[..., Explainer]
_REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(model, **params) -> Explainer`` under ``name``."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"method {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = factory
        return factory

    return deco


def names() -> list[str]:
    """Sorted names of every registered method."""
    return sorted(_REGISTRY)


def get_factory(name: str) -> Factory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "." in name or ":" in name:  # a user's own factory: "package.module:callable" or "package.module.callable"
        mod, _, attr = name.replace(":", ".").rpartition(".")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import method factory {name!r}: {err}") from err
    raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(names())}")


def create(name: str, model: nn.Module, **params: Any) -> Explainer:
    """Build the explainer ``name`` for ``model`` (``params`` are the method's own keyword arguments)."""
    return get_factory(name)(model, **params)


def resolve_target(model: nn.Module, x: Tensor, target: Tensor | int | None) -> Tensor:
    """Return a ``LongTensor[B]`` of class indices on ``x.device`` (``None``: the predicted class)."""
    if target is None:
        with torch.no_grad():
            return model(x).argmax(dim=1)
    if isinstance(target, int):
        return torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
    target = torch.as_tensor(target, device=x.device).long().reshape(-1)
    if target.numel() == 1 and x.shape[0] != 1:
        target = target.expand(x.shape[0])
    if target.shape[0] != x.shape[0]:
        raise ValueError(f"target has {target.shape[0]} entries for a batch of {x.shape[0]}")
    return target
