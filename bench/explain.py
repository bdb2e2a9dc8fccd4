"""The harness side of the methods: method specs, building (and fitting) explainers, batched explaining.

A :class:`MethodSpec` names a registered method (``name``) or any importable factory
``factory(model, **params) -> explainer`` (``target``, Hydra's ``_target_``), with its parameters and a
``label`` that names it in the results (``integrated_gradients_black`` is ``integrated_gradients`` with
``baseline="black"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import methods

__all__ = ["MethodSpec", "method_specs", "make_explainer", "explain_all", "fit_loader"]


@dataclass
class MethodSpec:
    """One method of a run: ``label`` in the results, ``name`` (registered) or ``target`` (importable), params."""

    label: str
    name: str | None = None
    target: str | Callable[..., Any] | None = None  # an import path, or the factory itself
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def factory_name(self) -> str:
        if self.target:
            return self.target if isinstance(self.target, str) else getattr(self.target, "__qualname__", "factory")
        return self.name or self.label

    def factory(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        return methods.get_factory(self.factory_name)


def method_specs(spec: Iterable[str] | Mapping[str, Any]) -> list[MethodSpec]:
    """Normalize ``["gradient", ...]`` or ``{label: {"name"|"_target_": ..., "params": {...}}}`` to specs."""
    if isinstance(spec, Mapping):
        out = []
        for label, entry in spec.items():
            entry = dict(entry or {})
            unknown = set(entry) - {"name", "_target_", "target", "params"}
            if unknown:
                raise ValueError(f"method {label!r}: unknown keys {sorted(unknown)}; accepted: name, _target_, params")
            out.append(MethodSpec(label, entry.get("name"), entry.get("_target_") or entry.get("target"),
                                  dict(entry.get("params") or {})))
        return out
    return [MethodSpec(name, name) for name in spec]


def fit_loader(x: Tensor, y: Tensor | None = None, batch_size: int = 500) -> list[tuple[Tensor, Tensor]]:
    """A re-iterable list of ``(x, y)`` batches (the fit set of the methods that need data)."""
    y = torch.zeros(len(x), dtype=torch.long) if y is None else y
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def make_explainer(
    spec: MethodSpec,
    model: nn.Module,
    *,
    domain: tuple[float, float],
    fit_data: Iterable | None = None,
    extra: Mapping[str, Any] | None = None,
):
    """Create the explainer of ``spec`` for ``model`` with the data ``domain`` (``low``, ``high``) and fit it
    on ``fit_data`` when the method needs data. ``extra`` params apply only where the factory names them
    and the spec does not set them."""
    factory = spec.factory()
    params = dict(spec.params)
    params.setdefault("low", float(domain[0]))
    params.setdefault("high", float(domain[1]))
    for key, value in (extra or {}).items():
        if key not in params and _names_keyword(factory, key):
            params[key] = value
    for key in ("low", "high"):
        if not methods.registry.accepts(factory, key):
            params.pop(key)
    try:
        explainer = factory(model, **params)
    except TypeError as err:
        raise ValueError(
            f"method {spec.label!r} ({spec.factory_name}) rejected its parameters {params}: {err}"
        ) from err
    if getattr(explainer, "needs_fit", False):
        if fit_data is None:
            raise ValueError(f"method {spec.label!r} needs data (fit) but the run gave it none")
        explainer.fit(fit_data)
    return explainer


def _names_keyword(factory: Any, key: str) -> bool:
    """Whether ``factory`` names ``key`` as a parameter (a ``**kwargs`` catch-all does not count)."""
    import inspect

    try:
        return key in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def explain_all(explainer, x: Tensor, target: Tensor, batch_size: int = 64) -> Tensor:
    """Maps of ``x`` in batches of ``batch_size``; NaN maps raise with the method and the sample indices."""
    maps = torch.cat([explainer(x[i : i + batch_size], target[i : i + batch_size])
                      for i in range(0, len(x), batch_size)])
    if maps.shape != x.shape:
        raise ValueError(f"{explainer!r} returned maps of shape {tuple(maps.shape)} for inputs {tuple(x.shape)}")
    bad = torch.isnan(maps.flatten(1)).any(1)
    if bad.any():
        raise ValueError(f"{explainer!r} produced NaN maps for samples {bad.nonzero().flatten().tolist()[:10]}")
    return maps
