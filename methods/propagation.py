"""Modified-backward methods on zennit: Guided Backprop, DeconvNet, LRP and Deep Taylor rules.

LRP-family explainers start the backward pass with the target logit (``R = f_c(x)`` on the
target class, zero elsewhere). zennit's relevance flows as the "gradient", and each rule's
hook returns ``R_in = x * W^T (R_out / z)`` (z-rule), so on ReLU networks ``lrp_z`` equals
Gradient x Input, with or without biases (``z`` includes the bias, which absorbs its share);
the input relevance sums to the logit only for a bias-free network. Guided Backprop and
DeconvNet start with the one-hot target, like a gradient.

=================  ==========================================================================
``lrp_z``          Epsilon(stabilizer=1e-12) everywhere = LRP-0 = DTD with the zero root point
``lrp_epsilon``    Epsilon(epsilon) everywhere
``lrp_alpha_beta`` AlphaBeta(alpha, beta) everywhere
``lrp_zplus``      ZPlus everywhere (= alpha 1, beta 0)
``dtd_zbox``       ZBox(low, high) on the first layer (bounds = data domain), ZPlus above
``lrp_composite``  a zennit named composite (``epsilon_plus_flat``, ``epsilon_gamma_box``, ...)
=================  ==========================================================================

"Everywhere" means ``nn.Linear`` and convolutions; activations pass relevance on unchanged,
zennit's ``Sum`` and average pooling get the Norm rule, BatchNorm is merged into the preceding
layer. LRP-family methods refuse (``UnsupportedModelError``, a ``ValueError`` naming the model)
an architecture without a canonizer, see :mod:`methods.canonizers`; ``canonizers=[...]``
overrides the lookup. They also refuse a Linear/conv module called twice in one forward (zennit
keeps one input per module), and check the premise: the canonized model's logits must equal the
model's (to 1e-4 of the largest logit), else ``RuntimeError`` (e.g. a timm release whose block
forward no longer matches the canonizer's copy).

Guided Backprop / DeconvNet rewrite the backward of ``nn.ReLU`` modules. A ReLU applied as a
function (``F.relu``, ``torch.relu``, ``x.relu()``, also other activations) outside an
``nn.ReLU`` module is invisible to hooks and would silently leave the plain gradient there.
Detection: during the explained forward pass a ``TorchFunctionMode`` records every activation
function (``relu``, ``relu_``, ``leaky_relu``, ``gelu``, ``sigmoid``, ``tanh``, ... see
``_ACTIVATIONS``) called while no ``nn.ReLU`` module is running; any such call raises
``ValueError`` naming the model and the functions.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from zennit.canonizers import Canonizer
from zennit.composites import COMPOSITES, LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import AlphaBeta, Epsilon, Norm, Pass, ReLUDeconvNet, ReLUGuidedBackprop, ZBox, ZPlus
from zennit.types import Activation, AvgPool, BatchNorm
from zennit.types import Linear as LinearTypes

from methods.canonizers import canonizers_for
from methods.registry import BaseExplainer, check_logits, register
from methods.state import first_layer_input

__all__ = ["DTDZBox", "DeconvNet", "GuidedBackprop", "LRP", "LRPComposite", "RULES", "ZennitExplainer"]

# torch functions / Tensor methods that are activations: called outside an nn.ReLU module they are a
# non-linearity that Guided Backprop / DeconvNet hooks cannot reach
_ACTIVATIONS = frozenset(
    "relu relu_ relu6 leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ gelu silu silu_ mish prelu "
    "rrelu rrelu_ hardtanh hardtanh_ hardswish hardsigmoid softplus sigmoid sigmoid_ logsigmoid tanh tanh_ "
    "threshold threshold_".split()
)


class _ActivationWatch(TorchFunctionMode):
    """Record activation functions called while no ``nn.ReLU`` module of ``model`` is running."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.depth = 0
        self.outside: list[str] = []
        self._handles = []
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                self._handles.append(m.register_forward_pre_hook(self._enter))
                self._handles.append(m.register_forward_hook(self._leave))

    def _enter(self, module: nn.Module, args: Any) -> None:
        self.depth += 1

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


