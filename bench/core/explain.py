"""The harness side of the methods: method specs, building (and fitting) explainers, batched explaining.

A :class:`MethodSpec` names a registered method (``name``) or any factory ``factory(model, **params) ->
explainer`` (``_target_``: an import path, as in the config files, or the callable itself), with its parameters
and a ``label`` that names it in the results (``integrated_gradients_black`` is ``integrated_gradients`` with
``baseline="black"``). The same class is the entry type of the ``method`` config group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035  (OmegaConf reads MethodSpec as a config entry)

import torch
from torch import Tensor, nn

import methods

__all__ = ["MethodSpec", "method_specs", "make_explainer", "explain_all", "fit_loader", "predict", "names_keyword"]


@dataclass
class MethodSpec:
    """One method of a run.

    ``label``: its name in the results (the config's key; default ``name``); ``name``: a registered method
    (:func:`methods.names`); ``_target_``: or a factory, as ``"package.module:factory"`` or the callable;
    ``params``: the factory's keyword arguments.
    """

    label: Optional[str] = None  # noqa: UP045
    name: Optional[str] = None  # noqa: UP045
    _target_: Any = None
    params: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006

    @property
    def factory_name(self) -> str:
        if self._target_:
            target = self._target_
            return target if isinstance(target, str) else getattr(target, "__qualname__", "factory")
        return self.name or self.label or "?"

    def factory(self) -> Callable[..., Any]:
        """The factory: the callable ``_target_``, or the one :func:`methods.get_factory` finds."""
        if callable(self._target_):
            return self._target_
        return methods.get_factory(self.factory_name)


def method_specs(spec: Iterable[str | MethodSpec] | Mapping[str, Any]) -> list[MethodSpec]:
    """Normalize names, :class:`MethodSpec` objects, or ``{label: MethodSpec | {"name"|"_target_": ...,
    "params": {...}}}`` to a list of specs with labels. Raises ``ValueError`` naming an unknown key."""
    if isinstance(spec, Mapping):
        out = []
        for label, entry in spec.items():
            if isinstance(entry, MethodSpec):
                out.append(dataclasses.replace(entry, label=entry.label or label, params=dict(entry.params)))
                continue
            entry = dict(entry or {})
            unknown = set(entry) - {"name", "_target_", "params"}
            if unknown:
                raise ValueError(f"method {label!r}: unknown keys {sorted(unknown)}; accepted: name, _target_, params")
            out.append(MethodSpec(label, entry.get("name"), entry.get("_target_"), dict(entry.get("params") or {})))
        return out
    return [s if isinstance(s, MethodSpec) else MethodSpec(s, s) for s in spec]


def fit_loader(x: Tensor, y: Tensor | None = None, batch_size: int = 500) -> list[tuple[Tensor, Tensor]]:
    """A re-iterable list of ``(x, y)`` batches (the fit set of the methods that need data)."""
    y = torch.zeros(len(x), dtype=torch.long) if y is None else y
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def make_explainer(
    spec: MethodSpec,
    model: nn.Module,
    *,
    domain: tuple[float, float],
    pixel_domain: tuple[Tensor, Tensor] | None = None,
    fit_data: Iterable | None = None,
    extra: Mapping[str, Any] | None = None,
):
    """Create the explainer of ``spec`` for ``model`` with the data ``domain`` (``low``, ``high``) and fit it
    on ``fit_data`` when the method needs data. ``pixel_domain``: per-element bounds shaped like one input, given
    instead to methods that take them (``accepts_pixel_bounds``, e.g. ``dtd_zbox`` unless its ``bounds`` is
    ``"hull"``). ``extra`` params apply only where the factory names them and the spec does not set them."""
    factory = spec.factory()
    params = dict(spec.params)
    per_pixel = pixel_domain is not None and getattr(factory, "accepts_pixel_bounds", False) \
        and params.get("bounds", "pixel") == "pixel"
    params.setdefault("low", pixel_domain[0] if per_pixel else float(domain[0]))
    params.setdefault("high", pixel_domain[1] if per_pixel else float(domain[1]))
    for key, value in (extra or {}).items():
        if key not in params and names_keyword(factory, key):
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


def names_keyword(factory: Any, key: str) -> bool:
    """Whether ``factory`` names ``key`` as a parameter (a ``**kwargs`` catch-all does not count)."""
    import inspect

    try:
        return key in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def explain_all(explainer, x: Tensor, target: Tensor, batch_size: int = 64) -> Tensor:
    """Maps of ``x`` in batches of ``batch_size``.

    Raises ``ValueError`` for maps not shaped like ``x`` and :class:`~methods.registry.NonFiniteError` for NaN or
    infinite maps, naming the method and the samples (the harness checks inputs and logits first, in
    :func:`predict`, so what is left to blame is the method)."""
    from methods.registry import check_finite

    maps = torch.cat([explainer(x[i : i + batch_size], target[i : i + batch_size])
                      for i in range(0, len(x), batch_size)])
    if maps.shape != x.shape:
        raise ValueError(f"{explainer!r} returned maps of shape {tuple(maps.shape)} for inputs {tuple(x.shape)}")
    check_finite(maps, f"the maps of {explainer!r}", " for finite inputs and logits: the method produced them")
    return maps


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 64, what: str = "the evaluated inputs") -> Tensor:
    """The predicted classes ``LongTensor[B]`` of ``x`` in batches, the model in eval mode (its mode restored).

    Raises :class:`~methods.registry.NonFiniteError` when ``x`` (named ``what``) or the model's logits hold NaN
    or infinite values, naming which and the samples."""
    from methods.registry import check_finite
    from methods.state import eval_mode

    check_finite(x, what)
    with eval_mode(model):
        logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    check_finite(logits, f"the logits of {type(model).__name__} on {what}", ": the model produces them")
    return logits.argmax(1)
