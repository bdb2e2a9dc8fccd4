"""Captum's attribution classes behind the registry's call signature: ``methods.create("captum:<Class>", model,
**params)``.

``factory(class_name)`` returns ``factory(model, *, low=0.0, high=1.0, **params) -> explainer``; the explainer is a
:class:`~methods.registry.BaseExplainer` (``explain(x, target=None)``: maps shaped like ``x``, batched, on ``x``'s
device; ``target`` ``None`` = the predicted class; the model runs in eval mode with frozen parameters, its modes,
``requires_grad`` flags, ``.grad`` and attributes left as found). Supported classes: :data:`SUPPORTED`.

Parameters pass through by name to the class's constructor or to its ``attribute(...)`` (``inputs``, ``target``,
``additional_forward_args`` and the model are the adapter's); a name that neither takes (nor the adapter, below) is a
``ValueError`` naming the class and every accepted name. Captum's defaults stay captum's, except where this table
says otherwise:

=========================  =======================================================================================
``baselines``              also ``baseline`` (an alias): a number, a tensor, or ``"zero"`` (captum's default),
                           ``"black"`` (every feature at ``low``, the data domain's minimum: it moves with a shifted
                           encoding) or ``"white"`` (``high``). DeepLiftShap / GradientShap: ``"data"`` (default),
                           ``n_baselines`` (16) training inputs drawn in ``fit(loader)`` with a generator seeded by
                           ``seed`` (0), so ``needs_fit = True``; or a tensor ``[N, ...]`` of baselines
feature_mask               FeatureAblation, ShapleyValueSampling, Lime, KernelShap: ``"pixel"`` (default: one feature
                           per spatial position, shared by the channels of ``[B, C, ...]`` inputs; per element for
                           ``[B, F]``), ``"element"`` (every scalar its own feature: captum's default), ``"gridK"``
                           (``K x K`` patches over the spatial dims, e.g. ``"grid4"``; ``K`` consecutive features
                           for ``[B, F]``), or a tensor of feature ids
sliding_window_shapes      Occlusion: default ``(C, 4, 4)`` for ``C x H x W`` (each spatial size capped at the
                           input's; ``(4,)`` for ``[B, F]``); an int ``k`` means ``(C, k, k)``
strides                    Occlusion: default half the window, rounded up (``(C, 2, 2)`` for the default window)
stdevs                     NoiseTunnel: default ``sigma`` when given (the factory's keyword: the harness's absolute
                           std, which the invariance test sets alike for a network and its twin), else
                           ``0.15 * (high - low)`` (SmoothGrad's 15 % noise level; captum's default is 1.0, absolute)
base                       NoiseTunnel: the wrapped class (default ``"Saliency"``; not DeepLiftShap, which
                           NoiseTunnel cannot hand a baseline distribution); loose parameters go to NoiseTunnel's
                           ``attribute`` when it takes them, else to the base; ``base_params={...}`` sends them to
                           the base only (e.g. GradientShap's own ``stdevs``). Over GradientShap,
                           ``draw_baseline_from_distrib`` defaults to True (captum requires it for ``[N, ...]``)
seed                       the classes that draw random numbers (GradientShap, ShapleyValueSampling, Lime,
                           KernelShap, NoiseTunnel; DeepLiftShap / GradientShap's ``fit``): default 0. Captum draws
                           from torch's (and, for GradientShap / NoiseTunnel's baseline draws, NumPy's) global
                           generators; the adapter seeds them with ``seed`` inside a fork at every call (global
                           states restored after), so a map is a function of the batch and ``seed``. The draws are
                           made on ``x``'s device: CPU and CUDA maps differ.
return_convergence_delta   the delta is kept in ``last_convergence_delta``; the call still returns the maps
=========================  =======================================================================================

Saliency keeps captum's ``abs=True`` default (pass ``abs=False`` for the signed gradient); LRP is captum's epsilon
rule (1e-9) on every Linear / Conv2d / pooling / BatchNorm2d layer: on a ReLU network it equals Gradient x Input.
Captum's LRP has no rule for ``nn.Flatten``: the adapter gives ``nn.Flatten`` / ``nn.Unflatten`` / ``nn.Identity``
a rule that passes the relevance on unchanged (a reshape), removed after the call.

**The silent-gradient guard.** Captum's GuidedBackprop and Deconvolution rewrite the backward pass of ``nn.ReLU``
modules, DeepLift / DeepLiftShap that of the module types in captum's ``SUPPORTED_NON_LINEAR`` (ReLU, ELU,
LeakyReLU, Sigmoid, Tanh, Softplus, MaxPool, Softmax), LRP that of ReLU / Dropout / Tanh modules. An activation
applied as a function (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.gelu``, ...) outside those modules is invisible
to the hooks, and the method silently computes the plain gradient there. Two checks:

1. before attributing, one forward pass (no backward) records every activation function called while none of the
   hooked modules is running (:class:`methods.propagation._ActivationWatch`); any is a :class:`SilentGradientError`
   (a ``ValueError``) naming the module that applied it. Exception: for LRP a functional ``relu`` is harmless (LRP
   passes relevance through a ReLU, and the ReLU's gradient mask zeroes only units whose relevance is already zero:
   measured equal to the module version), so LRP refuses the other functional activations only.
2. after GuidedBackprop / Deconvolution / DeepLift / DeepLiftShap (also as NoiseTunnel's base) the map is compared
   with what the unhooked backward pass would give on the same batch (the input gradient; DeepLift: ``(x - x0)``
   times it, ``x0`` the baseline or the baselines' mean): equal to 1e-5 of each sample's largest value on every
   sample with a non-zero reference is a :class:`SilentGradientError` ("captum:GuidedBackprop returned the plain
   gradient on this batch: ..."). One extra backward pass per map (NoiseTunnel: the base once more on the clean
   batch, plus the gradient). A model that is linear where it matters (no rewritten unit changes the signal) is
   refused too: the map would not be the method's. Not for LRP: LRP-epsilon on ReLU networks equals Gradient x
   Input by construction.

An explainer that fails raises; the experiments record the exception as the method's failure, with its message.

**Costs.** :func:`passes_per_map` (also ``factory(name).passes_per_map(params, model, input_shape)`` and
``explainer.passes_per_map(input_shape)``) gives the model evaluations of one sample's map, counted as sample rows
through the forward pass, the guard's included: forward-only for the perturbation classes (:data:`FORWARD_ONLY`),
mostly forward + backward for the others.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from methods.registry import BaseExplainer

__all__ = [
    "FORWARD_ONLY",
    "SUPPORTED",
    "CaptumExplainer",
    "SilentGradientError",
    "factory",
    "feature_mask",
    "passes_per_map",
]

SUPPORTED = (
    "Saliency", "IntegratedGradients", "InputXGradient", "GuidedBackprop", "Deconvolution", "DeepLift",
    "DeepLiftShap", "GradientShap", "Occlusion", "FeatureAblation", "ShapleyValueSampling", "Lime", "KernelShap",
    "LRP", "NoiseTunnel",
)
#: perturbation classes: their passes are forward passes only (no backward)
FORWARD_ONLY = frozenset({"Occlusion", "FeatureAblation", "ShapleyValueSampling", "Lime", "KernelShap"})
_RANDOM = frozenset({"GradientShap", "ShapleyValueSampling", "Lime", "KernelShap", "NoiseTunnel"})
_DATA_BASELINES = frozenset({"DeepLiftShap", "GradientShap"})
_MASKED = frozenset({"FeatureAblation", "ShapleyValueSampling", "Lime", "KernelShap"})
#: classes whose hooks rewrite the backward pass of some module types (the silent-gradient guard)
_HOOKED = frozenset({"GuidedBackprop", "Deconvolution", "DeepLift", "DeepLiftShap", "LRP"})
#: of those, the ones whose map is compared with the plain one after the call
_COMPARED = frozenset({"GuidedBackprop", "Deconvolution", "DeepLift", "DeepLiftShap"})
# arguments the adapter supplies itself
_OWN_CTOR = {"self", "forward_func", "model", "attribution_method"}
_OWN_ATTR = {"self", "inputs", "target", "additional_forward_args"}
_NT_OWN = ("nt_type", "nt_samples", "nt_samples_batch_size", "stdevs", "draw_baseline_from_distrib")
_EXTRA = "pip install 'saliency-bench[captum]'"
_TOL = 1e-5  # the guard's relative tolerance
# captum's warnings about what the adapter does on purpose (hooks removed after the call, inputs needing grad)
_QUIET = ("Setting backward hooks on ReLU", "Setting forward, backward hooks and attributes",
          "did not already require gradients", "required_grads has been set automatically",
          "multiple inputs for Lime / Kernel SHAP")


class SilentGradientError(ValueError):
    """A modified-backward method would return (or returned) the plain gradient: its hooks cannot see the model's
    activations (functional calls), or they changed nothing on the batch."""


def _captum() -> Any:
    try:
        return importlib.import_module("captum.attr")
    except ImportError as err:
        raise ImportError(f"the captum adapter (methods.create('captum:<Class>')) needs captum: {_EXTRA}") from err


def _check_class(class_name: str) -> None:
    if class_name not in SUPPORTED:
        raise ValueError(f"unknown captum class {class_name!r}; supported: {', '.join(SUPPORTED)}")


# ------------------------------------------------------------------------------------------------ feature masks


def _grid(spec: str) -> int:
    if spec == "pixel":
        return 1
    m = re.fullmatch(r"grid(\d+)", spec)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"feature_mask {spec!r}: one of 'pixel', 'element', 'gridK' (K >= 1, e.g. 'grid4') or a "
                         "tensor of feature ids")
    return int(m.group(1))


def feature_mask(spec: str | Tensor, input_shape: Sequence[int]) -> Tensor:
    """The feature ids ``LongTensor[1, *input_shape]`` (ids ``0 .. n-1``) of a mask ``spec`` for one input of shape
    ``input_shape``: ``"pixel"``, ``"element"``, ``"gridK"`` (module docstring) or a tensor (returned as long)."""
    shape = tuple(int(s) for s in input_shape)
    if isinstance(spec, Tensor):
        return spec.long()
    if spec == "element":
        return torch.arange(math.prod(shape)).reshape(1, *shape)
    k = _grid(spec)
    spatial = shape[1:] if len(shape) >= 2 else shape
    ids = torch.zeros((), dtype=torch.long)
    for size in spatial:  # row-major over the patch grid
        cells = -(-size // k)
        ids = ids[..., None] * cells + (torch.arange(size) // k)
    if len(shape) >= 2:
        ids = ids.expand(shape[0], *spatial)
    return ids.reshape(1, *shape).contiguous()


def _n_features(spec: str | Tensor, input_shape: Sequence[int]) -> int:
    if isinstance(spec, Tensor):
        return int(spec.max()) + 1 if spec.numel() else 0
    return int(feature_mask(spec, input_shape).max()) + 1


# ------------------------------------------------------------------------------------------------ occlusion


def _window(window: Any, input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if window is None:
        window = 4
    if isinstance(window, int):
        if len(shape) == 1:
            return (min(window, shape[0]),)
        return (shape[0],) + tuple(min(window, s) for s in shape[1:])
    window = tuple(int(w) for w in window)
    if len(window) != len(shape):
        raise ValueError(f"captum:Occlusion: sliding_window_shapes {window} needs one size per input dimension "
                         f"{shape}")
    return window


def _strides(strides: Any, window: tuple[int, ...], input_shape: Sequence[int]) -> tuple[int, ...]:
    if strides is None:
        shape = tuple(int(s) for s in input_shape)
        return tuple(w if w == s else max(1, -(-w // 2)) for w, s in zip(window, shape, strict=True))
    if isinstance(strides, int):
        return (strides,) * len(window)
    strides = tuple(int(s) for s in strides)
    if len(strides) != len(window):
        raise ValueError(f"captum:Occlusion: strides {strides} needs one step per input dimension {tuple(input_shape)}")
    return strides


def _n_windows(window: tuple[int, ...], strides: tuple[int, ...], input_shape: Sequence[int]) -> int:
    """Captum's count: ``prod(ceil((size - window) / stride) + 1)`` over the dimensions."""
    return math.prod(-(-(int(s) - w) // st) + 1 for s, w, st in zip(input_shape, window, strides, strict=True))


# ------------------------------------------------------------------------------------------------ costs


def passes_per_map(class_name: str, params: Mapping[str, Any] | None = None, model: nn.Module | None = None,
                   input_shape: Sequence[int] | None = None) -> int:
    """Model evaluations of one map of one input of shape ``input_shape`` (no batch dimension; needed by Occlusion,
    FeatureAblation and ShapleyValueSampling, else a ``ValueError``) for ``captum:<class_name>`` with ``params``
    (captum's defaults and the adapter's filled in), counted as sample rows through the model's forward pass: exactly
    what a call costs (``tests/test_adapters_captum.py`` counts them). ``model`` is not needed (the signature is
    :func:`methods.adapters.cam.passes_per_map`'s).

    Perturbation classes (:data:`FORWARD_ONLY`: forward passes only): Occlusion ``windows + 1``, FeatureAblation
    ``features + 1``, ShapleyValueSampling ``n_samples x features + 1`` (features of the mask, ``"pixel"`` by
    default; captum's ``n_samples`` 25), Lime / KernelShap ``n_samples + 1`` (25 + 1). Gradient classes (each row
    also takes a backward pass): Saliency, InputXGradient 1; IntegratedGradients ``n_steps`` (50); GradientShap
    ``n_samples`` (5); DeepLift 2 (input and baseline rows); DeepLiftShap ``2 x n_baselines``; LRP 2 (a forward
    records the activations); GuidedBackprop / Deconvolution 1; NoiseTunnel ``nt_samples`` (5) x the base's. The
    silent-gradient guard adds one forward-only row (the activation check: GuidedBackprop, Deconvolution, DeepLift,
    DeepLiftShap, LRP) and one gradient row (the comparison: not LRP); under NoiseTunnel the comparison runs the base
    once more on the clean batch."""
    _check_class(class_name)
    p = dict(params or {})
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    if class_name == "NoiseTunnel":
        base = p.get("base") or "Saliency"
        _check_class(base)
        base_params = {k: v for k, v in p.items() if k not in _NT_OWN and k not in ("base", "base_params", "seed")}
        base_params.update(p.get("base_params") or {})
        core = _core_rows(base, base_params, shape)
        nt = int(p.get("nt_samples") or 5)
        return nt * core + (base in _HOOKED) + ((core + 1) if base in _COMPARED else 0)
    return _core_rows(class_name, p, shape) + (class_name in _HOOKED) + (class_name in _COMPARED)


def _core_rows(class_name: str, p: Mapping[str, Any], shape: tuple[int, ...] | None) -> int:
    """:func:`passes_per_map` without the guard's rows."""
    if shape is None and class_name in ("Occlusion", "FeatureAblation", "ShapleyValueSampling"):
        raise ValueError(f"the cost of captum:{class_name} grows with the input's size: pass input_shape")

    def get(key: str, default: Any) -> Any:
        value = p.get(key)
        return default if value is None else value

    fixed = {"Saliency": 1, "InputXGradient": 1, "GuidedBackprop": 1, "Deconvolution": 1, "DeepLift": 2, "LRP": 2}
    if class_name in fixed:
        return fixed[class_name]
    if class_name == "IntegratedGradients":
        return int(get("n_steps", 50))
    if class_name == "GradientShap":
        return int(get("n_samples", 5))
    if class_name == "DeepLiftShap":
        base = p.get("baselines", p.get("baseline", "data"))
        return 2 * (int(base.shape[0]) if isinstance(base, Tensor) else int(get("n_baselines", 16)))
    if class_name == "Occlusion":
        window = _window(p.get("sliding_window_shapes"), shape)
        return _n_windows(window, _strides(p.get("strides"), window, shape), shape) + 1
    if class_name in ("Lime", "KernelShap"):  # the perturbed samples and the input
        return int(get("n_samples", 25)) + 1
    n_features = _n_features(get("feature_mask", "pixel"), shape)
    if class_name == "FeatureAblation":
        return n_features + 1
    return int(get("n_samples", 25)) * n_features + 1  # ShapleyValueSampling


# ------------------------------------------------------------------------------------------------ the guard


@functools.cache
def _watch_class() -> type:
    # private to methods.propagation (the zennit methods' check); reused here so that both guards see the same
    # activation functions (propagation._ACTIVATIONS)
    from methods.propagation import _ActivationWatch

    class Watch(_ActivationWatch):
        """``_ActivationWatch`` for the module types a captum class hooks, recording which module applies each
        activation function seen outside them."""

        def __init__(self, model: nn.Module, hooked: Any) -> None:
            super().__init__(nn.Module())  # no nn.ReLU hooks: this class chooses the hooked modules
            self.where: dict[str, str] = {}
            self._stack: list[str] = []
            for name, m in model.named_modules():
                label = f"{name} ({type(m).__name__})" if name else f"{type(m).__name__} (the model's own forward)"
                self._handles.append(m.register_forward_pre_hook(lambda *_a, _l=label: self._stack.append(_l)))
                self._handles.append(m.register_forward_hook(lambda *_a: self._pop()))
                if hooked(m):
                    self._handles.append(m.register_forward_pre_hook(self._enter))
                    self._handles.append(m.register_forward_hook(self._leave))

        def _pop(self) -> None:  # a forward hook's return value would replace the module's output
            self._stack.pop()

        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            name = getattr(func, "__name__", "")
            if self.depth == 0 and name not in self.outside and self._stack:
                self.where.setdefault(name, self._stack[-1])
            return super().__torch_function__(func, types, args, kwargs)

    return Watch


def _hooked_types(class_name: str) -> tuple[Any, str, frozenset[str]]:
    """``(is_hooked(module), what captum hooks, exempt functions)`` of a class of :data:`_HOOKED`."""
    if class_name in ("GuidedBackprop", "Deconvolution"):
        return (lambda m: isinstance(m, nn.ReLU)), "torch.nn.ReLU modules", frozenset()
    if class_name == "LRP":
        from captum.attr._core.lrp import SUPPORTED_NON_LINEAR_LAYERS as lrp_types

        names = ", ".join(t.__name__ for t in lrp_types)
        return (lambda m: type(m) in lrp_types), f"{names} modules", frozenset({"relu", "relu_"})
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR as dl_types

    names = ", ".join(t.__name__ for t in dl_types)
    return (lambda m: type(m) in dl_types), f"{names} modules", frozenset()


def _check_activations(name: str, class_name: str, model: nn.Module, x: Tensor) -> None:
    """Line 1 of the guard: one forward pass recording functional activations outside the hooked modules."""
    hooked, what, exempt = _hooked_types(class_name)
    watch = _watch_class()(model, hooked)
    try:
        with torch.no_grad(), watch:
            model(x)
    finally:
        watch.remove()
    bad = [f for f in watch.outside if f not in exempt]
    if bad:
        where = "; ".join(f"{f} in {watch.where.get(f, '?')}" for f in bad)
        raise SilentGradientError(
            f"{name} rewrites the backward pass of {what} only, but model {type(model).__name__} applies "
            f"activation functions outside them ({where}). Captum's hooks cannot see a functional activation, so the "
            "map would silently be the plain gradient there: use activation modules (e.g. nn.ReLU()) in the model."
        )


def _check_not_plain(name: str, model: nn.Module, x: Tensor, target: Tensor, maps: Tensor, x0: Tensor | None
                     ) -> None:
    """Line 2 of the guard: ``maps`` must differ from the unhooked result (the input gradient, times ``x - x0`` for
    DeepLift) on some sample whose reference is not zero."""
    from methods.gradients import input_gradient

    grad = input_gradient(model, x, target)[0]
    ref = grad if x0 is None else (x - x0) * grad
    diff = (maps - ref).flatten(1).abs().amax(1)
    scale = ref.flatten(1).abs().amax(1)
    informative = scale > torch.finfo(ref.dtype).tiny
    if not bool(informative.any()):
        return
    same = diff <= _TOL * scale
    if bool(same[informative].all()):
        worst = float((diff[informative] / scale[informative]).max())
        raise SilentGradientError(
            f"{name} returned the plain gradient on this batch: on every sample its map equals "
            f"{'the input gradient' if x0 is None else '(x - baseline) x the input gradient'} of model "
            f"{type(model).__name__} (largest difference {worst:.3g} of the sample's largest value; tolerance "
            f"{_TOL:g}). Its backward rules changed nothing: the model's non-linearities are not modules captum "
            "hooks, or none of them changes the signal on these inputs."
        )


# ------------------------------------------------------------------------------------------------ LRP's reshapes


@functools.cache
def _reshape_rule() -> type:
    from captum.attr._utils.lrp_rules import PropagationRule

    class ReshapeRule(PropagationRule):
        """Relevance passes a reshape unchanged: no hooks, no weights, no stored activations."""

        def forward_hook(self, module, inputs, outputs):  # noqa: ANN001
            return None

        def forward_hook_weights(self, module, inputs, outputs):  # noqa: ANN001
            return None

        def forward_pre_hook_activations(self, module, inputs):  # noqa: ANN001
            return None

        def _manipulate_weights(self, module, inputs, outputs):  # noqa: ANN001
            return None

    return ReshapeRule


# ------------------------------------------------------------------------------------------------ the explainer


def _signature_names(fn: Any, own: set[str]) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.name not in own and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


@contextlib.contextmanager
def _restored_attributes(model: nn.Module) -> Iterator[None]:
    """Captum leaves attributes on modules (LRP's ``activations``, DeepLift's ``input``/``output`` after an error)
    and deletes some (LRP removes every ``rule``): put each module's attribute set back as found."""
    before = [(m, dict(vars(m))) for m in model.modules()]
    try:
        yield
    finally:
        for m, attrs in before:
            for key in set(vars(m)) - set(attrs):
                delattr(m, key)
            for key in set(attrs) - set(vars(m)):
                setattr(m, key, attrs[key])


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Torch's (CPU, and ``device`` when CUDA) and NumPy's global generators seeded with ``seed``; restored after."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            np.random.seed(int(seed) % 2**32)
            yield
    finally:
        np.random.set_state(state)


class _Plan:
    """One captum class with its parameters sorted into constructor and ``attribute`` keywords and the adapter's
    own (baselines, feature masks, windows resolved per batch)."""

    def __init__(self, class_name: str, params: dict[str, Any], owner: CaptumExplainer) -> None:
        _check_class(class_name)
        ca = _captum()
        self.class_name, self.name, self.owner = class_name, f"captum:{class_name}", owner
        self.cls = getattr(ca, class_name)
        params = dict(params)
        own: dict[str, Any] = {}
        if "baseline" in params:
            if "baselines" in params:
                raise ValueError(f"{self.name}: give baseline or baselines, not both")
            params["baselines"] = params.pop("baseline")
        own_names = []
        if class_name in _RANDOM or class_name in _DATA_BASELINES:
            own_names.append("seed")
        if class_name in _DATA_BASELINES:
            own_names.append("n_baselines")
        if class_name == "NoiseTunnel":
            own_names += ["base", "base_params"]
        for key in own_names:
            if key in params:
                own[key] = params.pop(key)
        ctor = _signature_names(self.cls.__init__, _OWN_CTOR)
        attr = _signature_names(self.cls.attribute, _OWN_ATTR)
        self.base: _Plan | None = None
        if class_name == "NoiseTunnel":
            base = own.get("base", "Saliency")
            if base == "NoiseTunnel" or not isinstance(base, str):
                raise ValueError(f"{self.name}: base must be the name of another supported class, got {base!r}")
            if base == "DeepLiftShap":
                raise ValueError(f"{self.name}: base DeepLiftShap is not supported: captum's NoiseTunnel hands it one "
                                 "baseline per noisy input, which it pairs with every input of the batch (cost "
                                 "quadratic in the batch size); DeepLiftShap alone averages over its baselines")
            base_params = {k: params.pop(k) for k in list(params) if k not in attr}
            base_params.update(dict(own.get("base_params") or {}))
            try:
                self.base = _Plan(base, base_params, owner)
            except ValueError as err:
                raise ValueError(f"{self.name} (base {base}): {err}") from None
        unknown = sorted(set(params) - set(ctor) - set(attr))
        if unknown:
            accepted = sorted(set(ctor) | set(attr) | set(own_names) | {"low", "high"}
                              | ({"baseline"} if "baselines" in attr else set()))
            raise ValueError(f"{self.name}: unknown parameter(s) {unknown}; {class_name} accepts: "
                             f"{', '.join(accepted)}")
        if params.get("return_input_shape", True) is not True:
            raise ValueError(f"{self.name}: return_input_shape must stay True (maps are shaped like the input)")
        self.ctor = {k: v for k, v in params.items() if k in ctor}
        self.attr = {k: _plain(v) for k, v in params.items() if k in attr and k not in self.ctor}
        self.seed = int(own.get("seed", 0))
        self.n_baselines = int(own.get("n_baselines", 16))
        self.fitted: Tensor | None = None
        if class_name in _DATA_BASELINES:
            baselines = self.attr.setdefault("baselines", "data")
            if isinstance(baselines, str) and baselines != "data":
                raise ValueError(f"{self.name}: baselines must be 'data' (drawn in fit) or a tensor [N, ...] of "
                                 f"baselines, got {baselines!r}")
            if isinstance(baselines, Tensor) and class_name == "DeepLiftShap" and baselines.shape[0] < 2:
                raise ValueError(f"{self.name}: needs at least 2 baselines (use captum:DeepLift for one)")
            if self.n_baselines < (2 if class_name == "DeepLiftShap" else 1):
                raise ValueError(f"{self.name}: n_baselines must be >= 2 for DeepLiftShap, >= 1 for GradientShap, "
                                 f"got {self.n_baselines}")
        elif isinstance(self.attr.get("baselines"), str) and self.attr["baselines"] not in ("zero", "black", "white"):
            raise ValueError(f"{self.name}: baselines {self.attr['baselines']!r}: one of 'zero', 'black' (low), "
                             "'white' (high), a number or a tensor")
        if class_name in _MASKED:
            mask = self.attr.setdefault("feature_mask", "pixel")
            if isinstance(mask, str) and mask != "element":
                _grid(mask)  # validate now
        if class_name == "NoiseTunnel":
            self.attr.setdefault("stdevs", 0.15 * (owner.high - owner.low))
            if self.base is not None and self.base.class_name in _DATA_BASELINES:  # captum needs it for [N, ...]
                self.attr.setdefault("draw_baseline_from_distrib", True)
        self.build(owner.model)  # validate the constructor's values now

    @property
    def needs_fit(self) -> bool:
        if self.base is not None:
            return self.base.needs_fit
        return isinstance(self.attr.get("baselines"), str) and self.attr["baselines"] == "data"

    @property
    def random(self) -> bool:
        return self.class_name in _RANDOM or (self.base is not None and self.base.random)

    def fit(self, loader: Iterable[Any]) -> None:
        if self.base is not None:
            self.base.fit(loader)
            return
        self.fitted = draw_inputs(loader, self.n_baselines, self.seed)
        if self.class_name == "DeepLiftShap" and self.fitted.shape[0] < 2:
            raise ValueError(f"{self.name}: fit found {self.fitted.shape[0]} input(s); DeepLiftShap needs >= 2")

    def build(self, model: nn.Module) -> Any:
        if self.base is not None:
            return self.cls(self.base.build(model))
        return self.cls(model, **self.ctor)

    def kwargs(self, x: Tensor) -> dict[str, Any]:
        """``attribute``'s keywords for batch ``x``."""
        kw = dict(self.attr)
        if self.base is not None:
            kw = {**self.base.kwargs(x), **kw}
        shape = tuple(x.shape[1:])
        if "baselines" in kw and self.base is None:
            kw["baselines"] = self._baselines(kw["baselines"], x)
        if self.class_name in _MASKED:
            kw["feature_mask"] = feature_mask(kw["feature_mask"], shape).to(x.device)
        if self.class_name == "Occlusion":
            window = _window(kw.get("sliding_window_shapes"), shape)
            kw["sliding_window_shapes"] = window
            kw["strides"] = _strides(kw.get("strides"), window, shape)
        return kw

    def _baselines(self, value: Any, x: Tensor) -> Any:
        if isinstance(value, Tensor):
            return value.to(device=x.device, dtype=x.dtype)
        if value == "data":
            if self.fitted is None:
                from methods.pattern import NotFittedError

                raise NotFittedError(f"{self.name}: no baselines yet; call .fit(loader) with training inputs first")
            return self.fitted.to(device=x.device, dtype=x.dtype)
        if value == "zero":
            return 0.0
        if value in ("black", "white"):
            bound = self.owner.low if value == "black" else self.owner.high
            return bound.to(x) if isinstance(bound, Tensor) else float(bound)
        return value

    def reference_x0(self, x: Tensor, kw: Mapping[str, Any]) -> Tensor | None:
        """The guard's ``x0`` (``None``: compare with the plain gradient)."""
        if self.class_name in ("GuidedBackprop", "Deconvolution") or not self.ctor.get("multiply_by_inputs", True):
            return None
        b = kw.get("baselines")
        if b is None:
            return torch.zeros_like(x)
        if isinstance(b, Tensor):
            return b.mean(0, keepdim=True) if self.class_name == "DeepLiftShap" else b
        return torch.full_like(x, float(b))


def _plain(value: Any) -> Any:
    """Config containers (OmegaConf's lists) to tuples; everything else as is."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, Tensor)):
        return tuple(_plain(v) for v in value)
    return value


def draw_inputs(loader: Iterable[Any], n: int, seed: int) -> Tensor:
    """``n`` inputs drawn without replacement from the batches ``x`` or ``(x, ...)`` of ``loader`` (all of them when
    it has fewer), uniformly, with a CPU generator seeded by ``seed``: one pass, memory for ``n`` inputs."""
    gen = torch.Generator().manual_seed(int(seed))
    keys, kept = torch.empty(0), None
    for batch in loader:
        xb = batch[0] if isinstance(batch, (tuple, list)) else batch
        xb = torch.as_tensor(xb).detach().cpu()
        k = torch.rand(xb.shape[0], generator=gen)
        pool = xb if kept is None else torch.cat([kept, xb])
        keys = torch.cat([keys, k])
        order = torch.argsort(keys)[:n]
        keys, kept = keys[order], pool[order]
    if kept is None:
        raise ValueError("fit: the loader gave no inputs")
    return kept


class CaptumExplainer(BaseExplainer):
    """``captum:<class_name>`` on ``model`` (module docstring). ``last_convergence_delta``: captum's delta of the
    last call when ``return_convergence_delta=True``."""

    def __init__(self, model: nn.Module, class_name: str, *, low: float = 0.0, high: float = 1.0,
                 **params: Any) -> None:
        super().__init__(model, low=low, high=high)
        self.class_name = class_name
        self.name = f"captum:{class_name}"
        self.plan = _Plan(class_name, params, self)
        self.last_convergence_delta: Tensor | None = None

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        return self.plan.needs_fit

    def fit(self, loader: Iterable[Any]) -> CaptumExplainer:
        """Draw the baselines (DeepLiftShap / GradientShap with ``baselines="data"``) from ``loader``'s inputs."""
        if not self.needs_fit:
            raise AttributeError(f"{self.name} needs no data (fit) with these parameters")
        self.plan.fit(loader)
        return self

    def passes_per_map(self, input_shape: Sequence[int]) -> int:
        """:func:`passes_per_map` of this explainer for one input of shape ``input_shape``."""
        params = {**self.plan.ctor, **self.plan.attr, "seed": self.plan.seed}
        if self.plan.base is not None:
            params.update(base=self.plan.base.class_name,
                          base_params={**self.plan.base.ctor, **self.plan.base.attr})
        if self.class_name in _DATA_BASELINES:
            params["n_baselines"] = self.plan.n_baselines
        return passes_per_map(self.class_name, params, self.model, input_shape)

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        plan = self.plan
        guarded = plan.base if plan.base is not None else plan
        label = self.name if plan.base is None else f"{self.name} (base {guarded.class_name})"
        if guarded.class_name in _HOOKED:
            _check_activations(label, guarded.class_name, self.model, x)
        kw = plan.kwargs(x)
        needs_grad = self.class_name not in FORWARD_ONLY
        inputs = x.detach().clone().requires_grad_(needs_grad)
        with _restored_attributes(self.model), warnings.catch_warnings():
            for msg in _QUIET:
                warnings.filterwarnings("ignore", message=f".*{msg}")
            with _seeded(plan.seed if plan.random else None, x.device), self._reshape_rules():
                out = plan.build(self.model).attribute(inputs, target=target, **kw)
            if isinstance(out, tuple):  # return_convergence_delta=True
                out, self.last_convergence_delta = out[0], out[1].detach()
            out = out.detach()
            if out.shape != x.shape:
                raise ValueError(f"{self.name} returned maps of shape {tuple(out.shape)} for inputs {tuple(x.shape)}")
            if guarded.class_name in _COMPARED:
                maps = out
                if plan.base is not None:  # the base once more, on the clean batch
                    base_kw = guarded.kwargs(x)
                    base_in = x.detach().clone().requires_grad_(True)
                    maps = guarded.build(self.model).attribute(base_in, target=target, **base_kw).detach()
                    kw = base_kw
                _check_not_plain(label, self.model, x, target, maps, guarded.reference_x0(x, kw))
        return out.to(x.dtype)

    @contextlib.contextmanager
    def _reshape_rules(self) -> Iterator[None]:
        """Captum's LRP has no rule for reshapes: give them a pass-through rule for the call. It looks its rules up by
        exact type: a subclass of a layer it supports (e.g. the invariance test's tie-stable max pooling, a
        :class:`torch.nn.MaxPool2d`) gets its base class's rule."""
        guarded = self.plan.base if self.plan.base is not None else self.plan
        if guarded.class_name != "LRP":
            yield
            return
        from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES

        rule = _reshape_rule()
        for m in self.model.modules():
            if hasattr(m, "rule"):
                continue
            if isinstance(m, (nn.Flatten, nn.Unflatten, nn.Identity)):
                m.rule = rule()
            elif type(m) not in SUPPORTED_LAYERS_WITH_RULES:
                base = next((b for b in type(m).__mro__[1:] if b in SUPPORTED_LAYERS_WITH_RULES), None)
                if base is not None:
                    m.rule = SUPPORTED_LAYERS_WITH_RULES[base]()
        yield  # _restored_attributes removes the rules (captum deletes them too)

    def __repr__(self) -> str:
        return f"{self.name}({type(self.model).__name__})"


def _scalar_sigma(sigma: float | Tensor) -> float:
    """``sigma`` as one number: captum's NoiseTunnel takes one std per input tensor (``ValueError`` for a per-element
    std that is not constant, e.g. the twin of a contrast change)."""
    if isinstance(sigma, Tensor):
        if sigma.numel() and bool((sigma == sigma.flatten()[0]).all()):
            return float(sigma.flatten()[0])
        raise ValueError("captum:NoiseTunnel takes one noise std per input (stdevs), not a per-element sigma: a "
                         "transform that scales the input element by element (contrast) cannot be matched on its twin; "
                         "use smoothgrad (its sigma may be a tensor)")
    return float(sigma)


def factory(class_name: str) -> Any:
    """``factory(model, *, low=0.0, high=1.0, **params) -> CaptumExplainer`` of ``captum:<class_name>``; NoiseTunnel's
    also takes ``sigma``, the harness's absolute noise std (as SmoothGrad's: the invariance test sets it to the same
    number for the network and its twin, the twin's domain being wider), used as ``stdevs`` unless that is given.

    Raises ``ValueError`` for a class not in :data:`SUPPORTED` and ``ImportError`` (naming the extra) without captum.
    The factory carries ``class_name`` and ``passes_per_map(params=None, model=None, input_shape=None)``."""
    _check_class(class_name)
    _captum()

    if class_name == "NoiseTunnel":
        def make(model: nn.Module, *, low: float = 0.0, high: float = 1.0, sigma: float | Tensor | None = None,
                 **params: Any) -> CaptumExplainer:
            if sigma is not None and "stdevs" not in params:  # the harness's absolute noise std (the twin's own)
                params["stdevs"] = _scalar_sigma(sigma)
            return CaptumExplainer(model, class_name, low=low, high=high, **params)
    else:
        def make(model: nn.Module, *, low: float = 0.0, high: float = 1.0, **params: Any) -> CaptumExplainer:
            return CaptumExplainer(model, class_name, low=low, high=high, **params)

    make.__name__ = make.__qualname__ = f"captum_{class_name}"
    make.__doc__ = f"captum:{class_name} (methods.adapters.captum)"
    make.class_name = class_name  # type: ignore[attr-defined]
    make.passes_per_map = functools.partial(passes_per_map, class_name)  # type: ignore[attr-defined]
    return make