class _CallCount:
    """Count forward calls of the Linear/conv modules of ``model`` (zennit keeps one input per module)."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: dict[str, int] = {}
        self._handles = [
            m.register_forward_hook(lambda *_a, _n=name: self._count(_n))
            for name, m in model.named_modules()
            if isinstance(m, LinearTypes)
        ]

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class ZennitExplainer(BaseExplainer):
    """Attribution with a zennit composite registered for one forward/backward pass.

    ``relevance=True`` starts the backward pass with the target logit (LRP), else with the
    one-hot target (gradient-like). The composite and its canonizers are removed afterwards,
    also on error.
    """

    relevance: bool = True
    check_activations: bool = False
    method_name: str = "zennit"

    def composite(self, x: Tensor) -> Composite:  # pragma: no cover - abstract
        raise NotImplementedError

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        composite = self.composite(x)
        xg = x.detach().clone().requires_grad_(True)
        reference = None
        if self.canonizers:
            with torch.no_grad():
                reference = self.model(x)
        watch = _ActivationWatch(self.model) if self.check_activations else None
        count = _CallCount(self.model) if self._checks_reused_layers() else None
        try:
            composite.register(self.model)
            if watch is not None:
                with watch:
                    out = self.model(xg)
            else:
                out = self.model(xg)
            check_logits(self.model, out, target)
            self._check(watch, count)
            self._check_canonized(reference, out)
            seed = torch.zeros_like(out).scatter_(1, target[:, None], 1.0)
            if self.relevance:
                seed = seed * out.detach()
            (attr,) = torch.autograd.grad(out, xg, grad_outputs=seed)
        finally:
            composite.remove()
            for helper in (watch, count):
                if helper is not None:
                    helper.remove()
        return attr

    canonizers: Sequence[Canonizer] = ()

    def _checks_reused_layers(self) -> bool:
        """Whether :meth:`attribute` counts the layers' calls (a layer used twice escapes the rules): the
        relevance-propagating rules; a subclass may decouple it from ``relevance``."""
        return self.relevance

    def _check_canonized(self, reference: Tensor | None, out: Tensor) -> None:
        """The canonized model must compute the model's function (premise check, rtol 1e-4 of max |logit|)."""
        if reference is None:
            return
        err = float((out.detach() - reference).abs().max())
        scale = float(reference.abs().max())
        if not err <= 1e-4 * scale + 1e-6:
            raise RuntimeError(
                f"{self.method_name}: the canonizers changed the function of model "
                f"{type(self.model).__name__} (max logit difference {err:.3g} for max |logit| {scale:.3g}); "
                "a canonizer does not match this architecture or library version"
            )

    def _check(self, watch: _ActivationWatch | None, count: _CallCount | None) -> None:
        model = type(self.model).__name__
        if watch is not None and watch.outside:
            raise ValueError(
                f"{self.method_name} rewrites the backward pass of torch.nn.ReLU modules only, but model "
                f"{model} applies {', '.join(watch.outside)} outside an nn.ReLU module. Functional "
                "activations are invisible to hooks (the result would silently be the plain gradient "
                "there): use nn.ReLU modules."
            )
        reused = [name for name, n in (count.calls if count is not None else {}).items() if n > 1]
        if reused:
            raise ValueError(
                f"{self.method_name}: model {model} calls the layer(s) {reused} more than once per forward "
                "pass; zennit rules keep one input per module, so the relevance would be wrong. Use one "
                "module per call."
            )


def _base_map(stabilizer: float = 1e-6) -> list:
    """Rules of the non-linear-layer modules: activations pass relevance on, sums and averages get Norm."""
    return [(Activation, Pass()), (Sum, Norm(stabilizer)), (AvgPool, Norm(stabilizer)), (BatchNorm, Pass())]


