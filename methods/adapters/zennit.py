"""zennit's named composites behind the registry: ``methods.create("zennit:<Composite>", model, **params)``.

``<Composite>`` is a zennit composite by class name (``EpsilonPlusFlat``) or by zennit's registry key
(``epsilon_plus_flat``): every entry of ``zennit.composites.COMPOSITES`` (:func:`supported`). The map is zennit's
``Gradient`` attributor with that composite: the modified gradient of the model's output at the target, the output
relevance being the one-hot of the target (``relevance=True``: the one-hot times the target logit, the convention of
our ``lrp_*`` methods, which scales each sample's map by its logit).

It runs on the project's zennit machinery (:class:`methods.propagation.ZennitExplainer`): the composite is
registered for one forward/backward pass and removed after, also on error; the model runs in eval mode with frozen
parameters.

* LRP-type composites (rules on the linear / conv layers: ``EpsilonPlus``, ``EpsilonPlusFlat``, ``EpsilonGammaBox``,
  ``EpsilonAlpha2Beta1``, ``EpsilonAlpha2Beta1Flat``, ``ExcitationBackprop``) get the model's canonizers
  (:func:`methods.canonizers.canonizers_for`: BatchNorm merged, residual sums through a ``Sum`` module; an unknown
  architecture is refused with ``UnsupportedModelError``), the premise check that the canonized model computes the
  model's logits, and the check that no linear / conv module runs twice in a forward pass (zennit keeps one input
  per module).
* ReLU-rewriting composites (``GuidedBackprop``, ``DeconvNet``, ``BetaSmooth``) need no canonizer (as our
  ``guided_backprop``), and refuse a model that applies activations as functions outside ``nn.ReLU`` modules (they
  would silently keep the plain gradient there).

``canonizers=[...]`` overrides the lookup. Other keywords go to the composite (``epsilon``, ``gamma``,
``stabilizer``, ``beta_smooth``, ``zero_params``, ...); a composite with a zB first layer (``EpsilonGammaBox``) gets
``low`` / ``high`` from the harness's data domain unless given: two numbers, or tensors shaped like one input
(per-element bounds, as ``dtd_zbox``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from zennit.canonizers import Canonizer
from zennit.composites import COMPOSITES
from zennit.core import Composite

from methods.canonizers import canonizers_for
from methods.propagation import ZennitExplainer
from methods.state import first_layer_input

__all__ = ["ZennitCompositeExplainer", "composite_class", "factory", "passes_per_map", "supported"]

#: composites that only rewrite the backward pass of ``nn.ReLU`` modules (no rule on linear / conv layers)
RELU_COMPOSITES = frozenset({"guided_backprop", "deconvnet", "beta_smooth"})

#: the composite keywords the adapter fills itself
_OWN = ("canonizers", "low", "high")


def supported() -> list[str]:
    """The composites by class name (zennit's registry keys are accepted too)."""
    return [cls.__name__ for cls in COMPOSITES.values()]


def composite_class(name: str) -> tuple[str, type]:
    """``(registry key, class)`` of a zennit composite named by class name or registry key; ``ValueError`` naming the
    supported ones for an unknown name."""
    for key, cls in COMPOSITES.items():
        if name in (key, cls.__name__):
            return key, cls
    raise ValueError(f"unknown zennit composite {name!r} for 'zennit:<Composite>'; supported: "
                     f"{', '.join(supported())} (or their keys: {', '.join(COMPOSITES)})")


def factory(name: str):
    """``factory(model, canonizers=None, relevance=False, low=0.0, high=1.0, **composite_params) -> explainer`` of
    the zennit composite ``name`` (see the module docstring)."""
    key, cls = composite_class(name)

    def make(model: nn.Module, *, canonizers: Sequence[Canonizer] | None = None, relevance: bool = False,
             low: float | Tensor = 0.0, high: float | Tensor = 1.0, **composite_params: Any
             ) -> ZennitCompositeExplainer:
        return ZennitCompositeExplainer(model, name, canonizers=canonizers, relevance=relevance, low=low, high=high,
                                        **composite_params)

    make.__name__ = make.__qualname__ = f"zennit_{cls.__name__}"
    make.__doc__ = f"zennit's {cls.__name__} composite as an explainer (methods.adapters.zennit)."
    # the harness hands per-element bounds to a factory that takes them (bench.core.explain.make_explainer)
    make.accepts_pixel_bounds = _takes_bounds(cls)  # type: ignore[attr-defined]
    make.passes_per_map = functools.partial(passes_per_map, name)  # type: ignore[attr-defined]
    return make


def _takes_bounds(cls: type) -> bool:
    params = inspect.signature(cls).parameters
    return "low" in params and "high" in params


class ZennitCompositeExplainer(ZennitExplainer):
    """A zennit named composite as an explainer (built by :func:`factory`; see the module docstring)."""

    def __init__(self, model: nn.Module, composite: str, *, canonizers: Sequence[Canonizer] | None = None,
                 relevance: bool = False, low: float | Tensor = 0.0, high: float | Tensor = 1.0,
                 **composite_params: Any) -> None:
        self.key, self.composite_cls = composite_class(composite)
        self.method_name = f"zennit:{self.composite_cls.__name__}"
        self.accepts_pixel_bounds = _takes_bounds(self.composite_cls)
        accepted = [k for k in inspect.signature(self.composite_cls).parameters if k not in _OWN]
        unknown = sorted(set(composite_params) - set(accepted))
        if unknown:
            raise ValueError(f"{self.method_name}: unknown parameter(s) {unknown}; accepted: canonizers, relevance"
                             f"{''.join(', ' + k for k in accepted)}")
        super().__init__(model, low=low, high=high)
        self.relevance = bool(relevance)
        self.rewrites_relu = self.key in RELU_COMPOSITES
        self.check_activations = self.rewrites_relu
        self.composite_params = dict(composite_params)
        if canonizers is None:
            canonizers = [] if self.rewrites_relu else canonizers_for(model, self.method_name)
        self.canonizers = list(canonizers)
        self.composite(None)  # the composite's own checks of its parameters, now rather than at the first call

    def _bound(self, bound: float | Tensor, x: Tensor | None) -> float | Tensor:
        """A per-element bound in the first layer's input layout (numbers stay numbers), as ``dtd_zbox``."""
        if not isinstance(bound, Tensor) or x is None:
            return bound
        return first_layer_input(self.model, bound.to(x)[None])[2]

    def composite(self, x: Tensor | None) -> Composite:
        params = dict(self.composite_params)
        if self.accepts_pixel_bounds:
            params.setdefault("low", self._bound(self.low, x))
            params.setdefault("high", self._bound(self.high, x))
        return self.composite_cls(canonizers=self.canonizers, **params)

    def _checks_reused_layers(self) -> bool:
        # the reused-layer check of LRP-type composites, decoupled from the one-hot / logit output relevance
        return not self.rewrites_relu

    def __repr__(self) -> str:
        return f"{self.method_name}({type(self.model).__name__})"


def passes_per_map(name: str, params: Any = None, model: Any = None, input_shape: Any = None) -> int:
    """One modified backward pass per map of one sample, whatever the composite (the signature matches
    :func:`methods.adapters.cam.passes_per_map`)."""
    composite_class(name)
    return 1
