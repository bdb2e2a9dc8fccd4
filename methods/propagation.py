"""Modified-backward methods on zennit: Guided Backprop, DeconvNet, LRP and Deep Taylor rules.

LRP-family explainers start the backward pass with the target logit (``R_out = f_c(x)`` on
the target class, zero elsewhere), so the input relevance sums to the logit for a bias-free
network and ``lrp_z`` equals Gradient x Input on ReLU networks (with or without biases: the
z-rule divides by the full pre-activation including the bias). Guided Backprop and DeconvNet
start with the one-hot target, like a gradient.

Rules per method (``Linear`` = ``nn.Linear`` and convolutions; ReLUs and other activations
pass relevance through, ``Sum``/average pooling get the Norm rule, BatchNorm is merged into
the preceding layer by the canonizers):

=================  ==========================================================================
``lrp_z``          Epsilon(stabilizer) everywhere = LRP-0 = DTD with the zero root point
``lrp_epsilon``    Epsilon(epsilon) everywhere
``lrp_alpha_beta`` AlphaBeta(alpha, beta) everywhere
``lrp_zplus``      ZPlus everywhere (= alpha 1, beta 0)
``dtd_zbox``       ZBox(low, high) on the first layer (bounds = data domain), ZPlus above
``lrp_composite``  a zennit named composite (``epsilon_plus_flat``, ``epsilon_gamma_box``, ...)
=================  ==========================================================================

LRP-family methods refuse (``UnsupportedModelError``, a ``ValueError`` naming the model) an
architecture without a canonizer, see :mod:`methods.canonizers`; ``canonizers=[...]``
overrides the lookup.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from zennit.canonizers import Canonizer
from zennit.composites import COMPOSITES, LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import (
    AlphaBeta,
    Epsilon,
    Norm,
    Pass,
    ReLUDeconvNet,
    ReLUGuidedBackprop,
    ZBox,
    ZPlus,
)
from zennit.types import Activation, AvgPool, BatchNorm
from zennit.types import Linear as LinearTypes

from methods.canonizers import canonizers_for
from methods.gradients import BaseExplainer, _logits, domain_bounds
from methods.registry import register

__all__ = [
    "ZennitExplainer",
    "GuidedBackprop",
    "DeconvNet",
    "LRPZ",
    "LRPEpsilon",
    "LRPAlphaBeta",
    "LRPZPlus",
    "DTDZBox",
    "LRPComposite",
    "check_relu_modules",
]

# torch functions / Tensor methods that are activations: seen outside an nn.ReLU module, they are a
# non-linearity that Guided Backprop / DeconvNet hooks cannot reach
_ACTIVATIONS = frozenset(
    "relu relu_ relu6 leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ gelu silu mish prelu rrelu rrelu_ "
    "hardtanh hardtanh_ hardswish hardsigmoid softplus sigmoid sigmoid_ logsigmoid tanh tanh_ threshold "
    "threshold_".split()
)


class _ActivationWatch(TorchFunctionMode):
    """Record activation functions called while no ``nn.ReLU`` module is running."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.depth = 0
        self.outside: list[str] = []
        self.relu_calls = 0
        self._handles = []
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                self._handles.append(m.register_forward_pre_hook(self._enter))
                self._handles.append(m.register_forward_hook(self._leave))

    def _enter(self, module: nn.Module, args: Any) -> None:
        self.depth += 1
        self.relu_calls += 1

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = getattr(func, "__name__", "")
        if self.depth == 0 and name in _ACTIVATIONS and name not in self.outside:
            self.outside.append(name)
        return func(*args, **(kwargs or {}))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def check_relu_modules(watch: _ActivationWatch, model: nn.Module, method: str) -> None:
    """Raise ``ValueError`` if the forward applied activations outside ``nn.ReLU`` modules."""
    if watch.outside:
        raise ValueError(
            f"{method} rewrites the backward pass of torch.nn.ReLU modules only, but model "
            f"{type(model).__name__} applies {', '.join(watch.outside)} outside an nn.ReLU module "
            f"({watch.relu_calls} nn.ReLU module call(s) seen): ReLUs must be nn.ReLU modules "
            "(functional calls are invisible to hooks, and the result would silently be the plain gradient)."
        )