@register("guided_backprop")
class GuidedBackprop(ZennitExplainer):
    """Guided Backprop (Springenberg et al. 2015): zennit's ``ReLUGuidedBackprop`` on every ``nn.ReLU``.

    Raises ``ValueError`` naming the model if its forward applies activations outside
    ``nn.ReLU`` modules (see the module docstring).
    """

    relevance = False
    check_activations = True
    method_name = "guided_backprop"

    def composite(self, x: Tensor) -> Composite:
        return LayerMapComposite([(nn.ReLU, ReLUGuidedBackprop())])


@register("deconvnet")
class DeconvNet(GuidedBackprop):
    """DeconvNet (Zeiler & Fergus 2014): zennit's ``ReLUDeconvNet`` on every ``nn.ReLU``; same checks."""

    method_name = "deconvnet"

    def composite(self, x: Tensor) -> Composite:
        return LayerMapComposite([(nn.ReLU, ReLUDeconvNet())])


def _rule_z(stabilizer: float = 1e-12) -> Epsilon:
    return Epsilon(epsilon=float(stabilizer))


def _rule_epsilon(epsilon: float = 0.01) -> Epsilon:
    return Epsilon(epsilon=float(epsilon))


def _rule_alpha_beta(alpha: float = 2.0, beta: float = 1.0) -> AlphaBeta:
    if abs(alpha - beta - 1) > 1e-9 or beta < 0:
        raise ValueError(f"lrp_alpha_beta needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
    return AlphaBeta(alpha=float(alpha), beta=float(beta))


def _rule_zplus() -> ZPlus:
    return ZPlus()


#: the rules of :class:`LRP`: name -> factory of the zennit rule from the rule's own parameters
RULES: dict[str, Callable[..., Any]] = {
    "z": _rule_z, "epsilon": _rule_epsilon, "alpha_beta": _rule_alpha_beta, "zplus": _rule_zplus,
}


class LRP(ZennitExplainer):
    """LRP with one rule on every linear/conv layer (zennit's way: the rule is a parameter, not a class).

    Args:
        model: the network; its canonizers are looked up at construction (fails fast on unknown models).
        rule: a key of :data:`RULES`: ``"z"`` (``stabilizer``, default 1e-12, keeps zero denominators finite and
            is also the Norm rule's stabilizer on sums and average pooling: LRP-0 = DTD with the zero root point,
            equal to Gradient x Input on ReLU networks), ``"epsilon"`` (``epsilon``, default 0.01),
            ``"alpha_beta"`` (``alpha`` 2, ``beta`` 1; ``alpha - beta`` must be 1) or ``"zplus"`` (no parameter).
        canonizers: overrides the lookup of :func:`methods.canonizers.canonizers_for`.
        low, high: the data domain (unused by these rules).
        **rule_params: the rule's parameters.

    Raises ``ValueError`` for an unknown rule or a parameter the rule does not take.
    """

    stabilizer: float = 1e-6  # of the Norm rule on sums and average pooling

    def __init__(
        self,
        model: nn.Module,
        *,
        rule: str = "z",
        canonizers: Sequence[Canonizer] | None = None,
        low: float = 0.0,
        high: float = 1.0,
        **rule_params: Any,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown LRP rule {rule!r}; accepted: {', '.join(RULES)}")
        if type(self) is LRP:  # subclasses name themselves
            self.method_name = f"lrp_{rule}"
        try:
            inspect.signature(RULES[rule]).bind(**rule_params)
        except TypeError:
            accepted = ", ".join(inspect.signature(RULES[rule]).parameters) or "none"
            raise ValueError(f"{self.method_name}: unknown parameter(s) {sorted(rule_params)}; "
                             f"accepted: {accepted}") from None
        self.rule_name, self.rule_params = rule, dict(rule_params)
        RULES[rule](**rule_params)  # validate the values now, not at the first call
        if rule == "z":
            self.stabilizer = float(rule_params.get("stabilizer", 1e-12))
        super().__init__(model, low=low, high=high)
        if canonizers is None:
            canonizers = canonizers_for(model, self.method_name)
        self.canonizers = list(canonizers)

    def rule(self) -> Any:
        """A fresh zennit rule for one composite."""
        return RULES[self.rule_name](**self.rule_params)

    def composite(self, x: Tensor) -> Composite:
        layer_map = _base_map(self.stabilizer) + [(LinearTypes, self.rule())]
        return LayerMapComposite(layer_map, canonizers=self.canonizers)


for _rule in RULES:
    register(f"lrp_{_rule}")(functools.partial(LRP, rule=_rule))


@register("dtd_zbox")
class DTDZBox(LRP):
    """Deep Taylor Decomposition (Montavon et al. 2017): zB rule on the first layer, z+ above.

    The zB bounds are the data domain ``low`` / ``high``: numbers, or tensors shaped like one input (per-element
    bounds; zennit broadcasts them). ``bounds``: how a harness that moves the data gives them: ``"pixel"`` (per
    element: the input-invariance harness moves them with the shift, ``low + m``, ``high + m``, which makes zB
    exactly invariant) or ``"hull"`` (two numbers: the hull of the moved domain, ``low + min m``, ``high + max m``).
    """

    method_name = "dtd_zbox"
    accepts_pixel_bounds = True

    def __init__(self, model: nn.Module, *, canonizers: Sequence[Canonizer] | None = None,
                 low: float | Tensor = 0.0, high: float | Tensor = 1.0, bounds: str = "pixel") -> None:
        if bounds not in ("pixel", "hull"):
            raise ValueError(f"dtd_zbox: bounds must be 'pixel' or 'hull', got {bounds!r}")
        self.bounds = bounds
        super().__init__(model, rule="zplus", canonizers=canonizers, low=low, high=high)

    def _bound(self, bound: float | Tensor, x: Tensor) -> float | Tensor:
        """A per-element bound in the first layer's input layout (numbers stay numbers)."""
        if not isinstance(bound, Tensor):
            return bound
        return first_layer_input(self.model, bound.to(x)[None])[2]  # a batch of one: zennit expands it

    def composite(self, x: Tensor) -> Composite:
        return SpecialFirstLayerMapComposite(
            layer_map=_base_map() + [(LinearTypes, ZPlus())],
            first_map=[(LinearTypes, ZBox(low=self._bound(self.low, x), high=self._bound(self.high, x)))],
            canonizers=self.canonizers,
        )


# zennit composites that modify gradients rather than propagate relevance have their own methods
_NOT_LRP = {"guided_backprop", "deconvnet", "beta_smooth", "excitation_backprop"}


def _composite_class(name: str) -> type:
    lrp = {key: cls for key, cls in COMPOSITES.items() if key not in _NOT_LRP}
    table = {**lrp, **{cls.__name__: cls for cls in lrp.values()}}
    if name not in table:
        raise ValueError(f"unknown LRP composite {name!r}; one of {', '.join(sorted(table))}")
    return table[name]


@register("lrp_composite")
class LRPComposite(LRP):
    """A zennit named composite for CNNs: ``epsilon_plus_flat`` (default), ``epsilon_gamma_box``,
    ``epsilon_alpha2_beta1``, ``epsilon_plus``, ``epsilon_alpha2_beta1_flat`` (or their class names).

    ``composite_params`` (e.g. ``epsilon``, ``gamma``) go to the composite; composites with a zB
    first layer get ``low`` / ``high`` (the data domain) unless given there.
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
        super().__init__(model, rule="zplus", **kwargs)
        self.composite_name = composite
        self.composite_params = dict(composite_params or {})

    def composite(self, x: Tensor) -> Composite:  # type: ignore[override]
        params = dict(self.composite_params)
        accepted = inspect.signature(self.composite_cls).parameters
        if "low" in accepted and "high" in accepted:
            params.setdefault("low", self.low)
            params.setdefault("high", self.high)
        return self.composite_cls(canonizers=self.canonizers, **params)