class ZennitExplainer(BaseExplainer):
    """Attribution with a zennit composite registered for one forward/backward pass.

    ``relevance=True`` starts the backward pass with the target logit (LRP), else with the
    one-hot target (gradient-like). The composite and its canonizers are removed afterwards,
    also on error.
    """

    relevance: bool = True
    check_activations: bool = False

    def composite(self, x: Tensor) -> Composite:  # pragma: no cover - abstract
        raise NotImplementedError

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        composite = self.composite(x)
        xg = x.detach().clone().requires_grad_(True)
        watch = _ActivationWatch(self.model) if self.check_activations else None
        try:
            composite.register(self.model)
            if watch is not None:
                with watch:
                    out = _logits(self.model, xg)
                check_relu_modules(watch, self.model, self.name)
            else:
                out = _logits(self.model, xg)
            seed = torch.zeros_like(out).scatter_(1, target[:, None], 1.0)
            if self.relevance:
                seed = seed * out.detach()
            (attr,) = torch.autograd.grad(out, xg, grad_outputs=seed)
        finally:
            composite.remove()
            if watch is not None:
                watch.remove()
        return attr

    @property
    def name(self) -> str:
        return type(self).__name__


def _base_map() -> list:
    return [(Activation, Pass()), (Sum, Norm()), (AvgPool, Norm()), (BatchNorm, Pass())]


class _LRP(ZennitExplainer):
    """LRP explainer with a canonizer lookup at construction (fails fast on unknown models)."""

    method_name = "LRP"

    def __init__(
        self,
        model: nn.Module,
        *,
        canonizers: Sequence[Canonizer] | None = None,
        low: float | None = None,
        high: float | None = None,
    ) -> None:
        super().__init__(model, low=low, high=high)
        self.canonizers = list(canonizers) if canonizers is not None else canonizers_for(model, self.method_name)

    @property
    def name(self) -> str:
        return self.method_name

    def rule(self, x: Tensor):  # noqa: ANN201
        raise NotImplementedError  # pragma: no cover

    def composite(self, x: Tensor) -> Composite:
        return LayerMapComposite(_base_map() + [(LinearTypes, self.rule(x))], canonizers=self.canonizers)


@register("guided_backprop")
class GuidedBackprop(ZennitExplainer):
    """Guided Backprop (Springenberg et al. 2015) via zennit's ``GuidedBackprop`` composite.

    Raises ``ValueError`` naming the model if its forward applies ReLUs (or other activations)
    outside ``nn.ReLU`` modules, where the hooks cannot reach them.
    """

    relevance = False
    check_activations = True
    name = "guided_backprop"  # type: ignore[assignment]

    def composite(self, x: Tensor) -> Composite:
        return LayerMapComposite([(nn.ReLU, ReLUGuidedBackprop())])


@register("deconvnet")
class DeconvNet(GuidedBackprop):
    """DeconvNet (Zeiler & Fergus 2014) via zennit's ``DeconvNet`` ReLU rule; same ReLU checks."""

    name = "deconvnet"  # type: ignore[assignment]

    def composite(self, x: Tensor) -> Composite:
        return LayerMapComposite([(nn.ReLU, ReLUDeconvNet())])


@register("lrp_z")
class LRPZ(_LRP):
    """LRP-0 / z-rule = DTD with the zero root point: equals Gradient x Input on ReLU networks.

    ``stabilizer`` (default 1e-12) only keeps zero denominators finite (plain eps=0 gives NaN).
    """

    method_name = "lrp_z"

    def __init__(self, model: nn.Module, *, stabilizer: float = 1e-12, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.stabilizer = float(stabilizer)

    def rule(self, x: Tensor) -> Epsilon:
        return Epsilon(epsilon=self.stabilizer)


@register("lrp_epsilon")
class LRPEpsilon(_LRP):
    """LRP-epsilon on every linear/conv layer (``epsilon``, default 0.01, added to the denominators)."""

    method_name = "lrp_epsilon"

    def __init__(self, model: nn.Module, *, epsilon: float = 0.01, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.epsilon = float(epsilon)

    def rule(self, x: Tensor) -> Epsilon:
        return Epsilon(epsilon=self.epsilon)


@register("lrp_alpha_beta")
class LRPAlphaBeta(_LRP):
    """LRP-alpha-beta on every linear/conv layer (default alpha=2, beta=1; alpha - beta must be 1)."""

    method_name = "lrp_alpha_beta"

    def __init__(self, model: nn.Module, *, alpha: float = 2.0, beta: float = 1.0, **kwargs: Any) -> None:
        if alpha - beta != 1 or beta < 0:
            raise ValueError(f"lrp_alpha_beta needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
        super().__init__(model, **kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def rule(self, x: Tensor) -> AlphaBeta:
        return AlphaBeta(alpha=self.alpha, beta=self.beta)


@register("lrp_zplus")
class LRPZPlus(_LRP):
    """LRP z+ (= alpha 1, beta 0; DTD's rule for ReLU layers) on every linear/conv layer."""

    method_name = "lrp_zplus"

    def rule(self, x: Tensor) -> ZPlus:
        return ZPlus()


@register("dtd_zbox")
class DTDZBox(_LRP):
    """Deep Taylor Decomposition: zB rule on the first layer, z+ above (Montavon et al. 2017).

    The zB bounds are the data domain ``low``/``high`` (they move with a shifted encoding);
    without them, each sample's min / max is used.
    """

    method_name = "dtd_zbox"

    def composite(self, x: Tensor) -> Composite:
        lo, hi = domain_bounds(x, self.low, self.high)
        return SpecialFirstLayerMapComposite(
            layer_map=_base_map() + [(LinearTypes, ZPlus())],
            first_map=[(LinearTypes, ZBox(low=lo, high=hi))],
            canonizers=self.canonizers,
        )


# zennit composites that modify gradients rather than propagate relevance: use their own methods
_NOT_LRP = {"guided_backprop", "deconvnet", "beta_smooth", "excitation_backprop"}


def _composite_class(name: str) -> type:
    lrp = {key: cls for key, cls in COMPOSITES.items() if key not in _NOT_LRP}
    table = {**lrp, **{cls.__name__: cls for cls in lrp.values()}}
    if name not in table:
        raise ValueError(f"unknown LRP composite {name!r}; one of {', '.join(sorted(table))}")
    return table[name]


@register("lrp_composite")
class LRPComposite(_LRP):
    """A zennit named composite for CNNs: ``epsilon_plus_flat`` (default), ``epsilon_gamma_box``,
    ``epsilon_alpha2_beta1``, ``epsilon_plus``, ``epsilon_alpha2_beta1_flat`` (or class names).

    ``composite_params`` (e.g. ``epsilon``, ``gamma``) go to the composite; ``low``/``high``
    (the data domain; else each sample's min / max) feed composites with a zB first layer.
    """

    method_name = "lrp_composite"

    def __init__(
        self,
        model: nn.Module,
        *,
        composite: str = "epsilon_plus_flat",
        composite_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.composite_cls = _composite_class(composite)
        super().__init__(model, **kwargs)
        self.composite_name = composite
        self.composite_params = dict(composite_params or {})

    def composite(self, x: Tensor) -> Composite:  # type: ignore[override]
        params = dict(self.composite_params)
        accepted = inspect.signature(self.composite_cls).parameters
        if "low" in accepted and "high" in accepted:
            lo, hi = domain_bounds(x, self.low, self.high)
            params.setdefault("low", lo)
            params.setdefault("high", hi)
        return self.composite_cls(canonizers=self.canonizers, **params)
